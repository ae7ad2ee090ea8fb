"""Exact tiling: a frame larger than one device's memory optimized in tiles, with the same
loss and the same gradient as the whole frame (up to the order of float sums).

Why it can be exact: the style loss (eq. 5) needs each layer's Gram matrix over the whole
frame, but a Gram matrix is a sum over positions, ``G = Σ_p f_p f_pᵀ``; the content loss
(eq. 1) is a sum over positions too. So every feature position is *owned* by one tile, and a
tile computes its owned positions exactly when its crop of the image reaches as far as their
receptive fields (the *halo*). One evaluation is then:

1. every tile, without gradients: the Gram matrices of its owned positions, summed over tiles;
2. ``∂L/∂G`` from the whole frame's Gram matrices (``2 (G − A) / (2 N M)²`` per layer, eq. 4);
3. every tile again, with gradients: backward of ``Σ_l ⟨∂L/∂G_l, G_l(owned)⟩ + α L_content(owned)``
   onto its crop; the crops' gradients are added into the frame's gradient.

Step 3 gives each owned position's exact share of the gradient, and every position is owned
once, so the sum is the whole frame's gradient. Crop origins lie on multiples of the network's
total stride, so pooling windows fall where they fall in the whole frame, and a crop ending at
the frame's edge pads it exactly as the whole frame does. A tiled evaluation costs one extra
forward pass per tile (step 1) plus the halos' share (measured in BENCHMARKS.md); its peak
memory is one crop's activations instead of the frame's.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from . import losses
from .errors import InputError
from .features import VGGFeatures, channels, forward_order

GIB = 1 << 30
# Measured peak / modelled bytes of one evaluation on a CPU (benchmarks/tiling.py): 1.25-1.3
# whole, up to 1.65 for a tile (its two passes, the whole frame's gradient and targets beside
# it): what autograd and the allocator keep beyond the activations the model counts.
SAFETY = 1.75
DEVICE_SHARE = 0.9  # of a GPU's free memory, when no --max-memory is given


@dataclass(frozen=True)
class Reach:
    """Where a unit of one layer looks in the image: unit ``p`` (per axis) sees pixels
    ``[jump·p + low, jump·p + high]``."""

    jump: int
    low: int
    high: int


class Network(NamedTuple):
    """What tiling needs to know of a network: its layers in order and those the losses read."""

    order: tuple[str, ...]
    layers: tuple[str, ...]

    @classmethod
    def of(cls, model) -> "Network":
        """A :class:`VGGFeatures`, or ``(arch, layers)`` before any weights are loaded."""
        if isinstance(model, Network):
            return model
        if isinstance(model, tuple):
            arch, layers = model
            return cls(tuple(forward_order(arch, layers)), tuple(layers))
        return cls(tuple(model._order), tuple(model.layers))


def reaches(model) -> dict[str, Reach]:
    """Every named output of ``model``'s network (see :meth:`Network.of`), in forward order, with
    its :class:`Reach` (3×3 convolutions with padding 1 widen it by a unit each side, 2×2
    poolings double the jump)."""
    jump, low, high, out = 1, 0, 0, {}
    for name in Network.of(model).order:
        if name.startswith("conv"):
            low, high = low - jump, high + jump
        elif name.startswith("pool"):
            high += jump
            jump *= 2
        out[name] = Reach(jump, low, high)
    return out


@dataclass(frozen=True)
class Span:
    """One tile along one axis: it owns pixels ``[core_start, core_end)`` and reads
    ``[crop_start, crop_end)``."""

    core_start: int
    core_end: int
    crop_start: int
    crop_end: int

    def owned(self, reach: Reach, length: int) -> slice:
        """The crop-local units this tile owns in a layer of that reach (the frame is
        ``length`` px along this axis)."""
        offset = self.crop_start // reach.jump
        whole = self.in_frame(reach, length)
        return slice(whole.start - offset, whole.stop - offset)

    def in_frame(self, reach: Reach, length: int) -> slice:
        """The same units, indexed in the whole frame's layer."""
        end = length // reach.jump if self.core_end == length else self.core_end // reach.jump
        return slice(self.core_start // reach.jump, end)


def halos(model: VGGFeatures) -> tuple[int, int, int]:
    """``(stride, before, after)``: the total stride of the layers the losses read and the
    halo widths (multiples of it) a crop needs before and after its core."""
    wanted = [reach for name, reach in reaches(model).items() if name in Network.of(model).layers]
    stride = max(reach.jump for reach in wanted)
    before = max(-reach.low for reach in wanted)
    after = max(reach.high - reach.jump + 1 for reach in wanted)
    return stride, _round_up(before, stride), _round_up(after, stride)


def _round_up(value: int, multiple: int) -> int:
    return -(-max(value, 0) // multiple) * multiple


def spans(length: int, pieces: int, stride: int, before: int, after: int) -> list[Span]:
    """``length`` px cut into at most ``pieces`` cores whose borders are multiples of ``stride``."""
    units = max(1, length // stride)  # the remainder joins the last core
    pieces = max(1, min(pieces, units))
    cuts = [round(units * k / pieces) * stride for k in range(pieces)] + [length]
    return [Span(start, end, max(0, start - before), min(length, end + after)) for start, end in zip(cuts, cuts[1:])]


@dataclass(frozen=True)
class Tile:
    rows: Span
    cols: Span

    def crop(self, image: Tensor) -> Tensor:
        return image[..., self.rows.crop_start:self.rows.crop_end, self.cols.crop_start:self.cols.crop_end]

    def owned(self, features: Tensor, reach: Reach, height: int, width: int) -> Tensor:
        """The owned units of a crop's feature map."""
        return features[..., self.rows.owned(reach, height), self.cols.owned(reach, width)]

    def in_frame(self, features: Tensor, reach: Reach, height: int, width: int) -> Tensor:
        """The owned units of the whole frame's feature map (a view: assignable)."""
        return features[..., self.rows.in_frame(reach, height), self.cols.in_frame(reach, width)]


class Tiling:
    """A ``height × width`` frame cut into ``grid = (rows, cols)`` tiles for ``model``'s layers."""

    def __init__(self, model: VGGFeatures, height: int, width: int, grid: tuple[int, int]):
        self.height, self.width = height, width
        self.reaches = reaches(model)
        stride, before, after = halos(model)
        rows = spans(height, grid[0], stride, before, after)
        cols = spans(width, grid[1], stride, before, after)
        self.grid = (len(rows), len(cols))
        self.tiles = [Tile(r, c) for r in rows for c in cols]

    def __len__(self) -> int:
        return len(self.tiles)

    def largest_crop(self) -> tuple[int, int]:
        return (max(t.rows.crop_end - t.rows.crop_start for t in self.tiles),
                max(t.cols.crop_end - t.cols.crop_start for t in self.tiles))

    def _owned(self, tile: Tile, features: dict[str, Tensor], name: str) -> Tensor:
        return tile.owned(features[name], self.reaches[name], self.height, self.width)

    def positions(self, name: str) -> int:
        """``M_l``: the layer's positions in the whole frame."""
        jump = self.reaches[name].jump
        return (self.height // jump) * (self.width // jump)

    @torch.no_grad()
    def features(self, network: VGGFeatures, image: Tensor, names) -> dict[str, Tensor]:
        """The whole frame's feature maps of ``names`` (e.g. the content targets), assembled
        from the tiles' owned units."""
        out: dict[str, Tensor] = {}
        for tile in self.tiles:
            features = network(tile.crop(image))
            for name in names:
                owned = self._owned(tile, features, name)
                if name not in out:
                    jump = self.reaches[name].jump
                    out[name] = owned.new_empty(owned.shape[0], owned.shape[1], self.height // jump, self.width // jump)
                tile.in_frame(out[name], self.reaches[name], self.height, self.width).copy_(owned)
        return out

    @torch.no_grad()
    def grams(self, network: VGGFeatures, image: Tensor, names) -> dict[str, Tensor]:
        """Eq. 3 over the whole frame, ``{layer: (B, N, N)}`` float32: the tiles' sums."""
        out: dict[str, Tensor] = {}
        for tile in self.tiles:
            features = network(tile.crop(image))
            for name in names:
                term = losses.gram(self._owned(tile, features, name))
                out[name] = term if name not in out else out[name] + term
        return out

    def terms(self, network: VGGFeatures, image: Tensor, content_targets: dict[str, Tensor],
              style_grams: dict[str, Tensor], layer_weights: dict[str, float], alpha: float,
              beta: float) -> tuple[Tensor, Tensor, Tensor]:
        """``(α L_content + β L_style, L_content, L_style)`` per image, ``(B,)`` each, whose
        gradient with respect to ``image`` (if it requires one) is the whole frame's."""
        if not image.requires_grad:
            return _tiled_values(self, network, image, content_targets, style_grams, layer_weights, alpha, beta)[:3]
        total, content, style = _TiledLoss.apply(image, self, network, content_targets, style_grams, layer_weights,
                                                 alpha, beta)
        return total, content, style


def _style_coefficients(tiling: Tiling, grams: dict[str, Tensor], style_grams: dict[str, Tensor],
                        layer_weights: dict[str, float], beta: float) -> tuple[Tensor | None, dict[str, Tensor]]:
    """L_style (eq. 5) from the whole frame's Gram matrices, and ``β ∂L_style/∂G_l`` per layer."""
    style, coefficients = None, {}
    for name, weight in layer_weights.items():
        gram = grams[name]
        n, m = gram.shape[-1], tiling.positions(name)
        term = weight * losses.style_layer_loss(gram, style_grams[name] * m, n, m)
        style = term if style is None else style + term
        # eq. 4: ∂E/∂G = 2 (G − A) / (2 N M)²
        coefficients[name] = (beta * weight * 2.0 / (2.0 * n * m) ** 2) * (gram - style_grams[name] * m)
    return style, coefficients


def _tiled_values(tiling, network, image, content_targets, style_grams, layer_weights, alpha, beta,
                  gradient: Tensor | None = None):
    """The terms; with ``gradient`` (zeros, the image's shape) also the total's gradient added into it."""
    image = image.detach()
    zero = image.new_zeros(image.shape[0], dtype=torch.float32)
    style, coefficients = zero, {}
    if layer_weights and beta:
        grams = tiling.grams(network, image, list(layer_weights))
        style, coefficients = _style_coefficients(tiling, grams, style_grams, layer_weights, beta)
    content = zero
    for tile in tiling.tiles:
        crop = tile.crop(image)
        if gradient is not None:
            crop = crop.detach().requires_grad_(True)
        with torch.set_grad_enabled(gradient is not None):
            features = network(crop)
            tile_content = zero
            for name, target in content_targets.items():
                owned = tiling._owned(tile, features, name)
                target = tile.in_frame(target, tiling.reaches[name], tiling.height, tiling.width)
                tile_content = tile_content + losses.content_loss(owned, target)
            content = content + tile_content.detach()
            if gradient is None:
                continue
            surrogate = alpha * tile_content
            for name, coefficient in coefficients.items():
                surrogate = surrogate + (coefficient * losses.gram(tiling._owned(tile, features, name))).flatten(1).sum(1)
            (crop_gradient,) = torch.autograd.grad(surrogate.sum(), crop)
        tile.crop(gradient).add_(crop_gradient)
    return alpha * content + beta * style, content, style, gradient


class _TiledLoss(torch.autograd.Function):
    """The tiled terms as one autograd node: the forward computes the gradient (it has to walk
    the tiles anyway); the backward hands it back, scaled per image."""

    @staticmethod
    def forward(ctx, image, tiling, network, content_targets, style_grams, layer_weights, alpha, beta):
        gradient = torch.zeros_like(image)
        total, content, style, gradient = _tiled_values(tiling, network, image, content_targets, style_grams,
                                                        layer_weights, alpha, beta, gradient)
        ctx.save_for_backward(gradient)
        ctx.mark_non_differentiable(content, style)
        return total, content, style

    @staticmethod
    def backward(ctx, grad_total, _content, _style):
        (gradient,) = ctx.saved_tensors
        return (gradient * grad_total.view(-1, 1, 1, 1)).to(gradient.dtype), None, None, None, None, None, None, None


# ---------------------------------------------------------------- how many tiles
def evaluation_bytes(model, height: int, width: int, batch: int = 1, dtype_bytes: int = 4) -> int:
    """A model of one evaluation's peak memory on a ``height × width`` image (crop): the
    activations autograd keeps for the backward (every ReLU's and pooling's output, the network's
    input), the largest two in flight during the backward, times :data:`SAFETY`."""
    network = Network.of(model)
    kept, largest, h, w = 3 * height * width, 0, height, width
    for name in network.order:
        if name.startswith("pool"):
            h, w = h // 2, w // 2
        if not name.startswith("conv"):
            kept += channels(name) * h * w
            largest = max(largest, channels(name) * h * w)
    grams = sum(channels(name) ** 2 for name in network.layers)
    return int(SAFETY * batch * ((kept + 2 * largest) * dtype_bytes + 8 * 3 * height * width + 4 * grams))


def optimizer_bytes(height: int, width: int, batch: int, history: int) -> int:
    """L-BFGS's buffers for the whole frame (its pairs, its work vectors), which tiling does not split."""
    return 4 * batch * 3 * height * width * (2 * history + 8)


def choose(model: VGGFeatures, height: int, width: int, budget: int | None, *, batch: int = 1,
           dtype_bytes: int = 4, history: int = 0) -> Tiling | None:
    """The fewest tiles whose evaluation fits ``budget`` bytes (``None``: no limit, no tiling;
    a frame that fits whole is not tiled). :class:`InputError` when even the smallest tiles do not."""
    if budget is None:
        return None
    room = budget - optimizer_bytes(height, width, batch, history)
    if evaluation_bytes(model, height, width, batch, dtype_bytes) <= room:
        return None
    stride = halos(model)[0]
    units = (max(1, height // stride), max(1, width // stride))
    # square cores of k stride units, largest first: the fewest tiles whose crop fits
    best = None
    for k in range(max(units) - 1, 0, -1):
        grid = (-(-units[0] // k), -(-units[1] // k))
        if best is not None and grid == best.grid:
            continue
        best = Tiling(model, height, width, grid)
        if evaluation_bytes(model, *best.largest_crop(), batch, dtype_bytes) <= room:
            return best
    need = optimizer_bytes(height, width, batch, history) + evaluation_bytes(
        model, *(best.largest_crop() if best else (height, width)), batch, dtype_bytes)
    raise InputError(f"a {width}x{height} image needs at least {need / GIB:.3g} GB even in the smallest tiles, "
                     f"more than the {budget / GIB:.3g} GB allowed: raise --max-memory or lower --size")


def device_budget(device: torch.device, max_memory_gb: float | None) -> int | None:
    """Bytes one evaluation may use: ``--max-memory`` when given, else on a CUDA GPU
    :data:`DEVICE_SHARE` of what it has free (its caching allocator's idle blocks count as
    free), else no limit (a CPU's memory is the machine's; give --max-memory to tile there)."""
    if max_memory_gb is not None:
        return int(max_memory_gb * GIB)
    if device.type != "cuda":
        return None
    free, _total = torch.cuda.mem_get_info(device)
    idle = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return int(DEVICE_SHARE * (free + idle))


__all__ = ["Reach", "Span", "Tile", "Tiling", "reaches", "halos", "spans", "choose", "device_budget",
           "evaluation_bytes", "optimizer_bytes", "GIB"]
