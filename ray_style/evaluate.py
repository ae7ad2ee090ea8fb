"""`ray-style evaluate`: temporal stability and losses of a stylized video (the numbers only;
:func:`ray_style.page.write_report` draws them).

Warping error (Lai et al. 2018, "Learning Blind Video Temporal Consistency"): the mean over
consecutive frame pairs of the masked squared difference between output frame t and output
frame t+1 warped back along the *source's* flow, with the source's occlusion mask. It alone
rewards a frozen picture, so it is always reported beside the content loss (eq. 1, against
the source frame) and the style loss (eq. 5, against the artwork). Beside it:

- the long-range warping error at k = 5 and 10: output frame t+k warped back to frame t
  along the source flow t → t+k, with that flow's forward-backward occlusion test. The flow
  is computed directly between the two frames with DIS, not composed from adjacent flows:
  on a synthetic camera move with known motion, DIS's direct flow erred 0.15 px (k = 5) and
  0.22 px (k = 10) against 0.38 and 0.73 px composed, at the same mask coverage, and on the
  sample clip it left a lower source error; a direct flow also finds a region that was
  hidden in between, which composition loses. It costs two more flows per frame and k.
  Farnebäck's direct flow fails on motion of tens of pixels (8.7 px error at k = 5), so with
  it the flow is composed (flow.composed_paths; a pixel counts only if every hop's
  occlusion test passes along its path);
- the seam pairs' warping error against the median pair's (seams: the frames s where the
  pair (s-1, s) joins two chains);
- the same measures on the source video itself: the floor, what its own motion, noise and
  compression leave after warping.

Losses run in batches of frames on the model's device in float32 (comparable across cards
and runs whatever precision rendered); flows run on a thread pool beside them (OpenCV
releases the GIL) and decoding runs ahead in a thread.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import queue
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch

from . import flow, optimize, video
from .errors import InputError
from .settings import StyleSettings

LONG_RANGE = (5, 10)  # frame distances of the long-range warping error
LONG_RANGE_FLOWS = ("auto", "direct", "composed")  # auto: direct with DIS, composed with Farnebäck
# Frames per forward on a GPU: about 2 M pixels (14 frames at 512×288, 1 at 1080p), so the
# batch's activations (≈ 0.5 GB per million pixels around conv1_2) fit beside a renderer's.
GPU_BATCH_PIXELS = 1 << 21


@dataclass
class Evaluation:
    frames: int
    width: int
    height: int
    warping_error: float  # mean over adjacent pairs
    content_loss: float | None = None  # mean per frame, unweighted (None without --style)
    style_loss: float | None = None
    # per frame: frame; warping_error and source_warping_error (to the next frame);
    # warping_error_k5, source_warping_error_k5 … (to frame + 5); content_loss, style_loss
    per_frame: list[dict] = field(default_factory=list)
    source_warping_error: float | None = None  # the same measure on the source: the floor
    long_range_warping_error: dict[str, float | None] = field(default_factory=dict)  # {"5": …, "10": …}
    source_long_range_warping_error: dict[str, float | None] = field(default_factory=dict)
    long_range_coverage: dict[str, float | None] = field(default_factory=dict)  # mean mask weight per pixel
    median_pair_error: float | None = None  # of the adjacent pairs' warping errors
    seams: list[dict] = field(default_factory=list)  # {"frame": s, "warping_error": pair (s-1, s), "ratio": / median}
    worst_seam_ratio: float | None = None
    flow_method: str = "dis"
    long_range_flow: str = "direct"  # how the flow t → t+k was had: direct or composed
    seconds: float = 0.0

    def summary(self) -> dict:
        """The numbers `ray-style evaluate --json` prints: everything but the per-frame rows."""
        numbers = {"frames": self.frames, "warping_error": self.warping_error,
                   "source_warping_error": self.source_warping_error}
        for k, value in self.long_range_warping_error.items():
            numbers[f"warping_error_k{k}"] = value
            numbers[f"source_warping_error_k{k}"] = self.source_long_range_warping_error.get(k)
        numbers.update(median_pair_error=self.median_pair_error, worst_seam_ratio=self.worst_seam_ratio,
                       seams=self.seams, content_loss=self.content_loss, style_loss=self.style_loss)
        return numbers


def _info(clip) -> video.VideoInfo:
    """A path is probed (a full decode to count frames); a VideoInfo is used as it is."""
    return clip if isinstance(clip, video.VideoInfo) else video.probe(clip)


@dataclass(frozen=True)
class EvaluationInputs:
    """How :func:`evaluate` scores a video.

    Losses need ``styles`` and ``weights``, or a ready ``model`` (optimize.build_model) with
    ``grams`` (optimize.style_targets; tensors or arrays) or styles; ``settings`` names the
    layers, size and style scale. ``device``: where the model runs (default: the given
    model's, else the CPU). ``flows(t)``: the source flow from frame t to t+1 at the output
    size and its mask, or None to compute it (``flow_method``); called from worker threads.
    ``seams``: frames s whose pair (s-1, s) joins two chains. ``long_range_flow``: ``direct``
    (the flow computed between the distant frames), ``composed`` (chained adjacent flows), or
    ``auto``: direct with DIS, composed with Farnebäck (see the module's notes).
    ``batch_size``: frames per forward (default: ``GPU_BATCH_PIXELS`` worth on a GPU, 4 on
    the CPU). ``threads``: flow threads (default: one per core, at most 32).
    """

    styles: list[np.ndarray] | None = None
    weights: object = None
    settings: StyleSettings = StyleSettings()
    model: object = None
    grams: dict | None = None
    device: object = None
    flows: flow.FlowProvider | None = None
    seams: tuple[int, ...] = ()
    flow_method: str = "dis"
    long_range: tuple[int, ...] = LONG_RANGE
    long_range_flow: str = "auto"
    batch_size: int | None = None
    threads: int | None = None


def evaluate(output, source, inputs: EvaluationInputs = EvaluationInputs(), progress=None, **options) -> Evaluation:
    """Score ``output`` against ``source`` (paths or VideoInfos, same frame count) as
    ``inputs`` say (keyword ``options`` replace its fields); ``progress(done, frames)``."""
    inputs = dataclasses.replace(inputs, **options) if options else inputs
    styles, weights, settings, model, grams, device = (inputs.styles, inputs.weights, inputs.settings, inputs.model,
                                                       inputs.grams, inputs.device)
    flows, seams, flow_method, long_range = inputs.flows, inputs.seams, inputs.flow_method, inputs.long_range
    long_range_flow, batch_size, threads = inputs.long_range_flow, inputs.batch_size, inputs.threads
    started = time.perf_counter()
    out_info, src_info = _info(output), _info(source)
    if out_info.frames != src_info.frames:
        raise InputError(f"{out_info.path} has {out_info.frames} frames but {src_info.path} has {src_info.frames}: "
                         "evaluate a stylized video against its own source")
    flow.check_flow_method(flow_method)
    if long_range_flow not in LONG_RANGE_FLOWS:
        raise InputError(f"unknown long-range flow '{long_range_flow}': use {', '.join(LONG_RANGE_FLOWS)}")
    if long_range_flow == "auto":
        long_range_flow = "direct" if flow_method == "dis" else "composed"
    distances = sorted({int(k) for k in long_range})
    if distances and distances[0] < 2:
        raise InputError(f"long-range distances must be ≥ 2 frames, got {distances}")
    seams = _check_seams(seams, out_info.frames)
    width, height = out_info.width, out_info.height
    scorer = _scorer(styles, weights, settings, model, grams, device, batch_size)
    temporal = _Temporal(flows, flow_method, distances, long_range_flow, threads)
    rows: list[dict] = []
    pairs = _decoded_pairs(src_info, out_info, width, height)
    with _float32_flags(), temporal, contextlib.closing(pairs):
        for index, (src, out) in enumerate(pairs):
            rows.append({"frame": index})
            if scorer:
                scorer.add(src, out)
            temporal.add(index, src, out)
            if progress and (index % 10 == 0 or index + 1 == out_info.frames):
                progress(index + 1, out_info.frames)
        losses = scorer.finish() if scorer else []
        temporal.finish()
    for row, (content, style) in zip(rows, losses):
        row["content_loss"], row["style_loss"] = content, style
    evaluation = Evaluation(out_info.frames, width, height, 0.0, flow_method=flow_method,
                            long_range_flow=long_range_flow)
    if scorer:
        evaluation.content_loss = float(np.mean([r["content_loss"] for r in rows]))
        evaluation.style_loss = float(np.mean([r["style_loss"] for r in rows]))
    temporal.fill(rows, evaluation)
    _score_seams(rows, seams, evaluation)
    evaluation.per_frame = rows
    evaluation.seconds = round(time.perf_counter() - started, 3)
    return evaluation


def _check_seams(seams, frames: int) -> list[int]:
    seams = sorted({int(s) for s in seams})
    bad = [s for s in seams if not 1 <= s < frames]
    if bad:
        raise InputError(f"seam frames {bad} are out of range: a seam s is the pair (s-1, s), so 1 ≤ s < {frames}")
    return seams


def _score_seams(rows: list[dict], seams: list[int], evaluation: Evaluation) -> None:
    errors = [r["warping_error"] for r in rows if "warping_error" in r]
    if not errors:
        return
    median = float(np.median(errors))
    evaluation.median_pair_error = median
    for s in seams:
        error = rows[s - 1].get("warping_error") if s - 1 < len(rows) else None
        ratio = error / median if error is not None and median > 0 else None
        evaluation.seams.append({"frame": s, "warping_error": error, "ratio": ratio})
    ratios = [seam["ratio"] for seam in evaluation.seams if seam["ratio"] is not None]
    evaluation.worst_seam_ratio = max(ratios) if ratios else None


class _float32_flags:
    """Restore the process-wide TF32 switches that Objective(precision="fp32") turns off, so a
    renderer sharing this process keeps its precision."""

    def __enter__(self):
        self.saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32

    def __exit__(self, *exc):
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = self.saved


def _decoded_pairs(src_info, out_info, width: int, height: int, depth: int = 32):
    """``(source frame, output frame)`` pairs, decoded by a thread ahead of their use (the
    pipes from ffmpeg release the GIL); the decoders are closed however this ends."""
    items: queue.Queue = queue.Queue(maxsize=depth)
    stop, end = threading.Event(), object()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                items.put(item, timeout=0.1)
                return True
            except queue.Full:
                pass
        return False

    def produce():
        sources, outputs = video.decode(src_info, width, height), video.decode(out_info, width, height)
        try:
            for pair in zip(sources, outputs):
                if not put(pair):
                    return
            put(end)
        except BaseException as error:  # handed to the consumer, who raises it
            put(error)
        finally:
            sources.close()
            outputs.close()

    thread = threading.Thread(target=produce, name="evaluate-decode", daemon=True)
    thread.start()
    try:
        while (item := items.get()) is not end:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()


# losses, in batches on the model's device

def _scorer(styles, weights, settings: StyleSettings, model, grams, device, batch_size) -> "_Losses | None":
    if model is None and weights is None or grams is None and not styles:
        return None
    # Unweighted L_content and L_style are reported: α, β and TV do not enter them.
    settings = dataclasses.replace(settings, content_weight=1.0, style_weight=1.0, tv_weight=0.0, compile=False,
                                   precision="fp32")
    if model is None:
        model = optimize.build_model(weights, settings, device or "cpu")
    device = model.mean.device
    if grams is None:
        with torch.no_grad():
            grams = optimize.style_targets(model, optimize.prepare_styles(styles, settings.size, settings.style_scale,
                                                                          device),
                                           settings.style_layers, settings.style_blend_weights)
    missing = [name for name in settings.style_layers if name not in grams]
    if missing:
        raise ValueError(f"grams lack style layers {missing}: build them with the same settings")
    grams = {name: torch.as_tensor(np.asarray(g) if not torch.is_tensor(g) else g).to(device, torch.float32)
             for name, g in grams.items()}
    return _Losses(model, settings, grams, batch_size)


class _Losses:
    """L_content and L_style of frames, ``batch_size`` frames per forward: one Objective per
    batch, its content targets the batch's source frames in one forward. Results stay on the
    device until :meth:`finish`, so the host never waits on a batch."""

    def __init__(self, model, settings: StyleSettings, grams: dict, batch_size: int | None):
        self.model, self.settings, self.grams, self.batch_size = model, settings, grams, batch_size
        self.device = model.mean.device
        self.batch: list[tuple[np.ndarray, np.ndarray]] = []
        self.results: list[torch.Tensor] = []

    def add(self, source: np.ndarray, output: np.ndarray) -> None:
        if self.batch_size is None:
            pixels = source.shape[0] * source.shape[1]
            self.batch_size = min(16, max(1, GPU_BATCH_PIXELS // pixels)) if self.device.type == "cuda" else 4
        self.batch.append((source, output))
        if len(self.batch) == self.batch_size:
            self._run()

    def _tensor(self, frames: list[np.ndarray]) -> torch.Tensor:
        """``B × (H, W, 3)`` uint8 → ``(B, 3, H, W)`` float in [0, 1] on the device (sent as
        uint8: a quarter of the bytes)."""
        stacked = torch.from_numpy(np.stack(frames))
        if self.device.type == "cuda":
            stacked = stacked.pin_memory().to(self.device, non_blocking=True)
        batch = stacked.permute(0, 3, 1, 2).float().div(255)
        return batch if self.device.type == "cuda" else batch.contiguous()

    @torch.no_grad()
    def _run(self) -> None:
        sources = self._tensor([source for source, _ in self.batch])
        outputs = self._tensor([output for _, output in self.batch])
        objective = optimize.Objective(self.model, self.settings, sources, self.grams)
        _, content, style = objective(outputs)
        self.results.append(torch.stack([content, style], 1))
        self.batch = []

    def finish(self) -> list[tuple[float, float]]:
        if self.batch:
            self._run()
        return [tuple(row) for row in torch.cat(self.results).tolist()] if self.results else []


# warping errors, on a thread pool

def _pair(t: int, first, second, provider, method: str):
    """Pair (t, t+1): the source flow and mask, and the output's and the source's error."""
    (src_a, out_a), (src_b, out_b) = first, second
    given = provider(t) if provider else None
    if given is None:
        forward, mask = flow.reliable_flow(src_a, src_b, method)
    else:
        height, width = src_a.shape[:2]
        forward = flow.resize_flow(np.asarray(given[0], np.float32), width, height)
        mask = flow.resize_mask(np.asarray(given[1], np.float32), width, height)
    return t, forward, mask, flow.warping_error(out_a, out_b, forward, mask), \
        flow.warping_error(src_a, src_b, forward, mask)


def _distant(first, last, path: np.ndarray, mask: np.ndarray) -> tuple[float, float, float]:
    """Output error, source error and mask weight per pixel between two distant frames."""
    return (flow.warping_error(first[1], last[1], path, mask), flow.warping_error(first[0], last[0], path, mask),
            float(mask.mean()))


def _long_composed(t: int, flows: list, masks: list, frames: dict, distances: list[int]):
    results = {}
    for hops, (path, mask) in enumerate(flow.composed_paths(flows, masks), start=1):
        if hops in distances:
            results[hops] = _distant(frames[0], frames[hops], path, mask)
    return t, results


def _long_direct(t: int, k: int, first, last, method: str):
    forward, mask = flow.reliable_flow(first[0], last[0], method)
    return t, {k: _distant(first, last, forward, mask * flow.inside(forward))}


class _Temporal:
    """Adjacent and long-range warping errors of the output and the source, computed on a
    thread pool while frames stream in; only a window of frames and flows is kept."""

    def __init__(self, provider, method: str, distances: list[int], long_range_flow: str, threads: int | None):
        self.provider, self.method, self.distances = provider, method, distances
        self.composed = long_range_flow == "composed"
        workers = threads or min(32, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else
                                 os.cpu_count() or 1)
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="evaluate-flow")
        self.limit = 2 * workers  # tasks in flight before the stream waits for the oldest
        self.frames: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self.flows: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self.pairs: deque = deque()
        self.distant: deque = deque()
        self.pair_errors: dict[int, tuple[float, float]] = {}
        self.long_errors: dict[tuple[int, int], tuple[float, float, float]] = {}
        self.next_start, self.last = 0, -1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.pool.shutdown(wait=True, cancel_futures=True)

    def add(self, index: int, source: np.ndarray, output: np.ndarray) -> None:
        self.frames[index], self.last = (source, output), index
        if index:
            self.pairs.append(self.pool.submit(_pair, index - 1, self.frames[index - 1], self.frames[index],
                                               self.provider, self.method))
        if not self.composed:
            for k in self.distances:
                if index - k >= 0:
                    self.distant.append(self.pool.submit(_long_direct, index - k, k, self.frames[index - k],
                                                         self.frames[index], self.method))
        self._collect(final=False)
        keep = index - max(self.distances, default=1)
        if self.composed and self.distances:
            keep = min(keep, self.next_start)
        for old in [i for i in self.frames if i < keep]:
            del self.frames[old]

    def _collect(self, final: bool) -> None:
        while self.pairs and (final or self.pairs[0].done() or len(self.pairs) > self.limit):
            t, forward, mask, out_error, src_error = self.pairs.popleft().result()
            self.pair_errors[t] = (out_error, src_error)
            if self.composed and self.distances:
                self.flows[t] = (forward, mask)
        if self.composed and self.distances:
            self._start_composed(final)
        while self.distant and (final or self.distant[0].done() or len(self.distant) > self.limit):
            t, results = self.distant.popleft().result()
            self.long_errors.update({(t, k): value for k, value in results.items()})

    def _start_composed(self, final: bool) -> None:
        """Queue the long-range measures of each start frame whose flows are all known."""
        longest, known = max(self.distances), len(self.pair_errors) - 1
        while self.next_start <= known and (self.next_start + longest - 1 <= known or final):
            t = self.next_start
            hops = min(longest, known - t + 1)
            if hops >= self.distances[0]:
                flows, masks = zip(*(self.flows[t + i] for i in range(hops)))
                frames = {k: self.frames[t + k] for k in (0, *self.distances) if k <= hops}
                self.distant.append(self.pool.submit(_long_composed, t, list(flows), list(masks), frames,
                                                     self.distances))
            del self.flows[t]
            self.next_start += 1

    def finish(self) -> None:
        self._collect(final=True)

    def fill(self, rows: list[dict], evaluation: Evaluation) -> None:
        for t, (out_error, src_error) in self.pair_errors.items():
            rows[t]["warping_error"], rows[t]["source_warping_error"] = out_error, src_error
        if self.pair_errors:
            evaluation.warping_error = float(np.mean([e for e, _ in self.pair_errors.values()]))
            evaluation.source_warping_error = float(np.mean([e for _, e in self.pair_errors.values()]))
        for k in self.distances:
            found = sorted((t, value) for (t, kk), value in self.long_errors.items() if kk == k)
            for t, (out_error, src_error, _) in found:
                rows[t][f"warping_error_k{k}"], rows[t][f"source_warping_error_k{k}"] = out_error, src_error
            # a start whose every path is occluded has no error to give (0 would flatter it)
            seen = [value for _, value in found if value[2] > 0]
            mean = (lambda i: float(np.mean([value[i] for value in seen])) if seen else None)
            evaluation.long_range_warping_error[str(k)] = mean(0)
            evaluation.source_long_range_warping_error[str(k)] = mean(1)
            evaluation.long_range_coverage[str(k)] = float(np.mean([v[2] for _, v in found])) if found else None


__all__ = ["Evaluation", "EvaluationInputs", "evaluate", "LONG_RANGE", "LONG_RANGE_FLOWS"]
