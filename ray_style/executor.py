"""Where frames are rendered: the :class:`Executor` protocol the job lifecycle talks to, the
in-process :class:`LocalExecutor`, and :func:`make_executor`, the one place that picks one
(the options are :class:`~ray_style.settings.ExecutorOptions`).

An executor takes frame tasks of one job at a time (:meth:`Executor.begin` names the job)
and hands results back as they finish. Every task and result carries its job's identity:
when a job ends or fails, :meth:`Executor.drain` settles its calls still in flight, and a
result of another job that still arrives is dropped, never stored in the wrong job. The Ray
pool lives in :mod:`ray_style.workers`, the only module that imports Ray.
"""
from __future__ import annotations

import os
from typing import Callable, NamedTuple, Protocol

from .errors import FrameError, RayStyleError, StorageError
from .plan import ChainScheduler, FrameJob
from .render import FrameOutput, FrameTask, Redo, RendererCache, WorkerLost, grams_digest
from .settings import ExecutorOptions

FRAME_ATTEMPTS = 3  # a frame that raises this often (NaN, out of memory) stops the job
FOLLOW_LOOKAHEAD = 4096  # waiting frames counted when asking for workers (more ask for no more)


class Reopen(Exception):
    """Raised by a ``make_task`` given to :func:`drive`: these ``(sequence, frame)`` renders of
    the sequences being driven turned out damaged and were discarded; they render again first."""

    def __init__(self, renders: list[tuple[int, int]]):
        super().__init__(f"render again: {renders}")
        self.renders = renders

Result = tuple[FrameJob, FrameOutput | BaseException]


class Note(NamedTuple):
    """Something worth telling the user about the pool, logged as a job event of its ``kind``:
    ``joined`` (a worker is ready: news, not a failure), ``released`` (given back at a job's
    tail), ``warning``, ``lost`` (a replacement is asked for) or ``dropped``."""

    kind: str
    text: str
    worker: str | None = None



class Executor(Protocol):
    """Renders frame tasks; the driver loop (:mod:`ray_style.runner`) is written against this."""

    threads: int | None  # torch threads per worker (recorded: CPU results depend on it bitwise)
    # "cpu" or "cuda" where the executor knows what its workers render on (recorded with every
    # frame); None where only the workers can say (a cluster's nodes)
    device_kind: str | None
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

    def follow(self, waiting: int, active: int, release: bool = True) -> None:
        """``waiting`` frames are ready with no worker to take them; ``active`` could run at
        once until the stage ends: ask for workers for the first, and (``release``) give back
        those the second cannot use."""

    def begin(self, job_id: str, weights, settings, grams) -> None:
        """Render the frames submitted from now on for ``job_id`` with these targets."""

    def capacity(self) -> int:
        """How many more frames to submit now (idle workers × frames per worker)."""

    def submit(self, item: FrameJob, task: FrameTask) -> None: ...

    def results(self, until: Callable[[], bool] | None = None) -> list[Result]:
        """Block until at least one result of the current job is in (others are dropped), or
        ``until()`` says to stop waiting (asked every few seconds)."""

    def drain(self) -> list[Result]:
        """The job is ending: wait for its calls in flight and return what they made."""

    def notes(self) -> list[Note]:
        """New things worth telling the user (workers joined or lost, warnings)."""

    def stats(self) -> list[dict]:
        """Per worker: seconds optimizing, seconds at work, frames (render.DeviceLane.stats)."""

    def launch(self) -> None:
        """Start the workers, if not yet (an executor made with ``launch=False`` runs CPU tasks first)."""

    def close(self) -> None: ...


