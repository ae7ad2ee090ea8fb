"""Settings: frozen dataclasses passed down whole; the CLI takes its defaults from here.

``StyleSettings`` is everything that decides one frame's pixels; ``VideoSettings`` adds what
decides a video's. Both go into a job's manifest, and :func:`changed_keys` lists what differs
on resume.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass

from .errors import InputError

OPTIMIZERS = ("lbfgs", "adam")
PRECISIONS = ("auto", "fp32", "tf32", "bf16")
MIN_SIZE, MAX_SIZE = 16, 8192


@dataclass(frozen=True)
class StyleSettings:
    size: int = 512  # long edge of the generated image, px
    iters: int = 500  # loss *evaluations* (forward + backward), not L-BFGS iterations
    optimizer: str = "lbfgs"  # the paper's; adam uses less memory
    learning_rate: float = 0.02  # Adam only, in [0, 1] pixel units (neural-style's 10 on 0-255)
    # L-BFGS correction pairs. neural-style keeps 100; 20 reach within ~2 % of its loss at a
    # fifth of the memory traffic per step (BENCHMARKS.md), which matters on a GPU.
    lbfgs_history: int = 20
    # auto: bf16 on a CUDA GPU (the fastest objective measured, issue 13), fp32 elsewhere.
    # bf16: the VGG forward/backward in bfloat16, Grams and losses in fp32; tf32: TF32
    # convolutions. The optimizer's own algebra is fp32 under every setting.
    precision: str = "auto"
    # Coarse-to-fine: optimize first at size / 2^(scales-1), then double up to size, each
    # scale starting from the previous one's result (Gatys et al. 2017). 1: single scale.
    scales: int = 1
    # torch.compile the objective (VGG forward, Grams, losses) into fused kernels. None (auto):
    # on a CUDA GPU yes, on a CPU no. The first frame of each shape in a process pays the
    # compilation (17 s for VGG19 at 512² on an H100 with a cold cache); compiled kernels are
    # kept on disk (optimize.inductor_cache_dir) for every later actor and job on the machine.
    compile: bool | None = None
    content_weight: float | None = None  # α; None → the weights source's tested default
    style_weight: float | None = None  # β; None → likewise
    tv_weight: float = 0.0  # not in the paper; smooths high-frequency noise when > 0
    content_layers: tuple[str, ...] = ("relu4_2",)  # the paper's conv4_2 (after its ReLU)
    style_layers: tuple[str, ...] = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
    style_layer_weights: tuple[float, ...] | None = None  # w_l; None → 1/L each (the paper's)
    pooling: str = "avg"  # the paper replaces VGG's max pooling by average pooling
    # The seed starts from white noise; at a few hundred evaluations the content image is a far
    # better start (DESIGN.md §3), so it is our default. "noise", "content" or an image path.
    init: str = "content"
    seed: int = 0  # noise init and any other randomness
    style_scale: float = 1.0  # artwork long edge = style_scale * size
    style_blend_weights: tuple[float, ...] | None = None  # several artworks; None → equal
    original_colors: bool = False  # keep the content's colours (luminance-only transfer)

    def validate(self) -> "StyleSettings":
        """Raise :class:`InputError` for values no run could use; return self."""
        if not MIN_SIZE <= self.size <= MAX_SIZE:
            raise InputError(f"--size {self.size} is out of range: use {MIN_SIZE}…{MAX_SIZE} px")
        if self.iters < 1:
            raise InputError(f"--iters {self.iters}: need at least 1 evaluation")
        if self.optimizer not in OPTIMIZERS:
            raise InputError(f"unknown optimizer '{self.optimizer}': use lbfgs or adam")
        for name in ("content_weight", "style_weight", "tv_weight"):
            check_number(name, getattr(self, name))
        if self.style_layer_weights is not None:
            for value in self.style_layer_weights:
                check_number("style_layer_weights", value)
        if self.style_blend_weights is not None:
            for value in self.style_blend_weights:
                check_number("style_blend_weights", value)
        if not self.content_layers and not self.style_layers:
            raise InputError("no content and no style layers: nothing to optimize")
        if self.style_layer_weights is not None and len(self.style_layer_weights) != len(self.style_layers):
            raise InputError(f"{len(self.style_layer_weights)} style layer weights for "
                             f"{len(self.style_layers)} style layers: give one per layer")
        if not (math.isfinite(self.style_scale) and 0.05 <= self.style_scale <= 8):
            raise InputError(f"--style-scale {self.style_scale} is out of range: use 0.05…8")
        if not 1 <= self.lbfgs_history <= 1000:
            raise InputError(f"--lbfgs-history {self.lbfgs_history}: use 1…1000 correction pairs")
        if self.compile not in (None, True, False):
            raise InputError(f"compile must be on, off or automatic, got {self.compile!r}")
        if self.precision not in PRECISIONS:
            raise InputError(f"unknown precision '{self.precision}': use {', '.join(PRECISIONS)}")
        if not 1 <= self.scales <= 6 or self.size / 2 ** (self.scales - 1) < MIN_SIZE:
            raise InputError(f"--scales {self.scales} at --size {self.size}: use 1…6 scales whose smallest "
                             f"is at least {MIN_SIZE} px")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise InputError(f"--learning-rate must be a number > 0, got {self.learning_rate}")
        return self

    def layer_weights(self) -> dict[str, float]:
        """``{style layer: w_l}``."""
        weights = self.style_layer_weights or (1.0 / max(len(self.style_layers), 1),) * len(self.style_layers)
        return dict(zip(self.style_layers, weights))


INITS_VIDEO = ("prev", "flow", "content", "noise")
FLOW_METHODS = ("dis", "farneback")


@dataclass(frozen=True)
class VideoSettings:
    style: StyleSettings = StyleSettings(size=256, iters=150)
    # How each frame after a chain's first starts: from the chain's previous stylized frame
    # warped along the optical flow, with the temporal loss (Ruder et al. 2016; measured best:
    # BENCHMARKS.md), that frame as it is (prev), or independently from content or noise.
    init: str = "flow"
    # Weight of the temporal loss (losses.temporal_loss) for seeded frames; None → the
    # weights source's tested default with --init flow, 0 otherwise.
    temporal_weight: float | None = None
    flow: str = "dis"  # optical flow between source frames: OpenCV's dis or farneback
    flow_dir: str | None = None  # or the user's precomputed .flo files (artistic-videos' names)
    # Long-term consistency (Ruder et al. 2016, §4.2): earlier frames of the chain the temporal
    # loss also holds to, as offsets; 1 (the previous frame) is always one. () → short-term only.
    long_term: tuple[int, ...] = ()
    # Multi-pass refinement (Ruder et al. §4.3, made parallel): 1 re-optimizes the frames around
    # each seam (two sweeps from the seam outward), N > 1 adds N - 1 passes over the whole video
    # in alternating directions.
    passes: int = 0
    start_init: str = "content"  # a chain's first frame: content or noise
    start_iters: int | None = None  # its budget; None → 2 × style.iters (it starts further away)
    segment_length: int = 48  # frames per chain at most: more → fewer seams, less parallelism
    overlap: int = 4  # frames a chain starts before its cut (not at shot cuts), blended
    cut_ratio: float = 6.0  # a shot cut changes ≥ this × its neighbours' change (plan.py); 0: none
    crf: int = 18  # x264 quality of the reassembled video

    def validate(self) -> "VideoSettings":
        self.style.validate()
        if self.init not in INITS_VIDEO:
            raise InputError(f"unknown --init '{self.init}' for video: use prev, flow, content or noise")
        check_number("temporal_weight", self.temporal_weight)
        if self.flow not in FLOW_METHODS:
            raise InputError(f"unknown --flow '{self.flow}': use {' or '.join(FLOW_METHODS)} (or --flow-dir DIR)")
        if self.long_term and (self.init != "flow" or any(not isinstance(k, int) or not 1 <= k <= 100
                                                          for k in self.long_term)):
            raise InputError(f"--long-term {','.join(map(str, self.long_term))}: give frame offsets 1…100, "
                             "with --init flow")
        if self.flow_dir is not None and self.init != "flow":
            raise InputError("--flow-dir needs --init flow")
        if not 0 <= self.passes <= 10 or (self.passes and self.init != "flow"):
            raise InputError(f"--passes {self.passes}: use 0…10, with --init flow")
        if self.start_init not in ("content", "noise"):
            raise InputError(f"unknown --start-init '{self.start_init}': use content or noise")
        if self.segment_length < 1 or self.overlap < 0 or self.overlap >= self.segment_length:
            raise InputError(f"--segment-length {self.segment_length} / --overlap {self.overlap}: "
                             "need segment length ≥ 1 and 0 ≤ overlap < segment length")
        if self.start_iters is not None and self.start_iters < 1:
            raise InputError("--start-iters must be ≥ 1")
        if not (math.isfinite(self.cut_ratio) and self.cut_ratio >= 0):
            raise InputError(f"--cut-ratio must be ≥ 0 (0 disables shot detection), got {self.cut_ratio}")
        if not 0 <= self.crf <= 51:
            raise InputError(f"--crf {self.crf}: use 0…51")
        return self

    @property
    def offsets(self) -> tuple[int, ...]:
        """Earlier frames a seeded frame warps and holds to: 1 (the previous frame), then the
        long-term ones, nearest first."""
        return tuple(sorted({1, *self.long_term})) if self.init == "flow" else ((1,) if self.init == "prev" else ())

    @property
    def chain_start_iters(self) -> int:
        return self.start_iters if self.start_iters is not None else 2 * self.style.iters


def check_number(name: str, value) -> None:
    """:class:`InputError` naming the option unless ``value`` is None or a finite number ≥ 0
    (a NaN would pass every comparison, and cannot be written into a JSON manifest)."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise InputError(f"--{name.replace('_', '-')} must be a finite number ≥ 0, got {value!r}")


def as_dict(settings) -> dict:
    """A JSON-ready dict (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(settings)))


def changed_keys(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Dotted names of every value that differs between two nested dicts."""
    changes = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            changes += changed_keys(a, b, f"{prefix}{key}.")
        elif a != b:
            changes.append(f"{prefix}{key}: {a!r} → {b!r}")
    return changes


__all__ = ["StyleSettings", "VideoSettings", "as_dict", "changed_keys", "check_number", "OPTIMIZERS", "PRECISIONS"]
