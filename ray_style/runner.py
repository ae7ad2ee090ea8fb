"""A video job from start to end, as stages with explicit inputs and outputs:

    prepare → decode → plan → render (the output encoded beside it) → encode → report

:func:`prepare` checks everything a user can get wrong before anything is created; the job
directory is :mod:`ray_style.job`; the frame graph (what each render starts from, what each
output frame is made of) is :mod:`ray_style.frames`; where frames render is an
:class:`~ray_style.executor.Executor`; the encode is :mod:`ray_style.encoder`. Every frame's
inputs are read back from the job directory and checked against their checksums, so an
interrupted, resumed or repaired job produces the same bytes as an uninterrupted one.
"""
from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from . import __version__, flow, images, optimize, plan, sequence, sources, store, video
from .encoder import EncodeBesideRender, Output, SpansBesideRender, encode
from .errors import FrameError, InputError, JobError, RayStyleError, first_line
from .executor import Executor, Note, Reopen, drive, make_executor, run_here
from .features import check_layers, check_size
from .files import check_writable_output
from .frames import FrameGraph
from .inputs import for_the_driver
from .job import DamagedFile, Job, damage_of, describe_facts, open_job, remove_stale_temps
from .render import FrameOutput, Redo, StoreUnreachable
from .settings import ExecutorOptions, VideoSettings, as_dict
from .tasks import FrameReader, TaskMaker
from .weights import Weights, load_weights

REPAIR_ROUNDS = 3  # encode → damaged frame found → re-render: at most this often


@dataclass(frozen=True)
class VideoProgress:
    stage: str  # "decode", "render", "encode", "report" or "note"
    done: int  # frames done in this stage (render: all finished frames, resumed ones too)
    total: int
    workers: int = 0  # render: workers placed now (an elastic pool grows as nodes join)
    note: str | None = None  # one line worth showing: a warning, a worker joined or lost


@dataclass(frozen=True)
class VideoResult:
    output: Path | str  # a local path, or the URL it was put at
    job_dir: Path | str
    frames: int  # output frames written
    chains: int
    rendered: int  # frame renders done by this run (a blended seam frame is rendered twice)
    resumed: int  # frame renders found finished in the job directory
    redone: int  # frames redone because their worker died
    seconds: float
    workers: int
    evaluation: "object | None" = None  # evaluate.Evaluation of the finished video (None with report=False)
    warnings: tuple[str, ...] = ()
    optimizing: float | None = None  # the workers' share of their working time spent optimizing (this run)


# ---------------------------------------------------------------- prepare
def default_job_dir(output) -> store.Location:
    """``OUT.job`` beside ``OUT.mp4`` (in the same bucket, for an object-store output); ``shot.job``
    beside a sequence ``shot_%04d.exr``."""
    place = store.location(output)
    if sequence.is_pattern(place.text):
        return place.sibling((sequence.stem(place.text) or "frames") + ".job")
    return place.sibling(place.stem + ".job")


def range_output(output, frames: tuple[int, int]) -> store.Location:
    """Where ``--frames A:B`` writes: beside the whole video's output, named for the range."""
    place = store.location(output)
    return place.sibling(f"{place.stem}.frames{frames[0]}-{frames[1] - 1}{place.suffix}")


def check_frame_size(info: video.VideoInfo, long_edge: int, layers) -> None:
    """:class:`InputError`, naming the smallest ``--size`` that works, for frames too small for
    the deepest layer's pooling."""
    check_size(lambda size: video.frame_size(info, size), long_edge, layers, "frames")


def resolve_settings(settings: VideoSettings, weights: Weights, info: video.VideoInfo) -> VideoSettings:
    """The settings a job of ``info`` renders with: α and β filled in for its frame size, the
    temporal weight for its init, layers and frame size checked against the network."""
    settings.validate()
    width, height = video.frame_size(info, settings.style.size)
    style = optimize.resolve_loss_weights(settings.style, weights, width * height)
    layers = (*style.content_layers, *style.style_layers)
    check_layers(weights.arch, layers)
    check_frame_size(info, settings.style.size, layers)
    temporal = settings.temporal_weight
    if temporal is None:
        temporal = weights.temporal_weight if settings.init == "flow" else 0.0
    return dataclasses.replace(settings, style=style, temporal_weight=temporal, passes=settings.refine_passes,
                               bit_depth=settings.bit_depth or info.bits)


@dataclass(frozen=True)
class JobRequest:
    """A video job, checked and resolved: everything the stages read, nothing they change."""

    info: video.VideoInfo
    styles: list[np.ndarray]
    weights: Weights
    settings: VideoSettings  # resolved (resolve_settings)
    size: tuple[int, int]
    output: Output  # where the span this run delivers is written
    job_dir: store.Location
    manifest: dict
    report: bool  # evaluate the whole video into the job's report

    @property
    def whole(self) -> bool:
        return self.output.span == (0, self.output.frame_count)


