"""`ray-style evaluate`: temporal stability and losses of a stylized video, and a report.

Warping error (Lai et al. 2018, "Learning Blind Video Temporal Consistency"): the mean over
consecutive frame pairs of the masked squared difference between output frame t and output
frame t+1 warped back along the *source's* flow, with the source's occlusion mask. It alone
rewards a frozen picture, so it is always reported beside the content loss (eq. 1, against
the source frame) and the style loss (eq. 5, against the artwork).
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from . import flow, images, losses, optimize, video
from .config import StyleSettings
from .errors import InputError
from .files import write_text_atomic


@dataclass
class Evaluation:
    frames: int
    width: int
    height: int
    warping_error: float  # mean over pairs
    content_loss: float | None = None  # mean per frame, unweighted (None without --style)
    style_loss: float | None = None
    per_frame: list[dict] = field(default_factory=list)  # frame, warping_error (to the next), losses


def _info(clip) -> video.VideoInfo:
    """A path is probed (a full decode to count frames); a VideoInfo is used as it is."""
    return clip if isinstance(clip, video.VideoInfo) else video.probe(clip)


def evaluate(output, source, styles: list[np.ndarray] | None = None, weights=None,
             settings: StyleSettings = StyleSettings(), progress=None) -> Evaluation:
    """Score ``output`` against ``source`` (paths or VideoInfos, same frame count); losses
    only with styles and weights."""
    out_info, src_info = _info(output), _info(source)
    if out_info.frames != src_info.frames:
        raise InputError(f"{out_info.path} has {out_info.frames} frames but {src_info.path} has {src_info.frames}: "
                         "evaluate a stylized video against its own source")
    width, height = out_info.width, out_info.height
    scorer = None
    if styles and weights is not None:
        scorer = _LossScorer(styles, weights, settings, width * height)
    rows, errors, previous = [], [], None
    for index, (src, out) in enumerate(zip(video.decode(src_info, width, height), video.decode(out_info, width, height))):
        row = {"frame": index}
        if scorer:
            row["content_loss"], row["style_loss"] = scorer(out, src)
        if previous is not None:
            prev_src, prev_out = previous
            forward, backward = flow.optical_flow(prev_src, src), flow.optical_flow(src, prev_src)
            error = flow.warping_error(prev_out, out, forward, flow.reliability(forward, backward))
            rows[-1]["warping_error"] = error
            errors.append(error)
        rows.append(row)
        previous = (src, out)
        if progress and (index % 10 == 0 or index + 1 == out_info.frames):
            progress(index + 1, out_info.frames)
    mean = (lambda key: float(np.mean([r[key] for r in rows]))) if scorer else (lambda key: None)
    return Evaluation(out_info.frames, width, height, float(np.mean(errors)) if errors else 0.0,
                      mean("content_loss"), mean("style_loss"), rows)


class _LossScorer:
    """Unweighted L_content and L_style of a frame, as the optimizer defines them."""

    def __init__(self, styles, weights, settings: StyleSettings, pixels: int):
        self.settings = optimize.resolve_loss_weights(settings, weights, pixels)
        self.model = optimize.build_model(weights, self.settings)
        with torch.no_grad():
            self.grams = optimize.style_targets(
                self.model, optimize.prepare_styles(styles, settings.size, settings.style_scale, "cpu"),
                self.settings.style_layers, self.settings.style_blend_weights)

    @torch.no_grad()
    def __call__(self, output: np.ndarray, source: np.ndarray) -> tuple[float, float]:
        objective = optimize.Objective(self.model, self.settings, images.to_tensor(source), self.grams)
        _, content, style = objective(images.to_tensor(output))
        return float(content.sum()), float(style.sum())


def _chart(values: list[float], title: str, path: Path, width: int = 640, height: int = 220) -> None:
    """A small line chart (Pillow only): per-frame values with their range."""
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=12)
    left, right, top, bottom = 70, width - 10, 24, height - 24
    finite = [v for v in values if v is not None and math.isfinite(v)]
    draw.text((left, 4), title, fill="black", font=font)
    draw.rectangle([left, top, right, bottom], outline="grey")
    if finite:
        low, high = min(finite), max(finite)
        span = (high - low) or 1.0
        points = [(left + (right - left) * i / max(len(values) - 1, 1), bottom - (bottom - top) * (v - low) / span)
                  for i, v in enumerate(values) if v is not None and math.isfinite(v)]
        if len(points) > 1:
            draw.line(points, fill=(30, 90, 200), width=2)
        draw.text((4, top), f"{high:.3g}", fill="black", font=font)
        draw.text((4, bottom - 12), f"{low:.3g}", fill="black", font=font)
    draw.text((left, bottom + 4), f"frame 0 … {len(values) - 1}", fill="black", font=font)
    images.save_image(np.asarray(canvas), path)


def write_report(evaluation: Evaluation, output, source, folder) -> Path:
    """evaluation.json, per-frame charts, a contact sheet and a side-by-side preview MP4
    (``output`` and ``source`` as for :func:`evaluate`)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_text_atomic(folder / "evaluation.json", json.dumps(asdict(evaluation), indent=1))
    rows = evaluation.per_frame
    _chart([r.get("warping_error") for r in rows], "warping error to the next frame", folder / "warping_error.png")
    if evaluation.content_loss is not None:
        _chart([r["content_loss"] for r in rows], "content loss (eq. 1)", folder / "content_loss.png")
        _chart([r["style_loss"] for r in rows], "style loss (eq. 5)", folder / "style_loss.png")
    out_info, src_info = _info(output), _info(source)
    size = (evaluation.width, evaluation.height)
    picks = set(np.linspace(0, evaluation.frames - 1, min(6, evaluation.frames)).round().astype(int).tolist())
    sheet: list[tuple[np.ndarray, np.ndarray]] = []

    def side_by_side():  # one pass over both videos feeds the preview and the contact sheet
        for index, (src, out) in enumerate(zip(video.decode(src_info, *size), video.decode(out_info, *size))):
            if index in picks:
                sheet.append((src, out))
            yield np.concatenate([src, out], axis=1)

    video.encode(side_by_side(), folder / "side_by_side.mp4", 2 * size[0], size[1], out_info.fps)
    strips = [np.concatenate([src for src, _ in sheet], axis=1), np.concatenate([out for _, out in sheet], axis=1)]
    images.save_image(np.concatenate(strips, axis=0), folder / "contact_sheet.png")
    return folder


__all__ = ["Evaluation", "evaluate", "write_report"]
