"""A video job from start to end: probe → decode → plan → render frames → reassemble.

The driver loop here is executor-agnostic: :class:`LocalExecutor` renders in this process
(no Ray: tests, debugging, and the baseline for Ray's overhead), ``workers.RayExecutor`` on
a Ray pool. Every frame's inputs are read back from the job directory, so an interrupted and
resumed job produces the same bytes as an uninterrupted one.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from . import __version__, images, optimize, plan, video
from .config import VideoSettings, as_dict
from .errors import FrameError, InputError
from .features import check_layers
from .files import check_writable_output, sha256_file, write_text_atomic
from .job import Job, open_job
from .render import FrameOutput, FrameTask, RendererCache, WorkerLost, frame_seed
from .report import Evaluation, evaluate, write_report
from .weights import Weights, load_weights

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".m4v")
SEEDED = ("prev", "flow")  # inits that make each chain sequential
FRAME_ATTEMPTS = 3  # a frame that raises this often (NaN, out of memory) stops the job


@dataclass(frozen=True)
class VideoProgress:
    stage: str  # "decode", "flow", "render", "encode" or "report"
    done: int  # frames done in this stage (render: all finished frames, resumed ones too)
    total: int


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
    evaluation: "Evaluation | None" = None  # of the finished video (None with report=False)


def default_job_dir(output) -> Path:
    output = Path(output)
    return output.with_name(output.stem + ".job")


class LocalExecutor:
    """Renders frames in this process when asked for results (``frames_per_worker`` at a
    time, batched where they can be), no Ray."""

    def __init__(self, device: str = "cpu", threads: int | None = None, frames_per_worker: int = 1):
        self.cache = RendererCache(device, threads)
        self.threads = threads or torch.get_num_threads()
        self.frames_per_worker = frames_per_worker
        self.queue: list = []
        self.workers, self.redone = 1, 0

    def begin(self, weights: Weights, settings, grams) -> None:
        self.renderer = self.cache.get(weights.identity, lambda: weights, settings, str(id(grams)), lambda: grams)

    def capacity(self) -> int:
        return self.frames_per_worker - len(self.queue)

    def submit(self, job, task) -> None:
        self.queue.append((job, task))

    def wait(self):
        queue, self.queue = self.queue, []
        return list(zip((job for job, _ in queue), self.renderer.render_many([task for _, task in queue])))

    def close(self) -> None:
        pass


def _manifest(info: video.VideoInfo, style_paths, settings: VideoSettings, weights: Weights, size) -> dict:
    return {
        "version": __version__,
        "input": {"sha256": sha256_file(info.path), "frames": info.frames, "fps": str(info.fps),
                  "audio": info.audio_codec},
        "styles": [sha256_file(path) for path in style_paths],
        "weights": weights.identity,
        "settings": as_dict(settings),
        "frame_size": list(size),
    }


def _decode(job: Job, info: video.VideoInfo, size, settings: VideoSettings, progress) -> dict:
    signatures = []
    for index, frame in enumerate(video.decode(info, *size)):
        job.write_source(index, frame)
        signatures.append(plan.frame_signature(frame))
        if progress and (index % 10 == 0 or index + 1 == info.frames):
            progress(VideoProgress("decode", index + 1, info.frames))
    if len(signatures) != info.frames:
        raise InputError(f"{info.path}: decoded {len(signatures)} frames, counted {info.frames}; the file may be "
                         "damaged (re-mux it with ffmpeg -c copy)")
    cuts = plan.detect_cuts(signatures, settings.cut_ratio)
    job.finish_source(len(signatures), cuts)
    return job.source_index()


def _blend(job: Job, chains, frame: int) -> np.ndarray:
    sources = plan.frame_sources(chains, frame)
    if len(sources) == 1:
        return job.read_frame(sources[0][0], frame)
    mixed = sum(weight * job.read_frame(chain, frame).astype(np.float32) for chain, weight in sources)
    return np.clip(np.rint(mixed), 0, 255).astype(np.uint8)


def check_frames_per_worker(frames: int) -> None:
    if not 1 <= frames <= 64:
        raise InputError(f"--frames-per-worker {frames}: use 1…64")


def stylize_video(input_path, style_paths, output, settings: VideoSettings = VideoSettings(), *,
                  weights: str | Weights = "vgg19", job_dir=None, address: str | None = None,
                  workers: int | None = None, threads: int | None = None, executor: str = "ray",
                  restart: bool = False, device: str = "auto",
                  progress: Callable[[VideoProgress], None] | None = None, pool=None,
                  report: bool = True, frames_per_worker: int = 1) -> VideoResult:
    """Stylize a whole video into ``output`` (H.264 MP4, source fps and audio), resumably.

    ``pool``: an executor to use and leave open (batch mode shares one across jobs);
    otherwise one is made from ``executor``, ``address``, ``workers``, ``threads`` and
    ``frames_per_worker`` (frames of different chains one worker optimizes as one batch: on a
    GPU, small frames fill it better; results then depend on which frames share a batch).
    ``report``: evaluate the result (warping error, losses) into ``JOB_DIR/report``.
    """
    started = time.perf_counter()
    settings.validate()
    output = check_writable_output(output, [input_path, *style_paths])
    if output.suffix.lower() not in VIDEO_SUFFIXES:
        raise InputError(f"output {output} must end in {', '.join(VIDEO_SUFFIXES)}")
    if executor not in ("ray", "local"):
        raise InputError(f"unknown executor '{executor}': use ray or local")
    check_frames_per_worker(frames_per_worker)
    if not style_paths:
        raise InputError("give at least one style image")
    info = video.probe(input_path)
    styles = [images.load_image(path) for path in style_paths]
    weights = weights if isinstance(weights, Weights) else load_weights(weights)
    size = video.frame_size(info, settings.style.size)
    style = optimize.resolve_loss_weights(settings.style, weights, size[0] * size[1])
    check_layers(weights.arch, (*style.content_layers, *style.style_layers))
    temporal = settings.temporal_weight
    if temporal is None:
        temporal = weights.temporal_weight if settings.init == "flow" else 0.0
    settings = dataclasses.replace(settings, style=style, temporal_weight=temporal)
    job_dir = Path(job_dir) if job_dir else default_job_dir(output)
    manifest = _manifest(info, style_paths, settings, weights, size)
    manifest["run"] = {"input": str(input_path), "styles": [str(p) for p in style_paths], "output": str(output)}

    with open_job(job_dir, manifest, restart) as job:
        index = job.source_index() or _decode(job, info, size, settings, progress)
        chains = plan.plan_chains(index["frames"], index["cuts"], settings.segment_length, settings.overlap)
        scheduler = plan.ChainScheduler(chains, job.is_done, sequential=settings.init in SEEDED)
        if settings.init == "flow":
            _flows(job, chains, progress)
        total = sum(len(c.frames) for c in chains)
        resumed = total - scheduler.remaining
        rendered, redone, pool_size = 0, 0, 0
        if not scheduler.finished():
            rendered, redone, pool_size = _render(job, chains, scheduler, settings, weights, styles, total, pool,
                                                  executor, address, workers, threads, device, progress,
                                                  frames_per_worker)
        if progress:
            progress(VideoProgress("encode", 0, index["frames"]))
        video.encode((_blend(job, chains, t) for t in range(index["frames"])), output, *size, info.fps,
                     info.path if info.has_audio else None, settings.crf)
        if progress:
            progress(VideoProgress("encode", index["frames"], index["frames"]))
        evaluation = None
        if report:
            def report_progress(done, frames):
                if progress:
                    progress(VideoProgress("report", done, frames))

            # What we just wrote needs no probing (a probe decodes the whole video to count frames).
            written = dataclasses.replace(info, path=str(output), frames=index["frames"], width=size[0],
                                          height=size[1], rotate=0)
            evaluation = evaluate(written, info, styles, weights, style, progress=report_progress)
            write_report(evaluation, written, info, job.root / "report")
    return VideoResult(output, job_dir, index["frames"], len(chains), rendered, resumed, redone,
                       time.perf_counter() - started, pool_size, evaluation)


def _render(job, chains, scheduler, settings: VideoSettings, weights, styles, total, pool, executor_name,
            address, workers, threads, device, progress, frames_per_worker):
    style = settings.style
    with torch.no_grad():
        model = optimize.build_model(weights, style)
        grams = optimize.style_targets(model, optimize.prepare_styles(styles, style.size, style.style_scale, "cpu"),
                                       style.style_layers, style.style_blend_weights)
        grams = {name: gram.numpy() for name, gram in grams.items()}
    del model
    # A resumed job keeps its torch thread count: CPU results depend on it (bitwise).
    threads = threads or job.manifest.get("run", {}).get("threads")
    executor, started_ray = pool, False
    if executor is None and executor_name == "local":
        executor = LocalExecutor(str(optimize.pick_device(device)), threads, frames_per_worker)
    elif executor is None:
        from . import workers as ray_workers

        parallel = len(chains) if settings.init in SEEDED else scheduler.remaining
        parallel = -(-parallel // frames_per_worker)
        executor, started_ray = ray_workers.make_pool(address, workers, threads, parallel, frames_per_worker)
    executor.begin(weights, style, grams)
    _remember(job, threads=executor.threads, frames_per_worker=getattr(executor, "frames_per_worker", 1))
    chain_start = {c.index: c.start for c in chains}
    attempts: dict = {}
    done_count = total - scheduler.remaining
    rendered, redone_before = 0, executor.redone
    if progress:
        progress(VideoProgress("render", done_count, total))
    try:
        while not scheduler.finished():
            for item in scheduler.ready(executor.capacity()):
                task = _task(job, item, item.frame == chain_start[item.chain], settings)
                executor.submit(item, task)
                scheduler.started(item)
            for item, out in executor.wait():
                if isinstance(out, FrameOutput):
                    job.write_frame(item.chain, item.frame, out.image, {
                        "loss": out.loss, "content_loss": out.content_loss, "style_loss": out.style_loss,
                        "evaluations": out.evaluations, "seconds": round(out.seconds, 3), "worker": out.worker,
                        **({"fallback": out.fallback} if out.fallback else {})})
                    scheduler.done(item)
                    done_count, rendered = done_count + 1, rendered + 1
                    if progress:
                        progress(VideoProgress("render", done_count, total))
                    continue
                scheduler.failed(item)
                if isinstance(out, WorkerLost):
                    continue
                key = (item.chain, item.frame)
                attempts[key] = attempts.get(key, 0) + 1
                if attempts[key] >= FRAME_ATTEMPTS:
                    raise FrameError(f"frame {item.frame} (chain {item.chain}) failed {attempts[key]} times: {out}")
    finally:
        redone, size = executor.redone - redone_before, executor.workers
        if pool is None:
            executor.close()
        if started_ray:
            ray_workers.shutdown(started_ray)
    return rendered, redone, size


def _flows(job: Job, chains, progress) -> None:
    """Flow from each frame to the one before it, where a chain seeds from that frame; cached.

    OpenCV releases the GIL, so a thread per core computes them in parallel.
    """
    from concurrent.futures import ThreadPoolExecutor

    from . import flow

    wanted = [f for c in chains for f in c.frames if f > c.start and not job.flow_path(f).exists()]

    def one(frame):
        current, previous = job.read_source(frame), job.read_source(frame - 1)
        back, forward = flow.optical_flow(current, previous), flow.optical_flow(previous, current)
        job.write_flow(frame, back, flow.reliability(back, forward))

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        for done, _ in enumerate(pool.map(one, wanted), start=1):
            if progress and (done % 10 == 0 or done == len(wanted)):
                progress(VideoProgress("flow", done, len(wanted)))


def _task(job: Job, item, first: bool, settings: VideoSettings) -> FrameTask:
    """Everything one frame needs, read from the job directory (so resumes match)."""
    style = settings.style
    content = job.read_source(item.frame)
    seed = frame_seed(style.seed, item.frame)
    if first or not item.seeded:
        kind = settings.start_init if first else settings.init
        iters = settings.chain_start_iters if first and settings.init in SEEDED else style.iters
        return FrameTask(item.chain, item.frame, content, None, kind, iters, seed)
    previous = job.read_frame(item.chain, item.frame - 1)
    if settings.init == "prev":
        return FrameTask(item.chain, item.frame, content, previous, "prev", style.iters, seed)
    from . import flow

    back, mask = job.read_flow(item.frame)
    return FrameTask(item.chain, item.frame, content, flow.flow_init(previous, content, back, mask), "flow",
                     style.iters, seed, flow.warp(previous, back), mask.astype(np.uint8),
                     settings.temporal_weight or 0.0)


def _remember(job: Job, **values) -> None:
    """Record run facts (not compared on resume) in the manifest's "run" section."""
    job.manifest.setdefault("run", {}).update(values)
    write_text_atomic(job.root / "manifest.json", json.dumps(job.manifest, indent=2, sort_keys=True))


