"""Reassembling the output: a span of final frames encoded with the source's timing and
audio, either after the render or beside it, each frame as soon as it is final.

:class:`EncodeBesideRender` runs the encode in a thread whose frames wait until they are
final. It only reads finished, verified frames; everything the job records happens on the
driver's thread, which calls :meth:`~EncodeBesideRender.wake` after each stored frame.
"""
from __future__ import annotations

import os
import tempfile
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from . import sequence, spans, store, video
from .errors import InputError, RayStyleError, first_line
from .frames import Final
from .inputs import InputDamaged, for_the_driver
from .job import DamagedFile, damage_of

FinalImage = Callable[[int], np.ndarray]  # output frame number → its (H, W, 3) uint8 image


@dataclass(frozen=True)
class Output:
    """Where and how the output is written: the frames ``span`` of a source ``info`` at
    ``size``, to ``path`` (a local path, or a URL: encoded here, then put there whole)."""

    path: str
    info: video.VideoInfo
    size: tuple[int, int]
    span: tuple[int, int]
    frame_count: int  # the whole video's (a span's timing is cut from it)
    crf: int
    codec: str = "auto"
    bits: int = 8  # per channel of the frames (16: a 16-bit master, sequence or ProRes/FFV1)

    @property
    def is_sequence(self) -> bool:
        """Whether the output is numbered image files (``shot_%04d.exr``) rather than a video."""
        return sequence.is_pattern(self.path)

    def number(self, frame: int) -> int:
        """The file number of output frame ``frame``: the source's own number for a sequence
        input, the frame index for a video."""
        return self.info.numbers[frame] if self.info.numbers is not None else frame


def ordered(function, items, threads: int):
    """``map(function, items)`` on a thread pool, in order, at most ``2 × threads`` ahead."""
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="frames") as pool:
        pending = deque()
        for item in items:
            pending.append(pool.submit(function, item))
            if len(pending) >= 2 * threads:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def encode(output: Output, final_image: FinalImage) -> str:
    """Encode ``output.span`` from ``final_image``: verified, atomic (video.encode); an
    object-store output is encoded into a temp file here and put whole once verified."""
    place = store.location(output.path)
    if output.is_sequence:
        return _write_sequence(output, final_image)
    if not place.remote:
        _encode(output, final_image, Path(place.text))
        return place.text
    with tempfile.TemporaryDirectory(prefix="ray-style-output-") as work:
        local = _encode(output, final_image, Path(work) / f"output{video.suffix_of(place.text)}")
        store.upload(local, place)
    return place.text


def _encode(output: Output, final_image: FinalImage, path: Path) -> Path:
    first, end = output.span
    # Frames are read, checked and blended by a thread per core ahead of the encoder
    # (PNG decoding releases the GIL); one thread alone would be slower than x264.
    frames = ordered(final_image, range(first, end), os.cpu_count() or 1)
    timestamps, window, _ = timing(output)
    return video.encode(frames, path, *output.size, output.info.fps, output.info, output.crf, timestamps,
                        audio_window=window, codec=output.codec, bits=output.bits)


def timing(output: Output) -> tuple[list[float] | None, tuple[float, float] | None, list[float]]:
    """``(the frame times video.encode gets — None: frame i at i / fps —, the audio window of
    a range — None: all of it —, when each output frame starts and when the last one ends, in
    seconds from the first one's start: span + 1 values)``."""
    first, end = output.span
    info, timestamps, window = output.info, output.info.timestamps, None
    times = [float(t) for t in (timestamps or [t / info.fps for t in range(output.frame_count + 1)])]
    stop = times[end] if end < len(times) else times[-1] + (times[-1] - times[-2] if len(times) > 1 else 0)
    starts = [t - times[first] for t in times[first:end]] + [stop - times[first]]
    if (first, end) != (0, output.frame_count):
        window = (times[first], stop - times[first])
        timestamps = [t - times[first] for t in timestamps[first:end]] if timestamps else None
    return (list(timestamps) if timestamps else None), window, starts


def _write_sequence(output: Output, final_image: FinalImage) -> str:
    """Each frame of the span as its own file, named by its number, written atomically and read
    back before it replaces anything (sequence.write). A sequence has no audio track."""
    first, end = output.span
    frames = ordered(final_image, range(first, end), os.cpu_count() or 1)
    for frame, image in zip(range(first, end), frames):
        sequence.write(output.path % output.number(frame), sequence.to_depth(image, output.bits))
    return output.path


class _Cancelled(Exception):
    """The render stopped: the encode beside it gives up (its temp file goes with it)."""


