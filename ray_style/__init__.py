"""ray_style: Gatys, Ecker & Bethge's neural style transfer for whole videos, on Ray.

The math (:mod:`losses`), the features (:mod:`features`) and the one-frame optimizer
(:mod:`optimize`) need neither Ray nor ffmpeg; :mod:`workers` is the only Ray user and
:mod:`video` the only ffmpeg user. Importing the package imports neither torch nor Ray: the
names below load their modules when first used, so ``ray-style status`` and ``--version``
start in a blink.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "StyleSettings": "settings", "VideoSettings": "settings", "ExecutorOptions": "settings",
    "RayStyleError": "errors", "InputError": "errors", "WeightsError": "errors", "JobError": "errors",
    "FrameError": "errors", "StorageError": "errors", "ClusterError": "errors",
    "FrameResult": "optimize", "Progress": "optimize", "Problem": "optimize", "stylize": "optimize",
    "stylize_image": "optimize",
    "Weights": "weights", "load_weights": "weights",
    "stylize_video": "runner", "VideoProgress": "runner", "VideoResult": "runner",
}


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'ray_style' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted([*globals(), *_EXPORTS])


__all__ = ["__version__", *_EXPORTS]
