"""A video job from start to end: probe → decode → plan → render frames, reassembled beside the
render as each output frame becomes final → report.

Only the lifecycle lives here. The job directory and everything about its files is
:mod:`ray_style.job`; where frames render is an :class:`~ray_style.executor.Executor` (in this
process, or a Ray pool); one frame's work is :mod:`ray_style.render`. Every frame's inputs
are read back from the job directory and checked against their checksums, so an interrupted,
resumed or repaired job produces the same bytes as an uninterrupted one.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from . import __version__, images, optimize, plan, video
from .config import VideoSettings, as_dict
from .errors import FrameError, InputError, JobError, RayStyleError, first_line
from .executor import Executor, ExecutorOptions, make_executor
from .features import check_layers, layer_names
from .files import check_writable_output, sha256_file
from .job import DamagedFile, Job, fingerprint, open_job, png_bytes, remove_stale_temps
from .render import FrameOutput, FrameTask, Reference, WorkerLost, frame_seed
from .weights import Weights, load_weights

SEEDED = ("prev", "flow")  # inits that make each chain sequential
FRAME_ATTEMPTS = 3  # a frame that raises this often (NaN, out of memory) stops the job
REPAIR_ROUNDS = 3  # encode → damaged frame found → re-render: at most this often


@dataclass(frozen=True)
class VideoProgress:
    stage: str  # "decode", "flow", "render", "encode" or "report"
    done: int  # frames done in this stage (render: all finished frames, resumed ones too)
    total: int
    workers: int = 0  # render: workers placed now (an elastic pool grows as nodes join)
    note: str | None = None  # one line worth showing: a warning, a worker joined or lost


@dataclass(frozen=True)
class VideoResult:
    output: Path
    job_dir: Path
    frames: int
    chains: int
    rendered: int  # frame renders done by this run (a blended seam frame is rendered twice)
    resumed: int  # frame renders found finished in the job directory
    redone: int  # frames redone because their worker died
    seconds: float
    workers: int
    evaluation: "object | None" = None  # report.Evaluation of the finished video (None with report=False)
    warnings: tuple[str, ...] = ()


def default_job_dir(output) -> Path:
    output = Path(output)
    return output.with_name(output.stem + ".job")


def min_side(layers) -> int:
    """The smallest image side whose feature maps still exist at the deepest of ``layers``
    (each 2×2 pooling before it halves the side; 2^k px survive k of them)."""
    names = layer_names("vgg19")
    deepest = max(names.index(name) for name in layers if name in names)
    return 2 ** sum(1 for name in names[:deepest] if name.startswith("pool"))


def check_frame_size(info: video.VideoInfo, long_edge: int, layers) -> None:
    """:class:`InputError`, naming the smallest ``--size`` that works, for frames too small for
    the deepest layer's pooling."""
    need = min_side(layers)
    size = video.frame_size(info, long_edge)
    if min(size) < need:
        smallest = next(s for s in range(long_edge, 1 << 16) if min(video.frame_size(info, s)) >= need)
        raise InputError(f"--size {long_edge} makes {size[0]}x{size[1]} frames, too small for the deepest layer "
                         f"(its poolings need {need} px on each side): use --size {smallest} or more")


def _manifest(info: video.VideoInfo, style_paths, settings: VideoSettings, weights: Weights, size) -> dict:
    return {
        "version": __version__,
        "input": {"sha256": sha256_file(info.path), "frames": info.frames, "fps": str(info.fps),
                  "audio": info.audio_codec, "variable_rate": info.timestamps is not None},
        "styles": [sha256_file(path) for path in style_paths],
        "weights": weights.identity,
        "settings": as_dict(settings),
        "frame_size": list(size),
    }


