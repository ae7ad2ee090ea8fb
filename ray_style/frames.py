"""The frame graph of a video job, pure: which renders there are, what each one starts from
and holds to, and which renders make each output frame. No files, no Ray: the runner reads
the stored images a :class:`TaskPlan` names and hands them to a worker.

Renders come in stages: the chains (plan.plan_chains: each one frame after the other when
frames are seeded from their predecessor), then each refinement pass's sweeps
(plan.refinement_passes). A render is named ``(sequence, frame)``: the sequence is a
chain's index or a sweep's (``PASS_BASE * pass + n``), and that is where it is stored.
"""
from __future__ import annotations

from dataclasses import dataclass

from . import plan
from .settings import VideoSettings


@dataclass(frozen=True)
class Render:
    """A stored render: ``sequence``'s result for ``frame``."""

    sequence: int
    frame: int


@dataclass(frozen=True)
class Final:
    """Output frame ``frame`` as the refinement passes before ``upto`` left it (0: the chains'
    blend; None: after every pass)."""

    frame: int
    upto: int | None = None


@dataclass(frozen=True)
class Blend:
    """A frame that no pass covers: its chain's render, or a seam's cross-fade of two chains'
    (``[(chain, weight), …]``, weights summing to 1)."""

    frame: int
    sources: tuple[tuple[int, float], ...]

    @property
    def renders(self) -> list[Render]:
        return [Render(chain, self.frame) for chain, _ in self.sources]


@dataclass(frozen=True)
class ReferencePlan:
    """An earlier (or, in a refinement pass, a later) frame a render warps and holds to."""

    offset: int  # this frame minus that one
    image: Render | Final  # its stylized image
    frame: int  # its frame number (for the flow between the two, and its source frame)


@dataclass(frozen=True)
class TaskPlan:
    """What one render starts from and holds to (see render.FrameTask, which carries the bytes)."""

    sequence: int
    frame: int
    init: str  # "content" or "noise" (from scratch), "prev" or "flow" (seeded), "blend" (a pass)
    iters: int
    references: tuple[ReferencePlan, ...] = ()
    start: Final | None = None  # a pass frame's own latest result


