"""Where frames are rendered: the :class:`Executor` protocol the job lifecycle talks to, the
in-process :class:`LocalExecutor`, and :func:`make_executor`, the one place that picks one.

An executor takes frame tasks of one job at a time (:meth:`Executor.begin` names the job)
and hands results back as they finish. Every task and result carries its job's identity:
when a job ends or fails, :meth:`Executor.drain` settles its calls still in flight, and a
result of another job that still arrives is dropped, never stored in the wrong job. The Ray
pool lives in :mod:`ray_style.workers`, the only module that imports Ray.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

from .errors import InputError
from .plan import FrameJob
from .render import FrameOutput, FrameTask, RendererCache, grams_digest

EXECUTORS = ("ray", "local")
DEFAULT_PLACEMENT_TIMEOUT = 600.0  # s: a pool that cannot place one worker in this long gives up


@dataclass(frozen=True)
class ExecutorOptions:
    """How and where frames are rendered; none of it changes a frame's pixels (except
    ``frames_per_worker`` > 1, which batches frames: see README)."""

    kind: str = "ray"  # "ray": a Ray pool (embedded, or the cluster at address); "local": in this process
    address: str | None = None  # Ray cluster to join (else $RAY_ADDRESS, else an embedded runtime)
    max_workers: int | None = None  # None: GPUs now, or what the autoscaler can add; else CPU groups
    gpus_per_worker: float | None = None  # None: 1 where GPUs are or can come; 0.5 = two workers per GPU
    threads: int | None = None  # torch threads per CPU worker (None: the node's CPUs / its workers)
    device: str = "auto"  # auto, cpu, cuda[:N]
    frames_per_worker: int = 1  # frames of different chains one worker optimizes as one batch
    placement_timeout: float = DEFAULT_PLACEMENT_TIMEOUT

    def validate(self) -> "ExecutorOptions":
        if self.kind not in EXECUTORS:
            raise InputError(f"unknown executor '{self.kind}': use ray or local")
        if self.max_workers is not None and self.max_workers < 1:
            raise InputError(f"--max-workers {self.max_workers}: need at least 1")
        if self.gpus_per_worker is not None and not (0 <= self.gpus_per_worker <= 8
                                                     and math.isfinite(self.gpus_per_worker)):
            raise InputError(f"--gpus-per-worker {self.gpus_per_worker}: use 0 (CPU workers) … 8; "
                             "a fraction such as 0.5 puts two workers on one GPU")
        if self.threads is not None and self.threads < 1:
            raise InputError(f"--threads {self.threads}: need at least 1")
        if not 1 <= self.frames_per_worker <= 64:
            raise InputError(f"--frames-per-worker {self.frames_per_worker}: use 1…64")
        if not (self.placement_timeout > 0 and math.isfinite(self.placement_timeout)):
            raise InputError(f"--placement-timeout {self.placement_timeout}: give a number of seconds > 0")
        if self.device != "auto" and not (self.device == "cpu" or self.device.startswith("cuda")):
            raise InputError(f"unknown device '{self.device}': use auto, cpu or cuda[:N]")
        return self


Result = tuple[FrameJob, "FrameOutput | BaseException"]


class Executor(Protocol):
    """Renders frame tasks; the driver loop (:mod:`ray_style.runner`) is written against this."""

    threads: int | None  # torch threads per worker (recorded: CPU results depend on it bitwise)
    frames_per_worker: int
    redone: int  # frames given back because their worker died (cumulative)

    @property
    def workers(self) -> int:
        """Workers able to take frames now (an elastic pool grows as nodes join)."""

    @property
    def workers_planned(self) -> int:
        """Workers the pool asked for (placed or not): what the job's chains are cut for."""

    def limit(self, workers: int) -> None:
        """Give back workers beyond ``workers`` (a job with fewer chains cannot use them)."""

    def begin(self, job_id: str, weights, settings, grams) -> None:
        """Render the frames submitted from now on for ``job_id`` with these targets."""

    def capacity(self) -> int:
        """How many more frames to submit now (idle workers × frames per worker)."""

    def submit(self, item: FrameJob, task: FrameTask) -> None: ...

    def results(self) -> list[Result]:
        """Block until at least one result of the current job is in; others are dropped."""

    def drain(self) -> list[Result]:
        """The job is ending: wait for its calls in flight and return what they made."""

    def notes(self) -> list[str]:
        """New things worth telling the user (workers joined or lost, warnings)."""

    def close(self) -> None: ...


class LocalExecutor:
    """Renders in this process when asked for results (``frames_per_worker`` at a time,
    batched where they can be), no Ray: tests, debugging, one machine without Ray's start-up."""

    def __init__(self, device: str = "auto", threads: int | None = None, frames_per_worker: int = 1):
        import torch

        self.cache = RendererCache(device, threads)
        self.threads = threads or torch.get_num_threads()
        self.frames_per_worker = frames_per_worker
        self.queue: list = []
        self.redone = 0
        self._job = None
        self._told = False

    @property
    def workers(self) -> int:
        return 1

    workers_planned = workers

    def limit(self, workers: int) -> None:
        pass

    def begin(self, job_id: str, weights, settings, grams) -> None:
        self._job = job_id
        self.queue.clear()
        self.renderer = self.cache.get(weights.identity, lambda: weights, settings, grams_digest(grams),
                                       lambda: grams)

    def capacity(self) -> int:
        return self.frames_per_worker - len(self.queue)

    def submit(self, item: FrameJob, task: FrameTask) -> None:
        self.queue.append((item, task))

    def results(self) -> list[Result]:
        queue, self.queue = self.queue, []
        outputs = self.renderer.render_many([task for _, task in queue])
        return [(item, out) for (item, task), out in zip(queue, outputs) if task.job == self._job]

    def drain(self) -> list[Result]:
        self.queue.clear()  # nothing runs between calls here
        return []

    def notes(self) -> list[str]:
        if self.cache.warning and not self._told:
            self._told = True
            return [self.cache.warning]
        return []

    def close(self) -> None:
        self.queue.clear()


def make_executor(options: ExecutorOptions, parallel: int | None = None) -> Executor:
    """The executor ``options`` describe; ``parallel`` bounds how many workers could be busy
    (the job's chains), so a short job does not start actors it cannot use."""
    options.validate()
    if options.kind == "local":
        return LocalExecutor(options.device, options.threads, options.frames_per_worker)
    from . import workers

    return workers.RayExecutor.start(options, parallel)


__all__ = ["Executor", "ExecutorOptions", "LocalExecutor", "make_executor", "EXECUTORS", "DEFAULT_PLACEMENT_TIMEOUT"]