def stylize_video(input_path, style_paths, output, settings: VideoSettings = VideoSettings(), *,
                  weights: str | Weights = "vgg19", job_dir=None,
                  executor: Executor | ExecutorOptions | None = None, restart: bool = False,
                  progress: Callable[[VideoProgress], None] | None = None, report: bool = True,
                  frames: tuple[int, int] | None = None) -> VideoResult:
    """Stylize a whole video into ``output`` (its container from the extension; source frame
    timing and every audio track kept), resumably.

    ``executor``: options for a pool made for this job and closed after it, or an open
    :class:`~ray_style.executor.Executor` to use and leave open (batch mode shares one across
    jobs). ``report``: evaluate the result (warping errors, losses) into ``JOB_DIR/report``.
    ``frames``: ``(first, end)`` renders only what frames first … end-1 need (their chains
    from their starts: the same frames the whole job renders, kept in its job directory for
    it) into ``OUTPUT.framesFIRST-LAST.EXT`` with that stretch of the audio.
    """
    started = time.perf_counter()
    settings.validate()
    options = executor if isinstance(executor, ExecutorOptions) else ExecutorOptions()
    options.validate()
    output = check_writable_output(output, [input_path, *style_paths])
    video.check_output_suffix(output)
    if not style_paths:
        raise InputError("give at least one style image")
    info = video.probe(input_path)
    video.plan_audio(info, output)  # an audio track no container can take fails now, not after rendering
    styles = [images.load_image(path) for path in style_paths]
    weights = weights if isinstance(weights, Weights) else load_weights(weights)
    size = video.frame_size(info, settings.style.size)
    style = optimize.resolve_loss_weights(settings.style, weights, size[0] * size[1])
    check_layers(weights.arch, (*style.content_layers, *style.style_layers))
    check_frame_size(info, settings.style.size, (*style.content_layers, *style.style_layers))
    temporal = settings.temporal_weight
    if temporal is None:
        temporal = weights.temporal_weight if settings.init == "flow" else 0.0
    settings = dataclasses.replace(settings, style=style, temporal_weight=temporal)
    if settings.flow_dir is not None and not Path(settings.flow_dir).is_dir():
        raise InputError(f"--flow-dir {settings.flow_dir} is not a folder of .flo files")
    job_dir = Path(job_dir) if job_dir else default_job_dir(output)
    manifest = _manifest(info, style_paths, settings, weights, size)
    manifest["run"] = {"input": str(input_path), "styles": [str(p) for p in style_paths], "output": str(output)}

    written = output if frames is None else range_output(output, frames)
    if frames is not None and settings.passes > 1:
        raise InputError("--frames renders a range with --passes 0 or 1; passes over the whole video need it all")
    with open_job(job_dir, manifest, restart) as job:
        remove_stale_temps(written.parent if str(written.parent) else Path("."), written.name)
        for warning in info.warnings:
            job.event("warning", detail=warning)
            _tell(progress, "note", 0, 0, note=warning)
        run = _Run(job, info, size, settings, weights, styles, progress)
        pool = executor if executor is not None and not isinstance(executor, ExecutorOptions) else None
        try:
            run.decode()
            run.select(frames, written)
            run.keep_flows = report and frames is None
            result = run.execute(pool, options)
            run.close()  # the workers are not needed for the report: give them back now
            evaluation = run.report() if report and frames is None else None
            run.page_write("finished", dataclasses.asdict(evaluation) if evaluation else None)
        except KeyboardInterrupt:
            run.page_write("stopped", message="interrupted; re-run the same command to resume")
            raise
        except BaseException as error:
            run.page_write("failed", message=first_line(error))
            raise
        finally:
            run.close()
    return VideoResult(written, job_dir, run.span[1] - run.span[0], len(run.chains), run.rendered, run.resumed,
                       run.redone, time.perf_counter() - started, run.workers, evaluation,
                       tuple(info.warnings) + result)


def ordered(function, items, threads: int):
    """``map(function, items)`` on a thread pool, in order, at most ``2 × threads`` ahead."""
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="frames") as pool:
        pending = deque()
        for item in items:
            pending.append(pool.submit(function, item))
            if len(pending) >= 2 * threads:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def range_output(output: Path, frames: tuple[int, int]) -> Path:
    """Where ``--frames A:B`` writes: beside the whole video's output, named for the range."""
    return output.with_name(f"{output.stem}.frames{frames[0]}-{frames[1] - 1}{output.suffix}")


