"""One frame: targets in, an initial image in, L-BFGS or Adam, an image out.

No file I/O, no Ray, no printing: progress leaves through a callback. ``stylize_image`` is
the whole still-image pipeline on arrays; ``stylize`` is the optimizer loop that video
workers call with precomputed style targets.
"""
from __future__ import annotations

import collections
import dataclasses
import math
import os
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from . import images, lbfgs, losses, tiling
from .errors import FrameError, InputError
from .settings import MIN_SIZE, StyleSettings
from .features import VGGFeatures, check_size, min_side
from .weights import Weights


@dataclass(frozen=True)
class Progress:
    evaluation: int  # loss evaluations done so far
    total: int  # evaluations this frame will take
    loss: float  # total loss at the last evaluation
    image: Tensor | None = None  # (B, 3, H, W) the current images, every snapshot_every evaluations


@dataclass(frozen=True)
class FrameResult:
    image: Tensor  # (1, 3, H, W) in [0, 1]
    loss: float  # L = α L_content + β L_style (+ TV) of the returned image
    content_loss: float  # L_content, unweighted
    style_loss: float  # L_style, unweighted
    evaluations: int  # loss evaluations that ran for this image (counted, not its budget)
    seconds: float


@dataclass(frozen=True)
class Temporal:
    """The temporal loss's terms (Ruder et al. 2016): ``weight · Σ mask (x − target)²``."""

    target: Tensor  # (B, 3, H, W) earlier stylized frames warped into this one
    mask: Tensor  # (B, 1, H, W) per-pixel weight: where the flow is reliable
    weight: Tensor | float  # λ, or one per image (B,): 0 for images of a batch without one

    def terms(self) -> tuple:
        return self.target, self.mask, self.weight


@dataclass(frozen=True)
class Problem:
    """What an optimization is given: where it starts and what it matches."""

    init: Tensor  # (B, 3, H, W) in [0, 1]: the start
    content: Tensor | None  # (B, 3, H, W) the content images; None optimizes style alone
    style_grams: dict[str, Tensor]  # {layer: (1, N, N)} from style_targets; {} optimizes content alone
    temporal: Temporal | None = None
    iters: int | tuple[int, ...] | None = None  # evaluations: one budget, or one per image; None: settings.iters

    def scaled(self, shape: tuple[int, int]) -> "Problem":
        """This problem at another image shape (coarse-to-fine)."""
        temporal = self.temporal
        if temporal is not None:
            temporal = Temporal(_resize(temporal.target, shape), _resize(temporal.mask, shape), temporal.weight)
        return Problem(_resize(self.init, shape), None if self.content is None else _resize(self.content, shape),
                       self.style_grams, temporal, self.iters)


ProgressCallback = Callable[[Progress], None]


REFERENCE_PIXELS = 256 * 256  # the image area at which a weights source's default β is given


def resolve_loss_weights(settings: StyleSettings, weights: Weights, pixels: int) -> StyleSettings:
    """Fill in α and β where not given, from the weights source's tested defaults.

    Eq. 1 sums over the ``M`` positions while eq. 4 divides by ``M²``, so at a fixed α/β the
    content term's share grows with the image area. The default β is scaled by
    ``pixels / REFERENCE_PIXELS`` so the balance, and the look, stay the same at every
    ``--size``; a β given by the user is used as it is.
    """
    beta = weights.style_weight * pixels / REFERENCE_PIXELS
    return dataclasses.replace(
        settings,
        content_weight=weights.content_weight if settings.content_weight is None else settings.content_weight,
        style_weight=float(f"{beta:.4g}") if settings.style_weight is None else settings.style_weight)


def build_model(weights: Weights, settings: StyleSettings, device="cpu") -> VGGFeatures:
    layers = (*settings.content_layers, *settings.style_layers)
    model = VGGFeatures(weights.arch, weights.convs, weights.preprocess, layers, settings.pooling)
    device = torch.device(device)
    # channels-last convolutions on a GPU (tensor cores); weights resident once per model
    return model.to(device, memory_format=torch.channels_last if device.type == "cuda" else torch.preserve_format)


