"""The seed's losses as pure functions (Gatys, Ecker & Bethge; equations 1, 3, 4, 5).

Feature maps arrive as ``(B, N, H, W)`` tensors: ``N`` filters and ``M = H * W`` positions,
i.e. the paper's ``N_l x M_l`` matrix ``F^l`` per batch element, taken after the ReLU.
Every loss returns one value per batch element, shape ``(B,)``, so several frames can share
one forward pass. Reductions run in float32 whatever the feature dtype (DESIGN.md §1).
"""
from __future__ import annotations

import torch
from torch import Tensor


def _wide(x: Tensor) -> Tensor:
    """Half precision → float32 for reductions; float32/float64 stay as they are."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def gram(features: Tensor) -> Tensor:
    """Eq. 3: ``G = F Fᵀ``, unnormalized. ``(B, N, H, W) -> (B, N, N)``, at least float32."""
    if features.dim() == 4 and not features.is_contiguous() and \
            features.is_contiguous(memory_format=torch.channels_last):
        positions = _wide(features.permute(0, 2, 3, 1).flatten(1, 2))  # (B, M, N) without a copy
        return positions.transpose(1, 2) @ positions
    flat = _wide(features.flatten(2))
    return flat @ flat.transpose(1, 2)


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
