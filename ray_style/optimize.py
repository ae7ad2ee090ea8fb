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
from torch import Tensor

from . import images, losses
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


class _BudgetSpent(Exception):
    """Raised by the closure to end an optimizer exactly at its evaluation budget."""


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
    return model.to(device)


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


class Objective:
    """``x ↦ (L, L_content, L_style)`` for fixed targets; the same code for every optimizer."""

    def __init__(self, model: VGGFeatures, settings: StyleSettings, content: Tensor | None,
                 style_grams: dict[str, Tensor], temporal: tuple[Tensor, Tensor, float] | None = None):
        self.model, self.settings = model, settings
        self.temporal = temporal if temporal and temporal[2] > 0 else None  # (warped prev, mask, weight)
        self.layer_weights = settings.layer_weights()
        self.alpha = settings.content_weight if content is not None else 0.0
        self.beta = settings.style_weight if self.layer_weights else 0.0
        if self.alpha is None or self.beta is None:
            raise ValueError("resolve α and β first (resolve_loss_weights)")
        with torch.no_grad():
            self.content_targets = ({name: f for name, f in model(content).items() if name in settings.content_layers}
                                    if content is not None and settings.content_layers else {})
        self.style_grams = style_grams

    def __call__(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        features = self.model(image)
        zero = image.new_zeros(image.shape[0])
        content = sum((losses.content_loss(features[name], target) for name, target in self.content_targets.items()),
                      zero)
        style = (losses.style_loss(features, self.style_grams, self.layer_weights)
                 if self.layer_weights and self.beta else zero)
        tv = losses.tv_loss(image) if self.settings.tv_weight else zero
        total = losses.total_loss(content, style, tv, self.alpha, self.beta, self.settings.tv_weight)
        if self.temporal is not None:
            warped, mask, weight = self.temporal
            total = total + weight * losses.temporal_loss(image, warped, mask)
        return total, content, style


def stylize(model: VGGFeatures, settings: StyleSettings, init: Tensor, content: Tensor | None,
            style_grams: dict[str, Tensor], *, iters: int | None = None,
            progress: ProgressCallback | None = None, report_every: int = 10,
            temporal: tuple[Tensor, Tensor, float] | None = None) -> FrameResult:
    """Optimize ``init`` for ``iters`` loss evaluations (default ``settings.iters``).

    ``content=None`` optimizes style alone; an empty ``settings.style_layers`` content alone
    (the seed's reconstructions). Raises :class:`FrameError` on a non-finite loss.
    """
    started = time.perf_counter()
    total_evals = settings.iters if iters is None else iters
    objective = Objective(model, settings, content, style_grams, temporal)
    image = init.detach().clone().requires_grad_(True)
    # The best image evaluated so far, kept on the device without a host sync: a line search's
    # last trial point need not be its best, and the budget may end in the middle of one.
    best_image, best_loss = image.detach().clone(), torch.full((), math.inf, device=image.device)
    evaluations = 0

    def closure() -> Tensor:
        nonlocal evaluations, best_image, best_loss
        if evaluations == total_evals:
            raise _BudgetSpent
        optimizer.zero_grad(set_to_none=True)
        loss = objective(image)[0].sum()
        loss.backward()
        evaluations += 1
        value = loss.detach()
        better = value < best_loss
        best_image = torch.where(better, image.detach(), best_image)
        best_loss = torch.where(better, value, best_loss)
        # .item() synchronizes a GPU, so only every report_every evaluations.
        if evaluations % report_every == 0 or evaluations == total_evals:
            reported = value.item()
            if not math.isfinite(reported):
                raise FrameError(f"loss became {reported} after {evaluations} evaluations: lower "
                                 "--style-weight or the learning rate, or use --optimizer lbfgs")
            if progress:
                progress(Progress(evaluations, total_evals, reported))
        return loss

    try:
        if settings.optimizer == "lbfgs":
            # Strong-Wolfe line search: without it, the first quasi-Newton step is estimated from
            # a tiny step whose gradient change is float32 noise at Caffe-scale losses, and
            # diverges to inf (seen at 64-128 px). Tolerances off: we count evaluations ourselves,
            # and with a content init torch's tolerance_grad would stop at once (DESIGN.md §6).
            optimizer = torch.optim.LBFGS([image], lr=1, max_iter=total_evals + 1, max_eval=2 * total_evals + 25,
                                          tolerance_grad=-1, tolerance_change=-1, history_size=100,
                                          line_search_fn="strong_wolfe")
            optimizer.step(closure)
        else:
            optimizer = torch.optim.Adam([image], lr=settings.learning_rate)
            for _ in range(total_evals):
                optimizer.step(closure)
    except _BudgetSpent:
        pass

    with torch.no_grad():
        final = best_image.clamp(0, 1)
        total, content_value, style_value = (v.sum().item() for v in objective(final))
    if not math.isfinite(total):
        raise FrameError(f"loss is {total} after {evaluations} evaluations: lower --style-weight")
    return FrameResult(final, total, content_value, style_value, evaluations, time.perf_counter() - started)


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
    result = stylize(model, settings, init, content_tensor, grams, progress=progress)
    output = images.to_uint8(result.image)
    if settings.original_colors:
        output = images.transfer_colors(output, content_small)
    return output, result


__all__ = ["Progress", "FrameResult", "Objective", "stylize", "stylize_image", "style_targets",
           "initial_image", "build_model", "resolve_loss_weights", "pick_device", "prepare_styles"]
