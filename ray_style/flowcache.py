"""Flows a job is given rather than computes: a user's folder of precomputed ``.flo`` files
(``--flow-dir``: RAFT, FlowNet… computed elsewhere, named as artistic-videos names them),
resampled to the output size and cached in the job directory (``flow/FFFFFF_TTTTTT.npz``: the
flow from frame F to frame T, float16, and its reliability mask, uint8), where the tasks that
need them read them. A thread pool works ahead in the order frames will be needed.

(Flows ray_style computes itself, with OpenCV, are computed by the worker that renders the
frame: see render.prepare.)
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from . import flow
from .codec import flow_bytes
from .job import DamagedFile, Job


class FlowCache:
    """A user's flows between the frames of one job, by ``(frame, target)``."""

    def __init__(self, job: Job, flow_dir: str, threads: int | None = None):
        self.job, self.flow_dir = job, Path(flow_dir)
        self.size = tuple(job.manifest["frame_size"])
        job.open_flows(job.flow_key({"dir": str(self.flow_dir.resolve()), "files": flow.flow_dir_identity(self.flow_dir)}))
        self._pool = ThreadPoolExecutor(max_workers=threads or os.cpu_count() or 1, thread_name_prefix="flow")
        self._futures: dict[tuple[int, int], Future] = {}
        self._lock = threading.Lock()

    def prefetch(self, pairs) -> None:
        """Start computing these ``(frame, target)`` flows, in this order, unless cached."""
        for pair in pairs:
            self._submit(pair)

    def _submit(self, pair) -> Future:
        with self._lock:
            future = self._futures.get(pair)
            if future is None:
                future = self._pool.submit(self._make, *pair)
                self._futures[pair] = future
            return future

    def get(self, frame: int, target: int) -> bytes:
        """The stored flow file for ``frame → target``, read now if it is not there yet; a
        damaged cached file is read again."""
        try:
            self._submit((frame, target)).result()
            return self.job.read_flow_bytes(frame, target)
        except DamagedFile as damage:
            with self._lock:
                self._futures.pop((frame, target), None)  # a later call computes it again
            if damage.kind != "flow":
                raise  # a damaged source frame: the caller decodes it again
            self.job.discard(damage)
            self._submit((frame, target)).result()
            return self.job.read_flow_bytes(frame, target)

    def _make(self, frame: int, target: int) -> None:
        if not self.job.has_flow(frame, target):
            width, height = self.size
            there = flow.read_flow_dir(self.flow_dir, frame, target, width, height)
            self.job.write_flow(frame, target, flow_bytes(*there))

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


__all__ = ["FlowCache"]
