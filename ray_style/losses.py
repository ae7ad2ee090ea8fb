"""The seed's losses as pure functions (Gatys, Ecker & Bethge; equations 1, 3, 4, 5).

Feature maps arrive as ``(B, N, H, W)`` tensors: ``N`` filters and ``M = H * W`` positions,
i.e. the paper's ``N_l x M_l`` matrix ``F^l`` per batch element, taken after the ReLU.
Every loss returns one value per batch element, shape ``(B,)``, so several frames can share
one forward pass. Reductions run in float32 whatever the feature dtype: Gram entries of Caffe-scale features
reach 1e9, and their squared differences overflow anything narrower.
"""
from __future__ import annotations

import torch
from torch import Tensor


def _wide(x: Tensor) -> Tensor:
    """Half precision → float32 for reductions; float32/float64 stay as they are."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def _positions(features: Tensor) -> tuple[Tensor, bool]:
    """``F`` as a batch of matrices without a copy: ``(B, M, N)`` for a channels-last map
    (``True``), else ``(B, N, M)`` (``False``)."""
    if features.dim() == 4 and not features.is_contiguous() and \
            features.is_contiguous(memory_format=torch.channels_last):
        return features.permute(0, 2, 3, 1).flatten(1, 2), True
    return features.flatten(2), False


def _half_product(a: Tensor, b: Tensor) -> Tensor:
    """``a @ b`` of half-precision batches, accumulated and returned in float32."""
    return torch.bmm(a, b, out_dtype=torch.float32)


class _HalfGram(torch.autograd.Function):
    """Eq. 3 on bf16/fp16 features with float32 accumulation and result: the tensor cores'
    rate, no widened copy of the features, and the same value as the float32 product of the
    same numbers (products of two bf16 numbers are exact in float32; only the order of the
    sums differs). The backward's ``(G' + G'ᵀ) F`` rounds ``G'`` to the features' dtype, as
    autocast would."""

    @staticmethod
    def forward(ctx, features: Tensor) -> Tensor:
        positions, last = _positions(features)
        ctx.save_for_backward(features)
        return _half_product(positions.transpose(1, 2), positions) if last else \
            _half_product(positions, positions.transpose(1, 2))

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        (features,) = ctx.saved_tensors
        positions, last = _positions(features)
        both = (grad + grad.transpose(1, 2)).to(features.dtype)
        if last:  # (B, M, N) @ (B, N, N), back to (B, N, H, W) channels-last
            out = _half_product(positions, both).to(features.dtype)
            return out.view(features.shape[0], features.shape[2], features.shape[3], -1).permute(0, 3, 1, 2)
        return _half_product(both, positions).to(features.dtype).view_as(features)


_HALF_PRODUCTS: dict[str, bool] = {}


def _half_products_work(device: torch.device) -> bool:
    """Whether this torch offers half-precision products with a float32 result on ``device``
    (CUDA, torch ≥ 2.8), tried once per device type."""
    if device.type not in _HALF_PRODUCTS:
        probe = torch.ones(1, 2, 2, dtype=torch.bfloat16, device=device)
        try:
            _HALF_PRODUCTS[device.type] = _half_product(probe, probe).dtype == torch.float32
        except (TypeError, RuntimeError, NotImplementedError):
            _HALF_PRODUCTS[device.type] = False
    return _HALF_PRODUCTS[device.type]


def gram(features: Tensor) -> Tensor:
    """Eq. 3: ``G = F Fᵀ``, unnormalized. ``(B, N, H, W) -> (B, N, N)``, at least float32.

    bf16/fp16 features are multiplied as they are where the device can return float32
    (:class:`_HalfGram`, eager CUDA); elsewhere they are widened first. Under torch.compile
    they are widened too: Inductor fuses the widening, and with ``--precision bf16`` the
    product then runs in TF32, which represents bf16 numbers exactly.
    """
    if features.dtype in (torch.bfloat16, torch.float16) and not torch.compiler.is_compiling() \
            and _half_products_work(features.device):
        return _HalfGram.apply(features)
    positions, last = _positions(features)
    positions = _wide(positions)
    return positions.transpose(1, 2) @ positions if last else positions @ positions.transpose(1, 2)


def content_loss(features: Tensor, target: Tensor) -> Tensor:
    """Eq. 1: ``½ Σ_ij (F_ij − P_ij)²``. ``(B, N, H, W), (B|1, N, H, W) -> (B,)``."""
    diff = _wide(features) - _wide(target)
    return 0.5 * diff.pow(2).flatten(1).sum(1)


def style_layer_loss(gram_x: Tensor, gram_a: Tensor, n: int, m: int) -> Tensor:
    """Eq. 4: ``E_l = 1/(4 N² M²) Σ_ij (G_ij − A_ij)²``. ``(B, N, N), (B|1, N, N) -> (B,)``.

    Written as ``Σ ((G − A) / (2 N M))²``: the same value, but Caffe-scale Gram entries
    (1e9 and more) no longer overflow float32 when squared.
    """
    scaled = (gram_x - gram_a) / (2.0 * n * m)
    return scaled.pow(2).flatten(1).sum(1)


def style_loss(features: dict[str, Tensor], targets: dict[str, Tensor],
               layer_weights: dict[str, float]) -> Tensor:
    """Eq. 5: ``Σ_l w_l E_l`` over the layers in ``layer_weights``.

    ``targets[l]`` is the artwork's Gram matrix *per position*, ``A^l / M_a`` with shape
    ``(B|1, N, N)``. Departure from the paper: we rescale it by this image's ``M`` before
    eq. 4, so an artwork of another size than the generated image yields the same target
    statistics; when the sizes match this is exactly the paper's ``A^l``.
    """
    total = None
    for name, weight in layer_weights.items():
        fmap = features[name]
        n, m = fmap.shape[1], fmap.shape[2] * fmap.shape[3]
        term = weight * style_layer_loss(gram(fmap), targets[name] * m, n, m)
        total = term if total is None else total + term
    if total is None:
        raise ValueError("style_loss needs at least one layer")
    return total


def tv_loss(image: Tensor) -> Tensor:
    """Total variation (not in the seed): squared neighbour differences. ``(B,3,H,W) -> (B,)``."""
    dx = image[:, :, :, 1:] - image[:, :, :, :-1]
    dy = image[:, :, 1:, :] - image[:, :, :-1, :]
    return _wide(dx).pow(2).flatten(1).sum(1) + _wide(dy).pow(2).flatten(1).sum(1)


def temporal_loss(image: Tensor, warped: Tensor, mask: Tensor) -> Tensor:
    """Short-term temporal loss (Ruder et al. 2016, not in the seed): ``½ Σ c ⊙ (x − ω)²`` with
    ``ω`` the previous stylized frame warped into this one and ``c`` its reliability mask.
    A sum like eq. 1 (Ruder divide by the pixel count), so its share does not change with size.
    ``(B, 3, H, W), (B|1, 3, H, W), (B|1, 1, H, W) -> (B,)``."""
    return 0.5 * (mask * (_wide(image) - _wide(warped)).pow(2)).flatten(1).sum(1)


def gram_per_position(features: Tensor) -> Tensor:
    """``A / M``: the artwork statistic we store and share (size independent)."""
    return gram(features) / (features.shape[2] * features.shape[3])


def total_loss(content: Tensor, style: Tensor, tv: Tensor, alpha: float, beta: float,
               tv_weight: float) -> Tensor:
    """``L = α L_content + β L_style (+ tv_weight · TV)``, per batch element."""
    return alpha * content + beta * style + tv_weight * tv


__all__ = ["gram", "gram_per_position", "content_loss", "style_layer_loss", "style_loss",
           "tv_loss", "temporal_loss", "total_loss"]
