"""One video frame from a self-contained task: what every executor (Ray actor or plain loop)
runs. A task names the frames it needs exactly as the job directory stores them, so the result
depends only on persisted data and the task's seed. Where the worker can reach the job's store
(an object store, a shared folder: checked with a token the driver wrote, never assumed), the
task carries keys and checksums (:class:`Stored`) and the worker reads its inputs and writes its
frame itself, handing the driver only a record; elsewhere the task carries the PNG bytes and the
worker sends the PNG back. Either way frames travel compressed, never as raw pixels. The worker
decodes them, warps the previous frame along the flow and optimizes.

A frame's work is three parts: its inputs (fetch, PNG decode, the flows and their check), the
optimization, its output (PNG encode, store). Only the optimization uses the device, and it
runs on the worker's :class:`DeviceLane`, one thread: a worker with two calls in flight
prepares one frame while the other optimizes, so the GPU does not wait for the CPU's parts.
"""
from __future__ import annotations

import dataclasses
import os
import re
import socket
import time
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from . import images, optimize
from .codec import FLOW_DAMAGE, digest, flow_bytes, jpeg_bytes, load_flow, png_bytes, quantize, thumbnail, to_depth
from .errors import FrameError
from .inputs import InputDamaged, Payload, Redo, Stored, fetch, fetch_image
from .settings import StyleSettings
from .store import NotReached, opened, reach
from .weights import Weights


@dataclass(frozen=True)
class Delivery:
    """Where a worker that reaches the job's store puts its frame (and the report's flow)."""

    store: str  # the job's folder or URL
    frame: str  # the key of the frame's PNG
    flow: str | None  # the key of the flow previous → this frame, when the report wants it
    thumbs: tuple[str, str] | None  # keys of the live page's JPEGs of the source and the stylized frame
    token: tuple[str, str]  # (key, value) the driver wrote: the worker checks it can read the store


class StoreUnreachable(Redo):
    """This worker cannot read the job's store: the driver hands it the bytes instead."""

    def __init__(self, store: str, detail: str):
        super().__init__(store, detail)
        self.store, self.detail = store, detail

    def __str__(self) -> str:
        return f"the job's store {self.store} cannot be read here ({self.detail})"


@dataclass(frozen=True)
class Reference:
    """An earlier stylized frame of the chain, for seeding and the temporal loss."""

    offset: int  # how many frames back (1: the previous frame; negative: a later frame)
    image: Payload  # its stylized PNG, as stored
    flow: Payload | None = None  # a flow file (this frame → it, and its mask) where one is given…
    source: Payload | None = None  # …else its source frame's PNG: the worker computes the flow


@dataclass(frozen=True)
class FrameTask:
    job: str  # the job's identity: a result carrying another job's is dropped
    chain: int
    frame: int
    content: Payload  # PNG of the source frame at the output size
    # "prev" or "flow" (seeded: needs references), "content" or "noise", or "blend" (a
    # refinement pass: its own earlier result, `start`, blended with its warped neighbour)
    init_kind: str
    iters: int  # evaluation budget: chain starts get more than seeded frames
    seed: int  # derived from the job seed and the frame index
    # Earlier frames first (offset 1, then long-term ones); a refinement frame has its
    # neighbour in the sweep's direction first, and the one ahead (a negative offset: later).
    references: tuple[Reference, ...] = ()
    temporal_weight: float = 0.0
    start: Payload | None = None  # PNG of the frame's own latest result (init "blend")
    flow_method: str = "dis"  # how the worker computes flows it is not given
    return_flow: bool = False  # send back the flow previous → this frame (the report's, cached)
    delivery: Delivery | None = None  # where the worker stores its frame itself (None: send it back)
    bits: int = 8  # per channel of the frame it stores (16: every image here is taken to 16 bits)

    @property
    def seeded(self) -> bool:
        return self.init_kind == "blend" or (bool(self.references) and self.init_kind in ("prev", "flow"))


@dataclass(frozen=True)
class FrameRecord:
    """What ``frames.jsonl`` keeps of one render (the job adds checksum, size and fingerprint)."""

    loss: float
    content_loss: float
    style_loss: float
    evaluations: int  # counted as they ran
    seconds: float
    worker: str  # host/node:pid that rendered it
    device: str  # what it rendered on ("cuda:0", "cpu")
    render: dict  # the render facts (optimize.render_facts): a job never mixes two
    fallback: str | None = None  # set when the frame needed a fallback (e.g. Adam after out of memory)
    warning: str | None = None  # e.g. a GPU actor that found no CUDA device
    warping_error: float | None = None  # to the warped previous frame where the flow is reliable

    def as_dict(self) -> dict:
        record = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}  # shallow: cheap
        record["seconds"] = round(self.seconds, 3)
        return {name: value for name, value in record.items() if value is not None}


