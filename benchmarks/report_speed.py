"""Frames per second of `ray-style evaluate` (evaluate.evaluate) on one device.

    python -m benchmarks.report_speed --size 512 --device cuda        # target: ≥ 20 frames/s (BENCHMARKS.md)
    python -m benchmarks.report_speed --size 96 --device cpu --weights random

The "output" is the sample clip with noise added (its content does not change the cost).
Rows: everything (losses, adjacent, long-range and source warping errors); losses with the
adjacent warping errors (no long range); warping errors alone (no model). Needs ffmpeg (imageio-ffmpeg), no Ray.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ray_style import images, optimize, video
from ray_style.evaluate import evaluate
from ray_style.settings import StyleSettings
from ray_style.weights import load_weights

ROOT = Path(__file__).resolve().parent.parent


def noisy_copy(info: video.VideoInfo, width: int, height: int, path: Path) -> video.VideoInfo:
    rng = np.random.default_rng(0)
    frames = (np.clip(f.astype(np.int16) + rng.integers(-20, 21, f.shape), 0, 255).astype(np.uint8)
              for f in video.decode(info, width, height))
    return video.probe(video.encode(frames, path, width, height, info.fps))


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", default=str(ROOT / "samples" / "bigbuckbunny_2s.mp4"))
    parser.add_argument("--style", default=str(ROOT / "samples" / "starry_night.jpg"))
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--weights", default="random", help="the model's cost does not depend on its weights")
    parser.add_argument("--repeats", type=int, default=2, help="best of this many runs")
    args = parser.parse_args(argv)
    device = optimize.resolve_device(args.device)
    source = video.probe(args.video)
    width, height = video.frame_size(source, args.size)
    weights = load_weights(args.weights)
    settings = optimize.resolve_loss_weights(StyleSettings(size=args.size), weights, width * height)
    model = optimize.build_model(weights, settings, device)  # what the runner hands over
    with torch.no_grad():
        grams = optimize.style_targets(model, optimize.prepare_styles([images.load_image(args.style)], args.size,
                                                                      1.0, device), settings.style_layers)
    rows = []
    with tempfile.TemporaryDirectory() as work:
        output = noisy_copy(source, width, height, Path(work) / "out.mp4")
        evaluate(output, source, settings=settings, model=model, grams=grams, long_range=())  # warm-up
        for label, kwargs in (("everything", {"model": model, "grams": grams}),
                              ("losses + adjacent warping errors", {"model": model, "grams": grams, "long_range": ()}),
                              ("warping errors only", {})):
            best = None
            for _ in range(args.repeats):
                if device.type == "cuda":
                    torch.cuda.synchronize()
                started = time.perf_counter()
                scores = evaluate(output, source, settings=settings, **kwargs)
                seconds = time.perf_counter() - started
                best = seconds if best is None else min(best, seconds)
            rows.append({"what": label, "device": str(device), "size": f"{width}x{height}", "frames": scores.frames,
                         "seconds": round(best, 3), "frames_per_second": round(scores.frames / best, 2)})
            print(json.dumps(rows[-1]), flush=True)
    return rows


if __name__ == "__main__":
    main()