class LocalExecutor:
    """Renders in this process when asked for results (``frames_per_worker`` at a time,
    batched where they can be), no Ray: tests, debugging, one machine without Ray's start-up."""

    def __init__(self, device: str = "auto", threads: int | None = None, frames_per_worker: int = 1):
        import torch

        self.cache = RendererCache(device, threads)
        self.threads = threads or torch.get_num_threads()
        self.device_kind = self.cache.device.type
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

    def follow(self, waiting: int, active: int, release: bool = True) -> None:
        pass  # one worker: this process

    def begin(self, job_id: str, weights, settings, grams) -> None:
        self._job = job_id
        self.queue.clear()
        self.renderer = self.cache.get(weights.identity, lambda: weights, settings, grams_digest(grams),
                                       lambda: grams)

    def capacity(self) -> int:
        return self.frames_per_worker - len(self.queue)

    def submit(self, item: FrameJob, task: FrameTask) -> None:
        self.queue.append((item, task))

    def results(self, until=None) -> list[Result]:
        queue, self.queue = self.queue, []
        with self.cache.lane:
            outputs = self.renderer.render_many([task for _, task in queue])
        return [(item, out) for (item, task), out in zip(queue, outputs) if task.job == self._job]

    def drain(self) -> list[Result]:
        self.queue.clear()  # nothing runs between calls here
        return []

    def notes(self) -> list[Note]:
        if self.cache.warning and not self._told:
            self._told = True
            return [Note("warning", self.cache.warning)]
        return []

    def stats(self) -> list[dict]:
        return [{"worker": self.cache.worker, **self.cache.lane.stats()}]

    def launch(self) -> None:
        pass

    def close(self) -> None:
        self.queue.clear()


def make_executor(options: ExecutorOptions, parallel: int | None = None, launch: bool = True) -> Executor:
    """The executor ``options`` describe; ``parallel`` bounds how many workers could be busy
    (the job's chains), so a short job does not start actors it cannot use. ``launch=False``:
    its workers start at :meth:`Executor.launch` (CPU tasks may run before)."""
    options.validate()
    if options.kind == "local":
        return LocalExecutor(options.device, options.threads, options.frames_per_worker)
    from . import workers

    return workers.RayExecutor.start(options, parallel, launch)


def run_here(function, arguments: list, threads: int | None = None):
    """``function(argument)`` for each argument on this machine's threads (ffmpeg and PNG
    compression release the GIL): yields ``(index, result or exception)`` as each finishes."""
    from concurrent.futures import ThreadPoolExecutor, as_completed

    with ThreadPoolExecutor(max_workers=threads or os.cpu_count() or 1, thread_name_prefix="tasks") as pool:
        futures = {pool.submit(function, argument): index for index, argument in enumerate(arguments)}
        try:
            for future in as_completed(futures):
                error = future.exception()
                yield futures[future], error if error is not None else future.result()
        finally:
            for future in futures:
                future.cancel()


