"""Ray actors and the executor the driver loop talks to: the only module that imports ray.

Each actor loads the model and the style targets once (both ``ray.put`` once by the driver)
and renders one call's frames (one, or several of different chains optimized as one batch).
The executor keeps at most one call per actor in flight,
hands results back as they finish, and turns dead workers into frames to redo: actors restart
(bounded), and one that is gone for good is replaced (bounded) or dropped.
"""
from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass

import ray
from ray.exceptions import ActorUnavailableError, GetTimeoutError, ObjectLostError, RayActorError, RayTaskError

from .errors import FrameError, InputError
from .plan import FrameJob
from .render import FrameOutput, FrameTask, RendererCache, WorkerLost

ACTOR_RESTARTS = 3  # per actor: its process dies (killed, node lost) → Ray restarts it
REPLACEMENTS_PER_WORKER = 2  # actors out of restarts are replaced this many times per worker


@ray.remote
class FrameActor:
    """Renders frames; builds its model on the first frame of a job from the shared references.

    The references come with each call, not the constructor: a restarted actor re-runs only
    its constructor, and Ray cannot promise object-store constructor arguments to a restart.
    The model is kept across jobs that share weights, layers and pooling (batch mode).
    """

    def __init__(self, device: str, threads: int):
        node = ray.get_runtime_context().get_node_id()[:8]
        self.cache = RendererCache(device, threads, worker=f"{socket.gethostname()}/{node}:{os.getpid()}")

    def render(self, shared: list, settings, tasks: list[FrameTask]) -> list[FrameOutput | Exception]:
        weights_ref, grams_ref = shared  # nested in a list, so Ray hands us the references
        renderer = self.cache.get(weights_ref.hex(), lambda: ray.get(weights_ref), settings,
                                  grams_ref.hex(), lambda: ray.get(grams_ref))
        return renderer.render_many(tasks)


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


def make_pool(address: str | None, workers: int | None, threads: int | None, parallel: int | None = None,
              frames_per_worker: int = 1):
    """Join or start Ray and start a pool: one actor per GPU, else CPU workers with
    ``threads`` torch threads each. Returns (pool, whether we started Ray)."""
    started = connect(address)
    gpus = cluster_gpus()
    count = max(1, min(workers or gpus or cluster_cpus(), parallel or 1 << 30))
    threads = threads or (1 if gpus else max(1, cluster_cpus() // count))
    return RayExecutor(count, threads, gpus > 0, frames_per_worker=frames_per_worker), started


def cluster_gpus() -> int:
    return int(ray.cluster_resources().get("GPU", 0))


def cluster_cpus() -> int:
    return int(ray.cluster_resources().get("CPU", 1))


@dataclass
class _Worker:
    actor: "ray.actor.ActorHandle"
    deaths: int = 0


class RayExecutor:
    """A pool of :class:`FrameActor`; frames in, results as they finish (``ray.wait``).

    One pool can serve several jobs in turn (:meth:`begin` each); weights are ``ray.put`` once
    per weights source, style targets once per job.
    """

    def __init__(self, workers: int, threads: int, gpus: bool, resources: dict | None = None,
                 frames_per_worker: int = 1):
        self.threads, self.gpus, self.resources = threads, gpus, resources or {}
        self.frames_per_worker = frames_per_worker
        self.replacements_left = REPLACEMENTS_PER_WORKER * workers
        self.idle = [self._start() for _ in range(workers)]
        self.in_flight: dict = {}  # call → (worker, its frame jobs)
        self.pending: list = []  # (job, task) submitted, not yet sent
        self.redone = 0  # frames given back because their worker died
        self._weights_identity = self._weights_ref = self._shared = self._settings = None

    def begin(self, weights, settings, grams) -> None:
        """Use these weights, settings and style targets for the frames submitted from now on."""
        if weights.identity != self._weights_identity:
            self._weights_ref, self._weights_identity = ray.put(weights), weights.identity
        self._shared, self._settings = [self._weights_ref, ray.put(grams)], settings

    def _start(self) -> _Worker:
        # SPREAD: one worker per node before doubling up, so a lost node costs the fewest frames.
        options = dict(max_restarts=ACTOR_RESTARTS, max_task_retries=0, resources=self.resources,
                       scheduling_strategy="SPREAD")
        if self.gpus:
            options.update(num_gpus=1, num_cpus=1)
        else:
            options.update(num_cpus=self.threads)
        return _Worker(FrameActor.options(**options).remote("cuda" if self.gpus else "cpu", self.threads))

    @property
    def workers(self) -> int:
        return len(self.idle) + len(self.in_flight)

    def capacity(self) -> int:
        """Frames the pool can take now: ``frames_per_worker`` per idle worker."""
        return len(self.idle) * self.frames_per_worker - len(self.pending)

    def submit(self, job: FrameJob, task: FrameTask) -> None:
        self.pending.append((job, task))

    def _send(self) -> None:
        # Spread first, batch second: two frames and two idle workers make two calls.
        calls = min(len(self.idle), len(self.pending))
        if not calls:
            return
        groups = [self.pending[i::calls] for i in range(calls)]
        self.pending = []
        for group in groups:
            worker = self.idle.pop()
            ref = worker.actor.render.remote(self._shared, self._settings, [task for _, task in group])
            self.in_flight[ref] = (worker, [job for job, _ in group])

    def wait(self) -> list[tuple[FrameJob, FrameOutput | BaseException]]:
        """At least one finished (job, output or error); a dead worker's jobs come back as
        :class:`WorkerLost` so the driver re-queues them."""
        if self.pending:
            self._send()
        if not self.in_flight:
            raise FrameError("no workers left: every worker died more often than allowed")
        ready, _ = ray.wait(list(self.in_flight), num_returns=1)
        results = []
        for ref in ready:
            worker, jobs = self.in_flight.pop(ref)
            try:
                results += zip(jobs, ray.get(ref))
                self.idle.append(worker)
            except RayTaskError as error:  # the call itself raised
                self.idle.append(worker)
                cause = error.cause if isinstance(error.cause, BaseException) else error
                results += [(job, cause) for job in jobs]
            except (ActorUnavailableError, ObjectLostError) as error:
                # The actor is restarting, or its node lost the result: redo the frames, keep the worker.
                self.redone += len(jobs)
                self.idle.append(worker)
                results += [(job, WorkerLost(str(error).splitlines()[0])) for job in jobs]
            except (RayActorError, GetTimeoutError) as error:
                self.redone += len(jobs)
                worker.deaths += 1
                self._recover(worker)
                results += [(job, WorkerLost(str(error).splitlines()[0])) for job in jobs]
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


def shutdown(started: bool) -> None:
    if started and ray.is_initialized():
        ray.shutdown()


__all__ = ["RayExecutor", "connect", "make_pool", "cluster_gpus", "cluster_cpus", "shutdown"]