class EncodeBesideRender:
    """:func:`encode` in a thread, each frame waiting until ``is_final(frame)``. The last frame
    also waits for :meth:`finish`, so the output replaces nothing unless the whole render
    succeeded."""

    def __init__(self, output: Output, is_final: Callable[[int], bool], final_image: FinalImage):
        self.output, self.is_final, self.final_image = output, is_final, final_image
        self.error: BaseException | None = None
        self._changed, self._stopped, self._rendered = threading.Condition(), False, False
        self._thread = threading.Thread(target=self._encode, name="encode-beside-render", daemon=True)
        self._thread.start()

    def _encode(self) -> None:
        try:
            encode(self.output, self._when_final)
        except BaseException as error:  # noqa: BLE001 - any failure means: encode again afterwards
            self.error = error

    def _when_final(self, frame: int) -> np.ndarray:
        last = frame == self.output.span[1] - 1
        with self._changed:
            while not (self.is_final(frame) and (self._rendered or not last)):
                if self._stopped:
                    raise _Cancelled()
                self._changed.wait(timeout=1.0)
        return self.final_image(frame)

    def wake(self, frame: int | None = None) -> None:
        """A frame was stored: waiting frames look again."""
        with self._changed:
            self._changed.notify_all()

    def cancel(self) -> None:
        """The render failed: stop, leaving no output."""
        with self._changed:
            self._stopped = True
            self._changed.notify_all()
        self._thread.join()

    def finish(self) -> BaseException | None:
        """Let the encode end, once the render has; None when it wrote a verified output,
        else what stopped it (the frames are then encoded again)."""
        with self._changed:
            self._rendered = True
            self._changed.notify_all()
        self._thread.join()
        return self.error