def drive(executor: Executor, sequences, sequential: bool, make_task: Callable[[FrameJob, bool], FrameTask | None],
          store: Callable[[FrameJob, FrameOutput], None], *, is_done: Callable[[int, int], bool],
          on_stored: Callable[[int], None] | None = None, on_note: Callable[[Note], None] | None = None,
          on_failure: Callable[[FrameJob, BaseException, int], None] | None = None,
          on_redo: Callable[[FrameJob, Redo], list[tuple[int, int]]] | None = None, release: bool = False,
          keep: int = 0, more: Callable[[bool], list | None] | None = None, grow: bool = True) -> int:
    """The driver loop, one for every job and preview: hand the frames of ``sequences``
    (plan.Chain or plan.Sweep) to ``executor`` as it has room (each sequence one frame after
    the other when ``sequential``), ``store(item, output)`` each result as it finishes (not in
    submission order), and give failed frames back: a frame whose worker died is redone, one
    that raised is retried, and one that raised :data:`FRAME_ATTEMPTS` times stops the job
    (:class:`FrameError`). ``is_done(sequence, frame)``: what needs no render. ``make_task``
    may return None (try again: an input was made again) or raise :class:`Reopen` (earlier
    renders it needs were damaged: they go back in line). ``on_failure(item, error,
    attempt)``: a frame failed (``attempt`` 0 when its worker died). The pool follows the work
    (:meth:`Executor.follow`): workers are asked for while frames wait (unless not ``grow``),
    and with ``release`` (a pool of this job's own) given back once the work left cannot use
    them (nor ``keep`` sequences of a later stage).

    ``more(idle)``: sequences known since the last call (a film's chains while it decodes;
    ``idle``: nothing is in flight, it may wait a little for some), or None once it has no
    more to give: the loop then starts nothing new, stores what is in flight and returns,
    frames of its sequences left for a later loop. If the loop stops on an error, the calls in
    flight are settled and their frames stored. Returns how many frames were stored."""
    scheduler = ChainScheduler(sequences, is_done, sequential=sequential)
    firsts = {s.index: s.frames[0] for s in sequences}
    attempts: dict = {}
    stored = 0
    growing = more is not None  # sequences still come
    arrived: list = []  # sequences that came while waiting for results

    def came() -> bool:
        got = more(False)
        arrived.extend(got or ())
        return got is None or bool(got)

    def starting() -> bool:  # frames are handed out (not once ``more`` has cut the loop short)
        return growing or more is None

    def going() -> bool:
        return growing or (bool(scheduler.in_flight) if more is not None else not scheduler.finished())

    try:
        while going():
            if growing:
                got = more(not scheduler.in_flight and not arrived and not scheduler.ready(1))
                added, arrived[:] = [*arrived, *(got or ())], []
                if got is None and not added:
                    growing = False
                    continue
                scheduler.add(added)
                firsts.update((s.index, s.frames[0]) for s in added)
            for item in scheduler.ready(executor.capacity()) if starting() else ():
                try:
                    task = make_task(item, item.frame == firsts[item.chain])
                except Reopen as reopen:
                    for sequence, frame in reopen.renders:
                        scheduler.reopen(sequence, frame)
                    continue
                if task is None:
                    continue
                executor.submit(item, task)
                scheduler.started(item)
            waiting = len(scheduler.ready(FOLLOW_LOOKAHEAD)) if grow and starting() else 0
            executor.follow(waiting, max(scheduler.active(), keep), release)
            for item, out in executor.results(came if growing else None):
                if isinstance(out, FrameOutput):
                    store(item, out)
                    scheduler.done(item)
                    stored += 1
                    if on_stored:
                        on_stored(stored)
                    continue
                scheduler.failed(item)
                if isinstance(out, StorageError):  # a full or read-only store: no retry helps
                    raise out
                if isinstance(out, Redo) and on_redo is not None:
                    for sequence, frame in on_redo(item, out):
                        scheduler.reopen(sequence, frame)
                    continue
                _failed(item, out, attempts, on_failure)
            for note in executor.notes():
                if on_note:
                    on_note(note)
    except BaseException as error:
        if not isinstance(error, KeyboardInterrupt):
            try:
                for item, out in executor.drain():  # finished work of a failing job is kept
                    if isinstance(out, FrameOutput):
                        store(item, out)
            except (RayStyleError, OSError):
                pass  # the error that stopped the job is the one to report
        raise
    return stored


def _failed(item: FrameJob, error: BaseException, attempts: dict, on_failure) -> None:
    """Count a failed frame; :class:`FrameError` once it has failed too often."""
    if isinstance(error, WorkerLost):
        if on_failure:
            on_failure(item, error, 0)
        return
    key = (item.chain, item.frame)
    attempts[key] = attempts.get(key, 0) + 1
    if on_failure:
        on_failure(item, error, attempts[key])
    if attempts[key] >= FRAME_ATTEMPTS:
        raise FrameError(f"frame {item.frame} (chain {item.chain}) failed {attempts[key]} times: {error}")


__all__ = ["Executor", "LocalExecutor", "make_executor", "run_here", "drive", "Reopen", "Result", "FRAME_ATTEMPTS"]
