"""VGG feature extractor: an RGB image in [0, 1] in, named activations out.

Layer names follow the paper and neural-style: ``conv{b}_{k}`` is a convolution's linear
output, ``relu{b}_{k}`` the same after the ReLU (the paper's ``F^l``: its "conv4_2" is our
``relu4_2``), ``pool{b}`` the block's pooling output. The network is truncated after the
deepest layer asked for and frozen; each weights source brings its own input preprocessing.
"""
from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .errors import InputError, did_you_mean

CONVS_PER_BLOCK = {"vgg16": (2, 2, 3, 3, 3), "vgg19": (2, 2, 4, 4, 4)}
BLOCK_CHANNELS = (64, 128, 256, 512, 512)
POOLINGS = ("avg", "max")
# Caffe's VGG expects BGR in 0-255 minus these means; torchvision's RGB in [0, 1], standardized.
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)
IMAGENET_STD_RGB = (0.229, 0.224, 0.225)
PREPROCESSINGS = ("torchvision", "caffe")


def layer_names(arch: str) -> list[str]:
    """All named outputs of ``arch`` in forward order."""
    names = []
    for block, convs in enumerate(CONVS_PER_BLOCK[arch], start=1):
        for k in range(1, convs + 1):
            names += [f"conv{block}_{k}", f"relu{block}_{k}"]
        names.append(f"pool{block}")
    return names


def min_side(layers) -> int:
    """The smallest image side whose feature maps still exist at the deepest of ``layers``
    (each 2×2 pooling before it halves the side; 2^k px survive k of them)."""
    names = layer_names("vgg19")
    deepest = max((names.index(name) for name in layers if name in names), default=0)
    return 2 ** sum(1 for name in names[:deepest] if name.startswith("pool"))


def check_size(size_at, long_edge: int, layers, what: str) -> None:
    """:class:`InputError`, naming the smallest ``--size`` that works, when ``size_at(long_edge)``
    (the ``(w, h)`` an image is optimized at) is too small for the deepest of ``layers``."""
    need = min_side(layers)
    size = size_at(long_edge)
    if min(size) >= need:
        return
    smallest = next((s for s in range(long_edge, 1 << 16) if min(size_at(s)) >= need), None)
    fix = f"use --size {smallest} or more" if smallest else "it is too narrow at any size"
    raise InputError(f"--size {long_edge} makes {size[0]}x{size[1]} {what}, too small for the deepest layer "
                     f"(its poolings need {need} px on each side): {fix}")


def forward_order(arch: str, layers) -> list[str]:
    """The named outputs a network truncated after the deepest of ``layers`` computes."""
    names = layer_names(arch)
    return names[: max(names.index(name) for name in layers) + 1]


def channels(name: str) -> int:
    """Channels of a named output (``relu3_1`` → 256)."""
    block = int(name[4] if name.startswith("pool") else name.split("_")[0][-1])
    return BLOCK_CHANNELS[block - 1]


def conv_shapes(arch: str) -> list[tuple[int, int]]:
    """``(out, in)`` channels of each 3x3 convolution of ``arch``, in order."""
    shapes, channels_in = [], 3
    for convs, channels in zip(CONVS_PER_BLOCK[arch], BLOCK_CHANNELS):
        for _ in range(convs):
            shapes.append((channels, channels_in))
            channels_in = channels
    return shapes


def check_layers(arch: str, layers) -> None:
    """Raise :class:`InputError` naming the first layer ``arch`` does not have."""
    known = layer_names(arch)
    for name in layers:
        if name not in known:
            raise InputError(f"unknown layer '{name}' for {arch}.{did_you_mean(name, known)} "
                             f"Layers are conv1_1, relu1_1, …, pool5 (relu4_2 is the paper's conv4_2).")


