"""Speed: time per loss evaluation (forward + input gradient + loss) and Ray's overhead.

    python benchmarks/speed.py evals  --sizes 128,256,512 --archs vgg19,vgg16 [--device cuda]
    python benchmarks/speed.py ray    samples/bigbuckbunny_2s.mp4 samples/starry_night.jpg --size 64 --iters 20

``evals`` needs only torch (it runs where Ray is not installed, e.g. a lent GPU machine):
median milliseconds per evaluation after warm-up, the FLOPs of the convolutions up to the
deepest layer (forward, plus the same again for the input gradient: the weights are frozen),
achieved FLOP/s, peak host RSS and, on a GPU, peak device memory. ``ray`` renders the same
frames with the same evaluations through the Ray pipeline (1 actor) and through the plain
in-process loop, and reports the ratio from one run.
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import sys
import time

import torch

from ray_style import optimize
from ray_style.config import StyleSettings
from ray_style.features import CONVS_PER_BLOCK, BLOCK_CHANNELS
from ray_style.weights import random_weights


def conv_flops(arch: str, height: int, width: int, deepest_block: int = 5) -> float:
    """Forward FLOPs (2 per multiply-add) of the 3x3 convolutions up to conv{deepest}_1."""
    flops, channels_in, h, w = 0.0, 3, height, width
    for block, (convs, channels) in enumerate(zip(CONVS_PER_BLOCK[arch], BLOCK_CHANNELS), start=1):
        count = 1 if block == deepest_block else convs
        for _ in range(count):
            flops += 2 * h * w * channels_in * channels * 9
            channels_in = channels
        if block == deepest_block:
            break
        h, w = h // 2, w // 2
    return flops


def time_evals(arch: str, size: int, device: torch.device, repeats: int) -> dict:
    settings = StyleSettings(size=size, content_weight=1.0, style_weight=1e3)
    model = optimize.build_model(random_weights(arch), settings, device)
    content = torch.rand(1, 3, size, size, device=device)
    grams = optimize.style_targets(model, [torch.rand(1, 3, size, size, device=device)], settings.style_layers)
    objective = optimize.Objective(model, settings, content, grams)
    image = content.clone().requires_grad_(True)

    def evaluation():
        image.grad = None
        objective(image)[0].sum().backward()

    for _ in range(3):
        evaluation()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        evaluation()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    seconds = statistics.median(times)
    flops = 2 * conv_flops(arch, size, size)
    row = {"arch": arch, "size": size, "ms_per_eval": round(seconds * 1000, 2), "gflop_per_eval": round(flops / 1e9, 1),
           "tflops_achieved": round(flops / seconds / 1e12, 3)}
    if device.type == "cuda":
        row["gpu_peak_mib"] = round(torch.cuda.max_memory_allocated() / 2**20)
        row["gpu"] = torch.cuda.get_device_name()
    return row


def cmd_evals(args) -> None:
    device = torch.device(args.device)
    rows = []
    for arch in args.archs.split(","):
        for size in (int(s) for s in args.sizes.split(",")):
            rows.append(time_evals(arch, size, device, args.repeats))
            print(json.dumps(rows[-1]), flush=True)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\nmachine: {platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"device {device}; peak host RSS {rss:.0f} MiB")
    print("| arch | size | ms / evaluation | GFLOP / evaluation | TFLOP/s |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['arch']} | {r['size']}² | {r['ms_per_eval']} | {r['gflop_per_eval']} | {r['tflops_achieved']} |")


def cmd_ray(args) -> None:
    import tempfile
    from pathlib import Path

    from ray_style.config import VideoSettings
    from ray_style.runner import stylize_video

    settings = VideoSettings(style=StyleSettings(size=args.size, iters=args.iters, content_weight=1.0,
                                                 style_weight=1e3), segment_length=10_000)
    timings = {}
    with tempfile.TemporaryDirectory() as work:
        for name, kwargs in (("local", dict(executor="local", threads=args.threads)),
                             ("ray", dict(executor="ray", workers=1, threads=args.threads))):
            started = time.perf_counter()
            result = stylize_video(args.video, [args.style], Path(work) / f"{name}.mp4", settings, weights="random",
                                   report=False, **kwargs)
            timings[name] = time.perf_counter() - started
            frames = sorted((result.job_dir / "chains").rglob("*.png"))
            timings[f"{name}_frames"] = [p.read_bytes() for p in frames]
    same = timings["local_frames"] == timings["ray_frames"]
    print(json.dumps({"frames": len(timings["ray_frames"]), "local_seconds": round(timings["local"], 2),
                      "ray_seconds": round(timings["ray"], 2), "ray_over_local": round(timings["ray"] / timings["local"], 3),
                      "identical_frames": same}))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    evals = commands.add_parser("evals")
    evals.add_argument("--sizes", default="128,256,512")
    evals.add_argument("--archs", default="vgg19,vgg16")
    evals.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    evals.add_argument("--repeats", type=int, default=5)
    evals.set_defaults(run=cmd_evals)
    overhead = commands.add_parser("ray")
    overhead.add_argument("video")
    overhead.add_argument("style")
    overhead.add_argument("--size", type=int, default=64)
    overhead.add_argument("--iters", type=int, default=20)
    overhead.add_argument("--threads", type=int, default=2)
    overhead.set_defaults(run=cmd_ray)
    args = parser.parse_args(argv)
    args.run(args)


if __name__ == "__main__":
    sys.exit(main())
