"""A model, from measured numbers, of one feature film on 8, 64 and 256 GPUs.

    python -m benchmarks.scale_model            # measure the per-frame driver costs here, then model
    python -m benchmarks.scale_model --rewrite  # re-render BENCHMARKS.md from the stored measurements

The film: 2 hours at 24 fps (172,800 frames), 1920×1080, the default video settings (chains of
48 frames with 4-frame cross-faded lead-ins, 150 evaluations per seeded frame, 300 per chain
start, --init flow). Inputs:

- GPU time per frame: the 512² H100 figures scaled by area (×7.91 for 1080p) and evaluations:
  4.5 s per 500 evaluations as measured (issue 13), 1.0 s as the goal.
- What each task moves, measured here on the sample clip's frames scaled to 1080p: the
  content frame's PNG, the previous stylized frame's PNG and the result's PNG (stylized frames
  are textured: their PNG size per pixel is measured on a stylized frame) — frames travel
  as the PNG files the job directory keeps, not as raw pixels.
- The driver's CPU per frame: reading those files and hashing them, decoding the source
  (ffmpeg), writing the result, the optical flow (two DIS flows per frame and their
  consistency check), and blending and encoding at the end.

Outputs per GPU count: makespan, GPU utilization (the tail where fewer chains than GPUs remain),
the driver's network bytes/s in and out, the driver's CPU cores busy, and the head's disk.
"""
from __future__ import annotations

import argparse
import io
import json
import math
import time
from datetime import date
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results_scale_model.json"
BEGIN, END = "<!-- scale:begin -->", "<!-- scale:end -->"
FILM_FRAMES, FILM_FPS, WIDTH, HEIGHT = 2 * 3600 * 24, 24, 1920, 1080
AREA_FACTOR = WIDTH * HEIGHT / 512**2
SEGMENT, OVERLAP, ITERS = 48, 4, 150
GPU_SECONDS_PER_500 = {"today": 4.5, "goal": 1.0}  # a 512² frame on one H100 (issue 13)
HEAD_CORES = 4  # cluster/autoscaler-aws.yaml's head: m6i.xlarge
NIC_BYTES = 10e9 / 8  # a 10 Gb/s head


def _timed(function, repeats=3):
    best = math.inf
    for _ in range(repeats):
        started = time.perf_counter()
        value = function()
        best = min(best, time.perf_counter() - started)
    return best, value


def measure() -> dict:
    """Per-frame costs at 1080p on this machine (one core each)."""
    import cv2

    from ray_style import flow, job, video
    from ray_style.files import sha256_file  # noqa: F401  (the job hashes with hashlib like this)

    cv2.setNumThreads(1)
    info = video.probe(ROOT / "samples" / "bigbuckbunny_2s.mp4")
    started = time.perf_counter()
    frames = []
    for frame in video.decode(info, WIDTH, HEIGHT):
        frames.append(frame.copy())
        if len(frames) == 8:
            break
    decode = (time.perf_counter() - started) / len(frames)
    source = frames[4]
    # A stylized frame's texture: the sample painting tiled over a frame stands in for one.
    from ray_style.images import load_image, resize

    painting = resize(load_image(ROOT / "samples" / "starry_night.jpg"), WIDTH, HEIGHT)
    stylized = (0.5 * source + 0.5 * painting).astype(np.uint8)
    encode_source, source_png = _timed(lambda: job.png_bytes(source))
    encode_stylized, stylized_png = _timed(lambda: job.png_bytes(stylized))
    decode_png, _ = _timed(lambda: job.decode_png(stylized_png))
    digest, _ = _timed(lambda: job.digest(stylized_png))
    dis, forward = _timed(lambda: flow.optical_flow(frames[5], frames[4]), repeats=2)
    backward = flow.optical_flow(frames[4], frames[5])
    check, mask = _timed(lambda: flow.reliability(forward, backward))
    from ray_style.flowcache import flow_bytes

    flow_file = flow_bytes(forward, mask)
    buffer = io.BytesIO()
    return {
        "date": str(date.today()), "frame": [WIDTH, HEIGHT], "source": "samples/bigbuckbunny_2s.mp4 scaled to 1080p",
        "decode_s": decode, "png_source_bytes": len(source_png), "png_stylized_bytes": len(stylized_png),
        "png_encode_s": (encode_source + encode_stylized) / 2, "png_decode_s": decode_png, "sha256_s": digest,
        "dis_flow_s": dis, "reliability_s": check, "flow_file_bytes": len(flow_file),
        "x264_fps": _x264_fps(frames[:8], buffer),
    }


def _x264_fps(frames, _buffer) -> float:
    import tempfile
    from fractions import Fraction

    from ray_style import video

    with tempfile.TemporaryDirectory() as folder:
        many = frames * 4
        started = time.perf_counter()
        video.encode(iter(many), Path(folder) / "x.mp4", WIDTH, HEIGHT, Fraction(24))
        return len(many) / (time.perf_counter() - started)


