"""Optical flow between source frames (OpenCV DIS), warping, and reliability masks.

Conventions: ``flow(a, b)[y, x] = (dx, dy)`` says the pixel at (x, y) in frame ``a`` is at
(x + dx, y + dy) in frame ``b``. To bring an image of frame ``b`` into frame ``a``'s
geometry, ``warp(image_b, flow(a, b))``. Masks are 1 where the flow can be trusted (Ruder,
Dosovitskiy & Brox 2016, "Artistic style transfer for videos", sec. 3.1).
"""
from __future__ import annotations

import numpy as np


def _grey(frame: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)


def optical_flow(frame_a: np.ndarray, frame_b: np.ndarray) -> np.ndarray:
    """Dense flow ``(H, W, 2)`` float32 from RGB ``frame_a`` to ``frame_b`` (DIS, medium preset)."""
    import cv2

    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    return dis.calc(_grey(frame_a), _grey(frame_b), None)


def warp(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Sample ``image`` at ``(x, y) + flow``: brings frame b's image into frame a's geometry.

    Works on uint8 or float ``(H, W, C)`` images; samples outside are taken from the border.
    """
    import cv2

    height, width = flow.shape[:2]
    grid_x, grid_y = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    return cv2.remap(image, grid_x + flow[..., 0], grid_y + flow[..., 1], cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REPLICATE)


def reliability(flow_ab: np.ndarray, flow_ba: np.ndarray) -> np.ndarray:
    """``(H, W)`` float32 mask for ``flow_ab``: 0 where forward-backward consistency fails
    (disocclusions) or at motion boundaries, else 1 (Ruder et al. 2016, eqs. 8-9)."""
    back = warp(flow_ba, flow_ab)  # flow b→a, sampled where each pixel of a lands in b
    summed = flow_ab + back
    inconsistent = (summed**2).sum(-1) > 0.01 * ((flow_ab**2).sum(-1) + (back**2).sum(-1)) + 0.5
    grad_y, grad_x = np.gradient(flow_ab, axis=(0, 1))
    boundary = (grad_x**2).sum(-1) + (grad_y**2).sum(-1) > 0.01 * (flow_ab**2).sum(-1) + 0.002
    return (~(inconsistent | boundary)).astype(np.float32)


def flow_init(previous_stylized: np.ndarray, content: np.ndarray, flow_back: np.ndarray,
              mask: np.ndarray) -> np.ndarray:
    """A frame's start: the previous stylized frame warped along the flow, with the regions
    the mask distrusts (disocclusions) filled from the content frame. uint8 in and out."""
    warped = warp(previous_stylized, flow_back).astype(np.float32)
    mixed = mask[..., None] * warped + (1 - mask[..., None]) * content.astype(np.float32)
    return np.clip(np.rint(mixed), 0, 255).astype(np.uint8)


def warping_error(frame: np.ndarray, next_frame: np.ndarray, flow_forward: np.ndarray, mask: np.ndarray) -> float:
    """Lai et al. 2018: masked mean squared difference between ``frame`` and ``next_frame``
    warped back into it along the source's flow, pixel values in [0, 1]."""
    warped = warp(next_frame.astype(np.float32) / 255, flow_forward)
    diff = ((frame.astype(np.float32) / 255 - warped) ** 2).sum(-1)
    return float((mask * diff).sum() / max(mask.sum(), 1.0))


__all__ = ["optical_flow", "warp", "reliability", "flow_init", "warping_error"]
