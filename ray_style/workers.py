"""Ray actors and the elastic pool the driver loop talks to: the only module that imports ray.

The pool asks for what the cluster has *or can get*: GPU actors when GPUs are there or an
autoscaler node type offers them (or the user says so), never more CPUs per actor than the
largest node has. Actors that cannot be placed yet are pending, not failures: each answers a
``ready`` call once placed, and only then gets frames, so rendering starts with the first
node and speeds up as nodes join. The pool follows the cluster (:meth:`RayExecutor.follow`):
while frames wait for a worker it keeps actors pending for them (an autoscaler sees them as
demand; a node started by hand places them), up to ``--max-workers`` or the work; at a job's
tail it gives back idle actors so an autoscaler can remove their nodes. A lost node costs its
frames in flight and one replacement actor (Ray does not restart ours: a restart loop on a
dead node would spend a budget in seconds); only deaths with no frame finished between them
are bounded. If no actor can be placed within the placement timeout, the job stops with one
line naming what was asked for and what the cluster offers. Each actor loads the model and
the style targets once (both ``ray.put`` once by the driver) and renders one call's frames.
A GPU worker has two calls in flight (:data:`GPU_CALLS`): while one frame optimizes, the next
one's inputs are fetched, decoded and its flows computed on the actor's other thread, and the
finished one is encoded and stored, so the GPU does not wait for them (render.DeviceLane
keeps the optimizations one at a time, on one thread).
"""
from __future__ import annotations

import atexit
import contextlib
import dataclasses
import functools
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Callable
from urllib.parse import urlparse

import ray
from ray.exceptions import ActorUnavailableError, GetTimeoutError, ObjectLostError, RayActorError, RayTaskError

from .errors import ClusterError, FrameError, first_line
from .executor import Note
from .placement import NodeType, Offer, Request, plan_request
from .plan import FrameJob
from .render import FrameTask, RendererCache, WorkerLost, grams_digest
from .settings import ExecutorOptions

# Actor deaths in a row (no frame finished between them) per worker the pool holds, beyond which
# a dead actor is no longer replaced: a crash loop stops; node losses between frames never do.
DEATHS_IN_A_ROW_PER_WORKER = 2
PENDING_AHEAD = 4  # actors pending while frames wait: at least this many, at most as many as are placed
GPU_CALLS = 2  # calls in flight per GPU worker: one optimizing, one preparing
CPU_CALLS = 1  # a CPU worker's optimization already fills its cores: a second call would only wait
CONNECT_TIMEOUT = 10.0  # s to reach an --address before saying it is unreachable
POLL = 2.0  # s between checks of pending actors while frames render


@ray.remote(max_concurrency=GPU_CALLS)
class FrameActor:
    """Renders frames; builds its model on the first frame of a job from the shared references.

    The references come with each call, not the constructor: a restarted actor re-runs only
    its constructor, and Ray cannot promise object-store constructor arguments to a restart.
    The model is kept across jobs that share weights, layers and pooling (batch mode).
    """

    def __init__(self, device: str, threads: int):
        context = ray.get_runtime_context()
        self.node = context.get_node_id()[-8:]  # the end: fake test nodes share their ids' start
        self.cache = RendererCache(device, threads, worker=f"{socket.gethostname()}/{self.node}:{os.getpid()}",
                                   holds_gpu=bool(ray.get_gpu_ids()), where="worker", threaded=True)

    def ready(self) -> dict:
        return {"worker": self.cache.worker, "node": self.node, "device": str(self.cache.device),
                "warning": self.cache.warning, "no_cuda": self.cache.no_cuda}

    def render(self, context: tuple, tasks: list[FrameTask]):
        # The job's context, one object put once per job (Ray resolves it here, a local read
        # after the first call on a node); the references nested in it stay references.
        weights_ref, grams_ref, settings, job_key = context
        with self.cache.lane:
            renderer = self.cache.get(weights_ref.hex(), lambda: ray.get(weights_ref), settings, job_key,
                                      lambda: ray.get(grams_ref))
            return renderer.render_many(tasks)

    def stats(self) -> dict:
        """Seconds optimizing and seconds at work (render.DeviceLane.stats), frames rendered."""
        return {"worker": self.cache.worker, **self.cache.lane.stats()}


