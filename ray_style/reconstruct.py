"""The seed's reconstruction figures, from white noise.

Content: one image per layer relu1_1 … relu5_1 (the slides' "Block n Conv 1") with the
content loss alone: detail is lost as the layer deepens. Style: one image per set of blocks
{1}, {1,2}, …, {1..5} with the style loss alone: the texture's scale grows as blocks are
added. Returns the images and their numbers; :func:`figure` lays them out like the slides.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import torch

from . import images
from .figures import contact_sheet
from .optimize import (Objective, Problem, ProgressCallback, build_model, initial_image, resolve_loss_weights,
                       style_targets, stylize)
from .settings import StyleSettings
from .weights import Weights

BLOCK_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")


@dataclass(frozen=True)
class Reconstruction:
    label: str  # e.g. "content conv3_1" or "style conv1 of blocks 1-3"
    layers: tuple[str, ...]
    image: np.ndarray  # (H, W, 3) uint8
    pixel_rmse: float  # RMS difference to the content photo, 0-255 (content series)
    style_loss: float  # L_style (eq. 5) of the result (style series)
    noise_style_loss: float  # L_style of the white noise it started from, for scale


def reconstruct(content: np.ndarray, style: np.ndarray, settings: StyleSettings, weights: Weights,
                progress: ProgressCallback | None = None, device="cpu",
                ) -> tuple[list[Reconstruction], list[Reconstruction]]:
    """Both series from the same white noise (``settings.seed``); ``settings.size`` and
    ``settings.iters`` set the resolution and the evaluations of each of the ten runs."""
    content_small = images.resize_long_edge(content, settings.validate().size)
    base = resolve_loss_weights(dataclasses.replace(settings, content_layers=BLOCK_LAYERS, style_layers=BLOCK_LAYERS),
                                weights, content_small.shape[0] * content_small.shape[1])
    model = build_model(weights, base, device)
    content_tensor = images.to_tensor(content_small).to(device)
    style_tensor = images.to_tensor(images.resize_long_edge(style, round(settings.size * settings.style_scale))).to(device)
    grams = style_targets(model, [style_tensor], BLOCK_LAYERS)
    noise = initial_image("noise", content_tensor, settings.seed)
    reference = content_small.astype(np.float64)

    content_series = []
    for layer in BLOCK_LAYERS:
        run = dataclasses.replace(base, content_layers=(layer,), style_layers=(), style_layer_weights=None)
        result = stylize(model, run, Problem(noise, content_tensor, {}), progress=progress)
        image = images.to_uint8(result.image)
        rmse = float(np.sqrt(np.mean((image.astype(np.float64) - reference) ** 2)))
        content_series.append(Reconstruction(f"content {_paper_name(layer)}", (layer,), image, rmse, math.nan,
                                             math.nan))

    style_series = []
    for blocks in range(1, 6):
        layers = BLOCK_LAYERS[:blocks]
        run = dataclasses.replace(base, content_layers=(), style_layers=layers, style_layer_weights=None)
        result = stylize(model, run, Problem(noise, None, grams), progress=progress)
        with torch.no_grad():
            noise_loss = Objective(model, run, None, grams)(noise)[2].item()
        label = "style conv1 of block 1" if blocks == 1 else f"style conv1 of blocks 1-{blocks}"
        style_series.append(Reconstruction(label, layers, images.to_uint8(result.image), math.nan,
                                           result.style_loss, noise_loss))
    return content_series, style_series


def _paper_name(layer: str) -> str:
    return layer.replace("relu", "conv")


def figure(content: np.ndarray, style: np.ndarray, content_series: list[Reconstruction],
           style_series: list[Reconstruction]) -> np.ndarray:
    """One labelled grid like the slides': the input first in each row, then its series."""
    tile_h, tile_w = content_series[0].image.shape[:2]
    # Captions need about 6 px a character: small reconstructions are shown larger.
    scale = max(1, -(-120 // tile_w))
    tile = (tile_w * scale, tile_h * scale)
    rows = [("content reconstructions (the content loss alone, from white noise)",
             [("content photo p", content)] + [(r.label.replace("content ", ""), r.image) for r in content_series]),
            ("style reconstructions (the style loss alone, from white noise)",
             [("artwork a", style)] + [(r.label.replace("style conv1 of ", ""), r.image) for r in style_series])]
    return contact_sheet(rows, tile=tile, pad=4)


__all__ = ["Reconstruction", "reconstruct", "figure", "BLOCK_LAYERS"]
