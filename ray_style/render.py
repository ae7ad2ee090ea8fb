"""One video frame from a self-contained task: what every executor (Ray actor or plain loop)
runs. A task carries the content frame and, for a seeded frame, the previous stylized frame
exactly as stored, so the result depends only on persisted data and the task's seed.
"""
from __future__ import annotations

import dataclasses
import os
import socket
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from . import images, optimize
from .config import StyleSettings
from .errors import FrameError
from .weights import Weights


@dataclass(frozen=True)
class FrameTask:
    chain: int
    frame: int
    content: np.ndarray  # (H, W, 3) uint8 source frame at the output size
    init: np.ndarray | None  # the start image for a seeded frame (uint8), else None
    init_kind: str  # "prev" or "flow" (with init), "content" or "noise" (without)
    iters: int  # evaluation budget: chain starts get more than seeded frames
    seed: int  # derived from the job seed and the frame index
    temporal_target: np.ndarray | None = None  # previous stylized frame warped into this one (uint8)
    temporal_mask: np.ndarray | None = None  # (H, W) uint8, 1 where the flow is reliable
    temporal_weight: float = 0.0


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
    fallback: str | None = None  # set when the frame needed a fallback (e.g. Adam after out of memory)


class WorkerLost(Exception):
    """A frame's worker died (or its result was lost) before answering: redo the frame."""


def frame_seed(job_seed: int, frame: int) -> int:
    """Each frame's randomness from the job seed and its index alone (resume-safe)."""
    return (job_seed * 1_000_003 + frame) % (2**63)


class FrameRenderer:
    """A model and one job's style targets on a device; :meth:`render` optimizes one frame."""

    def __init__(self, model, settings: StyleSettings, style_grams: dict[str, np.ndarray], device, worker: str):
        self.model, self.settings, self.device, self.worker = model, settings, torch.device(device), worker
        self.grams = {name: torch.from_numpy(np.array(g)).to(self.device) for name, g in style_grams.items()}

    def _tensors(self, task: FrameTask):
        content = images.to_tensor(task.content).to(self.device)
        if task.init is not None:
            init = images.to_tensor(task.init).to(self.device)
        else:
            init = optimize.initial_image(task.init_kind, content, task.seed)  # a chain start or an independent frame
        temporal = None
        if task.temporal_target is not None and task.temporal_weight > 0:
            mask = torch.from_numpy(np.array(task.temporal_mask, np.float32))[None, None].to(self.device)
            temporal = (images.to_tensor(task.temporal_target).to(self.device), mask, task.temporal_weight)
        return content, init, temporal

    def _output(self, task: FrameTask, result: optimize.FrameResult, settings, fallback=None) -> FrameOutput:
        image = images.to_uint8(result.image)
        if settings.original_colors:
            image = images.transfer_colors(image, task.content)
        return FrameOutput(task.chain, task.frame, image, result.loss, result.content_loss, result.style_loss,
                           result.evaluations, result.seconds, self.worker, fallback)

    def render(self, task: FrameTask) -> FrameOutput:
        content, init, temporal = self._tensors(task)
        torch.manual_seed(task.seed)
        settings, fallback = self.settings, None
        # Coarse-to-fine only where a frame starts from scratch; a seeded frame is already close.
        optimizer = optimize.stylize_coarse_to_fine if task.init is None else optimize.stylize
        try:
            result = optimizer(self.model, settings, init, content, self.grams, iters=task.iters, temporal=temporal)
        except torch.OutOfMemoryError:
            if settings.optimizer != "lbfgs":
                raise
            # L-BFGS keeps its gradient pairs; Adam keeps two moments: retry once with less memory.
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            settings, fallback = dataclasses.replace(settings, optimizer="adam"), "adam after out of memory"
            result = optimizer(self.model, settings, init, content, self.grams, iters=task.iters, temporal=temporal)
        return self._output(task, result, settings, fallback)

    def render_many(self, tasks: list[FrameTask]) -> list[FrameOutput | Exception]:
        """Several frames (of different chains) in one batched optimization where they can
        share it: seeded frames with equal budgets. Others, and a batch that fails (a
        non-finite loss, out of memory), are rendered one by one, so an error names its frame."""
        batchable = [t for t in tasks if t.init is not None]
        budgets = {t.iters for t in batchable}
        if len(batchable) < 2 or len(budgets) != 1:
            return [self._one(task) for task in tasks]
        try:
            outputs = dict(zip(map(id, batchable), self._batch(batchable)))
        except (FrameError, torch.OutOfMemoryError):
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            outputs = {}
        return [outputs[id(task)] if id(task) in outputs else self._one(task) for task in tasks]

    def _one(self, task: FrameTask) -> FrameOutput | Exception:
        try:
            return self.render(task)
        except FrameError as error:
            return error

    def _batch(self, tasks: list[FrameTask]) -> list[FrameOutput]:
        parts = [self._tensors(task) for task in tasks]
        content = torch.cat([c for c, _, _ in parts])
        init = torch.cat([i for _, i, _ in parts])
        temporal = None
        if any(t is not None for _, _, t in parts):
            zeros = (torch.zeros_like(content[:1]), torch.zeros_like(content[:1, :1]), 0.0)
            chosen = [t if t is not None else zeros for _, _, t in parts]
            temporal = (torch.cat([t[0] for t in chosen]), torch.cat([t[1] for t in chosen]),
                        torch.tensor([float(t[2]) for t in chosen], device=self.device))
        torch.manual_seed(tasks[0].seed)
        results = optimize.stylize_batch(self.model, self.settings, init, content, self.grams,
                                         iters=tasks[0].iters, temporal=temporal)
        return [self._output(task, result, self.settings) for task, result in zip(tasks, results)]


class RendererCache:
    """Makes the :class:`FrameRenderer` for a job, keeping the model while the weights, layers
    and pooling stay the same (a batch of jobs with one weights source builds it once)."""

    def __init__(self, device: str = "cpu", threads: int | None = None, worker: str | None = None):
        if threads:
            torch.set_num_threads(threads)
        self.device, self.threads = device, threads
        self.worker = worker or f"{socket.gethostname()}:{os.getpid()}"
        self._model_key = self._job_key = None
        self._model = self._renderer = None

    def get(self, weights_key: str, load_weights: Callable[[], Weights], settings: StyleSettings,
            grams_key: str, load_grams: Callable[[], dict]) -> FrameRenderer:
        job_key = (weights_key, grams_key, settings)
        if job_key != self._job_key:
            model_key = (weights_key, settings.pooling, settings.content_layers, settings.style_layers)
            if model_key != self._model_key:
                self._model = None  # free the old one first
                self._model = optimize.build_model(load_weights(), settings, self.device)
                self._model_key = model_key
            self._renderer = FrameRenderer(self._model, settings, load_grams(), self.device, self.worker)
            self._job_key = job_key
        return self._renderer


__all__ = ["FrameTask", "FrameOutput", "FrameRenderer", "RendererCache", "WorkerLost", "frame_seed"]