_CPU_TASK = None


def _cpu_task():
    """The remote function CPU stages run as (a segment's decode) on any node, retried where its
    node is lost. Made from a nested function, which Ray ships by value: a task's process then
    imports only the module of the work it does, not this one (and torch with it)."""
    global _CPU_TASK
    if _CPU_TASK is None:
        def apply(function, argument):
            return function(argument)

        _CPU_TASK = ray.remote(num_cpus=1, max_retries=3)(apply)
    return _CPU_TASK


class CpuTasks:
    """CPU tasks of one function (workers._cpu_task: one CPU each, SPREAD over the nodes,
    retried where a node is lost), handed out one at a time and collected as they finish."""

    def __init__(self, function, watch: "NodeWatch"):
        self.function, self.watch = function, watch
        self.refs: dict = {}

    def __len__(self) -> int:
        return len(self.refs)

    def put(self, index, argument) -> None:
        self.refs[_cpu_task().options(scheduling_strategy="SPREAD").remote(self.function, argument)] = index

    def finished(self, timeout: float = 0.0) -> list[tuple[object, object]]:
        """``(index, result or the exception it raised)`` of every task done, waiting up to
        ``timeout`` s for a first one."""
        if not self.refs:
            return []
        self.watch.check()
        ready, rest = ray.wait(list(self.refs), num_returns=1, timeout=timeout)
        if ready and rest:
            ready += ray.wait(rest, num_returns=len(rest), timeout=0)[0]
        done = []
        for ref in ready:
            index = self.refs.pop(ref)
            try:
                done.append((index, ray.get(ref)))
            except RayTaskError as error:
                done.append((index, error.cause if isinstance(error.cause, BaseException) else error))
            except Exception as error:  # noqa: BLE001 — its node lost for good: the caller decides
                self.watch.check(now=True)
                done.append((index, error))
        return done

    def drain(self, patience: float, stop: threading.Event | None = None):
        """Yield every task's ``(index, outcome)`` as it finishes; when none finishes within
        ``patience`` s (no CPU anywhere takes them), the rest come back as :class:`TimeoutError`
        and are cancelled: the caller does them itself. ``stop`` set: cancelled, ClusterError."""
        last = time.monotonic()
        while self.refs:
            if stop is not None and stop.is_set():
                self.cancel()
                raise ClusterError("the job stopped while its tasks ran")
            done = self.finished(POLL)
            if done:
                last = time.monotonic()
            elif time.monotonic() - last > patience:
                for ref, index in list(self.refs.items()):
                    ray.cancel(ref, force=True)
                    del self.refs[ref]
                    yield index, TimeoutError("no node ran it within --placement-timeout")
            yield from done

    def cancel(self) -> None:
        for ref in self.refs:
            ray.cancel(ref, force=True)
        self.refs = {}


# -- joining a cluster ----------------------------------------------------------------------

def _host_port(address: str) -> tuple[str, int] | None:
    """``(host, port)`` of an address we can probe with TCP, or None (``auto``, ``local``)."""
    if address in ("auto", "local"):
        return None
    parsed = urlparse(address if "://" in address else f"gcs://{address}")
    if parsed.hostname is None or parsed.port is None:
        return None
    return parsed.hostname, parsed.port


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT) -> None:
    """Raise :class:`ClusterError` unless something listens at ``address`` (ray.init itself
    waits for minutes on an address where nothing answers)."""
    target = _host_port(address)
    if target is None:
        return
    try:
        with socket.create_connection(target, timeout=timeout):
            pass
    except OSError as error:
        reason = "timed out" if isinstance(error, socket.timeout) else (error.strerror or str(error))
        raise ClusterError(f"cannot reach the Ray cluster at {address} ({reason}): check --address "
                           "(HEAD:6379, or ray://HEAD:10001) or unset RAY_ADDRESS") from None