def _tell(progress, stage: str, done: int, total: int, **extra) -> None:
    if progress:
        progress(VideoProgress(stage, done, total, **extra))


class _Cancelled(Exception):
    """The render stopped: the encode beside it gives up (its temp file goes with it)."""


class _StreamingEncode:
    """The output encoded beside the render: a thread runs :meth:`_Run.encode` whose frames
    wait until they are final. Everything the job records happens on the driver's thread;
    this one only reads finished, verified frames."""

    def __init__(self, run: "_Run"):
        self.run, self.error = run, None
        self._changed, self._stopped, self._rendered = threading.Condition(), False, False
        self._thread = threading.Thread(target=self._encode, name="encode-beside-render", daemon=True)
        self._thread.start()

    def _encode(self) -> None:
        try:
            self.run.encode(self._final_image, progress=False)
        except BaseException as error:  # noqa: BLE001 - any failure means: encode again afterwards
            self.error = error

    def _final_image(self, frame: int) -> np.ndarray:
        # The last frame also waits for the render to end well, so the output replaces nothing
        # unless the whole job succeeded.
        last = frame == self.run.span[1] - 1
        with self._changed:
            while not (self.run.is_final(frame) and (self._rendered or not last)):
                if self._stopped:
                    raise _Cancelled()
                self._changed.wait(timeout=1.0)
        return self.run.final_image(frame)

    def wake(self) -> None:
        """A frame was stored: waiting frames look again."""
        with self._changed:
            self._changed.notify_all()

    def cancel(self) -> None:
        with self._changed:
            self._stopped = True
            self._changed.notify_all()
        self._thread.join()

    def finish(self) -> bool:
        """Let the encode end, once the render has; True when it wrote a verified output."""
        with self._changed:
            self._rendered = True
            self._changed.notify_all()
        self._thread.join()
        if self.error is None:
            _tell(self.run.progress, "encode", *(2 * [self.run.span[1] - self.run.span[0]]))
            return True
        self.run.job.event("encode", detail=f"the encode beside the render failed ({first_line(self.error)}); "
                                            "encoding again")
        return False