class _AvgPool2x2(torch.autograd.Function):
    """``F.avg_pool2d(x, 2)`` whose backward writes the input gradient in one pass, in the
    input's layout: a quarter of each output gradient broadcast over its 2×2 cell (rows and
    columns that odd sizes leave out of every cell get 0). The same arithmetic as
    ``avg_pool2d_backward`` (a division by 4 is exact), without its per-element window search,
    which costs a noticeable share of a GPU evaluation in channels-last (BENCHMARKS.md, GPU)."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        ctx.shape = x.shape
        ctx.layout = (torch.channels_last if x.is_contiguous(memory_format=torch.channels_last)
                      else torch.contiguous_format)
        return F.avg_pool2d(x, 2)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        b, c, h, w = ctx.shape
        half_h, half_w = h // 2, w // 2
        out = torch.empty(ctx.shape, dtype=grad.dtype, device=grad.device, memory_format=ctx.layout)
        if h % 2:
            out[:, :, -1].zero_()
        if w % 2:
            out[:, :, :, -1].zero_()
        cells = out[:, :, :2 * half_h, :2 * half_w].unflatten(3, (half_w, 2)).unflatten(2, (half_h, 2))
        torch.mul(grad[:, :, :, None, :, None].expand(b, c, half_h, 2, half_w, 2), 0.25, out=cells)
        return out


def avg_pool_2x2(x: Tensor) -> Tensor:
    """The paper's 2×2 average pooling, ``(B, N, H, W) -> (B, N, H // 2, W // 2)``.

    Eager on a GPU with :class:`_AvgPool2x2`'s backward; elsewhere ``F.avg_pool2d`` as it is: on
    a CPU its backward is already cheap, and under torch.compile Inductor fuses its own (and a
    custom autograd function would keep the compiled graph out of the on-disk cache).
    """
    if x.is_cuda and not torch.compiler.is_compiling():
        return _AvgPool2x2.apply(x)
    return F.avg_pool2d(x, 2)


class VGGFeatures(nn.Module):
    """Frozen, truncated VGG16/19 returning the activations named in ``layers``.

    ``convs`` holds ``(weight (out, in, 3, 3), bias (out,))`` tensors in forward order, as
    produced by :mod:`ray_style.weights`. The paper's average pooling is the default.
    """

    def __init__(self, arch: str, convs, preprocess: str, layers, pooling: str = "avg"):
        super().__init__()
        if arch not in CONVS_PER_BLOCK:
            raise InputError(f"unknown architecture '{arch}': use vgg16 or vgg19")
        if pooling not in POOLINGS:
            raise InputError(f"unknown pooling '{pooling}': use avg or max")
        if preprocess not in PREPROCESSINGS:
            raise ValueError(f"unknown preprocessing {preprocess!r}")
        layers = tuple(dict.fromkeys(layers))
        check_layers(arch, layers)
        names = layer_names(arch)
        self.arch, self.pooling, self.preprocess, self.layers = arch, pooling, preprocess, layers
        self._order = forward_order(arch, layers)
        needed = sum(name.startswith("conv") for name in self._order)
        self.convs = nn.ModuleList()
        for (weight, bias), (out_ch, in_ch) in zip(list(convs)[:needed], conv_shapes(arch)):
            conv = nn.Conv2d(in_ch, out_ch, 3, padding=1)
            with torch.no_grad():
                conv.weight.copy_(torch.as_tensor(np.array(weight)))  # copies: inputs may be read-only
                conv.bias.copy_(torch.as_tensor(np.array(bias)))
            self.convs.append(conv)
        if len(self.convs) != needed:
            raise ValueError(f"{arch} needs {needed} convolutions for {layers[-1]}, got {len(self.convs)}")
        if preprocess == "caffe":
            mean, scale = torch.tensor(CAFFE_MEAN_BGR), torch.full((3,), 255.0)
        else:
            mean, scale = torch.tensor(IMAGENET_MEAN_RGB), 1.0 / torch.tensor(IMAGENET_STD_RGB)
        self.register_buffer("mean", mean.view(1, 3, 1, 1))
        self.register_buffer("scale", scale.view(1, 3, 1, 1))
        self.requires_grad_(False)
        self.eval()

    def normalize(self, image: Tensor) -> Tensor:
        """RGB in [0, 1] → the input these weights were trained on."""
        if self.preprocess == "caffe":
            return image.flip(1) * self.scale - self.mean
        return (image - self.mean) * self.scale

    def cast(self, dtype: torch.dtype) -> "VGGFeatures":
        """A copy whose convolutions compute in ``dtype`` (bfloat16 on a GPU). The
        preprocessing stays float32, so the input is rounded once, after it, as under autocast,
        but the weights are not cast again at every call."""
        clone = copy.deepcopy(self)
        clone.convs.to(dtype)
        return clone

    def forward(self, image: Tensor) -> dict[str, Tensor]:
        """``(B, 3, H, W)`` RGB in [0, 1] → ``{layer: (B, N_l, H_l, W_l)}`` in the convolutions' dtype."""
        wanted, out = set(self.layers), {}
        x = self.normalize(image).to(self.convs[0].weight.dtype)
        convs = iter(self.convs)
        for name in self._order:
            if name.startswith("conv"):
                x = next(convs)(x)
            elif name.startswith("relu"):
                x = F.relu(x)
            elif self.pooling == "avg":
                x = avg_pool_2x2(x)
            else:
                x = F.max_pool2d(x, 2)
            if name in wanted:
                out[name] = x
        return out


__all__ = ["VGGFeatures", "avg_pool_2x2", "layer_names", "forward_order", "channels", "min_side", "check_size", "conv_shapes", "check_layers", "POOLINGS"]