def ray_job_working_dir() -> str | None:
    """The ``--working-dir`` of the Ray Job this driver runs in, if any: Ray unpacks it into a
    temporary folder (the driver's working directory), and deletes it after the job."""
    import json

    try:
        config = json.loads(os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR") or "{}")
    except ValueError:
        return None
    runtime = config.get("runtime_env") if isinstance(config, dict) else None
    return runtime.get("working_dir") if isinstance(runtime, dict) else None


def _where_written(place, what: str) -> store.Location:
    """A path this job writes, made absolute; refused when it is relative inside a Ray Job with
    a ``--working-dir`` (it would land in Ray's temporary copy of it, which Ray deletes)."""
    place = store.location(place)
    if not place.remote and not Path(place.text).expanduser().is_absolute() and ray_job_working_dir():
        raise InputError(f"{what} {place} is relative, and this Ray job runs in Ray's temporary copy of its "
                         "--working-dir, which Ray deletes when the job ends: give an absolute path on storage that "
                         "outlives the job, or an s3:// URL")
    return store.resolved(place)


def probe_video(place, fps=None, audio=None) -> video.VideoInfo:
    """A video at a local path or a URL, probed where it is (a URL through ffmpeg's own reads),
    or an image sequence (a pattern or a folder on this machine) at ``fps`` with ``audio``."""
    place = store.location(place)
    if sequence.is_sequence(place.text):
        if place.remote:
            raise InputError(f"{place}: an image sequence is read from a folder on this machine or a shared volume")
        return video.probe_sequence(place.text, fps, audio)
    if fps is not None or audio is not None:
        raise InputError(f"--{'fps' if fps is not None else 'audio'} is for image sequences: {place} is a video and "
                         "carries its own")
    try:
        return video.probe(store.ffmpeg_input(place), label=place.text, pixels=False)  # packets, not pixels
    except FileNotFoundError:
        raise InputError(f"video not found: {place}") from None


def prepare(input_path, style_paths, output, settings: VideoSettings, *, weights: str | Weights | None = None,
            job_dir=None, frames: tuple[int, int] | None = None, report: bool = True) -> JobRequest:
    """Check every input and option and resolve the settings, before anything is created.
    Paths may be local or URLs (s3://…): a master in a bucket is read where it is. Local paths
    are made absolute now, before anything (Ray's start included) changes the working directory."""
    settings.validate()
    source, target = store.resolved(input_path), _where_written(output, "output")
    styles_at = [store.resolved(path) for path in style_paths]
    job_dir = _where_written(job_dir, "--job-dir") if job_dir else None
    if sequence.is_pattern(target.text):
        target = store.location(sequence.check_output_pattern(target.text))  # #### spelled %04d from here on
        check_writable_output(target.text)
    else:
        video.check_output_suffix(target.text, settings.codec)
    if target.remote:
        if target in (source, *styles_at):
            raise InputError(f"output {target} is also an input: choose another output name")
        store.check_writable(target)
    else:
        check_writable_output(target.text, [p.text for p in (source, *styles_at) if not p.remote])
    if not style_paths:
        raise InputError("give at least one style image")
    if frames is not None and settings.refine_passes > 1:
        raise InputError("--frames renders a range with --passes 0 or 1; passes over the whole video need it all")
    info = probe_video(source, settings.fps, settings.audio)
    if not sequence.is_pattern(target.text):
        video.plan_audio(info, target.text)  # an audio track no container can take fails now, not after rendering
    styles = [images.load_image(place.text) for place in styles_at]
    weights = weights if isinstance(weights, Weights) else load_weights(weights or settings.style.weights)
    size = video.frame_size(info, settings.style.size)
    settings = resolve_settings(settings, weights, info)
    optimize.check_image_sizes(size, styles, settings.style, [str(p) for p in style_paths])
    optimize.check_memory(size, settings.style, weights.arch)
    if settings.flow_dir is not None and store.is_remote(settings.flow_dir):
        raise InputError(f"--flow-dir {settings.flow_dir}: .flo files are read from a folder on this machine; "
                         "copy them here (a bucket's are not read yet)")
    if settings.flow_dir is not None and not Path(settings.flow_dir).is_dir():
        raise InputError(f"--flow-dir {settings.flow_dir} is not a folder of .flo files")
    if frames is not None and info.numbers is not None:  # a sequence's frames go by its own numbers
        first, end = info.numbers[0], info.numbers[-1] + 1
        if not first <= frames[0] < frames[1] <= end:
            raise InputError(f"--frames {frames[0]}:{frames[1]} is outside the sequence's frames {first}:{end} "
                             f"(numbers {first}…{end - 1})")
        frames = (frames[0] - first, frames[1] - first)
    if frames is not None and not 0 <= frames[0] < frames[1] <= info.frames:
        raise InputError(f"--frames {frames[0]}:{frames[1]} is outside the video's {info.frames} frames "
                         f"(0:{info.frames})")
    if settings.flow_dir is not None and settings.init == "flow":
        flow.check_flow_dir(settings.flow_dir, frames[1] if frames else info.frames, settings.offsets,
                            forward=settings.refine_passes > 0 or (report and frames is None))
    job_at = job_dir or default_job_dir(target)
    if job_at.text.rstrip("/") in {place.text.rstrip("/") for place in (target, source, *styles_at)}:
        raise InputError(f"--job-dir {job_at} is also the output or an input: give the job a folder of its own "
                         "(by default OUTPUT.job beside the output)")
    if not job_at.remote and Path(job_at.text).exists() and not Path(job_at.text).is_dir():
        raise InputError(f"--job-dir {job_at} is a file: give a folder (by default OUTPUT.job beside the output)")
    if job_at.remote:
        store.check_writable(job_at.text.rstrip("/") + "/", "--job-dir")
    manifest = {
        "version": __version__,
        "input": {**(sequence.identity(sequence.find(source.text)) if info.numbers is not None else _identity(source)),
                  "frames": info.frames, "fps": str(info.fps), "audio": info.audio_codec,
                  "variable_rate": info.timestamps is not None,
                  **({"flows": flow.flow_dir_identity(settings.flow_dir)} if settings.flow_dir else {})},
        "styles": [_style_identity(place) for place in styles_at],
        "weights": weights.identity,
        "settings": as_dict(settings),
        "frame_size": list(size),
        "run": {"input": source.text, "styles": [p.text for p in styles_at], "output": target.text},
    }
    span = frames or (0, info.frames)
    written = target if frames is None or sequence.is_pattern(target.text) else range_output(target, frames)
    return JobRequest(info, styles, weights, settings, size,
                      Output(written.text, info, size, span, info.frames, settings.crf, settings.codec,
                             settings.bit_depth), job_at, manifest, report and frames is None)


def _identity(place: store.Location) -> dict:
    try:
        return store.identity(place)
    except FileNotFoundError:
        raise InputError(f"not found: {place}") from None


def _style_identity(place: store.Location):
    """An artwork's checksum (a local file's SHA-256 as it always was; an object's identity)."""
    found = _identity(place)
    return found.get("sha256") or found


# ---------------------------------------------------------------- what every stage shares
class Reporter:
    """Progress to the caller, notes to the job's events, the live page: how stages speak."""

    def __init__(self, job: Job, progress: Callable[[VideoProgress], None] | None):
        self.job, self.progress = job, progress
        self.notes: list[str] = []
        self.page = None

    def tell(self, stage: str, done: int, total: int, **extra) -> None:
        if self.progress:
            self.progress(VideoProgress(stage, done, total, **extra))

    def note(self, note: str, kind: str = "warning") -> None:
        """A line worth the user's attention: kept for the result, logged, shown."""
        if kind == "warning":
            if note in self.notes:
                return
            self.notes.append(note)
        self.job.event(kind, detail=note)
        self.tell("note", 0, 0, note=note)

    def open_page(self, renders: int, refining: int = 0, seams: int = 0) -> None:
        from .page import LivePage

        self.page = LivePage(self.job.store, renders, refining=refining, seams=seams)
        self.write_page("running")

    def write_page(self, state: str, evaluation: dict | None = None, message: str | None = None,
                   every: float | None = None) -> None:
        """Rewrite the live page (at most once per ``every`` seconds when given); a page that
        cannot be written never hides the job's own outcome."""
        if self.page is None:
            return
        try:
            if every is None:
                self.page.write(state, evaluation, message)
            else:
                self.page.maybe_write(every, state)
        except (OSError, RayStyleError):
            pass


class Pool:
    """The executor a job renders on: lent by the caller (batch: kept open), or made for this
    job when first needed and closed after it."""

    def __init__(self, job: Job, executor: Executor | ExecutorOptions | None):
        self.job = job
        self.lent = executor if executor is not None and not isinstance(executor, ExecutorOptions) else None
        self.options = (executor if isinstance(executor, ExecutorOptions) else ExecutorOptions()).validate()
        self.executor: Executor | None = self.lent

    def get(self) -> Executor:
        """The executor, its workers started."""
        executor = self._make()
        executor.launch()
        return executor

    def cpu_tasks(self):
        """Where CPU stages (a segment's decode) run before the workers start: this job's own
        Ray pool, not launched yet (its actors would take CPU clusters' CPUs; it has
        ``run_tasks`` and ``cpus``, workers.RayExecutor); None for a lent pool or a local
        executor (the driver's threads do them, executor.run_here)."""
        if not self.own or self.options.kind == "local":
            return None
        return self._make(launch=False)

    def _make(self, launch: bool = True) -> Executor:
        if self.executor is None:
            options = self.options
            if options.threads is None and self.job.recorded_threads():
                # a resume renders with the thread count its CPU frames' bytes depend on
                options = dataclasses.replace(options, threads=self.job.recorded_threads())
            self.executor = make_executor(options, launch=launch)
        return self.executor

    @property
    def own(self) -> bool:
        return self.lent is None

    def close(self) -> None:
        if self.executor is not None and self.own:
            self.executor.close()
        self.executor = None


@dataclass
class Targets:
    """The artwork's Gram matrices, computed once per job on the driver (shared with the
    workers; reused by the report), and the model that made them."""

    model: object
    grams: dict[str, np.ndarray]
    device: object

    @classmethod
    def make(cls, request: JobRequest, options: ExecutorOptions) -> "Targets":
        import torch

        style = request.settings.style
        device = optimize.resolve_device(options.device, where="driver")
        with torch.no_grad():
            model = optimize.build_model(request.weights, style, device)
            grams = optimize.style_targets(model, optimize.prepare_styles(request.styles, style.size,
                                                                          style.style_scale, device),
                                           style.style_layers, style.style_blend_weights,
                                           optimize.memory_budget(style, device))
        return cls(model, {name: gram.cpu().numpy() for name, gram in grams.items()}, device)


# ---------------------------------------------------------------- the job
def stylize_video(input_path, style_paths, output, settings: VideoSettings = VideoSettings(), *,
                  weights: str | Weights | None = None, job_dir=None,
                  executor: Executor | ExecutorOptions | None = None, restart: bool = False,
                  progress: Callable[[VideoProgress], None] | None = None, report: bool = True,
                  frames: tuple[int, int] | None = None) -> VideoResult:
    """Stylize a whole video into ``output`` (its container from the extension; source frame
    timing and every audio track kept), resumably.

    ``weights``: a loaded source, or its name (default ``settings.style.weights``).
    ``executor``: options for a pool made for this job and closed after it, or an open
    :class:`~ray_style.executor.Executor` to use and leave open (batch mode shares one across
    jobs). ``report``: evaluate the result (warping errors, losses) into ``JOB_DIR/report``.
    ``frames``: ``(first, end)`` renders only what frames first … end-1 need (their chains
    from their starts: the same frames the whole job renders, kept in its job directory for
    it) into ``OUTPUT.framesFIRST-LAST.EXT`` with that stretch of the audio.
    """
    started = time.perf_counter()
    if isinstance(executor, ExecutorOptions):
        executor.validate()
    request = prepare(input_path, style_paths, output, settings, weights=weights, job_dir=job_dir, frames=frames,
                      report=report)
    with open_job(request.job_dir.text, request.manifest, restart) as job:
        path = store.location(request.output.path)
        if not path.remote:
            local = path.path()
            remove_stale_temps(local.parent if str(local.parent) else Path("."), local.name)
        reporter = Reporter(job, progress)
        for warning in request.info.warnings:
            reporter.note(warning)
        pool = Pool(job, executor)
        targets = functools.cache(lambda: Targets.make(request, pool.options))  # for the render and the report
        try:
            counts = RenderCounts()
            frame_count, cuts = decode(job, request, reporter, pool, targets, counts)
            graph = plan_frames(job, request, frame_count, cuts, pool)
            renders = graph.renders()
            reporter.open_page(len(renders), sum(1 for r in renders if r.sequence >= len(graph.chains)),
                               len(graph.seams))
            render_and_encode(job, graph, request, pool, targets, reporter, counts)
            pool.close()  # the workers are not needed for the report: give them back now
            evaluation = report_video(job, graph, request, targets(), reporter) if request.report else None
            reporter.write_page("finished", dataclasses.asdict(evaluation) if evaluation else None)
        except KeyboardInterrupt:
            reporter.write_page("stopped", message="interrupted; re-run the same command to resume")
            raise
        except BaseException as error:
            reporter.write_page("failed", message=first_line(error))
            raise
        finally:
            pool.close()
    span = request.output.span
    return VideoResult(_local_or_url(path), _local_or_url(request.job_dir), span[1] - span[0], graph.chains_in_span,
                       counts.rendered, counts.resumed,
                       counts.redone, time.perf_counter() - started, counts.workers, evaluation,
                       tuple(request.info.warnings) + tuple(reporter.notes), counts.optimizing)


def _local_or_url(place: store.Location) -> Path | str:
    return place.text if place.remote else place.path()


# ---------------------------------------------------------------- decode
def decode(job: Job, request: JobRequest, reporter: Reporter, pool: Pool, targets: Callable[[], Targets],
           counts: RenderCounts) -> tuple[int, list[int]]:
    """Decode every source frame into the job's store once, in segments (:mod:`ray_style.sources`):
    as CPU tasks over the cluster's nodes where they reach the input and the store, else on this
    machine's threads. Where it can (:func:`early_length`), the chains of the film's opening
    render while the rest decodes (:func:`render_while_decoding`): no whole-film barrier before
    the first frame. Later runs check and reuse the source frames, and decode again only frames
    that went missing. Returns the frame count and the shot cuts."""
    index = job.source_index()
    if index is not None:
        damaged = job.damaged_sources()
        if damaged:
            repair_sources(job, request, damaged)
        return index["frames"], index["cuts"]
    length = early_length(job, request, pool)
    if length is None:
        return finish_decode(job, request, *decode_segments(job, request, reporter, pool))
    # Workers are asked for before the decode's tasks, so that they have their CPUs (or GPUs) first.
    cluster = pool.cpu_tasks()
    cluster.launch(early_workers(cluster))
    ahead = DecodeAhead(job, request, reporter, pool, length)
    try:
        render_while_decoding(job, request, pool, targets, reporter, counts, ahead)
        hashes, signatures = ahead.result()
    except BaseException:
        ahead.cancel()
        raise
    return finish_decode(job, request, hashes, signatures)


def finish_decode(job: Job, request: JobRequest, hashes: list[str], signatures: list) -> tuple[int, list[int]]:
    """The decode's index (every frame's checksum, the shot cuts) written: the source is whole."""
    info = request.info
    if len(hashes) != info.frames:
        raise InputError(f"{info.path}: decoded {len(hashes)} frames, counted {info.frames}; "
                         "the file changed while we read it, or is damaged")
    cuts = plan.detect_cuts(signatures, request.settings.cut_ratio)  # across segments: cuts between them too
    job.finish_source(len(hashes), cuts, hashes)
    return len(hashes), cuts


def decode_segments(job: Job, request: JobRequest, reporter: Reporter, pool: Pool, on_prefix=None,
                    stop: threading.Event | None = None) -> tuple[list[str], list]:
    """Every frame's checksum and cut signature, the frames decoded into the job's store by
    segments. ``on_prefix(hashes, signatures)``: the frames after those told before, each time
    the film decoded from its start grows (segments finish in any order). ``stop``: give up
    (the job stopped), tasks cancelled."""
    info = request.info
    token = job.reach_token()
    cluster = pool.cpu_tasks()
    parts = sources.segments(info, request.size, info.bits, job.store.url, token,
                             cluster.cpus if cluster is not None else os.cpu_count() or 1)
    found: dict[int, tuple[list[str], list]] = {}
    here: list[int] = []
    told = 0  # segments told to on_prefix

    def take(index: int, outcome) -> None:
        nonlocal told
        if isinstance(outcome, BaseException):
            raise outcome
        found[index] = outcome
        decoded = sum(len(hashes) for hashes, _ in found.values())
        reporter.tell("decode", decoded, info.frames)
        while on_prefix is not None and told in found:
            on_prefix(*found[told])
            told += 1

    if cluster is not None:
        for index, outcome in cluster.run_tasks(sources.decode, parts, stop):
            if for_the_driver(outcome):
                here.append(index)  # a node that does not see the input or the store, or was lost
                if len(here) == 1:
                    job.event("decode", detail=f"a worker could not decode frames {parts[index].start}-"
                                               f"{parts[index].end - 1} ({first_line(outcome)}); decoding here")
                continue
            take(index, outcome)
    else:
        here = list(range(len(parts)))
    for index, outcome in run_here(sources.decode_here, [parts[i] for i in here]):
        if stop is not None and stop.is_set():
            raise JobError("the job stopped while decoding")
        take(here[index], outcome)
    return ([digest for i in range(len(parts)) for digest in found[i][0]],
            [signature for i in range(len(parts)) for signature in found[i][1]])


# ---------------------------------------------------------------- render while decoding
class DecodeAhead:
    """The decode (:func:`decode_segments`) in a thread of its own, while the render starts on
    the chains of the film's opening (plan.Settled: the chains the whole plan will have there)."""

    def __init__(self, job: Job, request: JobRequest, reporter: Reporter, pool: Pool, segment_length: int):
        settings = request.settings
        self.settled = plan.Settled(request.info.frames, settings.cut_ratio, segment_length, settings.overlap)
        self.hashes: list[str] = []
        self.changed = threading.Condition()
        self.version = 0  # how often the decoded opening grew
        self.chains: tuple[int, list[plan.Chain]] = (0, [])  # settled chains, and of which version
        self.outcome: object = None  # what decode_segments returned or raised, once it is over
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(job, request, reporter, pool), daemon=True,
                                       name="ray-style-decode")
        self.thread.start()

    def _run(self, job, request, reporter, pool) -> None:
        try:
            outcome = decode_segments(job, request, reporter, pool, self._grew, self.stop)
        except BaseException as error:  # noqa: BLE001 — raised in the driver's thread (result)
            outcome = error
        with self.changed:
            self.outcome = outcome
            self.changed.notify_all()

    def _grew(self, hashes: list[str], signatures: list) -> None:
        with self.changed:
            self.hashes += hashes
            self.settled.extend(signatures)
            self.version += 1
            self.changed.notify_all()

    def known(self, since: int, wait: float = 0.0) -> tuple[int, list[str], list[plan.Chain], list[int]] | None:
        """``(version, checksums of the frames decoded from the start, chains settled, cuts
        settled)``, after waiting up to ``wait`` s for news when there is none since ``since``
        (then the same version, and nothing else worth reading); None once the decode is over."""
        with self.changed:
            if wait and self.outcome is None and self.version == since:
                self.changed.wait(wait)
            if self.outcome is not None:
                return None
            if self.version == since:
                return since, [], [], []
            if self.chains[0] != self.version:
                self.chains = (self.version, self.settled.chains())
            return self.version, list(self.hashes), self.chains[1], list(self.settled.cuts)

    def result(self) -> tuple[list[str], list]:
        self.thread.join()
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        return self.outcome

    def cancel(self) -> None:
        self.stop.set()
        self.thread.join(timeout=30)


