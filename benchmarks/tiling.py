"""What exact tiling costs: time and peak memory of one evaluation, whole and in tiles, and the
largest frame that fits a memory budget with and without tiles.

    python -m benchmarks.tiling                      # CPU: 512², 768×432 and 1080p (slow), results JSON + table
    python -m benchmarks.tiling --sizes 512x512 --grids 2x2,3x3
    python -m benchmarks.tiling --device cuda --sizes 512x512,1920x1080,3840x2160

Peak memory: on a GPU ``torch.cuda.max_memory_allocated`` above what was allocated before the
evaluation; on a CPU the process's peak resident set (``ru_maxrss``) above its level before the
evaluation, each case in a fresh process so one case's high-water mark does not hide the next's.
``model`` is :func:`ray_style.tiling.evaluation_bytes`, what ``--max-memory`` plans with.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import torch

from ray_style import optimize, tiling
from ray_style.settings import StyleSettings
from ray_style.weights import load_weights

ROOT = Path(__file__).resolve().parent.parent
MIB = 1 << 20


def _size(text: str) -> tuple[int, int]:
    width, height = (int(v) for v in text.lower().split("x"))
    return width, height


def _problem(width: int, height: int, device, weights_spec: str, precision: str):
    weights = load_weights(weights_spec)
    settings = optimize.resolve_loss_weights(StyleSettings(size=max(width, height), precision=precision), weights,
                                             width * height)
    model = optimize.build_model(weights, settings, device)
    generator = torch.Generator().manual_seed(0)
    content = torch.rand(1, 3, height, width, generator=generator).to(device)
    style = torch.rand(1, 3, 256, 256, generator=generator).to(device)
    grams = optimize.style_targets(model, [style], settings.style_layers)
    return model, settings, content, grams


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def measure(width: int, height: int, grid: tuple[int, int] | None, device="cpu", repeats: int = 2,
            weights_spec: str = "random", precision: str = "fp32") -> dict:
    """One case in this process: ms per evaluation and the evaluation's peak bytes above its start."""
    device = torch.device(device)
    model, settings, content, grams = _problem(width, height, device, weights_spec, precision)
    tiles = tiling.Tiling(model, height, width, grid) if grid else None
    objective = optimize.Objective(model, settings, content, grams, tiles=tiles)
    image = content.clone()

    def evaluate() -> None:
        x = image.detach().requires_grad_(True)
        total = objective(x)[0]
        torch.autograd.grad(total.sum(), x)

    # The peak of the first evaluation: a CPU's allocator keeps freed pages, so a later one's
    # high-water mark would hide under the first's. Its time (one-off set-up) is not counted.
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
    else:
        before = _rss_now()
    evaluate()
    _sync(device)
    peak = (torch.cuda.max_memory_allocated(device) if device.type == "cuda" else _rss_peak()) - before
    started = time.perf_counter()
    for _ in range(repeats):
        evaluate()
    _sync(device)
    ms = (time.perf_counter() - started) * 1000 / repeats
    dtype_bytes = 2 if objective.precision == "bf16" else 4
    crop = tiles.largest_crop() if tiles else (height, width)
    return {"size": f"{width}x{height}", "grid": list(tiles.grid) if tiles else None, "tiles": len(tiles) if tiles else 1,
            "crop": f"{crop[1]}x{crop[0]}", "ms_per_eval": round(ms, 1), "peak_mib": round(peak / MIB, 1),
            "model_mib": round(tiling.evaluation_bytes(model, *crop, dtype_bytes=dtype_bytes) / MIB, 1),
            "precision": objective.precision}


def _rss_now() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