class FrameGraph:
    """The chains, the refinement sweeps and the shot cuts of a job, and the span of output
    frames this run delivers (``--frames A:B``; the whole video by default)."""

    def __init__(self, chains: list[plan.Chain], cuts: list[int], frame_count: int, settings: VideoSettings,
                 span: tuple[int, int] | None = None):
        self.chains, self.cuts, self.frame_count, self.settings = list(chains), list(cuts), frame_count, settings
        self.sweeps = plan.refinement_passes(self.chains, self.cuts, frame_count, settings.refine_passes)
        self.span = span or (0, frame_count)
        self.seeded = settings.seeded
        self._sweep = {s.index: s for stage in self.sweeps for s in stage}
        self._chain = {c.index: c for c in self.chains}
        self._cover = [{f: s.index for s in stage for f in s.frames} for stage in self.sweeps]
        self._needed = self._needed_renders()

    # -- what renders --------------------------------------------------------------------
    def stages(self) -> list[list]:
        """What renders, in order: the chains, then each refinement pass's sweeps."""
        return [self.chains, *self.sweeps]

    def sequential(self, stage: list) -> bool:
        """Whether a stage's frames run one after the other within each sequence."""
        return self.seeded or stage is not self.chains

    def wants(self, sequence: int, frame: int) -> bool:
        """Whether this run's span needs the render ``(sequence, frame)``."""
        return self._needed is None or (sequence, frame) in self._needed

    def renders(self) -> list[Render]:
        """Every render this run's span needs, stage by stage."""
        return [Render(s.index, f) for stage in self.stages() for s in stage for f in s.frames if self.wants(s.index, f)]

    @property
    def parallel(self) -> int:
        """How many renders could run at once: the chains when seeded, else every frame."""
        return len(self.chains) if self.seeded else sum(len(c.frames) for c in self.chains)

    @property
    def chains_in_span(self) -> int:
        """How many chains this run's span renders (all of them for the whole video)."""
        return sum(1 for c in self.chains if any(self.wants(c.index, f) for f in c.frames))

    @property
    def seams(self) -> list[int]:
        return plan.seams(self.chains, self.cuts)

    def _needed_renders(self) -> set | None:
        """The renders the span needs, or None for all of them: each chain covering a shown
        frame from its start (seeding), and refinement windows that touch the span, with the
        chain frames around them."""
        first, end = self.span
        if (first, end) == (0, self.frame_count):
            return None
        wanted, shown = set(), set(range(first, end))
        for sweep in (self.sweeps[0] if self.sweeps else []):
            if sweep.start < end and first < sweep.end:
                wanted.update((sweep.index, f) for f in sweep.frames)
                shown.update(range(max(0, sweep.start - 1), min(self.frame_count, sweep.end + 1)))
        for chain in self.chains:
            covered = [f for f in chain.frames if f in shown]
            if covered:
                frames = range(chain.start, max(covered) + 1) if self.seeded else covered
                wanted.update((chain.index, f) for f in frames)
        return wanted

    # -- what each output frame is ------------------------------------------------------------
    def same_shot(self, a: int, b: int) -> bool:
        return 0 <= b < self.frame_count and not any(min(a, b) < cut <= max(a, b) for cut in self.cuts)

    def last_sweep(self, frame: int, upto: int | None = None) -> int | None:
        """The sweep of the last pass before ``upto`` (default: all) that covers ``frame``;
        None when no pass does and the chains' blend stands."""
        for cover in reversed(self._cover[:upto]):
            if frame in cover:
                return cover[frame]
        return None

    def final(self, frame: int, upto: int | None = None) -> Render | Blend:
        """What output ``frame`` shows after the passes before ``upto`` (default: all)."""
        sweep = self.last_sweep(frame, upto)
        if sweep is not None:
            return Render(sweep, frame)
        return Blend(frame, tuple(plan.frame_sources(self.chains, frame)))

    def final_renders(self, frame: int) -> list[Render]:
        """The renders output ``frame`` is made of: it is final once they are all done."""
        made = self.final(frame)
        return [made] if isinstance(made, Render) else made.renders

    # -- what each render starts from ---------------------------------------------------------
    def task(self, item: plan.FrameJob, first: bool) -> TaskPlan:
        """The render ``item`` of its stage (``first``: the first of its sequence)."""
        if item.chain in self._sweep:
            return self._pass_task(item)
        settings = self.settings
        if first or not item.seeded:
            kind = settings.start_init if first else settings.init
            iters = settings.chain_start_iters if first and self.seeded else settings.style.iters
            return TaskPlan(item.chain, item.frame, kind, iters)
        start = self._chain[item.chain].start
        references = tuple(ReferencePlan(k, Render(item.chain, item.frame - k), item.frame - k)
                           for k in settings.offsets if item.frame - k >= start)
        return TaskPlan(item.chain, item.frame, settings.init, settings.style.iters, references)

    def _pass_task(self, item: plan.FrameJob) -> TaskPlan:
        """A refinement frame starts from its own latest result blended with its neighbour's
        (the one just refined before it in the sweep), warped along the flow, and the
        temporal loss holds it to both neighbours (Ruder et al. 2016, §4.3)."""
        sweep, t = self._sweep[item.chain], item.frame
        number, step = sweep.pass_number, -1 if sweep.backward else 1
        behind, ahead = t - step, t + step
        references = []
        if self.same_shot(t, behind):
            inside = sweep.start <= behind < sweep.end
            image = Render(sweep.index, behind) if inside else Final(behind, number - 1)
            references.append(ReferencePlan(t - behind, image, behind))
        if self.same_shot(t, ahead):
            references.append(ReferencePlan(t - ahead, Final(ahead, number - 1), ahead))
        return TaskPlan(sweep.index, t, "blend", self.settings.style.iters, tuple(references),
                        start=Final(t, number - 1))

    def flow_pairs(self, is_done) -> list[tuple[int, int]]:
        """Every ``(frame, earlier frame)`` flow the chains' seeded frames still need
        (``is_done(sequence, frame)``), in the order they will be needed: each chain's
        second frame first, then their third frames, …"""
        offsets = self.settings.offsets
        by_depth: dict[int, list] = {}
        for chain in self.chains:
            for depth, frame in enumerate(chain.frames):
                if self.wants(chain.index, frame) and not is_done(chain.index, frame):
                    by_depth.setdefault(depth, []).extend((frame, frame - k) for k in offsets
                                                          if frame - k >= chain.start)
        return [pair for depth in sorted(by_depth) for pair in by_depth[depth]]


__all__ = ["FrameGraph", "TaskPlan", "ReferencePlan", "Render", "Final", "Blend"]