@dataclass(frozen=True)
class FrameOutput:
    job: str
    chain: int
    frame: int
    png: bytes | None  # the stylized frame, as the job directory stores it (None: the worker stored it)
    record: FrameRecord
    flow: bytes | None = None  # the flow file previous → this frame, when the task asked for it
    sha256: str | None = None  # of the PNG the worker stored (a Delivery)
    size: int | None = None


class WorkerLost(Exception):
    """A frame's worker died (or its result was lost) before answering: redo the frame."""


def frame_seed(job_seed: int, frame: int) -> int:
    """Each frame's randomness from the job seed and its index alone (resume-safe)."""
    return (job_seed * 1_000_003 + frame) % (2**63)


def _warping_error(image: np.ndarray, target: np.ndarray, mask: np.ndarray) -> float:
    """Mean squared difference to the warped previous frame where the flow is reliable, [0, 1]²."""
    diff = ((image.astype(np.float32) - target.astype(np.float32)) / np.iinfo(image.dtype).max) ** 2
    weight = mask.astype(np.float32)
    return float((weight * diff.sum(-1)).sum() / max(weight.sum(), 1.0))


@dataclass
class _Prepared:
    content: np.ndarray  # (H, W, 3) uint8
    init: np.ndarray | None  # uint8 start image for a seeded frame
    target: np.ndarray | None = None  # warped earlier frames (uint8) for the temporal loss
    mask: np.ndarray | None = None  # (H, W) float32 weight of each pixel's temporal term
    warped_previous: np.ndarray | None = None  # the previous frame warped into this one, and where
    reliable: np.ndarray | None = None  # its flow is reliable: for the per-frame warping error
    forward: bytes | None = None  # flow file previous → this frame (computed here; for the report)


BLEND = 0.5  # δ of Ruder et al.'s multi-pass: how much of the warped neighbour a pass starts from
# Long-term frames' share of the target where a closer frame already explains a pixel (0: Ruder's
# eq. 10 exactly; see flow.anchored_long_term_masks). Chosen by the temporal benchmark
# (BENCHMARKS.md): it holds drift back at k = 10 for a small cost in style loss.
LONG_TERM_ANCHOR = 0.5


def check_reach(delivery: Delivery) -> None:
    """:class:`StoreUnreachable` unless this process reads the driver's token in the store."""
    try:
        reach(delivery.store, delivery.token)
    except NotReached as error:
        raise StoreUnreachable(error.url, error.detail) from None


def _store_of(task: "FrameTask") -> str | None:
    return task.delivery.store if task.delivery is not None else None


def fetch_flow(payload: Payload, task: FrameTask) -> tuple[np.ndarray, np.ndarray]:
    data = fetch(payload, _store_of(task))
    try:
        return load_flow(data)
    except FLOW_DAMAGE as error:
        key = payload.parts[0][0] if isinstance(payload, Stored) else "a flow file"
        raise InputDamaged(key, f"flow {key} is damaged ({error})") from None


