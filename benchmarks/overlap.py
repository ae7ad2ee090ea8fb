"""How much of a worker's working time its device spends optimizing, with one call in flight
(every frame's inputs, flows and output around its optimization, in turn) and with two (the
next frame prepared and the last one stored while one optimizes: what a GPU worker does).

    python -m benchmarks.overlap [--frames 16] [--size 640]

On a local Ray with one worker of one torch thread on a machine with more cores (the second
core plays the part a GPU node's CPUs play beside its GPU), the 720p sample is stylized with
frames seeded along their optical flow (two DIS flows and their check per frame, computed on
the worker) and a short optimization (first two VGG blocks, random weights, 3 evaluations):
the regime of a GPU at goal speed, where the optimization is short enough that the CPU's
parts of a frame matter. Each worker's :class:`~ray_style.render.DeviceLane` measures the
seconds inside optimizations and the seconds with a call at work; the share is their ratio.
Both runs render the same frames (asserted: the bytes match). Writes a table into
BENCHMARKS.md (``--no-write`` to print only).
"""
from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from datetime import date
from pathlib import Path

from benchmarks.suite import publish

ROOT = Path(__file__).resolve().parent.parent
CLIP = ROOT / "samples" / "bigbuckbunny_720p_2s.mp4"
STYLE = ROOT / "samples" / "starry_night.jpg"
RESULTS = ROOT / "benchmarks" / "results_overlap_cpu.json"
BEGIN, END = "<!-- overlap:begin -->", "<!-- overlap:end -->"


def run_once(calls: int, frames: int, size: int, work: Path) -> dict:
    import ray

    from ray_style import workers
    from ray_style.runner import stylize_video
    from ray_style.settings import ExecutorOptions, StyleSettings, VideoSettings

    settings = VideoSettings(style=StyleSettings(size=size, iters=3, content_weight=1.0, style_weight=1e3,
                                                 content_layers=("relu2_1",), style_layers=("relu1_1", "relu2_1"),
                                                 weights="random"),
                             segment_length=max(2, frames // 4), overlap=1, passes=0)
    before, workers.CPU_CALLS = workers.CPU_CALLS, calls
    ray.init(address="local", num_cpus=2, object_store_memory=300 * 1024**2, include_dashboard=False,
             log_to_driver=False)
    try:
        started = time.perf_counter()
        result = stylize_video(CLIP, [STYLE], work / f"calls{calls}.mp4", settings, report=False,
                               frames=(0, frames), executor=ExecutorOptions(max_workers=1, threads=1))
        wall = time.perf_counter() - started
    finally:
        ray.shutdown()
        workers.CPU_CALLS = before
    stored = {p.relative_to(result.job_dir): p.read_bytes() for p in sorted((result.job_dir / "chains").rglob("*.png"))}
    return {"calls": calls, "renders": result.rendered, "wall_s": round(wall, 1),
            "optimizing": round(result.optimizing, 3), "frames": stored}


def measure(frames: int, size: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="ray-style-overlap-") as work:
        rows = [run_once(calls, frames, size, Path(work)) for calls in (1, 2)]
    assert rows[0].pop("frames") == rows[1].pop("frames"), "two calls in flight changed a frame's bytes"
    return {"date": str(date.today()), "machine": f"{platform.machine()}, {os.cpu_count()} cores", "size": size,
            "clip": CLIP.name, "rows": rows, "wall_ratio": round(rows[1]["wall_s"] / rows[0]["wall_s"], 2)}


def render_markdown(results: dict, command: str) -> str:
    lines = [BEGIN, "## A worker's device never waits: two calls in flight", "",
             f"`{command}` — {results['date']}; {results['machine']}; a local Ray with one worker of one torch "
             f"thread; `{results['clip']}` at {results['size']} px, frames seeded along their flows (two DIS flows "
             "and their check per frame, on the worker), first two VGG blocks, 3 evaluations per frame (a short "
             "optimization, as on a GPU at goal speed). The share: seconds inside optimizations over seconds with a "
             "call at work, measured by the worker. Both runs give the same frames, byte for byte.", "",
             "| calls in flight | renders | wall (s) | optimizing share of working time |", "|---|---|---|---|"]
    for row in results["rows"]:
        lines.append(f"| {row['calls']} | {row['renders']} | {row['wall_s']} | {row['optimizing']:.1%} |")
    lines += ["", f"Wall time, two calls against one: **{results['wall_ratio']}×**.", END]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.overlap", description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=640)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    results = measure(args.frames, args.size)
    command = "python -m benchmarks.overlap" + (f" --frames {args.frames}" if args.frames != 16 else "") + \
              (f" --size {args.size}" if args.size != 640 else "")
    publish(render_markdown(results, command), results, RESULTS, BEGIN, END, not args.no_write)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