def connect(address: str | None, num_cpus: int | None = None, object_store_mb: int = 512) -> bool:
    """Join ``address`` (or ``RAY_ADDRESS``), else start an embedded Ray private to this process
    (``address="local"``: never someone else's runtime found on this machine).

    Returns whether we started it (and so should shut it down).
    """
    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS") or None
    common = dict(log_to_driver=False, logging_level=logging.WARNING, configure_logging=False)
    with _sigterm_kept():
        return _init(address, common, num_cpus, object_store_mb)


@contextlib.contextmanager
def _sigterm_kept():
    """ray.init makes SIGTERM a bare ``sys.exit``; the command's own handler (a stop like
    Ctrl-C: the page says "stopped", ffmpeg and temp files are cleaned up) is put back."""
    main = threading.current_thread() is threading.main_thread()
    before = signal.getsignal(signal.SIGTERM) if main else None
    try:
        yield
    finally:
        if before is not None:
            signal.signal(signal.SIGTERM, before)


def _init(address, common: dict, num_cpus, object_store_mb) -> bool:
    try:
        if address:
            check_reachable(address)
            ray.init(address=address, **common)
            return False
        # An embedded Ray is private to this process: its token-authentication notice is noise.
        logging.getLogger("ray").setLevel(logging.ERROR)
        ray.init(address="local", num_cpus=num_cpus or os.cpu_count(),
                 object_store_memory=object_store_mb * 1024**2, include_dashboard=False, **common)
        return True
    except (ConnectionError, RuntimeError, ValueError) as error:
        where = address or "an embedded Ray runtime"
        raise ClusterError(f"cannot connect to {where}: {first_line(error)}. Check --address "
                           "(e.g. ray://HEAD:10001 or HEAD:6379) or unset RAY_ADDRESS") from None


def shutdown(started: bool) -> None:
    if started and ray.is_initialized():
        ray.shutdown()


# -- the node this driver runs on --------------------------------------------------------------

NODE_CHECK = 1.0  # s between checks that this driver's raylet answers
NODE_MISSES = 3  # checks missed in a row: the node is gone
NODE_GRACE = 30.0  # s the driver's own thread then has to stop the job before the watch ends the process


class NodeWatch:
    """Whether the Ray node this driver is attached to still answers: its raylet's port, tried
    every :data:`NODE_CHECK` s by a thread. When that node dies (its raylet killed, or taken
    down with its dashboard agent, which Ray fate-shares with it), Ray's calls fail in ways
    that look like lost workers, or never return; the pool asks :meth:`check` and stops the
    job with one line (:class:`ClusterError`, exit 7). Should the driver's thread be stuck in
    a Ray call that never returns, the watch itself says that line and ends the process with
    exit 7 after :data:`NODE_GRACE` s: a job never hangs on a dead node. A Ray Client driver
    (``ray://``) has no raylet of its own: nothing is watched."""

    def __init__(self):
        self.address = _own_raylet()
        self.gone: str | None = None
        self.said = False  # the job has raised the error: the process is on its way out
        self._stop = threading.Event()
        if self.address is not None:
            threading.Thread(target=self._watch, name="ray-style-node-watch", daemon=True).start()
            # Exit handlers run newest first: this one before Ray's own shutdown, which stops an
            # embedded runtime's raylet — the end of a job, not a node lost.
            atexit.register(self.stop)

    def _answers(self) -> bool:
        try:
            with socket.create_connection(self.address, timeout=NODE_CHECK):
                return True
        except OSError:
            return False

    def _watch(self) -> None:
        missed = 0
        while not self._stop.wait(NODE_CHECK):
            missed = 0 if self._answers() else missed + 1
            if missed >= NODE_MISSES:
                self.gone = self.message()
                break
        if self.gone is None or self._stop.wait(NODE_GRACE):
            return
        if not self.said:
            print(f"ray-style: error: {self.gone}", file=sys.stderr, flush=True)
        os._exit(ClusterError.exit_code)  # the driver's thread is stuck in Ray: nothing else can end it

    def message(self) -> str:
        host, port = self.address
        return (f"the Ray node this driver was attached to is gone (its raylet at {host}:{port} stopped "
                "answering); finished frames are kept: re-run the same command to resume")

    def check(self, now: bool = False) -> None:
        """Raise :class:`ClusterError` if the node is gone (``now``: ask it at once, for an error
        Ray raised that a dead node explains)."""
        if self.address is not None and self.gone is None and now and not self._answers():
            self.gone = self.message()
        if self.gone is not None:
            self.said = True
            raise ClusterError(self.gone)

    def stop(self) -> None:
        self._stop.set()