def memory_budget(settings: StyleSettings, device) -> int | None:
    """Bytes one image's optimization may use here (``--max-memory``, else from the device)."""
    return tiling.device_budget(torch.device(device), settings.max_memory)


def choose_tiles(model: VGGFeatures, settings: StyleSettings, image: Tensor) -> tiling.Tiling | None:
    """The tiling ``image`` ``(B, 3, H, W)`` needs to fit :func:`memory_budget` (None: whole)."""
    dtype_bytes = 2 if resolve_precision(settings.precision, image.device) == "bf16" else 4
    history = settings.lbfgs_history if settings.optimizer == "lbfgs" else 2  # Adam keeps two moments
    return tiling.choose(model, image.shape[-2], image.shape[-1], memory_budget(settings, image.device),
                         batch=image.shape[0], dtype_bytes=dtype_bytes, history=history)


@torch.no_grad()
def style_targets(model: VGGFeatures, styles: list[Tensor], layers, blend_weights=None,
                  budget: int | None = None) -> dict[str, Tensor]:
    """Blended ``A^l / M_a`` per style layer, ``{layer: (1, N, N)}`` (see losses.style_loss).

    Several artworks blend by a weighted mean of their Gram statistics, as neural-style does.
    An artwork too large for ``budget`` bytes is summed tile by tile (:mod:`ray_style.tiling`).
    """
    blend = list(blend_weights) if blend_weights else [1.0] * len(styles)
    if len(blend) != len(styles):
        raise InputError(f"{len(blend)} --style-blend-weights for {len(styles)} styles: give one per style")
    if sum(blend) <= 0 or min(blend) < 0:
        raise InputError("--style-blend-weights must be ≥ 0 and not all 0")
    targets: dict[str, Tensor] = {}
    for style, weight in zip(styles, blend):
        tiles = tiling.choose(model, style.shape[-2], style.shape[-1], budget)
        if tiles is None:
            statistics = {name: losses.gram_per_position(f) for name, f in model(style).items() if name in layers}
        else:
            statistics = {name: gram / tiles.positions(name) for name, gram in tiles.grams(model, style, layers).items()}
        for name in layers:
            term = statistics[name] * (weight / sum(blend))
            targets[name] = targets[name] + term if name in targets else term
    return targets


def initial_image(kind: str, content: Tensor, seed: int) -> Tensor:
    """``noise`` (the seed's white noise, uniform in [0, 1], from ``seed``) or ``content``."""
    if kind == "content":
        return content.clone()
    if kind == "noise":
        generator = torch.Generator().manual_seed(seed)
        return torch.rand(content.shape, generator=generator).to(content.device)
    raise InputError(f"unknown init '{kind}': use noise, content or an image path")


def resolve_precision(precision: str, device) -> str:
    """``auto`` → ``bf16`` on a CUDA GPU (the fastest objective measured: BENCHMARKS.md),
    ``fp32`` elsewhere; TF32 exists only on NVIDIA GPUs."""
    device = torch.device(device)
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    if precision == "tf32" and device.type != "cuda":
        return "fp32"
    return precision


def resolve_compile(compile: bool | None, device) -> bool:
    """``None`` (auto) → torch.compile on a CUDA GPU, eager elsewhere: on a CPU the first call
    costs more (8-18 s per shape) than a frame gains."""
    return torch.device(device).type == "cuda" if compile is None else bool(compile)


def resolve_graphs(graphs: bool | None, settings: StyleSettings, device) -> bool:
    """Whether L-BFGS steps replay as CUDA graphs: by default wherever they can (a CUDA GPU)."""
    return (settings.optimizer == "lbfgs" and torch.device(device).type == "cuda"
            and (graphs is None or graphs))


def _configure(precision: str, device: torch.device) -> None:
    if device.type == "cuda":  # process-wide switches: one actor renders on one device
        torch.backends.cudnn.allow_tf32 = precision in ("tf32", "bf16")
        # Under bf16 the only float32 products are Grams of bf16 features, which TF32 holds
        # exactly. The optimizer's own products ignore this switch (lbfgs.fp32_products).
        torch.backends.cuda.matmul.allow_tf32 = precision in ("tf32", "bf16")


