"""Flows between frames k apart: computed directly, or composed from k adjacent flows?

    python -m benchmarks.long_flow --size 128 --frames 30 --json benchmarks/results_long_flow_cpu.json

Long-term consistency (`--long-term 1,2,5`) warps frame t - k into frame t. For each clip and
k in 2, 5, 10, over every t, both flows t → t - k are judged on the *source* frames: the
masked mean squared difference between frame t and frame t - k warped along the flow
(photometric error: what a wrong vector costs), and the share of pixels the mask keeps
(coverage: what the flow can vouch for). Lower error at equal or higher coverage is better.
DIS flows, their forward-backward check, the same code the renderer and `evaluate` use.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from ray_style import flow, video

ROOT = Path(__file__).resolve().parent.parent
CLIPS = {"bunny": ROOT / "samples" / "bigbuckbunny_2s.mp4", "street pan": ROOT / "samples" / "bikes_pan_2s.mp4"}


def compare(frames: list[np.ndarray], k: int) -> dict:
    adjacent = [flow.reliable_flow(frames[t + 1], frames[t]) for t in range(len(frames) - 1)]  # t+1 → t
    rows = {"direct": [], "composed": []}
    for t in range(k, len(frames)):
        direct, mask = flow.reliable_flow(frames[t], frames[t - k])
        mask = mask * flow.inside(direct)
        rows["direct"].append((flow.warping_error(frames[t], frames[t - k], direct, mask), float(mask.mean())))
        hops = [adjacent[s - 1] for s in range(t, t - k, -1)]  # t → t-1 → … → t-k
        path, path_mask = flow.compose_path([h[0] for h in hops], [h[1] for h in hops])
        rows["composed"].append((flow.warping_error(frames[t], frames[t - k], path, path_mask),
                                 float(path_mask.mean())))
    return {name: {"error": float(np.mean([e for e, _ in values])), "coverage": float(np.mean([c for _, c in values]))}
            for name, values in rows.items()}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    results = []
    print("| clip | k | direct: error | coverage | composed: error | coverage |\n|---|---|---|---|---|---|")
    for name, path in CLIPS.items():
        info = video.probe(path)
        frames = list(video.decode(info, *video.frame_size(info, args.size)))[:args.frames]
        for k in (2, 5, 10):
            row = {"clip": name, "k": k, **compare(frames, k)}
            results.append(row)
            print(f"| {name} | {k} | {row['direct']['error']:.5f} | {row['direct']['coverage']:.3f} | "
                  f"{row['composed']['error']:.5f} | {row['composed']['coverage']:.3f} |", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "size": args.size,
                                               "frames": args.frames, "rows": results}, indent=1))


if __name__ == "__main__":
    main()