def job_status(root) -> dict:
    """What a job directory holds: for `ray-style status`, running or not."""
    from .errors import JobError
    from .job import frame_path, is_locked, read_log, source_index

    root = Path(root)
    manifest_path = root / "manifest.json"
    if not manifest_path.exists():
        raise JobError(f"{root} is not a ray-style job directory (no manifest.json)")
    manifest = json.loads(manifest_path.read_text())
    index = source_index(root)
    records = read_log(root)
    status = {"job_dir": str(root), "running": is_locked(root), "input": manifest.get("run", {}).get("input"),
              "output": manifest.get("run", {}).get("output"), "frames": manifest["input"]["frames"],
              "decoded": index is not None}
    if index is not None:
        vs = manifest["settings"]
        chains = plan.plan_chains(index["frames"], index["cuts"], vs["segment_length"], vs["overlap"])
        total = sum(len(c.frames) for c in chains)
        done = sum(1 for c in chains for f in c.frames if frame_path(root, c.index, f).exists())
        status.update(chains=len(chains), shot_cuts=index["cuts"], renders_total=total, renders_done=done)
    if records:
        seconds = [r["seconds"] for r in records[-50:]]
        status.update(mean_seconds_per_frame=round(float(np.mean(seconds)), 3),
                      last_frame=records[-1]["frame"], workers=sorted({r["worker"] for r in records}))
        output = status.get("output")
        status["finished"] = bool(output and os.path.exists(output) and status.get("renders_done") == status.get(
            "renders_total"))
    return status


__all__ = ["stylize_video", "VideoResult", "VideoProgress", "LocalExecutor", "job_status", "default_job_dir"]