def prepare(task: FrameTask) -> _Prepared:
    """Decode a task's frames; warp its references along their flows (Ruder et al. 2016).

    Several references (long-term consistency, or both neighbours in a refinement pass) fold
    into one quadratic: Σ_j c_j (x − ω_j)² = C (x − ω̄)² + const with C = Σ c_j and
    ω̄ = Σ c_j ω_j / C, so the optimizer sees one target and one weight map whatever their
    number. Long-term frames' masks give what a nearer earlier frame already explains only a
    share (§4.2 excludes it), and their weight map is capped at 1: they move the target to a
    mean of the chain's earlier looks, never pull harder than one frame does.
    """
    if task.delivery is not None:
        check_reach(task.delivery)
    depth = np.uint16 if task.bits == 16 else np.uint8

    def image_of(payload: Payload) -> np.ndarray:  # one depth for every image the frame mixes
        return to_depth(fetch_image(payload, _store_of(task)), depth)

    content = image_of(task.content)
    own = image_of(task.start) if task.start is not None else None
    if not task.references:
        return _Prepared(content, own)
    previous = image_of(task.references[0].image)
    if task.init_kind == "prev":
        return _Prepared(content, previous)
    from . import flow

    warped, masks, forward = {}, {}, None
    for reference in task.references:
        if reference.flow is not None:
            back, mask = fetch_flow(reference.flow, task)
        else:
            # Computed here, on the worker, from the source frames the task carries: the driver
            # would otherwise spend two dense flows per frame for every GPU (DIS is deterministic,
            # so a resume computes the same flow).
            other = image_of(reference.source)
            back, reverse = flow.optical_flow(content, other, task.flow_method), \
                flow.optical_flow(other, content, task.flow_method)
            mask = flow.reliability(back, reverse)
            if reference.offset == 1 and task.return_flow:
                forward = flow_bytes(reverse, flow.reliability(reverse, back))
        image = previous if reference is task.references[0] else image_of(reference.image)
        warped[reference.offset], masks[reference.offset] = flow.warp(image, back), mask
        if reference is task.references[0]:
            reliable = mask > 0
            if own is None:
                init = flow.flow_init(previous, content, back, mask)
            else:
                weight = BLEND * mask[..., None]
                init = quantize(weight * warped[reference.offset] + (1 - weight) * own, depth)
    first = task.references[0].offset
    earlier = {k: m for k, m in masks.items() if k > 0}
    long_term = len(earlier) > 1
    if long_term:
        masks = {**masks, **flow.anchored_long_term_masks(earlier, LONG_TERM_ANCHOR)}
    total = sum(masks.values())
    combined = sum(masks[k][..., None] * warped[k].astype(np.float32) for k in warped)
    target = quantize(combined / np.maximum(total, 1e-6)[..., None], depth)
    # the anchored share moves the target, not its weight: one frame's at most
    strength = np.minimum(total, 1.0) if long_term else total
    return _Prepared(content, init, target, strength.astype(np.float32), warped[first], reliable, forward)


class DeviceLane:
    """Where a worker's optimizations run, one at a time, and how much of the worker's time
    they fill. ``threaded``: on one thread of their own (every CUDA graph, compiled kernel and
    RNG draw on the same thread, whichever call asked), so that calls can prepare and finish
    frames on their own threads meanwhile; else inline (one caller: the local executor).

    :meth:`stats`: seconds inside optimizations, and seconds with at least one call at work
    (the wall time there was work for this worker): their ratio is the share of the worker's
    working time its device spent optimizing."""

    def __init__(self, threaded: bool):
        # Subnormal flushing is a per-thread CPU flag: the lane's thread sets it as every
        # renderer's thread does, so a frame's bytes do not depend on the thread it ran on.
        self._pool = ThreadPoolExecutor(1, "device-lane", initializer=torch.set_flush_denormal,
                                        initargs=(True,)) if threaded else None
        self._lock = threading.Lock()
        self.optimizing = self.working = 0.0
        self.frames = 0
        self._calls, self._since = 0, 0.0

    def run(self, work: Callable, frames: int = 1):
        """``work()`` on the lane; counted as optimizing ``frames`` frames unless ``frames`` is 0
        (building a model, freeing memory)."""
        def timed():
            started = time.perf_counter()
            try:
                return work()
            finally:
                if frames:
                    with self._lock:
                        self.optimizing += time.perf_counter() - started
                        self.frames += frames

        return self._pool.submit(timed).result() if self._pool else timed()

    def __enter__(self) -> "DeviceLane":
        """A call at work (for :meth:`stats`)."""
        with self._lock:
            if self._calls == 0:
                self._since = time.perf_counter()
            self._calls += 1
        return self

    def __exit__(self, *exc) -> None:
        with self._lock:
            self._calls -= 1
            if self._calls == 0:
                self.working += time.perf_counter() - self._since

    def stats(self) -> dict:
        with self._lock:
            working = self.working + (time.perf_counter() - self._since if self._calls else 0.0)
            return {"optimizing": self.optimizing, "working": working, "frames": self.frames}


