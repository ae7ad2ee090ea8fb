"""Each render's inputs, as the job directory stores them (so a resume gives the same bytes as
an uninterrupted run): the source frame, the stored renders the frame graph names, and for a
flow-seeded frame what the worker needs for the flow. Where the workers reach the job's store
(:attr:`TaskMaker.direct`), a task names them by key and checksum and the worker reads them and
stores its frame itself; else the driver reads them, checked, and the task carries the bytes.
Also what each output frame shows, for the encode.
"""
from __future__ import annotations

import uuid

import numpy as np

from . import plan
from .codec import png_bytes
from .frames import Blend, Final, FrameGraph, Render, TaskPlan
from .job import DamagedFile, Job, flow_key, frame_key, source_key, thumb_key
from .inputs import Payload, Stored
from .render import Delivery, FrameTask, Reference, frame_seed
from .settings import VideoSettings


class FrameReader:
    """The stored images the frame graph names, read from the job and checked."""

    def __init__(self, job: Job, graph: FrameGraph):
        self.job, self.graph = job, graph

    def png(self, image: Render | Final) -> bytes:
        if isinstance(image, Final):
            image = self.graph.final(image.frame, image.upto)
        if isinstance(image, Render):
            return self.job.read_frame_bytes(image.sequence, image.frame)
        return png_bytes(self.job.blend(list(image.sources), image.frame))

    def stored(self, image: Render | Final) -> Stored:
        """Where ``image`` is in the job's store: its render's key and checksum, or a seam's
        renders with their weights (a worker reads and blends them: inputs.fetch_image)."""
        made = self.graph.final(image.frame, image.upto) if isinstance(image, Final) else image
        renders = [(made.sequence, 1.0)] if isinstance(made, Render) else list(made.sources)
        parts = []
        for sequence, weight in renders:
            digest = self.job.frame_digest(sequence, made.frame)
            if digest is None:
                raise DamagedFile(f"frame {made.frame} of chain {sequence} is not done", "frame", sequence,
                                  made.frame)
            parts.append((frame_key(sequence, made.frame), digest, weight))
        return Stored(tuple(parts))

    def is_final(self, frame: int) -> bool:
        """Whether everything :meth:`final_image` reads for ``frame`` is done."""
        return all(self.job.is_done(r.sequence, r.frame) for r in self.graph.final_renders(frame))

    def final_image(self, frame: int) -> np.ndarray:
        """What the output shows at ``frame``: the last pass's result, else the chains' blend."""
        made = self.graph.final(frame)
        if isinstance(made, Blend):
            return self.job.blend(list(made.sources), frame)
        return self.job.read_frame(made.sequence, frame)


class TaskMaker:
    """Everything one render needs: keys and checksums when the workers reach the job's store
    (``direct``: tried first; :meth:`relay` when a worker says it cannot), else the bytes."""

    def __init__(self, job: Job, graph: FrameGraph, settings: VideoSettings, keep_flows: bool):
        self.job, self.graph, self.settings, self.keep_flows = job, graph, settings, keep_flows
        self.reader = FrameReader(job, graph)
        self.job_id = f"{job.fingerprint}-{uuid.uuid4().hex[:8]}"
        self.token = job.reach_token()
        self.direct = True
        self.flows = None  # the user's flows (--flow-dir), read ahead of need
        if settings.init == "flow":
            if settings.flow_dir is None:
                # Workers compute the flows they need (render.prepare); only the report's are kept.
                job.open_flows(job.flow_key(settings.flow))
            else:
                from .flowcache import FlowCache

                self.flows = FlowCache(job, settings.flow_dir)
                self.flows.prefetch(graph.flow_pairs(job.is_done))

    def regraph(self, graph: FrameGraph) -> None:
        """Make tasks of this graph from now on (a film's chains, more of them known)."""
        self.graph, self.reader = graph, FrameReader(self.job, graph)

    def relay(self) -> None:
        """A worker cannot reach the job's store: from now on tasks carry their bytes."""
        self.direct = False

    def __call__(self, item: plan.FrameJob, first: bool) -> FrameTask:
        task: TaskPlan = self.graph.task(item, first)
        settings, style = self.settings, self.settings.style
        seeded = bool(task.references) or task.init == "blend"
        return_flow = self.keep_flows and task.init != "blend" and seeded
        references = tuple(self._reference(task.frame, ref.frame, self._image(ref.image)) for ref in task.references)
        delivery = Delivery(self.job.store.url, frame_key(task.sequence, task.frame),
                            flow_key(task.frame - 1, task.frame) if return_flow else None,
                            (thumb_key(task.sequence, task.frame, "source"),
                             thumb_key(task.sequence, task.frame, "stylized")), self.token) \
            if self.direct else None
        return FrameTask(job=self.job_id, chain=task.sequence, frame=task.frame, content=self._source(task.frame),
                         init_kind=task.init, iters=task.iters, seed=frame_seed(style.seed, task.frame),
                         references=references, temporal_weight=(settings.temporal_weight or 0.0) if seeded else 0.0,
                         start=self._image(task.start) if task.start is not None else None,
                         flow_method=settings.flow, return_flow=return_flow, delivery=delivery,
                         bits=settings.bit_depth or 8)

    def _source(self, frame: int) -> Payload:
        if not self.direct:
            return self.job.read_source_bytes(frame)
        return Stored(((source_key(frame), self.job.source_digest(frame), 1.0),))

    def _image(self, image: Render | Final) -> Payload:
        if not self.direct:
            return self.reader.png(image)
        return self.reader.stored(image)

    def _reference(self, frame: int, other: int, image: Payload) -> Reference:
        """``other``'s stylized frame for ``frame``, with what the worker needs for the flow
        between them: the user's flow (--flow-dir), else ``other``'s source frame."""
        if self.settings.init != "flow":
            return Reference(frame - other, image)
        if self.flows is not None:
            data = self.flows.get(frame, other)  # cached in the job's store (checked) on the way
            flow = Stored(((flow_key(frame, other), None, 1.0),)) if self.direct else data
            return Reference(frame - other, image, flow=flow)
        return Reference(frame - other, image, source=self._source(other))

    def close(self) -> None:
        if self.flows is not None:
            self.flows.close()
            self.flows = None


__all__ = ["FrameReader", "TaskMaker"]
