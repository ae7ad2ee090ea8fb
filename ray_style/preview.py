"""`ray-style preview`: try a look on a few stills of a video before rendering all of it.

K evenly spaced frames are stylized exactly as a video job starts each chain (from the
content frame, with the chain-start budget and the job's settings, resolved by the same
:func:`~ray_style.runner.resolve_settings`), on the same executors and through the same
driver loop as `video`, once per look, and laid out in one contact sheet: the source frames
on top, one row per look.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import images, optimize, plan, store, video
from .codec import decode_png, png_bytes
from .errors import InputError
from .executor import Executor, drive, make_executor
from .figures import contact_sheet
from .render import FrameOutput, FrameTask, frame_seed
from .runner import probe_video, resolve_settings
from .settings import ExecutorOptions, VideoSettings
from .weights import Weights, load_weights


@dataclass(frozen=True)
class Look:
    """One row: a label, the settings (the weights' name among them) and the artworks."""

    label: str
    settings: VideoSettings
    styles: tuple[str, ...]  # local paths or URLs


@dataclass(frozen=True)
class PreviewResult:
    output: Path | str  # a local path, or the URL the sheet was put at
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


def preview(input_path, looks: list[Look], output, *, frames: int = 4,
            executor: Executor | ExecutorOptions | None = None, progress=None) -> PreviewResult:
    """Stylize ``frames`` stills of ``input_path`` once per look; write the contact sheet to
    ``output`` (a PNG or JPEG). ``progress(done, total)`` after each look's stills. Every look
    is checked (its styles, weights and settings) before the first still renders."""
    started = time.perf_counter()
    output = _sheet_output(output, [input_path, *(s for look in looks for s in look.styles)])
    first = looks[0].settings if looks else None
    info = probe_video(input_path, first and first.fps, first and first.audio)
    numbers = pick_frames(frames, info.frames)
    weights: dict[str, Weights] = {}
    resolved = []
    for look in looks:
        if not look.styles:
            raise InputError("give at least one style image")
        name = look.settings.style.weights
        weights[name] = weights.get(name) or load_weights(name)
        artworks = [images.load_image(path) for path in look.styles]
        settings = resolve_settings(look.settings, weights[name], info)
        optimize.check_image_sizes(video.frame_size(info, settings.style.size), artworks, settings.style, look.styles)
        resolved.append((settings, weights[name], artworks))
    sizes = {settings.style.size for settings, _, _ in resolved}
    stills = {size: {n: video.decode_at(info, n, *video.frame_size(info, size)) for n in numbers} for size in sizes}
    options = executor if isinstance(executor, ExecutorOptions) else ExecutorOptions()
    own = executor is None or isinstance(executor, ExecutorOptions)
    pool = make_executor(options.validate(), parallel=len(numbers)) if own else executor
    rows, losses = [], []
    try:
        for index, (settings, source, artworks) in enumerate(resolved):
            job = f"preview-{index}"
            pool.begin(job, source, settings.style, _grams(source, settings, artworks))
            outputs = _render(pool, job, stills[settings.style.size], settings)
            rows.append([decode_png(outputs[n].png) for n in numbers])
            losses.append(tuple(outputs[n].record.loss for n in numbers))
            if progress:
                progress((index + 1) * len(numbers), len(looks) * len(numbers))
    finally:
        if own:
            pool.close()
    sources = [stills[max(sizes)][n] for n in numbers]
    width, height = sources[0].shape[1], sources[0].shape[0]
    sheet = contact_sheet([("source frames " + ", ".join(map(str, numbers)), [(None, s) for s in sources])]
                          + [(look.label, [(None, tile) for tile in row]) for look, row in zip(looks, rows)],
                          tile=(width, height))
    _save_sheet(sheet, output)
    seconds = time.perf_counter() - started
    renders = len(looks) * len(numbers)
    return PreviewResult(output, tuple(numbers), tuple(looks), seconds, seconds / max(renders, 1), tuple(losses))


def _sheet_output(output, inputs: list):
    """Where the contact sheet goes, checked before any work: a local image path that is none
    of the inputs, or a URL whose bucket takes a write from these credentials."""
    place = store.location(output)
    if not place.remote:
        return images.check_image_output(output, [p for p in inputs if not store.is_remote(p)])
    if place.suffix.lower() not in images.SAVE_FORMATS:
        raise InputError(f"cannot save {place}: unknown extension '{place.suffix}'")
    store.check_writable(place, "contact sheet")
    return output


def _save_sheet(sheet: np.ndarray, output) -> None:
    place = store.location(output)
    if not place.remote:
        images.save_image(sheet, output)
        return
    store.write_bytes(place, images.image_bytes(sheet, place.suffix))  # one object, written whole


def _grams(weights: Weights, settings: VideoSettings, artworks) -> dict:
    style = settings.style
    with torch.no_grad():
        model = optimize.build_model(weights, style)
        grams = optimize.style_targets(model, optimize.prepare_styles(artworks, style.size, style.style_scale, "cpu"),
                                       style.style_layers, style.style_blend_weights)
    return {name: gram.numpy() for name, gram in grams.items()}


def _render(pool: Executor, job: str, shown: dict[int, np.ndarray], settings: VideoSettings) -> dict[int, FrameOutput]:
    """Each still as a chain's first frame: from content (or noise), with the chain-start budget."""
    stills = [plan.Chain(index, n, n + 1, 0) for index, n in enumerate(shown)]
    done: dict[int, FrameOutput] = {}

    def make_task(item: plan.FrameJob, first: bool) -> FrameTask:
        return FrameTask(job=job, chain=item.chain, frame=item.frame, content=png_bytes(shown[item.frame]),
                         init_kind=settings.start_init, iters=settings.chain_start_iters,
                         seed=frame_seed(settings.style.seed, item.frame))

    def store(item: plan.FrameJob, out: FrameOutput) -> None:
        done[item.frame] = out

    drive(pool, stills, False, make_task, store, is_done=lambda chain, frame: frame in done)
    return done


__all__ = ["Look", "PreviewResult", "preview", "pick_frames"]