def early_length(job: Job, request: JobRequest, pool: Pool) -> int | None:
    """The segment length of a plan that can render while the film decodes, or None where the
    render waits for the whole decode: a video of its own Ray pool, not decoded yet, with no
    plan of its own yet, no flow files, and at least as many chains as the pool plans workers
    (else plan_for_workers cuts the chains shorter, by the whole film's chain count), and a
    CPU left for the decode beside the workers it starts with (:func:`early_workers`): workers
    holding a cluster's every CPU would leave the decode none (a 1-CPU node and a CPU pool; GPU
    nodes with one CPU each, or a cluster that has no node yet, whose autoscaler starts nodes
    for the decode first)."""
    settings = request.settings
    cluster = pool.cpu_tasks()
    if cluster is None or settings.flow_dir is not None or job.has_plan():
        return None
    if cluster.cpus - early_workers(cluster) * cluster.worker_cpus < 1:
        return None
    target = cluster.workers_planned * cluster.frames_per_worker if settings.seeded else 1
    length = settings.segment_length
    return length if -(-request.info.frames // length) >= target else None


def early_workers(cluster) -> int:
    """The workers a pool starts with while the film decodes: a GPU pool whole, a CPU pool half
    the cluster's CPUs (the decode keeps the others); it grows after."""
    if cluster.worker_gpus:
        return cluster.workers_planned
    return max(1, int(cluster.cpus // (2 * cluster.worker_cpus)))


def render_while_decoding(job: Job, request: JobRequest, pool: Pool, targets: Callable[[], Targets],
                          reporter: Reporter, counts: RenderCounts, ahead: DecodeAhead) -> None:
    """Render the chains settled so far (their frames recorded under their own keys,
    Job.chain_key, which the whole plan's chains keep) until the decode is over; then the frames
    in flight are stored and the job goes on with the whole plan (plan_frames), these frames
    done. A CPU pool does not grow meanwhile (the decode keeps the CPUs it has)."""
    settings = request.settings
    chain_settings = dataclasses.replace(settings, passes=0)
    frame_count, span = request.info.frames, request.output.span
    executor = pool.get()
    graph = FrameGraph([], [], frame_count, chain_settings, span)
    make_task = TaskMaker(job, graph, settings, keep_flows=request.report)
    store = FrameStore(job, _pinned(executor, request, job), counts, reporter, None)
    executor.begin(make_task.job_id, request.weights, settings.style, targets().grams)
    counts.before = {s["worker"]: s for s in executor.stats()}
    job.event("render", detail="rendering the chains of the film's opening while the rest decodes")
    known: list[plan.Chain] = []
    seen = 0  # the decode's version last read

    def more(idle: bool):
        nonlocal graph, seen
        state = ahead.known(seen, 1.0 if idle else 0.0)
        if state is None:
            return None
        seen, hashes, chains, cuts = state
        if len(chains) <= len(known):
            return []
        job.decoded_so_far(hashes)
        new = chains[len(known):]
        job.add_chains(new)
        graph = FrameGraph(chains, cuts, frame_count, chain_settings, span)
        make_task.regraph(graph)
        known[:] = chains
        return [c for c in new if any(graph.wants(c.index, f) for f in c.frames)]

    def make(item: plan.FrameJob, first: bool):
        try:
            return make_task(item, first)
        except DamagedFile as damage:
            return _repair(job, request, damage, {c.index for c in known})

    def redo(item: plan.FrameJob, why: Redo) -> list[tuple[int, int]]:
        return _redo(job, request, reporter, make_task, why, {c.index for c in known})

    def tell(**note) -> None:  # the whole plan's render count is not known yet: at least the span's frames
        done = len(job.done)
        reporter.tell("render", done, max(span[1] - span[0], done + 1), workers=executor.workers, **note)

    def stored(finished: int) -> None:
        counts.workers = max(counts.workers, executor.workers)
        tell()

    def told(note: Note) -> None:
        job.event(note.kind, detail=note.text, **({"worker": note.worker} if note.worker else {}))
        tell(note=note.text)

    redone_before = executor.redone
    try:
        drive(executor, [], graph.sequential(graph.chains), make, store,
              is_done=lambda c, f: job.is_done(c, f) or not graph.wants(c, f), on_stored=stored, on_note=told,
              on_failure=store.failed, on_redo=redo, more=more, grow=bool(executor.worker_gpus))
    finally:
        make_task.close()
        counts.redone += executor.redone - redone_before
        counts.workers = max(counts.workers, executor.workers)


def repair_sources(job: Job, request: JobRequest, frames) -> None:
    """Decode the video again and rewrite the listed source frames (what a crash or a
    deleted file left missing or damaged)."""
    wanted = set(frames)
    if len(wanted) <= 50:  # a few: seek to each (a film is not decoded again for one frame)
        for number in sorted(wanted):
            job.rewrite_source(number, video.decode_at(request.info, number, *request.size, request.info.bits))
        return
    with contextlib.closing(video.decode(request.info, *request.size, request.info.bits)) as decoded:
        for number, frame in enumerate(decoded):
            if number in wanted:
                job.rewrite_source(number, frame)


# ---------------------------------------------------------------- plan
def plan_frames(job: Job, request: JobRequest, frame_count: int, cuts: list[int], pool: Pool) -> FrameGraph:
    """The job's chains (cut for the pool the job first runs on, then kept: a resume on
    another pool renders the same frames), its refinement sweeps and the span's renders."""
    settings = request.settings
    chains = job.load_plan(frame_count, cuts, settings.overlap) or _recorded_plan(job, request, frame_count, cuts)
    if chains is None:
        executor = pool.get()
        target = executor.workers_planned * executor.frames_per_worker if settings.seeded else 1
        chains, length = plan.plan_for_workers(frame_count, cuts, settings.segment_length, settings.overlap, target)
        job.save_plan(chains, segment_length=length, workers=target)
    graph = FrameGraph(chains, cuts, frame_count, settings, request.output.span)
    job.set_plan(graph.chains, graph.sweeps)
    return graph


def _recorded_plan(job: Job, request: JobRequest, frame_count: int, cuts: list[int]) -> list[plan.Chain] | None:
    """Without a usable plan.json (deleted, edited): the plan finished frames were made under, if
    the log names one — every plan is plan_chains at some segment length up to the job's, under
    one of plan.RULES — so that they are used, not deleted: the one most records were made
    under. Saved again."""
    settings = request.settings
    made = collections.Counter(job.recorded_keys())
    made.pop(None, None)
    if not made:
        return None
    best, found = 0, None
    for rule in plan.RULES:
        for length in range(settings.segment_length, 0, -1):
            chains = plan.plan_chains(frame_count, cuts, length, settings.overlap, rule)
            passes = plan.refinement_passes(chains, cuts, frame_count, settings.refine_passes)
            keys = {job.key_for(chains, passes), *(job.chain_key(c) for c in chains)}
            matched = sum(made[key] for key in keys)
            if matched > best:
                best, found = matched, (chains, length)
            if best == made.total():
                break  # every record: no plan can do better
        if best == made.total():
            break
    if found is None:
        return None
    job.save_plan(found[0], segment_length=found[1])
    return found[0]


# ---------------------------------------------------------------- render
@dataclass
class RenderCounts:
    rendered: int = 0
    resumed: int = 0
    redone: int = 0
    workers: int = 0
    optimizing: float | None = None  # share of the workers' working time inside optimizations
    before: dict | None = None  # the workers' stats when this run's first render began (render_while_decoding)


def render_and_encode(job: Job, graph: FrameGraph, request: JobRequest, pool: Pool,
                      targets: Callable[[], Targets], reporter: Reporter, counts: RenderCounts) -> RenderCounts:
    """Render every frame not yet done, the output encoded beside the render; then, if that
    encode did not finish, encode again. A frame found damaged while encoding is rendered
    again, at most :data:`REPAIR_ROUNDS` times."""
    reader = FrameReader(job, graph)
    # A video output of a Ray pool of this job's own is encoded in spans by CPU tasks on the
    # cluster and joined here (spans); else by one encoder on this machine, beside the render.
    spans = not request.output.is_sequence and pool.own and pool.options.kind != "local"
    for round_ in range(REPAIR_ROUNDS):
        # The first round encodes beside the render, each frame as soon as it is final (chains
        # start earliest first, so the encoder keeps up with the render instead of starting after
        # it); a failed stream costs only time: the frames are encoded again once all are done.
        missing = sum(1 for r in graph.renders() if not job.is_done(r.sequence, r.frame))
        if spans:  # every round: the parts already stored are kept
            stream = SpansBesideRender(request.output, job, reader, pool.cpu_tasks)
        else:
            stream = EncodeBesideRender(request.output, reader.is_final, reader.final_image) \
                if round_ == 0 and missing else None
        try:
            render(job, graph, request, pool, targets, reporter, counts, stream)
        except DamagedFile as damage:  # a frame of an earlier stage: the stages render again
            if stream:
                stream.cancel()
            _render_again(job, reporter, damage)
            continue
        except BaseException:
            if stream:
                stream.cancel()
            raise
        try:
            failure = stream.finish() if stream else None
            if stream is None or failure is not None:
                if failure is not None:
                    job.event("encode", detail=f"the encode beside the render failed ({first_line(failure)}); "
                                               "encoding again")
                reporter.tell("encode", 0, _span_length(request))
                encode(request.output, reader.final_image)
            reporter.tell("encode", _span_length(request), _span_length(request))
            return counts
        except DamagedFile as damage:
            _render_again(job, reporter, damage)
    raise FrameError(f"frames kept turning out damaged on disk after {REPAIR_ROUNDS} repairs: check the disk "
                     f"under {job.root}")


def _render_again(job: Job, reporter: Reporter, damage: DamagedFile) -> None:
    if not damage.discarded:
        job.discard(damage)
    reporter.note(f"frame {damage.frame} was damaged on disk; rendering it again")


def _span_length(request: JobRequest) -> int:
    return request.output.span[1] - request.output.span[0]


class FrameStore:
    """Stores each finished render: the flow the report will use, the frame, its record. Keeps
    a job to one way of rendering: the render facts a pool in this process knows beforehand,
    else those of the first frame a worker sends, and any frame rendered otherwise stops the job."""

    def __init__(self, job: Job, pinned: dict | None, counts: RenderCounts, reporter: Reporter,
                 stream: EncodeBesideRender | None):
        self.job, self.pinned, self.counts, self.reporter, self.stream = job, pinned, counts, reporter, stream

    def __call__(self, item: plan.FrameJob, out: FrameOutput) -> None:
        record = out.record
        if self.pinned is None:
            self.job.check_render(record.render)  # refused if done frames were rendered otherwise
            self.pinned = record.render
        elif record.render != self.pinned:
            raise JobError(f"worker {record.worker} rendered frame {item.frame} {describe_facts(record.render)}, but "
                           f"this job renders {describe_facts(self.pinned)}; one video never mixes the two: fix "
                           "that node (or choose --device) and re-run to resume")
        if out.flow is not None:  # the report's flow (previous → this frame), computed by the worker
            self.job.write_flow(item.frame - 1, item.frame, out.flow)
        if out.png is None:  # the worker stored it in the job's store: this record vouches for it
            self.job.vouch(item.chain, item.frame, None, {**record.as_dict(), "sha256": out.sha256,
                                                          "bytes": out.size})
        else:
            self.job.write_frame(item.chain, item.frame, out.png, record.as_dict())
        self.counts.rendered += 1
        if self.stream:
            self.stream.wake(item.frame)
        if record.warning:
            self.reporter.note(record.warning)

    def failed(self, item: plan.FrameJob, error: BaseException, attempt: int) -> None:
        if attempt:
            self.job.event("failed", chain=item.chain, frame=item.frame, detail=str(error), attempt=attempt)
        else:  # its worker died
            self.job.event("redone", chain=item.chain, frame=item.frame, detail=str(error))


def render(job: Job, graph: FrameGraph, request: JobRequest, pool: Pool, targets: Callable[[], Targets],
           reporter: Reporter, counts: RenderCounts, stream: EncodeBesideRender | None = None) -> None:
    """Render every frame the span needs and the job has not done, stage after stage; each
    stage's sequences (chains, sweeps) run in parallel, each one frame after the other when
    frames are seeded."""
    renders = graph.renders()
    done = sum(1 for r in renders if job.is_done(r.sequence, r.frame))
    counts.resumed = max(counts.resumed, done - counts.rendered)  # not the frames rendered while decoding
    if done == len(renders):
        return
    executor = pool.get()
    pinned = _pinned(executor, request, job)
    if pool.own:  # a shared pool (batch) stays whole for the jobs after this one
        executor.limit(-(-graph.parallel // executor.frames_per_worker))
    make_task = TaskMaker(job, graph, request.settings, keep_flows=request.report)
    store = FrameStore(job, pinned, counts, reporter, stream)
    executor.begin(make_task.job_id, request.weights, request.settings.style, targets().grams)
    # a lent pool's workers may have worked before
    before = counts.before if counts.before is not None else {s["worker"]: s for s in executor.stats()}
    job.remember(threads=executor.threads, frames_per_worker=executor.frames_per_worker)
    redone_before = executor.redone
    reporter.tell("render", done, len(renders), workers=executor.workers)

    def stored(finished: int) -> None:
        counts.workers = max(counts.workers, executor.workers)  # the peak: idle ones leave at the tail
        reporter.tell("render", done + finished, len(renders), workers=executor.workers)
        reporter.write_page("running", every=2.0)

    def told(note: Note) -> None:
        job.event(note.kind, detail=note.text, **({"worker": note.worker} if note.worker else {}))
        reporter.tell("render", done, len(renders), workers=executor.workers, note=note.text)

    try:
        stages = graph.stages()
        for number, stage in enumerate(stages):
            sequences = {s.index for s in stage}
            # Workers the stages after this one will want are kept through its tail (a new actor
            # costs its start and its model's load).
            later = max((len(s) for s in stages[number + 1:]), default=0)

            def make(item: plan.FrameJob, first: bool, sequences=sequences):
                try:
                    return make_task(item, first)
                except DamagedFile as damage:
                    return _repair(job, request, damage, sequences)

            def redo(item: plan.FrameJob, why: Redo, sequences=sequences) -> list[tuple[int, int]]:
                return _redo(job, request, reporter, make_task, why, sequences)

            done += drive(executor, stage, graph.sequential(stage), make, store,
                          is_done=lambda c, f: job.is_done(c, f) or not graph.wants(c, f), on_stored=stored,
                          on_note=told, on_failure=store.failed, on_redo=redo, release=pool.own, keep=later)
        counts.optimizing = _optimizing_share(job, executor, before)
    finally:
        make_task.close()
        counts.redone += executor.redone - redone_before
        counts.workers = max(counts.workers, executor.workers)


def _pinned(executor: Executor, request: JobRequest, job: Job) -> dict | None:
    """What decides the frames' bytes beyond the settings, where the pool knows it now (checked
    against the job's finished frames), else None (the first frame's record tells)."""
    if executor.device_kind is None:
        return None
    pinned = optimize.render_facts(request.settings.style, executor.device_kind,
                                   executor.threads if executor.device_kind == "cpu" else None)
    job.check_render(pinned)
    return pinned


def _redo(job: Job, request: JobRequest, reporter: Reporter, make_task: TaskMaker, why: Redo,
          sequences: set[int]) -> list[tuple[int, int]]:
    """A worker could not use a task: it does not reach the store (the driver relays the bytes
    from now on), or an input was damaged (made again; renders to redo returned)."""
    if isinstance(why, StoreUnreachable):
        make_task.relay()
        reporter.note(f"{why}: the driver hands the workers their frames instead")
        return []
    try:  # InputDamaged: what _repair does for a damaged file found here
        _repair(job, request, damage_of(why.key, str(why)), sequences)
    except Reopen as reopen:
        return reopen.renders
    return []


def _optimizing_share(job: Job, executor: Executor, before: dict) -> float | None:
    """The share of the workers' working time (a call of theirs at work) spent inside
    optimizations during this render, logged as a job event: what is left is the time a
    device waited for transfers, PNG coding and flows that did not overlap it."""
    optimizing = working = 0.0
    frames = 0
    for stat in executor.stats():
        earlier = before.get(stat["worker"], {})
        optimizing += stat["optimizing"] - earlier.get("optimizing", 0.0)
        working += stat["working"] - earlier.get("working", 0.0)
        frames += stat["frames"] - earlier.get("frames", 0)
    if working <= 0 or frames <= 0:
        return None
    share = min(1.0, optimizing / working)
    job.event("workers", detail=f"{frames} frames; the workers spent {share:.1%} of their working time optimizing")
    return share


def _repair(job: Job, request: JobRequest, damage: DamagedFile, sequences: set[int]) -> None:
    """Make again what a task (or its worker) found damaged: a source frame is decoded again
    and a flow read again (and the task made again), a frame of the sequences being rendered
    goes back in line (Reopen); a frame of an earlier stage raises, and the stages render again
    (render_and_encode)."""
    job.discard(damage)
    if damage.kind == "source":
        repair_sources(job, request, [damage.frame])
        return None
    if damage.kind == "flow":  # a user's flow: read into the store again when the task is made again
        return None
    if damage.kind == "frame" and damage.chain in sequences:
        raise Reopen([(damage.chain, damage.frame)])
    raise damage


# ---------------------------------------------------------------- report
def report_video(job: Job, graph: FrameGraph, request: JobRequest, targets: Targets, reporter: Reporter):
    """Warping errors and losses of the finished video, into the job's report folder (on the
    driver's device; the flows are the ones the workers computed while rendering)."""
    from .evaluate import EvaluationInputs, evaluate
    from .job import job_flows
    from .page import write_report

    # What we just wrote needs no probing (a probe decodes the whole video to count frames).
    output = request.output
    written = dataclasses.replace(request.info, path=output.path if output.is_sequence else
                                  store.ffmpeg_input(output.path), frames=graph.frame_count, width=request.size[0],
                                  height=request.size[1], rotate=0, bits=output.bits,
                                  numbers=tuple(map(output.number, range(graph.frame_count)))
                                  if output.is_sequence else None)
    settings = request.settings
    if settings.flow_dir is not None:
        flows = flow.flow_dir_provider(settings.flow_dir, *request.size)
    else:
        flows = job_flows(job.store, request.size)
    inputs = EvaluationInputs(model=targets.model, grams=targets.grams, settings=settings.style, flows=flows,
                              seams=graph.seams, flow_method=settings.flow)
    evaluation = evaluate(written, request.info, inputs,
                          progress=lambda done, frames: reporter.tell("report", done, frames))
    write_report(evaluation, written, request.info, job.store, "report")
    return evaluation


__all__ = ["stylize_video", "VideoResult", "VideoProgress", "default_job_dir", "range_output", "check_frame_size",
           "resolve_settings", "prepare", "JobRequest"]
