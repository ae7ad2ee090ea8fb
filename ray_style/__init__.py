"""ray_style: Gatys, Ecker & Bethge's neural style transfer for whole videos, on Ray.

The math (:mod:`losses`), the features (:mod:`features`) and the one-frame optimizer
(:mod:`optimize`) need neither Ray nor ffmpeg; :mod:`workers` is the only Ray user and
:mod:`video` the only ffmpeg user.
"""
__version__ = "0.1.0"

from .config import StyleSettings, VideoSettings
from .errors import FrameError, InputError, JobError, RayStyleError, WeightsError
from .optimize import FrameResult, Progress, stylize, stylize_image
from .runner import VideoProgress, VideoResult, stylize_video
from .weights import Weights, load_weights

__all__ = ["__version__", "StyleSettings", "VideoSettings", "RayStyleError", "InputError", "WeightsError",
           "JobError", "FrameError", "FrameResult", "Progress", "stylize", "stylize_image", "Weights",
           "load_weights", "stylize_video", "VideoProgress", "VideoResult"]
