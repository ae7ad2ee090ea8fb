"""Each render's inputs as bytes, read from the job directory and checked (so a resume gives
the same bytes as an uninterrupted run): the source frame, the stored renders the frame graph
names, and for a flow-seeded frame what the worker needs for the flow. Also what each output
frame shows, for the encode.
"""
from __future__ import annotations

import uuid

import numpy as np

from . import plan
from .codec import png_bytes
from .frames import Blend, Final, FrameGraph, Render, TaskPlan
from .job import Job
from .render import FrameTask, Reference, frame_seed
from .settings import VideoSettings


class FrameReader:
    """The stored images the frame graph names, read from the job and checked."""

    def __init__(self, job: Job, graph: FrameGraph):
        self.job, self.graph = job, graph

    def png(self, image: Render | Final) -> bytes:
        if isinstance(image, Final):
            image = self.graph.final(image.frame, image.upto)
        if isinstance(image, Render):
            return self.job.read_frame_bytes(image.sequence, image.frame)
        return png_bytes(self.job.blend(list(image.sources), image.frame))

    def is_final(self, frame: int) -> bool:
        """Whether everything :meth:`final_image` reads for ``frame`` is done."""
        return all(self.job.is_done(r.sequence, r.frame) for r in self.graph.final_renders(frame))

    def final_image(self, frame: int) -> np.ndarray:
        """What the output shows at ``frame``: the last pass's result, else the chains' blend."""
        made = self.graph.final(frame)
        if isinstance(made, Blend):
            return self.job.blend(list(made.sources), frame)
        return self.job.read_frame(made.sequence, frame)


class TaskMaker:
    """Everything one render needs, as bytes read from the job directory (so resumes match)."""

    def __init__(self, job: Job, graph: FrameGraph, settings: VideoSettings, keep_flows: bool):
        self.job, self.graph, self.settings, self.keep_flows = job, graph, settings, keep_flows
        self.reader = FrameReader(job, graph)
        self.job_id = f"{job.fingerprint}-{uuid.uuid4().hex[:8]}"
        self.flows = None  # the user's flows (--flow-dir), read ahead of need
        if settings.init == "flow":
            if settings.flow_dir is None:
                # Workers compute the flows they need (render.prepare); only the report's are kept.
                job.open_flows(job.flow_key(settings.flow))
            else:
                from .flowcache import FlowCache

                self.flows = FlowCache(job, settings.flow_dir)
                self.flows.prefetch(graph.flow_pairs(job.is_done))

    def __call__(self, item: plan.FrameJob, first: bool) -> FrameTask:
        task: TaskPlan = self.graph.task(item, first)
        settings, style = self.settings, self.settings.style
        seeded = bool(task.references) or task.init == "blend"
        references = tuple(self._reference(task.frame, ref.frame, self.reader.png(ref.image))
                           for ref in task.references)
        return FrameTask(job=self.job_id, chain=task.sequence, frame=task.frame,
                         content=self.job.read_source_bytes(task.frame), init_kind=task.init, iters=task.iters,
                         seed=frame_seed(style.seed, task.frame), references=references,
                         temporal_weight=(settings.temporal_weight or 0.0) if seeded else 0.0,
                         start=self.reader.png(task.start) if task.start is not None else None,
                         flow_method=settings.flow, return_flow=self.keep_flows and task.init != "blend" and seeded)

    def _reference(self, frame: int, other: int, image: bytes) -> Reference:
        """``other``'s stylized frame for ``frame``, with what the worker needs for the flow
        between them: the user's flow (--flow-dir), else ``other``'s source frame."""
        if self.settings.init != "flow":
            return Reference(frame - other, image)
        if self.flows is not None:
            return Reference(frame - other, image, flow=self.flows.get(frame, other))
        return Reference(frame - other, image, source=self.job.read_source_bytes(other))

    def close(self) -> None:
        if self.flows is not None:
            self.flows.close()
            self.flows = None


__all__ = ["FrameReader", "TaskMaker"]
