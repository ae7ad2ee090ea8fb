"""Settings: frozen dataclasses passed down whole; the CLI takes its defaults from here.

``StyleSettings`` is everything that decides one frame's pixels; ``VideoSettings`` adds what
decides a video's. Both go into a job's manifest, and :func:`changed_keys` lists what differs
on resume.
"""
from __future__ import annotations

import dataclasses
import json
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
    # auto: TF32 convolutions on a CUDA GPU, fp32 elsewhere. bf16: the VGG forward/backward in
    # bfloat16 autocast, Grams and losses in fp32.
    precision: str = "auto"
    # Coarse-to-fine: optimize first at size / 2^(scales-1), then double up to size, each
    # scale starting from the previous one's result (Gatys et al. 2017). 1: single scale.
    scales: int = 1
    # torch.compile the objective (VGG forward, Grams, losses) into fused kernels; the first
    # frame of each shape pays the compilation (tens of seconds).
    compile: bool = False
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
            value = getattr(self, name)
            if value is not None and value < 0:
                raise InputError(f"--{name.replace('_', '-')} must be ≥ 0, got {value}")
        if not self.content_layers and not self.style_layers:
            raise InputError("no content and no style layers: nothing to optimize")
        if self.style_layer_weights is not None and len(self.style_layer_weights) != len(self.style_layers):
            raise InputError(f"{len(self.style_layer_weights)} style layer weights for "
                             f"{len(self.style_layers)} style layers: give one per layer")
        if not 0.05 <= self.style_scale <= 8:
            raise InputError(f"--style-scale {self.style_scale} is out of range: use 0.05…8")
        if not 1 <= self.lbfgs_history <= 1000:
            raise InputError(f"--lbfgs-history {self.lbfgs_history}: use 1…1000 correction pairs")
        if self.precision not in PRECISIONS:
            raise InputError(f"unknown precision '{self.precision}': use {', '.join(PRECISIONS)}")
        if not 1 <= self.scales <= 6 or self.size / 2 ** (self.scales - 1) < MIN_SIZE:
            raise InputError(f"--scales {self.scales} at --size {self.size}: use 1…6 scales whose smallest "
                             f"is at least {MIN_SIZE} px")
        if self.learning_rate <= 0:
            raise InputError(f"--learning-rate must be > 0, got {self.learning_rate}")
        return self

    def layer_weights(self) -> dict[str, float]:
        """``{style layer: w_l}``."""
        weights = self.style_layer_weights or (1.0 / max(len(self.style_layers), 1),) * len(self.style_layers)
        return dict(zip(self.style_layers, weights))


INITS_VIDEO = ("prev", "flow", "content", "noise")


@dataclass(frozen=True)
class VideoSettings:
    style: StyleSettings = StyleSettings(size=256, iters=150)
    # How each frame after a chain's first starts: from the chain's previous stylized frame
    # (the product's premise), that frame warped along the optical flow (Ruder et al.), or
    # independently from its content frame or noise.
    init: str = "prev"
    # Weight of the short-term temporal loss (losses.temporal_loss) for seeded frames; None → the
    # weights source's tested default with --init flow, 0 otherwise.
    temporal_weight: float | None = None
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
        if self.temporal_weight is not None and self.temporal_weight < 0:
            raise InputError(f"--temporal-weight must be ≥ 0, got {self.temporal_weight}")
        if self.start_init not in ("content", "noise"):
            raise InputError(f"unknown --start-init '{self.start_init}': use content or noise")
        if self.segment_length < 1 or self.overlap < 0 or self.overlap >= self.segment_length:
            raise InputError(f"--segment-length {self.segment_length} / --overlap {self.overlap}: "
                             "need segment length ≥ 1 and 0 ≤ overlap < segment length")
        if self.start_iters is not None and self.start_iters < 1:
            raise InputError("--start-iters must be ≥ 1")
        if self.cut_ratio < 0:
            raise InputError(f"--cut-ratio must be ≥ 0 (0 disables shot detection), got {self.cut_ratio}")
        if not 0 <= self.crf <= 51:
            raise InputError(f"--crf {self.crf}: use 0…51")
        return self

    @property
    def chain_start_iters(self) -> int:
        return self.start_iters if self.start_iters is not None else 2 * self.style.iters


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


__all__ = ["StyleSettings", "VideoSettings", "as_dict", "changed_keys", "OPTIMIZERS", "PRECISIONS"]