class FrameRenderer:
    """A model and one job's style targets on a device; :meth:`render` optimizes one frame."""

    def __init__(self, model, settings: StyleSettings, style_grams: dict[str, np.ndarray], device, worker: str,
                 warning: str | None = None, lane: DeviceLane | None = None):
        self.model, self.settings, self.device, self.worker = model, settings, torch.device(device), worker
        self.warning, self.lane = warning, lane or DeviceLane(threaded=False)
        self.grams = {name: torch.from_numpy(np.array(g)).to(self.device) for name, g in style_grams.items()}
        threads = torch.get_num_threads() if self.device.type == "cpu" else None
        self.facts = optimize.render_facts(settings, self.device, threads)

    def _problem(self, task: FrameTask, prepared: _Prepared) -> optimize.Problem:
        content = images.to_tensor(prepared.content).to(self.device)
        if prepared.init is not None:
            init = images.to_tensor(prepared.init).to(self.device)
        else:
            init = optimize.initial_image(task.init_kind, content, task.seed)  # a chain start or an independent frame
        temporal = None
        if prepared.target is not None and task.temporal_weight > 0:
            mask = torch.from_numpy(prepared.mask)[None, None].to(self.device)
            temporal = optimize.Temporal(images.to_tensor(prepared.target).to(self.device), mask, task.temporal_weight)
        return optimize.Problem(init, content, self.grams, temporal, task.iters)

    def _output(self, task: FrameTask, prepared: _Prepared, result: optimize.FrameResult, settings,
                started: float, fallback=None) -> FrameOutput:
        image = images.to_pixels(result.image, task.bits)
        if settings.original_colors:
            image = images.transfer_colors(image, prepared.content)
        error = (None if prepared.warped_previous is None else
                 _warping_error(image, prepared.warped_previous, prepared.reliable))
        record = FrameRecord(loss=result.loss, content_loss=result.content_loss, style_loss=result.style_loss,
                             evaluations=result.evaluations, seconds=time.perf_counter() - started,
                             worker=self.worker, device=str(self.device), render=self.facts, fallback=fallback,
                             warning=self.warning, warping_error=error)
        data = png_bytes(image)
        if task.delivery is None:
            return FrameOutput(task.job, task.chain, task.frame, data, record, prepared.forward)
        # Stored here, whole; the driver's record, written after it, vouches for it.
        store = opened(task.delivery.store)
        store.write(task.delivery.frame, data)
        if prepared.forward is not None and task.delivery.flow:
            store.write(task.delivery.flow, prepared.forward, durable=False)
        if task.delivery.thumbs:  # so the page never decodes a full frame on the driver
            for key, picture in zip(task.delivery.thumbs, (prepared.content, image)):
                store.write(key, jpeg_bytes(thumbnail(to_depth(picture, np.uint8))), durable=False)
        return FrameOutput(task.job, task.chain, task.frame, None, record, sha256=digest(data), size=len(data))

    def render(self, task: FrameTask) -> FrameOutput:
        started = time.perf_counter()
        prepared = prepare(task)  # this call's thread: the device may be optimizing another frame
        result, settings, fallback = self.lane.run(lambda: self._optimize(task, prepared))
        return self._output(task, prepared, result, settings, started, fallback)

    def _optimize(self, task: FrameTask, prepared: _Prepared):
        """On the lane: ``(result, settings used, fallback)``."""
        problem = self._problem(task, prepared)
        torch.manual_seed(task.seed)
        settings, fallback = self.settings, None
        # Coarse-to-fine only where a frame starts from scratch; a seeded frame is already close.
        optimizer = optimize.stylize_coarse_to_fine if prepared.init is None else optimize.stylize
        try:
            result = optimizer(self.model, settings, problem)
        except torch.OutOfMemoryError:
            if settings.optimizer != "lbfgs":
                raise
            # L-BFGS keeps its gradient pairs; Adam keeps two moments: retry once with less memory.
            # Captured CUDA graphs hold their pools until released; empty_cache alone frees nothing.
            if self.device.type == "cuda":
                optimize.release_graphs()
                torch.cuda.empty_cache()
            settings, fallback = dataclasses.replace(settings, optimizer="adam"), "adam after out of memory"
            result = optimizer(self.model, settings, problem)
        return result, settings, fallback

    def render_many(self, tasks: list[FrameTask]) -> list[FrameOutput | Exception]:
        """Several frames (of different chains) in one batched optimization where they can
        share it: seeded frames with equal budgets. Others, and a batch that fails (a
        non-finite loss, out of memory), are rendered one by one, so an error names its frame."""
        batchable = [t for t in tasks if t.seeded]
        budgets = {t.iters for t in batchable}
        if len(batchable) < 2 or len(budgets) != 1:
            return [self._one(task) for task in tasks]
        try:
            outputs = dict(zip(map(id, batchable), self._batch(batchable)))
        except (FrameError, Redo, torch.OutOfMemoryError):
            if self.device.type == "cuda":
                self.lane.run(lambda: (optimize.release_graphs(), torch.cuda.empty_cache()), frames=0)
            outputs = {}
        return [outputs[id(task)] if id(task) in outputs else self._one(task) for task in tasks]

    def _one(self, task: FrameTask) -> FrameOutput | Exception:
        try:
            return self.render(task)
        except (FrameError, Redo) as error:
            return error

    def _batch(self, tasks: list[FrameTask]) -> list[FrameOutput]:
        started = time.perf_counter()
        prepared = [prepare(task) for task in tasks]
        results = self.lane.run(lambda: self._optimize_batch(tasks, prepared), frames=len(tasks))
        return [self._output(task, p, result, self.settings, started)
                for task, p, result in zip(tasks, prepared, results)]

    def _optimize_batch(self, tasks: list[FrameTask], prepared: list[_Prepared]) -> list:
        parts = [self._problem(task, p) for task, p in zip(tasks, prepared)]
        temporal = None
        if any(part.temporal is not None for part in parts):
            content = parts[0].content
            none = optimize.Temporal(torch.zeros_like(content), torch.zeros_like(content[:, :1]), 0.0)
            chosen = [part.temporal or none for part in parts]
            temporal = optimize.Temporal(torch.cat([t.target for t in chosen]), torch.cat([t.mask for t in chosen]),
                                         torch.tensor([float(t.weight) for t in chosen], device=self.device))
        problem = optimize.Problem(torch.cat([p.init for p in parts]), torch.cat([p.content for p in parts]),
                                   self.grams, temporal, tasks[0].iters)
        torch.manual_seed(tasks[0].seed)
        return optimize.stylize_batch(self.model, self.settings, problem)