def _own_raylet() -> tuple[str, int] | None:
    try:
        node = ray.get_runtime_context().get_node_id()
        entry = next(n for n in ray.nodes() if n["NodeID"] == node)
        return entry["NodeManagerAddress"], int(entry["NodeManagerPort"])
    except Exception:  # noqa: BLE001 — a Ray Client driver, or a runtime that does not say: no watch
        return None


# -- what the cluster offers -----------------------------------------------------------------

def read_offer() -> Offer:
    nodes = tuple({k: v for k, v in node["Resources"].items() if k in ("CPU", "GPU")}
                  for node in ray.nodes() if node.get("Alive"))
    return Offer(nodes, autoscaler_node_types())


def autoscaler_node_types() -> tuple[NodeType, ...] | None:
    """The worker node types an autoscaler can launch, from the cluster config it reports to
    the GCS (autoscaler v2, KubeRay), else from the autoscaling config file of a monitor
    running on this machine (the head, where `ray job submit` runs the driver); None when
    neither is readable — then pass --gpus-per-worker to ask for GPUs that are not there yet."""
    try:
        config = ray._private.state.state.get_cluster_config()
    except Exception:  # noqa: BLE001 — private API: any failure means "not available"
        config = None
    if config is not None and config.node_group_configs:
        return tuple(NodeType(group.name, dict(group.resources), int(group.max_count))
                     for group in config.node_group_configs if group.max_count != 0)
    return _monitor_node_types()


def _monitor_node_types() -> tuple[NodeType, ...] | None:
    try:
        from ray.experimental.internal_kv import _internal_kv_get

        status = _internal_kv_get("__autoscaling_status")
        pid = json.loads(status)["monitor_pid"] if status else None
        if not pid:
            return None
        import psutil

        command = psutil.Process(int(pid)).cmdline()
        if not any("monitor" in part for part in command):
            return None  # that pid is another process: the monitor runs on another machine
        path = next((part.split("=", 1)[1] for part in command if part.startswith("--autoscaling-config=")), None)
        if path is None:
            return None
        import yaml

        with open(os.path.expanduser(path)) as handle:
            config = yaml.safe_load(handle)
        head = config.get("head_node_type")
        return tuple(NodeType(name, {k: float(v) for k, v in (spec.get("resources") or {}).items()
                                     if isinstance(v, (int, float))}, int(spec.get("max_workers", 0)))
                     for name, spec in config.get("available_node_types", {}).items() if name != head)
    except Exception:  # noqa: BLE001 — best effort: a cluster we cannot read is treated as fixed
        return None


# -- the pool ----------------------------------------------------------------------------------