_BF16_NETWORKS: "weakref.WeakKeyDictionary[VGGFeatures, VGGFeatures]" = weakref.WeakKeyDictionary()


def _network(model: VGGFeatures, precision: str) -> VGGFeatures:
    """The model computing in the precision's dtype: a bfloat16 copy, made once per model."""
    if precision != "bf16":
        return model
    if model not in _BF16_NETWORKS:
        _BF16_NETWORKS[model] = model.cast(torch.bfloat16)
    return _BF16_NETWORKS[model]


def _active_temporal(temporal: Temporal | None) -> tuple | None:
    """``temporal``'s terms unless it weighs nothing (a float weight of 0)."""
    if temporal is None or (not torch.is_tensor(temporal.weight) and temporal.weight <= 0):
        return None
    return temporal.terms()


class Objective:
    """``x ↦ (L, L_content, L_style)`` per batch element, for fixed targets.

    Under ``precision="bf16"`` the VGG runs in bfloat16 (a bf16 copy of its convolutions);
    Gram matrices and losses are computed in float32. On a GPU the image enters the network
    channels-last, the layout tensor cores want. ``static=True`` keeps the targets in tensors
    of this objective's own that :meth:`load` refills in place: what a captured CUDA graph reads.
    With ``tiles`` (a :class:`tiling.Tiling` of the image's shape) the network runs tile by
    tile, eagerly, with the whole frame's loss and gradient.
    """

    def __init__(self, model: VGGFeatures, settings: StyleSettings, content: Tensor | None,
                 style_grams: dict[str, Tensor], temporal: Temporal | None = None, *, static: bool = False,
                 tiles: tiling.Tiling | None = None):
        self.model, self.settings, self.static, self.tiles = model, settings, static, tiles
        device = model.mean.device
        self.precision = resolve_precision(settings.precision, device)
        self.compiled = resolve_compile(settings.compile, device) and tiles is None
        _configure(self.precision, device)
        self.network = _network(model, self.precision)
        self.channels_last = device.type == "cuda"
        self.layer_weights = settings.layer_weights()
        self.alpha = settings.content_weight if content is not None else 0.0
        self.beta = settings.style_weight if self.layer_weights else 0.0
        if self.alpha is None or self.beta is None:
            raise ValueError("resolve α and β first (resolve_loss_weights)")
        self.content_targets: dict[str, Tensor] = {}
        self.style_grams: dict[str, Tensor] = {}
        self.temporal = None
        self._fill(content, style_grams, temporal, first=True)

    def load(self, content: Tensor | None, style_grams: dict[str, Tensor], temporal: Temporal | None = None) -> None:
        """Another frame's targets (same shapes, same kinds of terms) into this static
        objective's tensors, in place."""
        if not self.static:
            raise ValueError("load() refills a static objective; make a new Objective instead")
        self._fill(content, style_grams, temporal, first=False)

    def _fill(self, content, style_grams, temporal, first: bool) -> None:
        with torch.no_grad():
            if content is None or not self.settings.content_layers:
                targets = {}
            elif self.tiles is not None:
                targets = self.tiles.features(self.network, content, self.settings.content_layers)
            else:
                targets = {name: f for name, f in self.features(content).items() if name in self.settings.content_layers}
        temporal = _active_temporal(temporal)  # (target, mask, weight): what the objective function reads
        if not self.static:
            self.content_targets, self.style_grams, self.temporal = targets, style_grams, temporal
            return
        if temporal is not None:  # fixed shapes and a tensor weight, so another frame's can be copied in
            batch = temporal[0].shape[0] if content is None else content.shape[0]
            warped, mask, weight = temporal
            temporal = (warped.expand(batch, -1, -1, -1), mask.expand(batch, -1, -1, -1),
                        torch.as_tensor(weight, dtype=torch.float32, device=warped.device).expand(batch))
        if first:
            self.content_targets = targets
            self.style_grams = {name: gram.clone() for name, gram in style_grams.items()}
            self.temporal = None if temporal is None else tuple(part.clone() for part in temporal)
            return
        if targets.keys() != self.content_targets.keys() or (temporal is None) != (self.temporal is None) \
                or style_grams.keys() != self.style_grams.keys():
            raise ValueError("load(): another kind of frame than this objective was made for")
        for mine, new in [*((self.content_targets[k], targets[k]) for k in targets),
                          *((self.style_grams[k], style_grams[k]) for k in style_grams),
                          *zip(self.temporal or (), temporal or ())]:
            mine.copy_(new)

    def features(self, image: Tensor) -> dict[str, Tensor]:
        return _features(self.network, image, self.channels_last)

    def __call__(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        if self.tiles is not None:
            return _tiled_terms(self, image)
        terms = _compiled_terms() if self.compiled else _terms
        return terms(self.network, image, self.content_targets, self.style_grams, self.layer_weights, self.alpha,
                     self.beta, self.settings.tv_weight, self.temporal, self.channels_last)


def _features(network: VGGFeatures, image: Tensor, channels_last: bool) -> dict[str, Tensor]:
    if channels_last:
        image = image.contiguous(memory_format=torch.channels_last)
    return network(image)


def _terms(network, image, content_targets, style_grams, layer_weights, alpha, beta, tv_weight, temporal,
           channels_last) -> tuple[Tensor, Tensor, Tensor]:
    """The objective as one pure function of tensors (what torch.compile compiles)."""
    features = _features(network, image, channels_last)
    zero = image.new_zeros(image.shape[0], dtype=torch.float32)
    content = sum((losses.content_loss(features[name], target) for name, target in content_targets.items()), zero)
    style = losses.style_loss(features, style_grams, layer_weights) if layer_weights and beta else zero
    tv = losses.tv_loss(image) if tv_weight else zero
    total = losses.total_loss(content, style, tv, alpha, beta, tv_weight)
    if temporal is not None:
        warped, mask, weight = temporal
        total = total + weight * losses.temporal_loss(image, warped, mask)
    return total, content, style


def _tiled_terms(objective: Objective, image: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`_terms` with the network's part summed over tiles; the pixel terms (TV, temporal)
    are cheap and are computed on the whole image."""
    total, content, style = objective.tiles.terms(objective.network, image, objective.content_targets,
                                                  objective.style_grams, objective.layer_weights, objective.alpha,
                                                  objective.beta)
    if objective.settings.tv_weight:
        total = total + objective.settings.tv_weight * losses.tv_loss(image)
    if objective.temporal is not None:
        warped, mask, weight = objective.temporal
        total = total + weight * losses.temporal_loss(image, warped, mask)
    return total, content, style


_COMPILED: dict[str, Callable] = {}
# torch.compile backend; benchmarks/gpu.py --quick uses "aot_eager" (the same tracing, no code generation)
COMPILE_BACKEND = "inductor"
RECOMPILE_LIMIT = 64  # compiled variants per process: one per image shape, batch and kind of frame


def inductor_cache_dir() -> Path:
    """Where compiled kernels are kept: a stable per-user directory (``$XDG_CACHE_HOME`` or
    ``~/.cache``), shared by every actor and job on a machine and kept across reboots."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ray_style" / "inductor"


def _share_compiled_kernels() -> None:
    """Point Inductor's on-disk caches (FX graphs, AOTAutograd, Triton kernels; on by default)
    at :func:`inductor_cache_dir` unless the user chose a directory: a new actor then loads
    what another compiled instead of compiling again."""
    if "TORCHINDUCTOR_CACHE_DIR" in os.environ:
        return
    path = inductor_cache_dir()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:  # a read-only home: Inductor's default under the temp directory stays
        return
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(path)


def _compiled_terms(backend: str | None = None):
    """One compiled objective per process: frames of one shape reuse its kernels (dynamo
    guards on shapes and settings, not on the tensors' values). The first call of each shape
    compiles (tens of seconds on a GPU with a cold cache); ``benchmarks/gpu.py`` measures
    it cold and with the on-disk cache warm."""
    backend = backend or COMPILE_BACKEND
    if backend not in _COMPILED:
        _share_compiled_kernels()
        config = torch._dynamo.config
        limit = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"
        setattr(config, limit, max(getattr(config, limit), RECOMPILE_LIMIT))
        _COMPILED[backend] = torch.compile(_terms, dynamic=False, backend=backend)
    return _COMPILED[backend]


def _budgets(iters, batch: int, default: int) -> list[int]:
    if iters is None:
        return [default] * batch
    if isinstance(iters, int):
        return [iters] * batch
    if len(iters) != batch:
        raise ValueError(f"{len(iters)} budgets for a batch of {batch}")
    return [int(i) for i in iters]


@dataclass
class _Engine:
    """A static objective and the L-BFGS minimizer (with its captured step) for one kind of frame."""

    objective: Objective
    minimizer: lbfgs.Minimizer


_ENGINES: "collections.OrderedDict[tuple, _Engine]" = collections.OrderedDict()
MAX_ENGINES = 4  # each holds a captured step's memory (activations, history): few shapes at once


def release_graphs() -> None:
    """Drop every captured L-BFGS step and its memory (e.g. before retrying after out of memory)."""
    _ENGINES.clear()


def _loss_of(objective: Objective) -> lbfgs.LossFn:
    return lambda image: objective(image)[0]


def _engine(model: VGGFeatures, settings: StyleSettings, problem: Problem, graphs: bool,
            tiles: tiling.Tiling | None = None) -> _Engine:
    """The objective and minimizer for this frame: new ones, or with ``graphs`` the cached
    pair for frames of this shape and kind, refilled with this frame's targets."""
    init, content, style_grams, temporal = problem.init, problem.content, problem.style_grams, problem.temporal

    def make(static: bool) -> _Engine:
        objective = Objective(model, settings, content, style_grams, temporal, static=static, tiles=tiles)
        return _Engine(objective, lbfgs.Minimizer(_loss_of(objective), init.shape, memory=settings.lbfgs_history,
                                                  bounds=(0.0, 1.0), device=init.device, graphs=static))

    if not graphs:
        return make(False)
    # What the captured computation depends on; iters, seed, init, size and scales do not.
    shape_settings = dataclasses.replace(settings, iters=1, seed=0, init="content", size=MIN_SIZE, scales=1)
    key = (id(model), str(init.device), tuple(init.shape), shape_settings, content is None,
           _active_temporal(temporal) is None, tuple((name, tuple(g.shape)) for name, g in sorted(style_grams.items())))
    engine = _ENGINES.pop(key, None)
    if engine is None:
        engine = make(True)
    else:
        engine.objective.load(content, style_grams, temporal)
    _ENGINES[key] = engine
    while len(_ENGINES) > MAX_ENGINES:
        _ENGINES.popitem(last=False)
    return engine


def _final_terms(objective: Objective, image: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The objective's terms at ``image``, evaluated as during the optimization (an input that
    requires grad): a compiled objective then runs the kernels it has, instead of compiling
    a no-grad variant for one call per frame."""
    with torch.enable_grad():
        terms = objective(image.detach().requires_grad_(True))
    return tuple(term.detach() for term in terms)


def stylize_batch(model: VGGFeatures, settings: StyleSettings, problem: Problem, *,
                  progress: ProgressCallback | None = None, report_every: int = 10, graphs: bool | None = None,
                  snapshot_every: int | None = None) -> list[FrameResult]:
    """Optimize the ``B`` images of ``problem.init`` ``(B, 3, H, W)`` independently, in one
    batched forward per evaluation. ``snapshot_every``: also report the current images every
    that many evaluations (``Progress.image``, neural-style's ``-save_iter``).

    ``problem.content=None`` optimizes style alone; an empty ``settings.style_layers`` content
    alone (the seed's reconstructions). The loop never reads a tensor on the host except to
    report progress every ``report_every`` evaluations (only when ``progress`` is given).
    Pixels stay in [0, 1]: L-BFGS projects its steps onto the box, so the image it optimizes
    is the image it delivers. On a CUDA GPU (unless ``graphs=False``) its steps replay as a
    CUDA graph captured once per shape and batch (:class:`lbfgs.Minimizer`); results are the
    same up to float rounding. Raises :class:`FrameError` on a non-finite loss.
    """
    started = time.perf_counter()
    init = problem.init
    budgets = _budgets(problem.iters, init.shape[0], settings.iters)
    tiles = choose_tiles(model, settings, init)  # tiled steps run eagerly: no graph to capture
    total_evals = max(budgets)

    def report(evaluations: int, losses_now: Tensor, image=None) -> None:
        snapshot = bool(snapshot_every) and image is not None and evaluations % snapshot_every == 0
        if progress and (evaluations % report_every == 0 or evaluations == total_evals or snapshot):
            progress(Progress(evaluations, total_evals, losses_now.sum().item(),
                              image().detach().clone() if snapshot else None))

    if settings.optimizer == "lbfgs":
        count = [1]

        def on_step(state: lbfgs.LBFGSState) -> None:
            count[0] += 1
            report(count[0], state.f, lambda: state.x.view_as(init))

        engine = _engine(model, settings, problem, resolve_graphs(graphs, settings, init.device) and tiles is None,
                         tiles)
        objective = engine.objective
        state = engine.minimizer.run(init, total_evals, budget=budgets, on_step=on_step if progress else None)
        final = state.x.view_as(init).clone()  # the buffers serve the next frame
        counted = state.evaluated.clone()
    else:
        objective = Objective(model, settings, problem.content, problem.style_grams, problem.temporal, tiles=tiles)
        budget = torch.tensor(budgets, device=init.device)
        final, counted = _adam(_loss_of(objective), init, total_evals, budget, settings.learning_rate, report)

    total, content_value, style_value = (v.tolist() for v in _final_terms(objective, final))
    evaluations = counted.tolist()
    seconds = time.perf_counter() - started
    results = []
    for index in range(init.shape[0]):
        if not math.isfinite(total[index]):
            hint = " or --learning-rate" if settings.optimizer == "adam" else ""
            raise FrameError(f"loss is {total[index]} after {evaluations[index]} evaluations: lower "
                             f"--style-weight{hint}")
        results.append(FrameResult(final[index:index + 1].detach(), total[index], content_value[index],
                                   style_value[index], int(evaluations[index]), seconds))
    return results


def _adam(loss_fn, init: Tensor, evaluations: int, budget: Tensor, learning_rate: float,
          report) -> tuple[Tensor, Tensor]:
    """Adam on the image; each image keeps its best clamped evaluation within its budget.
    Returns the images and how many evaluations each one used."""
    image = init.detach().clone().requires_grad_(True)
    counted = torch.zeros(init.shape[0], dtype=torch.long, device=init.device)
    optimizer = torch.optim.Adam([image], lr=learning_rate)
    best_image = image.detach().clamp(0, 1)
    best_loss = torch.full((init.shape[0],), math.inf, device=init.device)
    for evaluation in range(evaluations):
        optimizer.zero_grad(set_to_none=True)
        values = loss_fn(image)
        values.sum().backward()
        with torch.no_grad():
            active = evaluation < budget
            counted += active
            better = (values.detach() < best_loss) & active
            best_loss = torch.where(better, values.detach(), best_loss)
            best_image = torch.where(better[:, None, None, None], image.detach().clamp(0, 1), best_image)
        report(evaluation + 1, values.detach(), lambda: image.clamp(0, 1))
        optimizer.step()
        with torch.no_grad():
            image.clamp_(0, 1)
    return best_image, counted


def stylize(model: VGGFeatures, settings: StyleSettings, problem: Problem, **options) -> FrameResult:
    """One image ``(1, 3, H, W)``: :func:`stylize_batch` with a batch of one (same options)."""
    return stylize_batch(model, settings, problem, **options)[0]


COARSEST_SIDE = 16  # VGG's four poolings before relu5_1 need 16 px on each side


def scale_shapes(height: int, width: int, scales: int) -> list[tuple[int, int]]:
    """Coarse-to-fine image shapes, coarsest first, each half the next, ending at full size;
    scales with a side under 16 px are left out."""
    shapes = [(round(height / 2 ** k), round(width / 2 ** k)) for k in reversed(range(scales))]
    return [shape for shape in shapes[:-1] if min(shape) >= COARSEST_SIDE] + shapes[-1:]


def _resize(image: Tensor, shape: tuple[int, int]) -> Tensor:
    if tuple(image.shape[-2:]) == shape:
        return image
    return F.interpolate(image, shape, mode="bilinear", align_corners=False, antialias=True).clamp(0, 1)


def stylize_coarse_to_fine(model: VGGFeatures, settings: StyleSettings, problem: Problem, *,
                           progress: ProgressCallback | None = None, **options) -> FrameResult:
    """``settings.scales`` rounds of :func:`stylize` at doubling sizes, each starting from the
    previous result upsampled (Gatys et al. 2017, "Controlling Perceptual Factors"): the
    coarse rounds settle the large-scale layout cheaply. Every round gets the problem's budget;
    the result counts every evaluation. β follows the area (see :func:`resolve_loss_weights`)
    so every round strikes the same balance.
    """
    budget = settings.iters if problem.iters is None else problem.iters
    init = problem.init
    shapes = scale_shapes(init.shape[-2], init.shape[-1], settings.scales)
    full_area = init.shape[-2] * init.shape[-1]
    image, spent, seconds, result = init, 0, 0.0, None
    for shape in shapes:
        area = shape[0] * shape[1] / full_area
        scaled = dataclasses.replace(settings, style_weight=settings.style_weight * area)
        offset = spent

        def shifted(p: Progress, offset=offset) -> None:
            progress(Progress(offset + p.evaluation, budget * len(shapes), p.loss, p.image))

        round_problem = dataclasses.replace(problem, init=image, iters=budget).scaled(shape)
        result = stylize(model, scaled, round_problem, progress=shifted if progress else None, **options)
        image, spent, seconds = result.image, spent + result.evaluations, seconds + result.seconds
    return dataclasses.replace(result, evaluations=spent, seconds=seconds)


def resolve_device(requested: str = "auto", *, where: str = "here", holds_gpu: bool = False) -> torch.device:
    """The one rule for ``--device`` (auto, cpu, cuda or cuda:N), by where the work runs:

    - ``here`` (a command that renders in this process): auto is CUDA when torch sees a GPU,
      else the CPU; cuda with no CUDA device visible is an :class:`InputError`.
    - ``driver`` (the video job's own work: style targets and the report): this machine's
      GPU when it has one and the job does not say cpu, else the CPU; never an error (the
      frames render on the workers).
    - ``worker`` (a Ray actor): auto is CUDA when the actor holds a GPU; a worker asked for a
      GPU where torch sees none reports the CPU (the job refuses a device it was not recorded
      with: see :func:`render_facts`).
    """
    from .settings import check_device

    check_device(requested)
    cuda = torch.cuda.is_available()
    if requested == "cpu":
        return torch.device("cpu")
    if where == "here":
        if requested == "auto":
            return torch.device("cuda" if cuda else "cpu")
        if not cuda:
            raise InputError(f"--device {requested}: no CUDA GPU is visible here; use --device cpu")
        return torch.device(requested)
    if where == "driver":
        return torch.device(requested if requested != "auto" else "cuda") if cuda else torch.device("cpu")
    if requested.startswith("cuda") or holds_gpu:
        return torch.device(requested if requested.startswith("cuda") else "cuda") if cuda else torch.device("cpu")
    return torch.device("cuda" if cuda else "cpu")


def render_facts(settings: StyleSettings, device, threads: int | None) -> dict:
    """What decides a frame's bytes beyond the settings: the device kind, the precision and
    the compile and CUDA-graph switches it resolves to there, and on a CPU the torch thread
    count (the order of its sums). A job records them with every frame and never mixes two."""
    device = torch.device(device)
    facts = {"device": device.type, "precision": resolve_precision(settings.precision, device),
             "compile": resolve_compile(settings.compile, device),
             "graphs": resolve_graphs(None, settings, device)}
    if device.type == "cpu":
        facts["threads"] = threads
    return facts


def prepare_styles(styles: list[np.ndarray], size: int, scale: float, device) -> list[Tensor]:
    """Artworks resized so their long edge is ``scale × size``, as tensors."""
    long_edge = _style_edge(size, scale)
    return [images.to_tensor(images.resize_long_edge(style, long_edge)).to(device) for style in styles]


def _style_edge(size: int, scale: float) -> int:
    return max(16, round(size * scale))


def check_image_sizes(content_size: tuple[int, int], styles: list[np.ndarray], settings: StyleSettings,
                      names=()) -> None:
    """:class:`InputError` before any work when the content (``(w, h)`` before resizing) or an
    artwork, resized as they will be, is too small for the deepest layer it goes through."""
    width, height = content_size
    check_size(lambda size: images.fit_long_edge(width, height, size), settings.size,
               (*settings.content_layers, *settings.style_layers), "images")
    need, long_edge = min_side(settings.style_layers), _style_edge(settings.size, settings.style_scale)
    for index, art in enumerate(styles):
        w, h = images.fit_long_edge(art.shape[1], art.shape[0], long_edge)
        if min(w, h) < need:
            name = names[index] if index < len(names) else f"style image {index + 1}"
            raise InputError(f"{name} ({art.shape[1]}x{art.shape[0]}) is {w}x{h} px at --size {settings.size} × "
                             f"--style-scale {settings.style_scale:g}, too small for the deepest style layer (its "
                             f"poolings need {need} px on each side): use a larger --style-scale or a wider artwork")


def check_memory(size: tuple[int, int], settings: StyleSettings, arch: str) -> None:
    """:class:`InputError` before any work when ``--max-memory`` cannot hold a ``(w, h)`` image
    even in the smallest tiles (without it, a GPU worker decides from its own free memory)."""
    if settings.max_memory is None:
        return
    dtype_bytes = 2 if settings.precision == "bf16" else 4
    history = settings.lbfgs_history if settings.optimizer == "lbfgs" else 2
    tiling.choose((arch, (*settings.content_layers, *settings.style_layers)), size[1], size[0],
                  memory_budget(settings, "cpu"), dtype_bytes=dtype_bytes, history=history)


def stylize_image(content: np.ndarray, styles: list[np.ndarray], settings: StyleSettings, weights: Weights,
                  *, init_image: np.ndarray | None = None, device="cpu",
                  progress: ProgressCallback | None = None,
                  snapshot_every: int | None = None) -> tuple[np.ndarray, FrameResult]:
    """The still-image pipeline on arrays: ``(H, W, 3)`` uint8 in, stylized uint8 out;
    ``snapshot_every`` hands ``progress`` the image every that many evaluations."""
    if not styles:
        raise InputError("give at least one style image")
    content_small = images.resize_long_edge(content, settings.validate().size)
    settings = resolve_loss_weights(settings, weights, content_small.shape[0] * content_small.shape[1])
    device = torch.device(device)
    torch.manual_seed(settings.seed)
    model = build_model(weights, settings, device)
    content_tensor = images.to_tensor(content_small).to(device)
    grams = style_targets(model, prepare_styles(styles, settings.size, settings.style_scale, device),
                          settings.style_layers, settings.style_blend_weights, memory_budget(settings, device))
    if init_image is not None:
        init = images.to_tensor(images.resize(init_image, content_small.shape[1], content_small.shape[0])).to(device)
    else:
        init = initial_image(settings.init, content_tensor, settings.seed)
    result = stylize_coarse_to_fine(model, settings, Problem(init, content_tensor, grams), progress=progress,
                                    snapshot_every=snapshot_every)
    output = images.to_uint8(result.image)
    if settings.original_colors:
        output = images.transfer_colors(output, content_small)
    return output, result


__all__ = ["Progress", "FrameResult", "Temporal", "Problem", "render_facts", "Objective", "stylize", "stylize_batch", "stylize_coarse_to_fine", "scale_shapes",
           "resolve_precision", "resolve_compile", "resolve_graphs", "release_graphs", "inductor_cache_dir",
           "stylize_image", "style_targets", "initial_image", "build_model", "resolve_loss_weights", "resolve_device",
           "prepare_styles", "check_image_sizes", "check_memory", "memory_budget", "choose_tiles"]
