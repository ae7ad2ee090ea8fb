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
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from . import sequence, store, video

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
    info, timestamps, window = output.info, output.info.timestamps, None
    if (first, end) != (0, output.frame_count):
        times = timestamps or [t / info.fps for t in range(output.frame_count + 1)]
        stop = times[end] if end < len(times) else times[-1] + (times[-1] - times[-2] if len(times) > 1 else 0)
        window = (float(times[first]), float(stop - times[first]))
        timestamps = [t - times[first] for t in timestamps[first:end]] if timestamps else None
    return video.encode(frames, path, *output.size, info.fps, info, output.crf, timestamps, audio_window=window,
                        codec=output.codec, bits=output.bits)


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

    def wake(self) -> None:
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


__all__ = ["Output", "EncodeBesideRender", "encode", "ordered"]