def _on_our_node(method):
    """A pool method whose Ray calls fail, or raise anything, when this driver's own node is
    gone: then the job stops with that one line (NodeWatch), not with what Ray raised."""
    @functools.wraps(method)
    def guarded(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except ClusterError:
            raise
        except Exception:
            self.watch.check(now=True)
            raise

    return guarded


@dataclass
class _Worker:
    actor: "ray.actor.ActorHandle"
    name: str = "pending"
    ping: object = None  # the outstanding ready() call while pending
    dead: bool = False


@dataclass
class _Call:
    worker: _Worker
    jobs: list
    job_id: str


@dataclass
class _State:
    pending: dict = field(default_factory=dict)  # ping ref → worker not placed yet
    idle: list = field(default_factory=list)  # free call slots: a worker once per call it can take
    in_flight: dict = field(default_factory=dict)  # call ref → _Call


class RayExecutor:
    """An elastic pool of :class:`FrameActor`; frames in, results as they finish (``ray.wait``).

    One pool can serve several jobs in turn (:meth:`begin` each); weights are ``ray.put`` once
    per weights source, style targets once per job.
    """

    def __init__(self, request: Request, options: ExecutorOptions, offer: Offer, started_ray: bool = False,
                 launch: bool = True):
        self.request, self.options, self.offer, self.started_ray = request, options, offer, started_ray
        self.threads, self.frames_per_worker = request.threads, options.frames_per_worker
        self.calls = GPU_CALLS if request.num_gpus > 0 else CPU_CALLS
        self.device_kind = None  # what each worker renders on is its own node's to say: the first frame pins it
        self.cap = options.max_workers  # None: no cap but the work (limit, follow)
        self.deaths_in_a_row = 0  # actor deaths since a frame last finished
        self._gone: list[dict] = []  # stats of released workers
        self.state = _State()
        self.queue: list = []  # (job, task) submitted, not yet sent
        self.redone = 0
        self._notes: list[Note] = []
        self._joined = False  # a worker became ready since the driver last saw the capacity
        self._last_death: str | None = None
        self._since = time.monotonic()  # since when no worker has been ready
        self._job = None
        self._weights_identity = self._weights_ref = self._context = None
        self.watch = NodeWatch()
        self.launched = False
        if launch:
            self.launch()

    @classmethod
    def start(cls, options: ExecutorOptions, parallel: int | None = None, launch: bool = True) -> "RayExecutor":
        """Join (or start) the cluster and plan the pool; its actors are asked for now, or
        with ``launch=False`` at :meth:`launch` (after CPU tasks that need the CPUs first)."""
        started = connect(options.address)
        try:
            offer = read_offer()
            return cls(plan_request(options, offer, parallel), options, offer, started, launch)
        except BaseException:
            shutdown(started)
            raise

    @property
    def cpus(self) -> int:
        """The cluster's CPUs now (what its CPU tasks spread over)."""
        return max(1, int(self.offer.cpus_now))

    @_on_our_node
    def spare_cpus(self) -> int:
        """CPUs CPU tasks may take beside the render without delaying a GPU: none while a worker
        waits to be placed (a task could take the CPU it needs), else the cluster's idle CPUs
        (a task asked for beyond those would be autoscaler demand: a node started for x264)."""
        if self.state.pending:
            return 0
        return int(ray.available_resources().get("CPU", 0))

    def launch(self, at_most: int | None = None) -> None:
        """Ask for the pool's actors (once; ``at_most`` of them: it grows later as frames wait)."""
        if not self.launched:
            self.launched = True
            self._since = time.monotonic()
            count = self.request.count if at_most is None else min(self.request.count, max(1, at_most))
            for _ in range(count):
                self._launch()

    @property
    def worker_cpus(self) -> float:
        """The CPUs a worker takes (beside its GPUs, in a GPU pool; its threads in a CPU pool)."""
        return float(self.request.num_cpus)

    @property
    def worker_gpus(self) -> float:
        """The GPUs a worker takes (0: a CPU pool, whose workers share the CPUs with CPU tasks)."""
        return float(self.request.num_gpus)

    def tasks(self, function) -> "CpuTasks":
        """A queue of ``function(argument)`` CPU tasks spread over the cluster's nodes, handed
        out while the render runs (a span's encode once its frames are final)."""
        return CpuTasks(function, self.watch)

    def run_tasks(self, function, arguments: list, stop: threading.Event | None = None):
        """``function(argument)`` for each argument, as CPU tasks spread over the cluster's
        nodes (one CPU each; retried where a node is lost): yields ``(index, result or the
        exception it raised)`` as they finish; when none finishes within the placement timeout,
        the rest come back as :class:`TimeoutError`. Once ``stop`` is set, the rest are
        cancelled and it raises :class:`ClusterError`."""
        tasks = self.tasks(function)
        for index, argument in enumerate(arguments):
            tasks.put(index, argument)
        try:
            yield from tasks.drain(self.options.placement_timeout, stop)
        finally:
            tasks.cancel()  # the caller stopped early (an error, Ctrl-C): nothing left running

    def release_idle(self) -> None:
        """Give back every actor with nothing in flight (the render is over: CPU tasks after it
        get their CPUs), noting each; a later render asks for workers again."""
        self._release(self.workers + self.pending_workers)

    # -- actors ----------------------------------------------------------------------------
    def _launch(self) -> None:
        request = self.request
        # SPREAD: one worker per node before doubling up, so a lost node costs the fewest frames.
        actor = FrameActor.options(max_restarts=0, max_task_retries=0, num_cpus=request.num_cpus,
                                   num_gpus=request.num_gpus, scheduling_strategy="SPREAD").remote(
            request.device, request.threads)
        self._await_ready(_Worker(actor))

    def _await_ready(self, worker: _Worker) -> None:
        worker.ping = worker.actor.ready.remote()
        self.state.pending[worker.ping] = worker

    @property
    def workers(self) -> int:
        """Workers placed and answering (busy or idle)."""
        return len({id(w) for w in self.state.idle} | {id(c.worker) for c in self.state.in_flight.values()})

    @property
    def pending_workers(self) -> int:
        return len(self.state.pending)

    @property
    def workers_planned(self) -> int:
        return self.request.count

    def limit(self, workers: int) -> None:
        """This job can use ``workers`` at most (its chains): actors beyond are given back,
        pending ones first, then idle ones, and the pool never grows past it."""
        workers = max(1, workers)
        self.cap = min(self.cap or workers, workers)
        self._release(self.workers + self.pending_workers - workers)
        self.request = dataclasses.replace(self.request, count=min(self.request.count, workers))

    @_on_our_node
    def follow(self, waiting: int, active: int, release: bool = True) -> None:
        """Follow the work and the cluster: ``waiting`` frames are ready with no worker free to
        take them, ``active`` frames could run at once until the stage ends (its sequences with
        frames left, or its frames when they are independent). Frames that wait get actors
        asked for (pending until the cluster places them: an autoscaler adds nodes for them, a
        node started by hand takes them), up to the cap; with ``release``, actors beyond what
        ``active`` can use are given back (pending first, then idle), so the tail of a job
        holds no idle GPU and an autoscaler can remove its nodes."""
        per = self.frames_per_worker
        if waiting > 0:
            wanted = self.workers + -(-waiting // (per * self.calls))
            if self.cap is not None:
                wanted = min(wanted, self.cap)
            # A film on a fixed cluster has thousands of chains waiting: ask for a few more at a
            # time (the pool at most doubles per round of placements), not an actor per chain.
            room = max(PENDING_AHEAD, self.workers) - self.pending_workers
            for _ in range(min(room, wanted - self.workers - self.pending_workers)):
                self._launch()
        if release:
            keep = max(1, -(-active // per))
            self._release(self.workers + self.pending_workers - keep)

    def _release(self, surplus: int) -> None:
        """Give back up to ``surplus`` actors: pending ones, then idle ones (no call in flight)."""
        busy = {id(c.worker) for c in self.state.in_flight.values()}
        while surplus > 0:
            if self.state.pending:
                worker = self.state.pending.pop(next(iter(self.state.pending)))
            else:
                worker = next((w for w in reversed(self.state.idle) if id(w) not in busy), None)
                if worker is None:
                    return
                self.state.idle = [w for w in self.state.idle if w is not worker]
                self._gone += self._ask_stats([worker])  # its time counts in the job's share
                self._notes.append(Note("released", f"worker {worker.name} released: no frames left for it",
                                        worker.name))
            ray.kill(worker.actor, no_restart=True)
            surplus -= 1

    def notes(self) -> list[Note]:
        notes, self._notes = self._notes, []
        return notes

    # -- jobs ------------------------------------------------------------------------------
    @_on_our_node
    def begin(self, job_id: str, weights, settings, grams) -> None:
        """Use these weights, settings and style targets for the frames submitted from now on."""
        self.launch()
        if weights.identity != self._weights_identity:
            self._weights_ref, self._weights_identity = ray.put(weights), weights.identity
        # One object per job for what every call of it shares: a call then pickles only its
        # tasks (pickling the settings and two references with each call cost the driver
        # ~0.3 ms per frame, a sixth of its loop: BENCHMARKS.md, *Jobs in a bucket*).
        self._context = ray.put((self._weights_ref, ray.put(grams), settings, f"{job_id}:{grams_digest(grams)}"))
        self._job = job_id
        self.queue.clear()

    def capacity(self) -> int:
        """Frames the pool can take now: ``frames_per_worker`` per idle worker."""
        return len(self.state.idle) * self.frames_per_worker - len(self.queue)

    def submit(self, item: FrameJob, task: FrameTask) -> None:
        self.queue.append((item, task))

    def _send(self) -> None:
        # Spread first, batch second: two frames and two idle workers make two calls.
        calls = min(len(self.state.idle), len(self.queue))
        if not calls:
            return
        groups = [self.queue[i::calls] for i in range(calls)]
        self.queue = []
        for group in groups:
            worker = self._free_slot()
            ref = worker.actor.render.remote(self._context, [t for _, t in group])
            self.state.in_flight[ref] = _Call(worker, [job for job, _ in group], self._job)

    def _free_slot(self) -> _Worker:
        """The free call slot of the worker with the most free slots (an idle worker before a
        second call to a busy one), most recently freed first."""
        free: dict[int, int] = {}
        for worker in self.state.idle:
            free[id(worker)] = free.get(id(worker), 0) + 1
        index = max(range(len(self.state.idle)), key=lambda i: (free[id(self.state.idle[i])], i))
        return self.state.idle.pop(index)

    def _free(self, worker: _Worker) -> None:
        """A call of ``worker`` is over: its slot takes another (unless the worker died meanwhile)."""
        if not worker.dead:
            self.state.idle.append(worker)

    def stats(self) -> list[dict]:
        """Each worker's time optimizing and at work (FrameActor.stats): those placed now, and
        those released earlier (asked as they left); one that does not answer is left out."""
        workers = {id(w): w for w in self.state.idle}
        workers.update({id(c.worker): c.worker for c in self.state.in_flight.values()})
        return self._gone + self._ask_stats(list(workers.values()))

    @staticmethod
    def _ask_stats(workers: list) -> list[dict]:
        refs = [w.actor.stats.remote() for w in workers]
        if not refs:
            return []
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=10)
        found = []
        for ref in ready:
            try:
                found.append(ray.get(ref))
            except Exception:  # noqa: BLE001 — a worker lost meanwhile: nothing to say about it
                pass
        return found

    @_on_our_node
    def results(self, until: Callable[[], bool] | None = None) -> list:
        """At least one finished (job, output or error) of the current job, or none once
        ``until()`` says so (asked every :data:`POLL` s); a dead worker's frames come back as
        :class:`WorkerLost` so the driver re-queues them."""
        self.launch()
        while True:
            self._send()
            if self._joined and self.state.idle and not self.queue:
                self._joined = False
                return []  # a worker was placed: the driver can hand it frames now
            if not self.state.in_flight and not self.state.pending:
                if self.state.idle:
                    return []
                raise FrameError(f"no workers left: every worker died more often than allowed (last: "
                                 f"{self._last_death or 'unknown'}); see the Ray logs")
            results = self._wait(list(self.state.in_flight) + list(self.state.pending))
            if results:
                return results
            self._check_placement()
            if until is not None and until():
                return []

    @_on_our_node
    def drain(self) -> list:
        """Wait for the current job's calls in flight; their results are returned."""
        self.queue.clear()
        results = []
        while any(call.job_id == self._job for call in self.state.in_flight.values()):
            results += self._wait([ref for ref, call in self.state.in_flight.items() if call.job_id == self._job])
        return results

    def _check_placement(self) -> None:
        if self.workers or self.state.in_flight:
            self._since = time.monotonic()
            return
        waited = time.monotonic() - self._since
        if waited > self.options.placement_timeout:
            raise ClusterError(
                f"no worker could be placed in {waited:.0f} s (--placement-timeout): asked for "
                f"{self.request.describe()}; the cluster offers {read_offer().describe()}")

    def _wait(self, refs: list) -> list:
        self.watch.check()
        ready, _ = ray.wait(refs, num_returns=1, timeout=POLL)
        # Take whatever else is already done too, without waiting.
        if ready:
            more, _ = ray.wait([r for r in refs if r not in ready], num_returns=len(refs) - len(ready), timeout=0)
            ready += more
        results = []
        for ref in ready:
            if ref in self.state.pending:
                self._placed(ref)
            else:
                results += self._finished(ref)
        return results

    def _placed(self, ref) -> None:
        worker = self.state.pending.pop(ref)
        try:
            info = ray.get(ref)
        except Exception as error:  # noqa: BLE001 — a ping that fails for any reason: as a death
            self._recover(worker, first_line(error))
            return
        first = worker.name == "pending"
        if info.get("no_cuda") and not self.options.allow_cpu_fallback:
            # 64 GPUs rendering as 64 one-thread CPUs would take weeks: stop now, say where.
            raise ClusterError(f"worker {info['worker']}: {info['warning'].replace('; it can only render on the CPU', '')}"
                               "; fix that node's CUDA (a torch build for its driver), or pass --allow-cpu-fallback "
                               "to render there on the CPU")
        worker.name = info["worker"]
        self.state.idle += [worker] * self.calls
        self._joined = True
        self._since = time.monotonic()
        if first:
            self._notes.append(Note("joined", f"worker {info['worker']} ready on {info['device']}", info["worker"]))
            if info.get("warning"):
                self._notes.append(Note("warning", f"{info['worker']}: {info['warning']}", info["worker"]))

    def _finished(self, ref) -> list:
        call = self.state.in_flight.pop(ref)
        worker, jobs = call.worker, call.jobs
        try:
            outputs = list(zip(jobs, ray.get(ref)))
            self._free(worker)
            self.deaths_in_a_row = 0
        except RayTaskError as error:  # the call itself raised
            self._free(worker)
            cause = error.cause if isinstance(error.cause, BaseException) else error
            outputs = [(job, cause) for job in jobs]
        except (ActorUnavailableError, ObjectLostError, RayActorError, GetTimeoutError) as error:
            # The actor died, or its node lost the result: redo the frames.
            self.watch.check(now=True)  # unless it is this driver's own node that is gone
            reason = first_line(error)
            if not worker.dead:  # its other call in flight fails too: one death, one replacement
                self._recover(worker, reason)
            outputs = [(job, WorkerLost(reason)) for job in jobs]
            if call.job_id == self._job:
                self.redone += len(jobs)
        except Exception as error:  # noqa: BLE001 — see below
            # Anything else raised while fetching a result fails that call's frames (retried
            # like any failed frame) and never escapes into the job. Seen in CI: CPython
            # 3.11's "AST constructor recursion depth mismatch" SystemError while Ray built a
            # failed call's error on the driver, as its own threads formatted tracebacks too.
            self._free(worker)
            outputs = [(job, error) for job in jobs]
        if call.job_id != self._job:
            return []  # a call of a job that has ended: never stored in another job
        return outputs

    def _recover(self, worker: _Worker, reason: str) -> None:
        """A worker died (its process, or its node): a new actor is asked for in its place,
        pending until placed. Only deaths with no frame finished between them are bounded
        (:data:`DEATHS_IN_A_ROW_PER_WORKER` per worker held): beyond that the dead one is not
        replaced, and with none left the job stops (:meth:`results`)."""
        self._last_death = reason
        worker.dead = True
        self.state.idle = [w for w in self.state.idle if w is not worker]
        ray.kill(worker.actor, no_restart=True)
        self.deaths_in_a_row += 1
        held = self.workers + self.pending_workers + 1
        if self.deaths_in_a_row <= DEATHS_IN_A_ROW_PER_WORKER * held:
            self._launch()
            self._notes.append(Note("lost", f"worker {worker.name} lost ({reason}); a replacement is asked for",
                                    worker.name))
        else:
            self._notes.append(Note("dropped", f"worker {worker.name} dropped: {self.deaths_in_a_row} workers died "
                                               "with no frame finished in between", worker.name))

    def close(self) -> None:
        self.watch.stop()
        if self.watch.gone is not None:  # a dead raylet answers no kill: the cluster reaps the actors
            self.state = _State()
            return
        workers = [*self.state.idle, *self.state.pending.values(), *(c.worker for c in self.state.in_flight.values())]
        for worker in {id(w): w for w in workers}.values():
            ray.kill(worker.actor, no_restart=True)
        self.state = _State()
        shutdown(self.started_ray)


__all__ = ["RayExecutor", "FrameActor", "connect", "check_reachable", "shutdown", "read_offer",
           "autoscaler_node_types"]