def model(measured: dict, gpus: int, speed: str) -> dict:
    """The film on ``gpus`` one-GPU workers at ``speed`` ("today" or "goal")."""
    seeded = GPU_SECONDS_PER_500[speed] * AREA_FACTOR * ITERS / 500
    chains = math.ceil(FILM_FRAMES / SEGMENT)
    renders_per_chain = SEGMENT + OVERLAP  # the lead-in frames are rendered by both chains
    chain_seconds = (renders_per_chain - 1) * seeded + 2 * seeded  # a chain start takes 2x the evaluations
    # Chains are spread over GPUs; the last round is partial (the tail where GPUs idle).
    rounds = chains / gpus
    makespan_gpu = math.ceil(rounds) * chain_seconds
    busy = chains * chain_seconds / (gpus * makespan_gpu)
    renders = chains * renders_per_chain
    frames_per_s = renders / makespan_gpu
    out_bytes = measured["png_source_bytes"] + measured["png_stylized_bytes"]  # content + previous frame
    in_bytes = measured["png_stylized_bytes"]
    flow_cpu = 2 * measured["dis_flow_s"] + 2 * measured["reliability_s"]  # both directions, both checks
    per_render_cpu = (measured["png_decode_s"] * 0  # tasks send the stored PNG bytes: no decode on the driver
                      + 3 * measured["sha256_s"] + flow_cpu * FILM_FRAMES / renders)
    per_frame_cpu = measured["decode_s"] + measured["png_encode_s"]  # decoding the film into the job directory
    driver_cores = frames_per_s * per_render_cpu + (FILM_FRAMES / makespan_gpu) * per_frame_cpu
    # The driver limits the job when it needs more cores than the head has: then it sets the pace.
    limit = min(1.0, HEAD_CORES / driver_cores) if driver_cores else 1.0
    makespan = makespan_gpu / limit
    encode_s = FILM_FRAMES / measured["x264_fps"] + FILM_FRAMES * (measured["png_decode_s"] + measured["sha256_s"])
    disk = FILM_FRAMES * (measured["png_source_bytes"] + 2 * measured["flow_file_bytes"]) \
        + renders * measured["png_stylized_bytes"]
    return {"gpus": gpus, "speed": speed, "seconds_per_seeded_frame": round(seeded, 2),
            "makespan_h": round((makespan + encode_s) / 3600, 2), "gpu_utilization": round(busy * limit, 3),
            "frames_per_s": round(frames_per_s * limit, 2),
            "driver_out_MBps": round(frames_per_s * limit * out_bytes / 1e6, 1),
            "driver_in_MBps": round(frames_per_s * limit * in_bytes / 1e6, 1),
            "nic_share": round(frames_per_s * limit * (out_bytes + in_bytes) / NIC_BYTES, 3),
            "driver_cores": round(driver_cores * limit, 2), "driver_bound": limit < 1,
            "final_encode_h": round(encode_s / 3600, 2), "head_disk_TB": round(disk / 1e12, 2)}


def render_markdown(measured: dict, rows: list[dict], command: str) -> str:
    lines = [BEGIN, "## Scale model: a 2-hour film at 1080p (24 fps) on 8, 64 and 256 GPUs", "",
             f"`{command}` — {measured['date']}. Per-frame costs measured on this machine (one core each, "
             f"{measured['source']}): PNG {measured['png_source_bytes'] / 1e6:.2f} MB per source frame, "
             f"{measured['png_stylized_bytes'] / 1e6:.2f} MB per stylized frame; one DIS flow "
             f"{measured['dis_flow_s']:.2f} s, its check {measured['reliability_s']:.2f} s, a flow file "
             f"{measured['flow_file_bytes'] / 1e6:.2f} MB; decode {measured['decode_s'] * 1000:.0f} ms per frame; "
             f"x264 {measured['x264_fps']:.1f} frames/s. GPU time: the 512² H100 frame scaled by area "
             f"(×{AREA_FACTOR:.2f}) and by 150/500 evaluations. Head: {HEAD_CORES} cores, 10 Gb/s.", "",
             "| GPUs | GPU speed | s per seeded frame | makespan (h) | GPU util. | frames/s | driver out MB/s | "
             "driver in MB/s | NIC share | driver cores | driver-bound | final encode (h) | head disk (TB) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['gpus']} | {r['speed']} | {r['seconds_per_seeded_frame']} | {r['makespan_h']} | "
                     f"{r['gpu_utilization']:.0%} | {r['frames_per_s']} | {r['driver_out_MBps']} | "
                     f"{r['driver_in_MBps']} | {r['nic_share']:.0%} | {r['driver_cores']} | "
                     f"{'yes' if r['driver_bound'] else 'no'} | {r['final_encode_h']} | {r['head_disk_TB']} |")
    lines += [END, ""]
    return "\n".join(lines)


def write_benchmarks(block: str, path: Path) -> None:
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + block.rstrip("\n") + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block
    path.write_text(text)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rewrite", action="store_true", help="use the stored measurements")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    measured = json.loads(RESULTS.read_text())["measured"] if args.rewrite else measure()
    rows = [model(measured, gpus, speed) for speed in ("today", "goal") for gpus in (8, 64, 256)]
    if not args.rewrite:
        RESULTS.write_text(json.dumps({"measured": measured, "rows": rows}, indent=1))
    block = render_markdown(measured, rows, "python -m benchmarks.scale_model")
    print(block)
    if not args.no_write:
        write_benchmarks(block, ROOT / "BENCHMARKS.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