def nvidia_driver() -> str:
    """The NVIDIA kernel driver this machine runs, in words, for a message about a GPU torch cannot use."""
    try:
        with open("/proc/driver/nvidia/version") as version:
            line = version.readline()
    except OSError:
        return "no NVIDIA driver loaded"
    found = re.search(r"Kernel Module\s+([\d.]+)", line)
    return f"NVIDIA driver {found.group(1)}" if found else "an NVIDIA driver of unknown version"


class RendererCache:
    """Makes the :class:`FrameRenderer` for a job, keeping the model while the weights, layers
    and pooling stay the same (a batch of jobs with one weights source builds it once).

    Jobs are told apart by the identity the driver gives each (``job_key``), never by an
    object's address, which a later job can reuse. ``where``: ``here`` (in the driver's
    process) or ``worker`` (a Ray actor; see optimize.resolve_device).
    """

    def __init__(self, device: str = "auto", threads: int | None = None, worker: str | None = None,
                 holds_gpu: bool = False, where: str = "here", threaded: bool = False):
        if threads:
            torch.set_num_threads(threads)
        # Subnormal floats (activations of tiny magnitude) cost ~10x on some CPUs and change
        # nothing visible; every renderer flushes them, so a frame has the same bytes on the
        # driver (--executor local) and on any worker.
        torch.set_flush_denormal(True)
        self.device = optimize.resolve_device(device, where=where, holds_gpu=holds_gpu)
        self.warning = None
        self.no_cuda = self.device.type == "cpu" and (holds_gpu or device.startswith("cuda"))
        if self.no_cuda:
            self.warning = (f"this worker was given a GPU but torch {torch.__version__} (CUDA build "
                            f"{torch.version.cuda or 'none'}) sees no CUDA device here ({nvidia_driver()}); "
                            "it can only render on the CPU")
        self.threads = threads
        self.worker = worker or f"{socket.gethostname()}:{os.getpid()}"
        self._model_key = self._job_key = None
        self._model = self._renderer = None
        self.lane = DeviceLane(threaded)
        self._building = threading.Lock()  # two calls of a new job: one builds, the other waits

    def get(self, weights_key: str, load_weights: Callable[[], Weights], settings: StyleSettings,
            job_key: str, load_grams: Callable[[], dict]) -> FrameRenderer:
        key = (weights_key, job_key, settings)
        with self._building:
            return self._get(key, weights_key, load_weights, settings, load_grams)

    def _get(self, key, weights_key, load_weights, settings, load_grams) -> FrameRenderer:
        if key != self._job_key:
            model_key = (weights_key, settings.pooling, settings.content_layers, settings.style_layers)
            if model_key != self._model_key:
                self._model = None  # free the old one first
                weights = load_weights()
                self._model = self.lane.run(lambda: optimize.build_model(weights, settings, self.device), frames=0)
                self._model_key = model_key
            self._renderer = FrameRenderer(self._model, settings, load_grams(), self.device, self.worker,
                                           self.warning, self.lane)
            self._job_key = key
        return self._renderer


def grams_digest(grams: dict[str, np.ndarray]) -> str:
    """A content hash of a job's style targets (what the renderer cache keys a job by)."""
    parts = [name.encode() + np.ascontiguousarray(grams[name]).tobytes() for name in sorted(grams)]
    return digest(b"".join(parts))[:16]


__all__ = ["FrameTask", "FrameOutput", "FrameRecord", "Reference", "Stored", "Delivery", "Redo", "InputDamaged",
           "StoreUnreachable", "FrameRenderer", "RendererCache", "DeviceLane", "WorkerLost", "frame_seed", "prepare", "grams_digest"]
