"""One video frame from a self-contained task: what every executor (Ray actor or plain loop)
runs. A task carries the content frame and, for a seeded frame, the previous stylized frame
exactly as stored, so the result depends only on persisted data and the task's seed.
"""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass

import numpy as np
import torch

from . import images, optimize
from .config import StyleSettings
from .weights import Weights


@dataclass(frozen=True)
class FrameTask:
    chain: int
    frame: int
    content: np.ndarray  # (H, W, 3) uint8 source frame at the output size
    init: np.ndarray | None  # previous stylized frame of the chain (uint8), or None
    init_kind: str  # "prev", "content" or "noise"
    iters: int  # evaluation budget: chain starts get more than seeded frames
    seed: int  # derived from the job seed and the frame index


@dataclass(frozen=True)
class FrameOutput:
    chain: int
    frame: int
    image: np.ndarray  # (H, W, 3) uint8
    loss: float
    content_loss: float
    style_loss: float
    evaluations: int
    seconds: float
    worker: str  # host:pid that rendered it


def frame_seed(job_seed: int, frame: int) -> int:
    """Each frame's randomness from the job seed and its index alone (resume-safe)."""
    return (job_seed * 1_000_003 + frame) % (2**63)


class FrameRenderer:
    """Model and style targets loaded once; :meth:`render` optimizes one frame at a time."""

    def __init__(self, weights: Weights, settings: StyleSettings, style_grams: dict[str, np.ndarray],
                 device: str = "cpu", threads: int | None = None, worker: str | None = None):
        if threads:
            torch.set_num_threads(threads)
        self.settings, self.device = settings, torch.device(device)
        self.model = optimize.build_model(weights, settings, self.device)
        self.grams = {name: torch.from_numpy(np.array(g)).to(self.device) for name, g in style_grams.items()}
        self.worker = worker or f"{socket.gethostname()}:{os.getpid()}"

    def render(self, task: FrameTask) -> FrameOutput:
        content = images.to_tensor(task.content).to(self.device)
        if task.init is not None:
            init = images.to_tensor(task.init).to(self.device)
        else:
            init = optimize.initial_image(task.init_kind if task.init_kind != "prev" else "content", content, task.seed)
        torch.manual_seed(task.seed)
        result = optimize.stylize(self.model, self.settings, init, content, self.grams, iters=task.iters)
        image = images.to_uint8(result.image)
        if self.settings.original_colors:
            image = images.transfer_colors(image, task.content)
        return FrameOutput(task.chain, task.frame, image, result.loss, result.content_loss, result.style_loss,
                           result.evaluations, result.seconds, self.worker)


__all__ = ["FrameTask", "FrameOutput", "FrameRenderer", "frame_seed"]
