"""Ray actors and the executor the driver loop talks to: the only module that imports ray.

Each actor loads the model and the style targets once (both ``ray.put`` once by the driver)
and renders one frame per call. The executor keeps at most one task per actor in flight,
hands results back as they finish, and turns dead workers into frames to redo: actors restart
(bounded), and one that is gone for good is replaced (bounded) or dropped.
"""
from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

from .errors import FrameError, InputError
from .plan import FrameJob
from .render import FrameOutput, FrameRenderer, FrameTask

ACTOR_RESTARTS = 3  # per actor: its process dies (killed, node lost) → Ray restarts it
REPLACEMENTS_PER_WORKER = 2  # actors out of restarts are replaced this many times per worker


@ray.remote
class FrameActor:
    """Loads the model on its first frame from the shared references, then keeps it.

    The references come with each call, not the constructor: a restarted actor re-runs only
    its constructor, and Ray cannot promise object-store constructor arguments to a restart.
    """

    def __init__(self, settings, device: str, threads: int):
        self.settings, self.device, self.threads = settings, device, threads
        self.renderer: FrameRenderer | None = None

    def render(self, shared: list, task: FrameTask) -> FrameOutput:
        if self.renderer is None:
            weights, grams = ray.get(shared)  # [weights ref, style targets ref], nested: not resolved by Ray
            node = ray.get_runtime_context().get_node_id()[:8]
            self.renderer = FrameRenderer(weights, self.settings, grams, self.device, self.threads,
                                          worker=f"{socket.gethostname()}/{node}:{os.getpid()}")
        return self.renderer.render(task)


def connect(address: str | None, num_cpus: int | None = None, object_store_mb: int = 512) -> bool:
    """Join ``address`` (or ``RAY_ADDRESS``), else start an embedded local Ray.

    Returns whether we started it (and so should shut it down).
    """
    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS") or None
    common = dict(log_to_driver=False, logging_level=logging.WARNING, configure_logging=False)
    try:
        if address:
            ray.init(address=address, **common)
            return False
        # An embedded Ray is private to this process: its token-authentication notice is noise.
        logging.getLogger("ray").setLevel(logging.ERROR)
        ray.init(num_cpus=num_cpus or os.cpu_count(), object_store_memory=object_store_mb * 1024**2,
                 include_dashboard=False, **common)
        return True
    except (ConnectionError, RuntimeError, ValueError) as error:
        where = address or "a local Ray runtime"
        raise InputError(f"cannot connect to {where}: {str(error).splitlines()[0]}. Check --address "
                         "(e.g. ray://HEAD:10001 or HEAD:6379) or unset RAY_ADDRESS") from None


def cluster_gpus() -> int:
    return int(ray.cluster_resources().get("GPU", 0))


def cluster_cpus() -> int:
    return int(ray.cluster_resources().get("CPU", 1))


@dataclass
class _Worker:
    actor: "ray.actor.ActorHandle"
    deaths: int = 0


class RayExecutor:
    """Frames onto a pool of :class:`FrameActor`; results as they finish (``ray.wait``)."""

    def __init__(self, weights, settings, grams, workers: int, threads: int, gpus: bool,
                 resources: dict | None = None):
        self.weights_ref, self.grams_ref = ray.put(weights), ray.put(grams)
        self.settings, self.threads, self.gpus = settings, threads, gpus
        self.resources = resources or {}
        self.replacements_left = REPLACEMENTS_PER_WORKER * workers
        self.idle = [self._start() for _ in range(workers)]
        self.in_flight: dict = {}
        self.redone = 0  # frames given back because their worker died

    def _start(self) -> _Worker:
        # SPREAD: one worker per node before doubling up, so a lost node costs the fewest frames.
        options = dict(max_restarts=ACTOR_RESTARTS, max_task_retries=0, resources=self.resources,
                       scheduling_strategy="SPREAD")
        if self.gpus:
            options.update(num_gpus=1, num_cpus=1)
        else:
            options.update(num_cpus=self.threads)
        actor = FrameActor.options(**options).remote(self.settings, "cuda" if self.gpus else "cpu", self.threads)
        return _Worker(actor)

    @property
    def workers(self) -> int:
        return len(self.idle) + len(self.in_flight)

    def capacity(self) -> int:
        return len(self.idle)

    def submit(self, job: FrameJob, task: FrameTask) -> None:
        worker = self.idle.pop()
        self.in_flight[worker.actor.render.remote([self.weights_ref, self.grams_ref], task)] = (worker, job)

    def wait(self) -> list[tuple[FrameJob, FrameOutput | BaseException]]:
        """At least one finished (job, output or error); a dead worker's job comes back as
        :class:`WorkerLost` so the driver re-queues it."""
        if not self.in_flight:
            raise FrameError("no workers left: every worker died more often than allowed")
        ready, _ = ray.wait(list(self.in_flight), num_returns=1)
        results = []
        for ref in ready:
            worker, job = self.in_flight.pop(ref)
            try:
                results.append((job, ray.get(ref)))
                self.idle.append(worker)
            except RayTaskError as error:  # the frame itself raised
                self.idle.append(worker)
                cause = error.cause if isinstance(error.cause, BaseException) else error
                results.append((job, cause))
            except (RayActorError, GetTimeoutError) as error:
                self.redone += 1
                worker.deaths += 1
                self._recover(worker)
                results.append((job, WorkerLost(str(error).splitlines()[0])))
        return results

    def _recover(self, worker: _Worker) -> None:
        if worker.deaths <= ACTOR_RESTARTS:
            self.idle.append(worker)  # Ray restarts it; calls queue until it is back
        elif self.replacements_left > 0:
            self.replacements_left -= 1
            ray.kill(worker.actor, no_restart=True)
            self.idle.append(self._start())
        if not self.idle and not self.in_flight:
            raise FrameError("every worker died more often than allowed; see the Ray logs")

    def close(self) -> None:
        for worker in self.idle + [w for w, _ in self.in_flight.values()]:
            ray.kill(worker.actor, no_restart=True)


class WorkerLost(Exception):
    """A frame's worker died before answering: the frame is to be redone."""


def shutdown(started: bool) -> None:
    if started and ray.is_initialized():
        ray.shutdown()


__all__ = ["RayExecutor", "WorkerLost", "connect", "cluster_gpus", "cluster_cpus", "shutdown"]