def _rss_peak() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def measure_apart(width: int, height: int, grid, device: str, repeats: int, weights: str, precision: str) -> dict:
    """:func:`measure` in a fresh process (a CPU's peak resident set is per process)."""
    command = [sys.executable, "-m", "benchmarks.tiling", "--case",
               json.dumps([width, height, grid, device, repeats, weights, precision])]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def largest_frames(arch: str = "vgg19", history: int = 20) -> list[dict]:
    """The largest 16:9 frame whose evaluation fits 24 and 80 GB by the memory model, whole and
    tiled (a tiled frame is bounded by L-BFGS's whole-frame buffers and the smallest tile)."""
    layers = (*StyleSettings().content_layers, *StyleSettings().style_layers)
    rows = []
    for gb in (24, 80):
        for precision, dtype_bytes in (("bf16", 2), ("fp32", 4)):
            budget = gb * tiling.GIB
            row = {"gb": gb, "precision": precision}
            for label, tiled in (("whole", False), ("tiled", True)):
                low, high = 16, 1 << 16
                while high - low > 16:
                    height = (low + high) // 2
                    if _fits((arch, layers), height * 16 // 9, height, budget, dtype_bytes, history, tiled):
                        low = height
                    else:
                        high = height
                row[label] = f"{low * 16 // 9}x{low}"
            rows.append(row)
    return rows


def _fits(network, width: int, height: int, budget: int, dtype_bytes: int, history: int, tiled: bool) -> bool:
    if not tiled:
        need = tiling.evaluation_bytes(network, height, width, dtype_bytes=dtype_bytes)
        return need + tiling.optimizer_bytes(height, width, 1, history) <= budget
    try:
        tiling.choose(network, height, width, budget, dtype_bytes=dtype_bytes, history=history)
    except Exception:
        return False
    return True


def markdown(results: dict) -> str:
    lines = [f"`{results['command']}` — {results['date']}, {results['machine']}.", "",
             "| frame | tiles | largest crop | ms / evaluation | × whole | peak MiB | model MiB |", "|---|---|---|---|---|---|---|"]
    whole = {}
    for row in results["rows"]:
        if row["tiles"] == 1:
            whole[row["size"]] = row["ms_per_eval"]
        ratio = row["ms_per_eval"] / whole[row["size"]] if row["size"] in whole else None
        grid = "1 (whole)" if row["tiles"] == 1 else f"{row['tiles']} ({row['grid'][0]}×{row['grid'][1]})"
        lines.append(f"| {row['size']} | {grid} | {row['crop']} | {row['ms_per_eval']} | "
                     f"{'–' if ratio is None else f'{ratio:.2f}'} | {row['peak_mib']} | {row['model_mib']} |")
    lines += ["", "Largest 16:9 frame one evaluation fits (the memory model, VGG19, L-BFGS with 20 pairs):", "",
              "| memory | precision | whole | tiled |", "|---|---|---|---|"]
    lines += [f"| {r['gb']} GB | {r['precision']} | {r['whole']} | {r['tiled']} |" for r in results["largest"]]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.tiling", description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sizes", default="512x512,768x432,1920x1080")
    parser.add_argument("--grids", default="2x2,3x3", help="tile grids (rows x cols) measured beside the whole frame")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--weights", default="random", help="timing and memory do not depend on the values")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results_tiling_cpu.json")
    parser.add_argument("--remodel", action="store_true",
                        help="measure nothing: recompute --json's model columns with today's memory model")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.remodel:
        results = json.loads(args.json.read_text())
        layers = (*StyleSettings().content_layers, *StyleSettings().style_layers)
        for row in results["rows"]:
            if row.get("model_mib") is not None:
                width, height = _size(row["crop"])
                dtype_bytes = 2 if row.get("precision") == "bf16" else 4
                row["model_mib"] = round(tiling.evaluation_bytes(("vgg19", layers), height, width,
                                                                 dtype_bytes=dtype_bytes) / MIB, 1)
        results["largest"] = largest_frames()
        args.json.write_text(json.dumps(results, indent=1))
        print(markdown(results))
        return 0
    if args.case:
        width, height, grid, device, repeats, weights, precision = json.loads(args.case)
        torch.set_flush_denormal(True)  # random weights' subnormal activations are 10× slower on a CPU
        print(json.dumps(measure(width, height, tuple(grid) if grid else None, device, repeats, weights, precision)))
        return 0
    rows = []
    for text in args.sizes.split(","):
        width, height = _size(text)
        for grid in [None, *(tuple(int(v) for v in g.split("x")) for g in args.grids.split(",") if g)]:
            if args.device == "cpu":
                row = measure_apart(width, height, grid, args.device, args.repeats, args.weights, args.precision)
            else:
                try:
                    row = measure(width, height, grid, args.device, args.repeats, args.weights, args.precision)
                except torch.OutOfMemoryError:
                    torch.cuda.empty_cache()
                    row = {"size": text, "grid": grid, "tiles": 1, "crop": text, "ms_per_eval": None,
                           "peak_mib": "out of memory", "model_mib": None}
            print(json.dumps(row), flush=True)
            rows.append(row)
    machine = (torch.cuda.get_device_name(args.device) if args.device.startswith("cuda")
               else f"CPU, {torch.get_num_threads()} torch threads")
    results = {"command": "python -m benchmarks.tiling " + " ".join(argv if argv is not None else sys.argv[1:]),
               "date": date.today().isoformat(), "machine": machine, "rows": rows, "largest": largest_frames()}
    args.json.write_text(json.dumps(results, indent=1))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
