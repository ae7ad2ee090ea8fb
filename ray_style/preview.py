"""`ray-style preview`: try a look on a few stills of a video before rendering all of it.

K evenly spaced frames are stylized exactly as a video job starts each chain (from the
content frame, with the chain-start budget and the job's settings), on the same executors
as `video` (Ray or in this process), once per value of an optional grid option, and laid out
in one contact sheet: the source frames on top, one row per look.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from . import images, optimize, video
from .config import VideoSettings
from .errors import InputError
from .executor import Executor, ExecutorOptions, make_executor
from .features import check_layers
from .job import decode_png, png_bytes
from .plan import FrameJob
from .render import FrameOutput, FrameTask, frame_seed
from .runner import check_frame_size
from .weights import Weights, load_weights

LABEL = 18  # px of label strip above each row


@dataclass(frozen=True)
class Look:
    """One row: a label, the settings and the artworks it renders with."""

    label: str
    settings: VideoSettings
    styles: tuple[Path, ...]


@dataclass(frozen=True)
class PreviewResult:
    output: Path
    frames: tuple[int, ...]  # the video's frame numbers shown
    looks: tuple[Look, ...]
    seconds: float
    seconds_per_still: float
    losses: tuple[tuple[float, ...], ...]  # per look, per frame


def pick_frames(count: int, frames: int) -> list[int]:
    """``count`` evenly spaced frame numbers, first and last included, no repeats."""
    if count < 1:
        raise InputError(f"--frames {count}: show at least 1 frame")
    return sorted({int(round(x)) for x in np.linspace(0, frames - 1, min(count, frames))})


def decode_frames(info: video.VideoInfo, size, wanted: list[int]) -> dict[int, np.ndarray]:
    """The wanted frames, each by seeking to it (a film's last frame costs no more than its first)."""
    return {number: video.decode_at(info, number, *size) for number in wanted}


def preview(input_path, looks: list[Look], output, *, weights: str | Weights = "vgg19", frames: int = 4,
            executor: Executor | ExecutorOptions | None = None, progress=None) -> PreviewResult:
    """Stylize ``frames`` stills of ``input_path`` once per look; write the contact sheet to
    ``output`` (a PNG or JPEG). ``progress(done, total)`` after each still."""
    started = time.perf_counter()
    output = images.check_image_output(output, [input_path, *(s for look in looks for s in look.styles)])
    info = video.probe(input_path)
    weights = weights if isinstance(weights, Weights) else load_weights(weights)
    sizes = {look.settings.style.size for look in looks}
    numbers = pick_frames(frames, info.frames)
    stills = {size: decode_frames(info, video.frame_size(info, size), numbers) for size in sizes}
    options = executor if isinstance(executor, ExecutorOptions) else ExecutorOptions()
    pool = executor if executor is not None and not isinstance(executor, ExecutorOptions) else None
    rows, losses, renders = [], [], 0
    own = pool is None
    pool = pool or make_executor(options.validate(), parallel=len(numbers))
    try:
        for index, look in enumerate(looks):
            settings, style = _resolve(look, weights, info)
            shown = stills[settings.style.size]
            grams = _grams(weights, style, [images.load_image(p) for p in look.styles])
            pool.begin(f"preview-{index}", weights, style, grams)
            outputs = _render(pool, f"preview-{index}", shown, settings)
            rows.append([decode_png(outputs[n].png) for n in numbers])
            losses.append(tuple(outputs[n].loss for n in numbers))
            renders += len(numbers)
            if progress:
                progress(renders, len(looks) * len(numbers))
    finally:
        if own:
            pool.close()
    sources = [stills[max(sizes)][n] for n in numbers]
    images.save_image(contact_sheet(sources, rows, [look.label for look in looks], numbers), output)
    seconds = time.perf_counter() - started
    return PreviewResult(output, tuple(numbers), tuple(looks), seconds, seconds / max(renders, 1), tuple(losses))


def _resolve(look: Look, weights: Weights, info: video.VideoInfo):
    settings = look.settings.validate()
    if not look.styles:
        raise InputError("give at least one style image")
    size = video.frame_size(info, settings.style.size)
    style = optimize.resolve_loss_weights(settings.style, weights, size[0] * size[1])
    check_layers(weights.arch, (*style.content_layers, *style.style_layers))
    check_frame_size(info, settings.style.size, (*style.content_layers, *style.style_layers))
    return dataclasses.replace(settings, style=style), style


def _grams(weights: Weights, style, artworks) -> dict:
    with torch.no_grad():
        model = optimize.build_model(weights, style)
        grams = optimize.style_targets(model, optimize.prepare_styles(artworks, style.size, style.style_scale, "cpu"),
                                       style.style_layers, style.style_blend_weights)
    return {name: gram.numpy() for name, gram in grams.items()}


def _render(pool: Executor, job: str, shown: dict[int, np.ndarray], settings: VideoSettings) -> dict[int, FrameOutput]:
    """Each still as a chain's first frame: from content (or noise), with the chain-start budget."""
    tasks = {n: FrameTask(job, 0, n, png_bytes(frame), settings.start_init, settings.chain_start_iters,
                          frame_seed(settings.style.seed, n)) for n, frame in shown.items()}
    queue, done, attempts = list(tasks.values()), {}, {}
    while len(done) < len(tasks):
        while queue and pool.capacity() > 0:
            task = queue.pop(0)
            pool.submit(FrameJob(0, task.frame, False), task)
        for item, out in pool.results():
            if isinstance(out, FrameOutput):
                done[item.frame] = out
                continue
            attempts[item.frame] = attempts.get(item.frame, 0) + 1
            if attempts[item.frame] >= 3:
                raise InputError(f"preview frame {item.frame} failed 3 times: {out}")
            queue.append(tasks[item.frame])
    return done


def contact_sheet(sources: list[np.ndarray], rows: list[list[np.ndarray]], labels: list[str],
                  numbers: list[int]) -> np.ndarray:
    """Sources on top, a labelled row per look; every tile at the sources' size."""
    height, width = sources[0].shape[:2]
    font = ImageFont.load_default(size=12)
    lines = [("source frames " + ", ".join(map(str, numbers)), sources)] + list(zip(labels, rows))
    canvas = Image.new("RGB", (width * len(sources), (height + LABEL) * len(lines)), "white")
    draw = ImageDraw.Draw(canvas)
    for row, (label, tiles) in enumerate(lines):
        y = row * (height + LABEL)
        draw.text((4, y + 3), label, fill="black", font=font)
        for column, tile in enumerate(tiles):
            canvas.paste(Image.fromarray(images.resize(tile, width, height)), (column * width, y + LABEL))
    return np.asarray(canvas)


__all__ = ["Look", "PreviewResult", "preview", "pick_frames", "contact_sheet"]
