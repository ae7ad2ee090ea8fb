"""One frame: targets in, an initial image in, L-BFGS or Adam, an image out.

No file I/O, no Ray, no printing: progress leaves through a callback. ``stylize_image`` is
the whole still-image pipeline on arrays; ``stylize`` is the optimizer loop that video
workers call with precomputed style targets.
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from . import images, lbfgs, losses
from .config import StyleSettings
from .errors import FrameError, InputError
from .features import VGGFeatures
from .weights import Weights


@dataclass(frozen=True)
class Progress:
    evaluation: int  # loss evaluations done so far
    total: int  # evaluations this frame will take
    loss: float  # total loss at the last evaluation


@dataclass(frozen=True)
class FrameResult:
    image: Tensor  # (1, 3, H, W) in [0, 1]
    loss: float  # L = α L_content + β L_style (+ TV) of the returned image
    content_loss: float  # L_content, unweighted
    style_loss: float  # L_style, unweighted
    evaluations: int
    seconds: float


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


@torch.no_grad()
def style_targets(model: VGGFeatures, styles: list[Tensor], layers, blend_weights=None) -> dict[str, Tensor]:
    """Blended ``A^l / M_a`` per style layer, ``{layer: (1, N, N)}`` (see losses.style_loss).

    Several artworks blend by a weighted mean of their Gram statistics, as neural-style does.
    """
    blend = list(blend_weights) if blend_weights else [1.0] * len(styles)
    if len(blend) != len(styles):
        raise InputError(f"{len(blend)} --style-blend-weights for {len(styles)} styles: give one per style")
    if sum(blend) <= 0 or min(blend) < 0:
        raise InputError("--style-blend-weights must be ≥ 0 and not all 0")
    targets: dict[str, Tensor] = {}
    for style, weight in zip(styles, blend):
        features = model(style)
        for name in layers:
            term = losses.gram_per_position(features[name]) * (weight / sum(blend))
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
    """``auto`` → ``tf32`` on a CUDA GPU, ``fp32`` elsewhere; TF32 exists only on NVIDIA GPUs."""
    device = torch.device(device)
    if precision == "auto":
        return "tf32" if device.type == "cuda" else "fp32"
    if precision == "tf32" and device.type != "cuda":
        return "fp32"
    return precision


def _configure(precision: str, device: torch.device) -> None:
    if device.type == "cuda":  # process-wide switches: one actor renders on one device
        torch.backends.cudnn.allow_tf32 = precision in ("tf32", "bf16")
        torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"  # Grams stay fp32 under bf16


class Objective:
    """``x ↦ (L, L_content, L_style)`` per batch element, for fixed targets.

    Under ``precision="bf16"`` only the VGG forward (and its backward) runs in bfloat16
    autocast; Gram matrices and losses are computed in float32 outside it. On a GPU the
    image enters the network channels-last, the layout tensor cores want.
    """

    def __init__(self, model: VGGFeatures, settings: StyleSettings, content: Tensor | None,
                 style_grams: dict[str, Tensor], temporal: tuple[Tensor, Tensor, Tensor | float] | None = None):
        self.model, self.settings = model, settings
        device = model.mean.device
        self.precision = resolve_precision(settings.precision, device)
        _configure(self.precision, device)
        self.channels_last = device.type == "cuda"
        # (warped prev, mask, weight); a weight may be a (B,) tensor, 0 for frames without one
        self.temporal = temporal if temporal is not None and (torch.is_tensor(temporal[2]) or temporal[2] > 0) else None
        self.layer_weights = settings.layer_weights()
        self.alpha = settings.content_weight if content is not None else 0.0
        self.beta = settings.style_weight if self.layer_weights else 0.0
        if self.alpha is None or self.beta is None:
            raise ValueError("resolve α and β first (resolve_loss_weights)")
        with torch.no_grad():
            self.content_targets = ({name: f for name, f in self.features(content).items()
                                     if name in settings.content_layers}
                                    if content is not None and settings.content_layers else {})
        self.style_grams = style_grams

    def features(self, image: Tensor) -> dict[str, Tensor]:
        return _features(self.model, image, self.channels_last, self.precision == "bf16")

    def __call__(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        terms = _compiled_terms() if self.settings.compile else _terms
        return terms(self.model, image, self.content_targets, self.style_grams, self.layer_weights, self.alpha,
                     self.beta, self.settings.tv_weight, self.temporal, self.channels_last, self.precision == "bf16")


def _features(model: VGGFeatures, image: Tensor, channels_last: bool, bf16: bool) -> dict[str, Tensor]:
    if channels_last:
        image = image.contiguous(memory_format=torch.channels_last)
    with torch.autocast(image.device.type, dtype=torch.bfloat16, enabled=bf16):
        return model(image)


def _terms(model, image, content_targets, style_grams, layer_weights, alpha, beta, tv_weight, temporal,
           channels_last, bf16) -> tuple[Tensor, Tensor, Tensor]:
    """The objective as one pure function of tensors (what ``--compile`` hands torch.compile)."""
    features = _features(model, image, channels_last, bf16)
    zero = image.new_zeros(image.shape[0], dtype=torch.float32)
    content = sum((losses.content_loss(features[name], target) for name, target in content_targets.items()), zero)
    style = losses.style_loss(features, style_grams, layer_weights) if layer_weights and beta else zero
    tv = losses.tv_loss(image) if tv_weight else zero
    total = losses.total_loss(content, style, tv, alpha, beta, tv_weight)
    if temporal is not None:
        warped, mask, weight = temporal
        total = total + weight * losses.temporal_loss(image, warped, mask)
    return total, content, style


_COMPILED: list = []


def _compiled_terms():
    """One compiled objective per process: frames of one shape reuse its kernels (dynamo
    guards on shapes and settings, not on the tensors' values)."""
    if not _COMPILED:
        _COMPILED.append(torch.compile(_terms, dynamic=False))
    return _COMPILED[0]


def _budgets(iters, batch: int, default: int) -> list[int]:
    if iters is None:
        return [default] * batch
    if isinstance(iters, int):
        return [iters] * batch
    if len(iters) != batch:
        raise ValueError(f"{len(iters)} budgets for a batch of {batch}")
    return [int(i) for i in iters]


def stylize_batch(model: VGGFeatures, settings: StyleSettings, init: Tensor, content: Tensor | None,
                  style_grams: dict[str, Tensor], *, iters: int | list[int] | None = None,
                  progress: ProgressCallback | None = None, report_every: int = 10,
                  temporal: tuple[Tensor, Tensor, Tensor | float] | None = None) -> list[FrameResult]:
    """Optimize the ``B`` images of ``init`` ``(B, 3, H, W)`` independently, in one batched
    forward per evaluation; ``iters`` is one evaluation budget or one per image.

    ``content=None`` optimizes style alone; an empty ``settings.style_layers`` content alone
    (the seed's reconstructions). The loop never reads a tensor on the host except to report
    progress every ``report_every`` evaluations (only when ``progress`` is given). Pixels stay
    in [0, 1]: L-BFGS projects its steps onto the box, so the image it optimizes is the image
    it delivers. Raises :class:`FrameError` on a non-finite loss.
    """
    started = time.perf_counter()
    budgets = _budgets(iters, init.shape[0], settings.iters)
    total_evals = max(budgets)
    objective = Objective(model, settings, content, style_grams, temporal)
    budget = torch.tensor(budgets, device=init.device)

    def loss_fn(image: Tensor) -> Tensor:
        return objective(image)[0]

    def report(evaluations: int, losses_now: Tensor) -> None:
        if progress and (evaluations % report_every == 0 or evaluations == total_evals):
            progress(Progress(evaluations, total_evals, losses_now.sum().item()))

    if settings.optimizer == "lbfgs":
        count = [1]

        def on_step(state: lbfgs.LBFGSState) -> None:
            count[0] += 1
            report(count[0], state.f)

        state = lbfgs.minimize(loss_fn, init, total_evals, memory=settings.lbfgs_history, budget=budget,
                               bounds=(0.0, 1.0), on_step=on_step if progress else None)
        final = state.x.view_as(init)
    else:
        final = _adam(loss_fn, init, total_evals, budget, settings.learning_rate, report)

    with torch.no_grad():
        total, content_value, style_value = (v.tolist() for v in objective(final))
    seconds = time.perf_counter() - started
    results = []
    for index, evaluations in enumerate(budgets):
        if not math.isfinite(total[index]):
            hint = " or --learning-rate" if settings.optimizer == "adam" else ""
            raise FrameError(f"loss is {total[index]} after {evaluations} evaluations: lower --style-weight{hint}")
        results.append(FrameResult(final[index:index + 1].detach(), total[index], content_value[index],
                                   style_value[index], evaluations, seconds))
    return results


def _adam(loss_fn, init: Tensor, evaluations: int, budget: Tensor, learning_rate: float, report) -> Tensor:
    """Adam on the image; each image keeps its best clamped evaluation within its budget."""
    image = init.detach().clone().requires_grad_(True)
    optimizer = torch.optim.Adam([image], lr=learning_rate)
    best_image = image.detach().clamp(0, 1)
    best_loss = torch.full((init.shape[0],), math.inf, device=init.device)
    for evaluation in range(evaluations):
        optimizer.zero_grad(set_to_none=True)
        values = loss_fn(image)
        values.sum().backward()
        with torch.no_grad():
            better = (values.detach() < best_loss) & (evaluation < budget)
            best_loss = torch.where(better, values.detach(), best_loss)
            best_image = torch.where(better[:, None, None, None], image.detach().clamp(0, 1), best_image)
        report(evaluation + 1, values.detach())
        optimizer.step()
        with torch.no_grad():
            image.clamp_(0, 1)
    return best_image


def stylize(model: VGGFeatures, settings: StyleSettings, init: Tensor, content: Tensor | None,
            style_grams: dict[str, Tensor], *, iters: int | None = None,
            progress: ProgressCallback | None = None, report_every: int = 10,
            temporal: tuple[Tensor, Tensor, float] | None = None) -> FrameResult:
    """One image ``(1, 3, H, W)``: :func:`stylize_batch` with a batch of one."""
    return stylize_batch(model, settings, init, content, style_grams, iters=iters, progress=progress,
                         report_every=report_every, temporal=temporal)[0]


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


def stylize_coarse_to_fine(model: VGGFeatures, settings: StyleSettings, init: Tensor, content: Tensor | None,
                           style_grams: dict[str, Tensor], *, iters: int | None = None,
                           progress: ProgressCallback | None = None, report_every: int = 10,
                           temporal: tuple[Tensor, Tensor, float] | None = None) -> FrameResult:
    """``settings.scales`` rounds of :func:`stylize` at doubling sizes, each starting from the
    previous result upsampled (Gatys et al. 2017, "Controlling Perceptual Factors"): the
    coarse rounds settle the large-scale layout cheaply. Every round gets ``iters``
    evaluations; the result counts all of them. β follows the area (see
    :func:`resolve_loss_weights`) so every round strikes the same balance.
    """
    budget = settings.iters if iters is None else iters
    shapes = scale_shapes(init.shape[-2], init.shape[-1], settings.scales)
    full_area = init.shape[-2] * init.shape[-1]
    image, spent, seconds, result = init, 0, 0.0, None
    for shape in shapes:
        area = shape[0] * shape[1] / full_area
        scaled = dataclasses.replace(settings, style_weight=settings.style_weight * area)
        round_temporal = (None if temporal is None else
                          (_resize(temporal[0], shape), _resize(temporal[1], shape), temporal[2]))
        offset = spent

        def shifted(p: Progress, offset=offset) -> None:
            progress(Progress(offset + p.evaluation, budget * len(shapes), p.loss))

        result = stylize(model, scaled, _resize(image, shape), None if content is None else _resize(content, shape),
                         style_grams, iters=budget, progress=shifted if progress else None, report_every=report_every,
                         temporal=round_temporal)
        image, spent, seconds = result.image, spent + result.evaluations, seconds + result.seconds
    return dataclasses.replace(result, evaluations=spent, seconds=seconds)


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise InputError(f"unknown device '{name}': use auto, cpu or cuda[:N] ({error})") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {name}: no CUDA GPU is visible here; use --device cpu")
    return device


def prepare_styles(styles: list[np.ndarray], size: int, scale: float, device) -> list[Tensor]:
    """Artworks resized so their long edge is ``scale × size``, as tensors."""
    long_edge = max(16, round(size * scale))
    return [images.to_tensor(images.resize_long_edge(style, long_edge)).to(device) for style in styles]


def stylize_image(content: np.ndarray, styles: list[np.ndarray], settings: StyleSettings, weights: Weights,
                  *, init_image: np.ndarray | None = None, device="cpu",
                  progress: ProgressCallback | None = None) -> tuple[np.ndarray, FrameResult]:
    """The still-image pipeline on arrays: ``(H, W, 3)`` uint8 in, stylized uint8 out."""
    if not styles:
        raise InputError("give at least one style image")
    content_small = images.resize_long_edge(content, settings.validate().size)
    settings = resolve_loss_weights(settings, weights, content_small.shape[0] * content_small.shape[1])
    device = torch.device(device)
    torch.manual_seed(settings.seed)
    model = build_model(weights, settings, device)
    content_tensor = images.to_tensor(content_small).to(device)
    grams = style_targets(model, prepare_styles(styles, settings.size, settings.style_scale, device),
                          settings.style_layers, settings.style_blend_weights)
    if init_image is not None:
        init = images.to_tensor(images.resize(init_image, content_small.shape[1], content_small.shape[0])).to(device)
    else:
        init = initial_image(settings.init, content_tensor, settings.seed)
    result = stylize_coarse_to_fine(model, settings, init, content_tensor, grams, progress=progress)
    output = images.to_uint8(result.image)
    if settings.original_colors:
        output = images.transfer_colors(output, content_small)
    return output, result


__all__ = ["Progress", "FrameResult", "Objective", "stylize", "stylize_batch", "stylize_coarse_to_fine", "scale_shapes", "resolve_precision", "stylize_image", "style_targets",
           "initial_image", "build_model", "resolve_loss_weights", "pick_device", "prepare_styles"]
