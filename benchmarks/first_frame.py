"""Time from the command to the first stored frame, against what a full decode costs.

    python -m benchmarks.first_frame [--seconds 60] [--no-write]

A 1080p clip of ``--seconds`` seconds is made from the bikes sample (looped and scaled to
1920×1080 with ffmpeg, x264; made once in a temporary folder). On a local Ray (the machine's
cores, CPU workers), the job is stylized with a short optimization (first VGG layer, random
weights, 2 evaluations: the optimization is not what is measured) and the time until its
first frame is stored is taken. Beside it, on the same machine in the same run:

- **a full decode**: ffmpeg decoding every frame to raw RGB at the output size, nothing
  stored (the floor of any approach that decodes the film before its first frame renders);
- **the head's old path**: a probe that decodes every frame to count it, then one decode of
  the whole film whose frames are PNG-compressed and written into a job folder by a thread
  per core — what the driver did before the first actor was asked for;
- **the barrier**: this version with the render waiting for the whole decode
  (``runner.early_length`` made to say no), as the version before it did: segments decoded
  by CPU tasks, the first chain started once they all are.

Writes a table into BENCHMARKS.md (``--no-write`` to print only).
"""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import tempfile
import time
from datetime import date
from pathlib import Path

from benchmarks.suite import publish

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "samples" / "bikes_pan_2s.mp4"
STYLE = ROOT / "samples" / "starry_night.jpg"
RESULTS = ROOT / "benchmarks" / "results_first_frame_cpu.json"
BEGIN, END = "<!-- first-frame:begin -->", "<!-- first-frame:end -->"
SIZE = 1920


def make_clip(folder: Path, seconds: int) -> Path:
    from ray_style.video import _ffmpeg

    clip = folder / f"bikes_1080p_{seconds}s.mp4"
    subprocess.run([_ffmpeg(), "-v", "error", "-stream_loop", "-1", "-i", str(SOURCE), "-t", str(seconds), "-vf",
                    "scale=1920:1080:flags=lanczos,setsar=1", "-c:v", "libx264", "-preset", "veryfast", "-crf", "20",
                    "-pix_fmt", "yuv420p", "-an", str(clip)], check=True)
    return clip


def full_decode(clip: Path) -> tuple[float, int]:
    from ray_style import video

    started = time.perf_counter()
    info = video.probe(clip, pixels=False)
    count = sum(1 for _ in video.decode(info, *video.frame_size(info, SIZE)))
    return time.perf_counter() - started, count


def old_head_path(clip: Path, folder: Path) -> float:
    """Probe by decoding every frame, then decode into PNGs by a thread per core."""
    from concurrent.futures import ThreadPoolExecutor

    from ray_style import video
    from ray_style.codec import png_bytes

    started = time.perf_counter()
    info = video.probe(clip, pixels=True)
    folder.mkdir()

    def store(numbered):
        number, frame = numbered
        (folder / f"{number:06d}.png").write_bytes(png_bytes(frame))

    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        list(pool.map(store, enumerate(video.decode(info, *video.frame_size(info, SIZE)))))
    return time.perf_counter() - started


def to_first_frame(clip: Path, folder: Path, early: bool = True) -> dict:
    import ray

    from ray_style import runner
    from ray_style.runner import stylize_video
    from ray_style.tasks import TaskMaker
    from ray_style.settings import ExecutorOptions, StyleSettings, VideoSettings

    settings = VideoSettings(style=StyleSettings(size=SIZE, iters=2, content_weight=1.0, style_weight=1e3,
                                                 content_layers=("relu1_1",), style_layers=("relu1_1",),
                                                 weights="random"), segment_length=24, overlap=1, passes=0)
    marks: dict[str, float] = {}
    started = time.perf_counter()

    def progress(p):
        if p.stage == "decode" and "decoded" not in marks and p.done == p.total:
            marks["decoded"] = time.perf_counter() - started
        if p.stage == "render" and p.done and "first" not in marks:
            marks["first"] = time.perf_counter() - started
            raise KeyboardInterrupt  # the first frame is stored: that is all this measures

    ray.init(address="local", num_cpus=os.cpu_count(), object_store_memory=500 * 1024**2, include_dashboard=False,
             log_to_driver=False)
    real, make = runner.early_length, TaskMaker.__call__
    if not early:
        runner.early_length = lambda *args: None

    def handed_out(self, *args):  # the first frame's inputs are decoded and its chain known
        marks.setdefault("task", time.perf_counter() - started)
        return make(self, *args)

    TaskMaker.__call__ = handed_out
    try:
        stylize_video(clip, [STYLE], folder / f"out_{early}.mp4", settings, report=False, progress=progress,
                      frames=(0, 24), executor=ExecutorOptions(threads=1))
    except KeyboardInterrupt:
        pass
    finally:
        runner.early_length, TaskMaker.__call__ = real, make
        ray.shutdown()
    return {"decoded_s": round(marks["decoded"], 1) if "decoded" in marks else None,
            "first_task_s": round(marks["task"], 1), "first_frame_s": round(marks["first"], 1)}