class SpansBesideRender:
    """The output encoded on the cluster's CPUs (:mod:`ray_style.spans`): each span handed to a
    CPU task as soon as its frames are final, the parts joined here once the render is done.
    Same methods as :class:`EncodeBesideRender`; ``job`` records the parts, ``reader`` says
    which frames are final and where their images are (tasks.FrameReader), ``cluster()`` gives
    what runs the tasks (workers.RayExecutor), asked for only when a span needs encoding (a job
    delivered again from its parts starts no Ray)."""

    def __init__(self, output: Output, job, reader, cluster: Callable[[], object]):
        self.output, self.job, self.reader, self._cluster = output, job, reader, cluster
        self.cluster = self.tasks = None
        self.bounds = spans.bounds(output.span)
        self.next = [start for start, _ in self.bounds]  # each span's first frame not known final
        self.spans: dict[int, object] = {}  # span index → its spans.Span, once its frames are final
        self.records: dict[int, dict] = {}  # span index → its part's record
        self.here: list[int] = []  # spans the driver encodes itself
        self.waiting: deque[int] = deque()  # spans ready for a task, held while the cluster has no spare CPU
        self._asked = 0.0  # when the cluster's spare CPUs were last asked for
        self.timestamps = timing(output)[0]
        self.damage: BaseException | None = None  # a frame a task found damaged: rendered again
        self.failure: BaseException | None = None  # a task's error that stops the job (a full disk)
        self.wake()

    def _index(self, frame: int) -> int:
        return frame // spans.SPAN - self.output.span[0] // spans.SPAN

    def wake(self, frame: int | None = None) -> None:
        """A frame was stored (None: any may have been): its span goes to a task once all its
        frames are final; parts done since are recorded."""
        for index in range(len(self.bounds)) if frame is None else [self._index(frame)]:
            if 0 <= index < len(self.bounds):
                self._consider(index)
        self._hand_out()
        for index, outcome in self.tasks.finished(0) if self.tasks is not None else ():
            self._take(index, outcome)

    def _hand_out(self, everything: bool = False) -> None:
        """Spans waiting go to tasks while the cluster has CPUs to spare (asked at most once a
        second), all of them once the render is over (``everything``): encodes never hold a
        CPU a frame worker is waiting for, nor make an autoscaler start a node for them."""
        if not self.waiting:
            return
        tasks = self._queue()
        if everything:
            room = len(self.waiting)
        elif time.monotonic() - self._asked < 1.0:
            return
        else:
            self._asked = time.monotonic()
            room = self.cluster.spare_cpus()
        while self.waiting and room > 0:
            index = self.waiting.popleft()
            tasks.put(index, self.spans[index])
            room -= 1

    def _queue(self):
        """The cluster's queue of span tasks, asked for the first time a span needs one."""
        if self.tasks is None:
            self.cluster = self._cluster()
            self.tasks = self.cluster.tasks(spans.encode)
        return self.tasks

    def _consider(self, index: int) -> None:
        if index in self.spans:
            return
        start, end = self.bounds[index]
        while self.next[index] < end and self.reader.is_final(self.next[index]):
            self.next[index] += 1
        if self.next[index] < end:
            return
        images = tuple(self.reader.stored(Final(frame)) for frame in range(start, end))
        span = self.spans[index] = spans.make(self.output, start, end, images, self.job.store.url,
                                              self.job.reach_token(), self.timestamps)
        record = self.job.part_record(span.key)
        if record is not None and record.get("frames") == end - start:
            self.records[index] = record  # a part made before (a resumed job): the same bytes
        else:
            self.waiting.append(index)

    def _take(self, index: int, outcome) -> None:
        if isinstance(outcome, dict) and outcome.get("frames") == self.bounds[index][1] - self.bounds[index][0]:
            self._record(index, outcome)
        elif isinstance(outcome, dict) or for_the_driver(outcome):
            self.here.append(index)  # the store not seen there, no CPU took it, its node lost
            if len(self.here) == 1:
                start, end = self.bounds[index]
                self.job.event("encode", detail=f"a worker could not encode frames {start}-{end - 1} "
                                                f"({first_line(outcome)}); encoding here")
        elif isinstance(outcome, InputDamaged):
            self.damage = self.damage or outcome
        else:
            self.failure = self.failure or outcome

    def _record(self, index: int, record: dict) -> None:
        record = {**record, "frames_of": self.spans[index].frames}
        self.job.record_part(self.spans[index].key, record)
        self.records[index] = record

    def cancel(self) -> None:
        """The render failed: nothing more is handed out (parts already stored stay, for a re-run)."""
        if self.tasks is not None:
            self.tasks.cancel()

    def finish(self) -> BaseException | None:
        """Once the render is done: every span encoded (tasks still out are waited for; what no
        worker could do, here), then the parts joined into the output. None when the output is
        written and verified, else what stopped the join (the caller encodes again here).
        Raises job.DamagedFile for a frame a task found damaged, a task's RayStyleError."""
        from .executor import run_here  # not at the top: it imports torch, which a span task needs not

        self.wake()
        if len(self.spans) != len(self.bounds):
            raise RuntimeError("the render ended with frames of the output not final")
        if self.waiting or (self.tasks is not None and len(self.tasks)):
            tasks = self._queue()
            self.cluster.release_idle()  # the render is over: its workers' CPUs go to the encodes
            self._hand_out(everything=True)
            for note in self.cluster.notes():
                self.job.event(note.kind, detail=note.text, **({"worker": note.worker} if note.worker else {}))
            for index, outcome in tasks.drain(self.cluster.options.placement_timeout):
                self._take(index, outcome)
        if self.damage is not None:
            raise damage_of(self.damage.key, str(self.damage))
        if self.failure is not None:
            raise self.failure
        for position, outcome in run_here(spans.encode_here, [self.spans[i] for i in self.here]):
            if isinstance(outcome, InputDamaged):
                raise damage_of(outcome.key, str(outcome))
            if isinstance(outcome, BaseException):
                raise outcome
            self._record(self.here[position], outcome)
        try:
            self._join()
        except DamagedFile:
            raise
        except RayStyleError as error:
            return error
        return None

    def _join(self) -> None:
        place = store.location(self.output.path)
        with tempfile.TemporaryDirectory(prefix="ray-style-parts-") as work:
            parts = []
            for index, (start, _) in enumerate(self.bounds):
                parts.append((self._part(index, Path(work)), start))
            headers = {self.records[index]["header"] for index in range(len(self.bounds))}
            if len(headers) > 1:  # parts from another ffmpeg build: the stream copy keeps the first's
                raise InputError(f"the output's parts disagree on their stream header ({sorted(headers)})")
            if place.remote:
                local = spans.join(self.output, parts, Path(work) / f"output{video.suffix_of(place.text)}")
                store.upload(local, place)
            else:
                spans.join(self.output, parts, Path(place.text))
        self.job.drop_parts(set(self.bounds), {span.frames for span in self.spans.values()})

    def _part(self, index: int, work: Path) -> Path:
        """A local file of span ``index``'s part, checked against its record (a part gone or
        changed since is encoded again, here)."""
        span, record = self.spans[index], self.records[index]
        data = self.job.read_part(span.key, record)
        if data is None:
            self.job.event("repaired", what="part", frame=span.start, detail=f"{span.key} was missing or changed")
            try:
                self._record(index, spans.encode_here(span))
            except InputDamaged as damaged:
                raise damage_of(damaged.key, str(damaged)) from None
            data = self.job.read_part(span.key, self.records[index])
            if data is None:
                raise InputError(f"{span.key} changed as soon as it was written: check the disk under "
                                       f"{self.job.root}")
        if isinstance(self.job.store, store.LocalStore):
            return self.job.store.path(span.key)  # checked just now; joined where it lies
        path = work / f"{index:06d}{video.PART_SUFFIX}"
        path.write_bytes(data)
        return path


__all__ = ["Output", "EncodeBesideRender", "SpansBesideRender", "encode", "ordered", "timing"]