class _Run:
    """One run of a job: the state the stages share."""

    def __init__(self, job: Job, info: video.VideoInfo, size, settings: VideoSettings, weights: Weights, styles,
                 progress):
        self.job, self.info, self.size, self.settings, self.weights = job, info, size, settings, weights
        self.styles, self.progress = styles, progress
        self.seeded = settings.init in SEEDED
        self.job_id = f"{job.fingerprint}-{uuid.uuid4().hex[:8]}"
        self.rendered = self.resumed = self.redone = self.workers = 0
        self.frames, self.cuts, self.chains = info.frames, [], []
        self.executor: Executor | None = None
        self.pool, self.options = None, ExecutorOptions()
        self._own_executor = False
        self.model = self.grams = None
        self.device = torch.device("cpu")  # the driver's own work: style targets and the report
        self.page = None
        self.stream: _StreamingEncode | None = None  # the encode running beside the render
        self.flows = None  # the user's flows (--flow-dir), read ahead of need
        self.flows_open = False
        self.keep_flows = False  # workers send back the flows the report will use
        self.sweeps, self.sweep_of, self.cover = [], {}, []
        self.span, self.output, self._needed = (0, info.frames), None, None
        self.notes: list[str] = []

    # -- decode ------------------------------------------------------------------------
    def source_key(self) -> str:
        return fingerprint({"input": self.job.manifest["input"]["sha256"], "size": list(self.size),
                            "cut_ratio": self.settings.cut_ratio})

    def decode(self) -> None:
        """Decode every source frame into the job directory once; later runs check and reuse
        them, and decode again only frames that went missing."""
        key = self.source_key()
        index = self.job.source_index(key)
        if index is not None and not self.job.damaged_sources():
            self.frames, self.cuts = index["frames"], index["cuts"]
            return
        if index is not None:
            self.repair_sources(self.job.damaged_sources())
            self.frames, self.cuts = index["frames"], index["cuts"]
            return
        def store(numbered):
            number, frame = numbered
            return self.job.write_source(number, frame), plan.frame_signature(frame)

        # PNG compression releases the GIL: frames are written by a thread per core while
        # ffmpeg decodes the next ones (a film's decode is otherwise one core's work).
        hashes, signatures = [], []
        with contextlib.closing(video.decode(self.info, *self.size)) as decoded:  # its ffmpeg ends with any error
            for number, (digest, signature) in enumerate(ordered(store, enumerate(decoded), os.cpu_count() or 1)):
                hashes.append(digest)
                signatures.append(signature)
                if number % 10 == 0 or number + 1 == self.info.frames:
                    _tell(self.progress, "decode", number + 1, self.info.frames)
        if len(hashes) != self.info.frames:
            raise InputError(f"{self.info.path}: decoded {len(hashes)} frames, counted {self.info.frames}; "
                             "the file changed while we read it, or is damaged")
        self.cuts = plan.detect_cuts(signatures, self.settings.cut_ratio)
        self.job.finish_source(key, len(hashes), self.cuts, hashes)
        self.frames = len(hashes)

    def repair_sources(self, frames) -> None:
        """Decode the video again and rewrite the listed source frames (what a crash or a
        deleted file left missing or damaged)."""
        wanted = set(frames)
        if len(wanted) <= 50:  # a few: seek to each (a film is not decoded again for one frame)
            for number in sorted(wanted):
                self.job.rewrite_source(number, video.decode_at(self.info, number, *self.size))
            return
        with contextlib.closing(video.decode(self.info, *self.size)) as decoded:
            for number, frame in enumerate(decoded):
                if number in wanted:
                    self.job.rewrite_source(number, frame)

    def select(self, frames: tuple[int, int] | None, output: Path) -> None:
        """Which output frames this run delivers, and where."""
        self.output = output
        if frames is None:
            self.span = (0, self.frames)
            return
        first, end = frames
        if not 0 <= first < end <= self.frames:
            raise InputError(f"--frames {first}:{end} is outside the video's {self.frames} frames (0:{self.frames})")
        self.span = (first, end)

    def needed(self) -> set | None:
        """The (sequence, frame) renders the selected span needs, or None for all of them: each
        chain covering a shown frame from its start (seeding), and refinement windows that touch
        the span, with the chain frames around them."""
        first, end = self.span
        if (first, end) == (0, self.frames):
            return None
        wanted, shown = set(), set(range(first, end))
        for sweep in (self.sweeps[0] if self.sweeps else []):
            if sweep.start < end and first < sweep.end:
                wanted.update((sweep.index, f) for f in sweep.frames)
                shown.update(range(max(0, sweep.start - 1), min(self.frames, sweep.end + 1)))
        for chain in self.chains:
            covered = [f for f in chain.frames if f in shown]
            if covered:
                frames = range(chain.start, max(covered) + 1) if self.seeded else covered
                wanted.update((chain.index, f) for f in frames)
        return wanted

    # -- plan and pool -------------------------------------------------------------------
    def execute(self, pool: Executor | None, options: ExecutorOptions) -> tuple[str, ...]:
        """Render what is missing and encode; returns the warnings the run gathered."""
        self.pool = pool
        self.set_options(options)
        chains = self.job.load_plan()
        if chains is None:
            # The chains are cut for the pool the job first runs on, then kept: a resume on
            # another pool renders the same frames.
            target = self.ensure_executor().workers_planned * self.executor.frames_per_worker if self.seeded else 1
            chains, length = plan.plan_for_workers(self.frames, self.cuts, self.settings.segment_length,
                                                   self.settings.overlap, target)
            self.job.save_plan(chains, segment_length=length, workers=target)
        self.chains = chains
        self.sweeps = plan.refinement_passes(chains, self.cuts, self.frames, self.settings.passes)
        self.job.set_plan(chains, self.sweeps)
        self._needed = self.needed()
        self.sweep_of = {s.index: s for stage in self.sweeps for s in stage}
        self.cover = [{f: s.index for s in stage for f in s.frames} for stage in self.sweeps]
        from .page import LivePage

        self.page = LivePage(self.job.root, sum(1 for stage in self.stages() for s in stage for f in s.frames
                                                if self.wants(s.index, f)))
        self.page_write("running")
        for round_ in range(REPAIR_ROUNDS):
            # The first round encodes beside the render, each frame as soon as it is final (chains
            # start earliest first, so the encoder keeps up with the render instead of starting after
            # it); a failed stream costs only time: the frames are encoded again once all are done.
            self.stream = _StreamingEncode(self) if round_ == 0 and self.missing() else None
            try:
                self.render()
            except BaseException:
                if self.stream:
                    self.stream.cancel()
                raise
            try:
                if not (self.stream and self.stream.finish()):
                    self.encode()
                return tuple(self.notes)
            except DamagedFile as damage:
                self.job.discard(damage)
                self._note(f"frame {damage.frame} was damaged on disk; rendering it again")
        raise FrameError(f"frames kept turning out damaged on disk after {REPAIR_ROUNDS} repairs: check the disk "
                         f"under {self.job.root}")

    def set_options(self, options: ExecutorOptions) -> None:
        self.options = options
        if options.device == "cpu" or not torch.cuda.is_available():
            self.device = torch.device("cpu")
        else:
            self.device = optimize.pick_device("cuda" if options.device == "auto" else options.device)

    def ensure_executor(self) -> Executor:
        if self.executor is None:
            if self.pool is not None:
                self.executor = self.pool
            else:
                if self.options.kind == "local":
                    optimize.pick_device(self.options.device)  # a missing GPU is an error here, not a fallback
                self.executor, self._own_executor = make_executor(self.pinned_threads(self.options)), True
        return self.executor

    def pinned_threads(self, options: ExecutorOptions) -> ExecutorOptions:
        """A CPU frame's bytes depend on its torch thread count (the order of its sums): a job
        keeps the count it started with, and a resume that asks for another is refused."""
        recorded = self.job.manifest.get("run", {}).get("threads")
        if not recorded or not self.job.done:
            return options
        if options.threads is not None and options.threads != recorded:
            raise JobError(f"this job renders with --threads {recorded} (a CPU frame's bytes depend on it, and "
                           f"{len(self.job.done)} frames are done): resume with --threads {recorded}, or --restart")
        return dataclasses.replace(options, threads=recorded)

    def page_write(self, state: str, evaluation: dict | None = None, message: str | None = None,
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

    def _parallel(self) -> int:
        return len(self.chains) if self.seeded else sum(len(c.frames) for c in self.chains)

    def close(self) -> None:
        if self.executor is not None and self._own_executor:
            self.executor.close()
        self.executor = None
        if self.flows is not None:
            self.flows.close()
            self.flows = None

    def _note(self, note: str) -> None:
        self.notes.append(note)
        self.job.event("warning", detail=note)
        _tell(self.progress, "note", 0, 0, note=note)

    # -- render ----------------------------------------------------------------------------
    def _targets(self) -> None:
        """The artwork's Gram matrices, once per run (shared with workers; reused by the report)."""
        if self.grams is not None:
            return
        style = self.settings.style
        with torch.no_grad():
            self.model = optimize.build_model(self.weights, style, self.device)
            grams = optimize.style_targets(self.model, optimize.prepare_styles(self.styles, style.size,
                                                                               style.style_scale, self.device),
                                           style.style_layers, style.style_blend_weights)
        self.grams = {name: gram.cpu().numpy() for name, gram in grams.items()}

    def wants(self, sequence: int, frame: int) -> bool:
        return self._needed is None or (sequence, frame) in self._needed

    def stages(self) -> list[list]:
        """What renders, in order: the chains, then each refinement pass's sweeps (--passes)."""
        return [self.chains, *self.sweeps]

    def missing(self) -> int:
        """Frame renders still to do."""
        return sum(1 for stage in self.stages() for s in stage for f in s.frames
                   if self.wants(s.index, f) and not self.job.is_done(s.index, f))

    def render(self) -> None:
        """Render every frame not yet done, stage after stage; each stage's sequences (chains,
        sweeps) run in parallel, each one frame after the other when frames are seeded."""
        stages = self.stages()
        total = sum(1 for stage in stages for s in stage for f in s.frames if self.wants(s.index, f))
        done = total - self.missing()
        self.resumed = max(self.resumed, done)
        if done == total:
            return
        self.open_flows()
        self._targets()
        executor = self.ensure_executor()
        if self._own_executor:  # a shared pool (batch) stays whole for the jobs after this one
            executor.limit(-(-self._parallel() // executor.frames_per_worker))
        executor.begin(self.job_id, self.weights, self.settings.style, self.grams)
        self.job.remember(threads=executor.threads, frames_per_worker=executor.frames_per_worker)
        redone_before = executor.redone
        _tell(self.progress, "render", done, total, workers=executor.workers)
        try:
            for stage, make_task in zip(stages, [self.task] + [self.pass_task] * len(self.sweeps)):
                done = self._render_stage(executor, stage, make_task, done, total)
        finally:
            self.redone += executor.redone - redone_before
            self.workers = max(self.workers, executor.workers)

    def _render_stage(self, executor, sequences, make_task, done: int, total: int) -> int:
        sequential = self.seeded or sequences is not self.chains
        # Frames this run does not need count as done: the scheduler never offers them.
        scheduler = plan.ChainScheduler(sequences, lambda c, f: self.job.is_done(c, f) or not self.wants(c, f),
                                        sequential=sequential)
        firsts = {s.index: s.frames[0] for s in sequences}
        attempts: dict = {}
        try:
            while not scheduler.finished():
                for item in scheduler.ready(executor.capacity()):
                    try:
                        task = make_task(item, item.frame == firsts[item.chain])
                    except DamagedFile as damage:
                        self.repair(damage, scheduler)
                        continue
                    executor.submit(item, task)
                    scheduler.started(item)
                for item, out in executor.results():
                    if self.store(item, out, scheduler, attempts):
                        done += 1
                        _tell(self.progress, "render", done, total, workers=executor.workers)
                        self.page_write("running", every=2.0)
                for note in executor.notes():
                    self.job.event("worker", detail=note)
                    _tell(self.progress, "render", done, total, workers=executor.workers, note=note)
        except BaseException as error:
            if not isinstance(error, KeyboardInterrupt):
                try:
                    for item, out in executor.drain():  # finished work of a failing job is kept
                        if isinstance(out, FrameOutput):
                            self.store(item, out, scheduler, {})
                except (RayStyleError, OSError):
                    pass  # the error that stopped the job is the one to report
            raise
        return done

    def store(self, item, out, scheduler, attempts) -> bool:
        """Persist a finished frame, or count a failure; True when a frame was stored."""
        if isinstance(out, FrameOutput) and out.job == self.job_id:
            if out.flow is not None:  # the report's flow (previous → this frame), computed by the worker
                self.job.write_flow(item.frame - 1, item.frame, out.flow)
            self.job.write_frame(item.chain, item.frame, out.png, out.record())
            scheduler.done(item)
            self.rendered += 1
            if self.stream:
                self.stream.wake()
            if out.warning and out.warning not in self.notes:
                self._note(out.warning)
            return True
        scheduler.failed(item)
        if isinstance(out, WorkerLost):
            self.job.event("redone", chain=item.chain, frame=item.frame, detail=str(out))
            return False
        key = (item.chain, item.frame)
        attempts[key] = attempts.get(key, 0) + 1
        self.job.event("failed", chain=item.chain, frame=item.frame, detail=str(out), attempt=attempts[key])
        if attempts[key] >= FRAME_ATTEMPTS:
            raise FrameError(f"frame {item.frame} (chain {item.chain}) failed {attempts[key]} times: {out}")
        return False

    def repair(self, damage: DamagedFile, scheduler) -> None:
        """Make again what a task found damaged: a frame (rendered again), a source frame
        (decoded again) or a flow (computed again when next asked for)."""
        self.job.discard(damage)
        if damage.kind == "frame":
            scheduler.reopen(damage.chain, damage.frame)
        elif damage.kind == "source":
            self.repair_sources([damage.frame])
        # a damaged flow is computed again the next time the frame asks for it

    def pass_task(self, item, first: bool) -> FrameTask:
        """A refinement frame: it starts from its own latest result blended with its neighbour's
        (the one just refined before it in the sweep), warped along the flow, and the temporal
        loss holds it to both neighbours (Ruder et al. 2016, §4.3)."""
        sweep, t = self.sweep_of[item.chain], item.frame
        number, step = sweep.pass_number, -1 if sweep.backward else 1
        behind, ahead = t - step, t + step
        references = []
        if self.same_shot(t, behind):
            inside = sweep.start <= behind < sweep.end
            image = (self.job.read_frame_bytes(sweep.index, behind) if inside
                     else self.final_bytes(behind, number - 1))
            references.append(self.reference(t, behind, image))
        if self.same_shot(t, ahead):
            references.append(self.reference(t, ahead, self.final_bytes(ahead, number - 1)))
        style = self.settings.style
        return FrameTask(self.job_id, sweep.index, t, self.job.read_source_bytes(t), "blend", style.iters,
                         frame_seed(style.seed, t), tuple(references), self.settings.temporal_weight or 0.0,
                         start=self.final_bytes(t, number - 1), flow_method=self.settings.flow)

    def same_shot(self, a: int, b: int) -> bool:
        return 0 <= b < self.frames and not any(min(a, b) < cut <= max(a, b) for cut in self.cuts)

    def last_sweep(self, frame: int, upto: int | None = None) -> int | None:
        """The sweep of the last pass up to ``upto`` (default: all) that covers ``frame``; None
        when no pass does and the chains' blend stands."""
        for cover in reversed(self.cover[:upto]):
            if frame in cover:
                return cover[frame]
        return None

    def final_bytes(self, frame: int, upto: int) -> bytes:
        """The PNG of ``frame`` as the passes up to ``upto`` left it (0: the chains' blend)."""
        sweep = self.last_sweep(frame, upto)
        if sweep is None:
            return png_bytes(self.job.blend(self.chains, frame))
        return self.job.read_frame_bytes(sweep, frame)

    def is_final(self, frame: int) -> bool:
        """Whether everything :meth:`final_image` reads for ``frame`` is done."""
        sweep = self.last_sweep(frame)
        if sweep is not None:
            return self.job.is_done(sweep, frame)
        return all(self.job.is_done(chain, frame) for chain, _ in plan.frame_sources(self.chains, frame))

    def final_image(self, frame: int) -> np.ndarray:
        """What the output shows at ``frame``: the last pass's result, else the chains' blend."""
        sweep = self.last_sweep(frame)
        return self.job.blend(self.chains, frame) if sweep is None else self.job.read_frame(sweep, frame)

    def task(self, item, first: bool) -> FrameTask:
        """Everything one frame needs, read from the job directory (so resumes match)."""
        settings, style = self.settings, self.settings.style
        content = self.job.read_source_bytes(item.frame)
        seed = frame_seed(style.seed, item.frame)
        if first or not item.seeded:
            kind = settings.start_init if first else settings.init
            iters = settings.chain_start_iters if first and self.seeded else style.iters
            return FrameTask(self.job_id, item.chain, item.frame, content, kind, iters, seed)
        start = next(c.start for c in self.chains if c.index == item.chain)
        references = tuple(self.reference(item.frame, item.frame - k, self.job.read_frame_bytes(item.chain,
                                                                                                  item.frame - k))
                           for k in settings.offsets if item.frame - k >= start)
        return FrameTask(self.job_id, item.chain, item.frame, content, settings.init, style.iters, seed,
                         references, settings.temporal_weight or 0.0, flow_method=settings.flow,
                         return_flow=self.keep_flows)

    def reference(self, frame: int, other: int, image: bytes) -> Reference:
        """``other``'s stylized frame for ``frame``, with what the worker needs for the flow
        between them: the user's flow (--flow-dir), else ``other``'s source frame."""
        if self.settings.init != "flow":
            return Reference(frame - other, image)
        if self.flows is not None:
            return Reference(frame - other, image, flow=self.flows.get(frame, other))
        return Reference(frame - other, image, source=self.job.read_source_bytes(other))

    # -- optical flow ------------------------------------------------------------------------
    def flow_pairs(self) -> list[tuple[int, int]]:
        """Every ``(frame, earlier frame)`` flow the chains' seeded frames need, in the order
        they will be needed: each chain's second frame first, then their third frames, …"""
        offsets = self.settings.offsets
        by_depth: dict[int, list] = {}
        for chain in self.chains:
            for depth, frame in enumerate(chain.frames):
                if self.wants(chain.index, frame) and not self.job.is_done(chain.index, frame):
                    by_depth.setdefault(depth, []).extend((frame, frame - k) for k in offsets
                                                          if frame - k >= chain.start)
        return [pair for depth in sorted(by_depth) for pair in by_depth[depth]]

    def open_flows(self) -> None:
        """The job's flow cache. Flows are computed by the workers that need them (render.prepare)
        and only the report's are kept here; the user's flows (--flow-dir) are read into it
        ahead of need and sent with the tasks."""
        if self.flows_open or self.settings.init != "flow":
            return
        self.flows_open = True
        if self.settings.flow_dir is None:
            self.job.open_flows(fingerprint({"source": self.source_key(), "flow": self.settings.flow}))
            return
        from .flowcache import FlowCache

        self.flows = FlowCache(self.job, self.source_key(), self.settings.flow_dir)
        self.flows.prefetch(self.flow_pairs())

    # -- reassemble and report ----------------------------------------------------------------
    def encode(self, final_image=None, progress: bool = True) -> None:
        """Encode the output from the final frames (``final_image``: how to get one; a streaming
        encode's waits until the frame is final)."""
        first, end = self.span
        if progress:
            _tell(self.progress, "encode", 0, end - first)
        # Frames are read, checked and blended by a thread per core ahead of the encoder
        # (PNG decoding releases the GIL); one thread alone would be slower than x264.
        frames = ordered(final_image or self.final_image, range(first, end), os.cpu_count() or 1)
        timestamps, window = self.info.timestamps, None
        if (first, end) != (0, self.frames):
            times = timestamps or [t / self.info.fps for t in range(self.frames + 1)]
            stop = times[end] if end < len(times) else times[-1] + (times[-1] - times[-2] if len(times) > 1 else 0)
            window = (float(times[first]), float(stop - times[first]))
            timestamps = [t - times[first] for t in timestamps[first:end]] if timestamps else None
        video.encode(frames, self.output, *self.size, self.info.fps, self.info, self.settings.crf, timestamps,
                     audio_window=window)
        if progress:
            _tell(self.progress, "encode", end - first, end - first)

    def report(self):
        """Warping errors and losses of the finished video, on the driver's device with the model,
        Gram matrices and flows rendering already made."""
        from .report import evaluate, write_report

        def report_progress(done, frames):
            _tell(self.progress, "report", done, frames)

        self._targets()
        output = self.job.manifest["run"]["output"]
        # What we just wrote needs no probing (a probe decodes the whole video to count frames).
        written = dataclasses.replace(self.info, path=str(output), frames=self.frames, width=self.size[0],
                                      height=self.size[1], rotate=0)
        from . import flow
        from .job import job_flows

        if self.settings.flow_dir is not None:
            flows = flow.flow_dir_provider(self.settings.flow_dir, *self.size)
        else:  # what the workers computed while rendering (and sent back for this)
            flows = job_flows(self.job.root, self.size)
        evaluation = evaluate(written, self.info, self.styles, self.weights, self.settings.style,
                              progress=report_progress, model=self.model, grams=self.grams, device=self.device,
                              flows=flows, seams=plan.seams(self.chains, self.cuts), flow_method=self.settings.flow)
        write_report(evaluation, written, self.info, self.job.root / "report")
        return evaluation


__all__ = ["stylize_video", "VideoResult", "VideoProgress", "default_job_dir", "check_frame_size", "min_side"]