def measure(seconds: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="ray-style-first-frame-") as work:
        work = Path(work)
        clip = make_clip(work, seconds)
        decode_s, frames = full_decode(clip)
        old_s = old_head_path(clip, work / "old")
        barrier = to_first_frame(clip, work, early=False)
        new = to_first_frame(clip, work)
    return {"date": str(date.today()), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            "seconds": seconds, "frames": frames, "full_decode_s": round(decode_s, 1), "old_path_s": round(old_s, 1),
            "barrier_decoded_s": barrier["decoded_s"], "barrier_first_task_s": barrier["first_task_s"],
            "barrier_first_frame_s": barrier["first_frame_s"],
            **new, "ratio_to_decode": round(new["first_frame_s"] / decode_s, 2),
            "ratio_to_old": round(new["first_frame_s"] / old_s, 2),
            "ratio_to_barrier": round(new["first_frame_s"] / barrier["first_frame_s"], 2)}


def render_markdown(r: dict, command: str) -> str:
    return "\n".join([
        BEGIN, "## From the command to the first stored frame", "",
        f"`{command}` — {r['date']}; {r['machine']}; a local Ray with a CPU worker per core; a {r['seconds']} s "
        f"1080p clip ({r['frames']} frames, x264) made from the bikes sample; the first frame stored with a "
        "short optimization (first VGG layer, 2 evaluations). One run, side by side.", "",
        "| | seconds | × full decode |", "|---|---|---|",
        f"| full decode (ffmpeg to raw RGB, nothing stored) | {r['full_decode_s']} | 1.00 |",
        f"| the head's old path before any actor (probe by decoding, then decode into PNGs) | {r['old_path_s']} | "
        f"{r['old_path_s'] / r['full_decode_s']:.2f} |",
        f"| the barrier: source stored in the job (packet probe, segments decoded by CPU tasks) | "
        f"{r['barrier_decoded_s']} | {r['barrier_decoded_s'] / r['full_decode_s']:.2f} |",
        f"| the barrier: the first frame handed to a worker | {r['barrier_first_task_s']} | "
        f"{r['barrier_first_task_s'] / r['full_decode_s']:.2f} |",
        f"| the barrier: the first stylized frame stored | {r['barrier_first_frame_s']} | "
        f"{r['barrier_first_frame_s'] / r['full_decode_s']:.2f} |",
        f"| now (rendering while decoding): the first frame handed to a worker | {r['first_task_s']} | "
        f"{r['first_task_s'] / r['full_decode_s']:.2f} |",
        f"| now (rendering while decoding): the first stylized frame stored | {r['first_frame_s']} | "
        f"**{r['ratio_to_decode']:.2f}** |", "",
        f"First frame now against the old path's barrier: **{r['ratio_to_old']}×**; against the barrier of "
        f"segment decoding: **{r['ratio_to_barrier']}×**. The first frame handed to a worker against the old "
        f"path: **{r['first_task_s'] / r['old_path_s']:.2f}×**. Between a frame handed out and stored is its "
        "render: a 1080p chain start on one CPU thread here (seconds on a GPU).", END])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.first_frame", description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    results = measure(args.seconds)
    command = "python -m benchmarks.first_frame" + (f" --seconds {args.seconds}" if args.seconds != 60 else "")
    publish(render_markdown(results, command), results, RESULTS, BEGIN, END, not args.no_write)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
