"""A job's source frames, decoded in segments wherever there are CPUs: the head only probes
the input (its packets' timestamps, no pixels: video.probe), cuts the film into segments of
:data:`SEGMENT` frames and hands them out; each segment is decoded by a task (a Ray task on
any node, or a thread of the driver) straight into the job's store, and comes back as its
frames' checksums and cut signatures (a few hundred bytes a frame). Shot cuts are found in
the signatures of all segments in order, so a cut between two segments counts like any.

A task first checks that it sees what the driver sees: the input (its size, where the driver
gave a local file or a sequence's files) and the job's store (the token the driver wrote,
store.reach). A task that does not raises inputs.Unreachable and the driver decodes
that segment itself, as it did every segment before. Decoding a segment gives the bytes a
decode of the whole video gives for those frames (video.decode_span; tested), so a job
decoded in segments renders the same frames.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from . import plan, store, video
from .codec import digest, png_bytes
from .inputs import Unreachable, check_reach
from .job import source_key

SEGMENT = 240  # frames a task decodes: ~10 s of film, a few GOPs (a seek decodes from the keyframe before)


@dataclass(frozen=True)
class Segment:
    """Frames ``start`` … ``end - 1`` of ``info``, scaled to ``size``, into the store at ``store``."""

    info: video.VideoInfo
    start: int
    end: int
    size: tuple[int, int]
    bits: int
    store: str  # the job's folder or URL
    token: tuple[str, str]  # what the driver wrote there (render.check_reach)
    files: tuple[tuple[str, int], ...]  # local input files this segment reads, with their sizes


def segments(info: video.VideoInfo, size: tuple[int, int], bits: int, store: str, token: tuple[str, str],
             cpus: int = 1) -> list[Segment]:
    """The segments of ``info``, in film order: at most :data:`SEGMENT` frames each, as many as a
    multiple of ``cpus`` (the CPUs that decode them) and of balanced lengths, so that no CPU
    decodes a long segment alone while the others wait (a 250-frame clip on 2 CPUs: 2 × 125, not
    240 + 10) — but the first of those lengths is shared by ``cpus`` segments, so that the CPUs
    decode the film's opening together and its first chains can render early (the render
    starts on the frames decoded from the start: runner.decode)."""
    count = -(-info.frames // SEGMENT)
    count = -(-count // cpus) * cpus
    length = max(1, -(-info.frames // count))
    bounds = [*range(0, info.frames, length), info.frames]
    if count > cpus:  # the first segment's frames, shared by all the CPUs
        bounds = sorted({round(k * bounds[1] / cpus) for k in range(cpus)} | set(bounds[1:]))
    return [Segment(info, start, end, size, bits, store, token, _files(info, start, end))
            for start, end in zip(bounds, bounds[1:])]


def _files(info: video.VideoInfo, start: int, end: int) -> tuple[tuple[str, int], ...]:
    if info.numbers is not None:  # a sequence: the segment's first and last files
        paths = {info.path % info.numbers[start], info.path % info.numbers[end - 1]}
    elif "://" in info.path:
        return ()  # a URL: ffmpeg reads it wherever it runs (a presigned object, http)
    else:
        paths = {info.path}
    return tuple((path, os.path.getsize(path)) for path in sorted(paths))


def decode(segment: Segment, checked: bool = True) -> tuple[list[str], list[np.ndarray]]:
    """Decode ``segment`` into the job's store: ``(SHA-256 of each frame's PNG, cut signatures)``.
    Raises :class:`Unreachable` where this process does not see the driver's input or store
    (not ``checked``: the driver's own process, which does)."""
    for path, size in segment.files if checked else ():
        try:
            if os.path.getsize(path) != size:
                raise Unreachable(f"{path} here is another file than the driver's")
        except OSError:
            raise Unreachable(f"{path} is not on this machine") from None
    if checked:
        check_reach(segment.store, segment.token)
    place = store.opened(segment.store)
    hashes, signatures = [], []
    frames = video.decode_span(segment.info, segment.start, segment.end, *segment.size, segment.bits)
    for number, frame in enumerate(frames, segment.start):
        data = png_bytes(frame)
        place.write(source_key(number), data, durable=False)  # the index, written last, vouches for it
        hashes.append(digest(data))
        signatures.append(plan.frame_signature(frame))
    return hashes, signatures


def decode_here(segment: Segment) -> tuple[list[str], list[np.ndarray]]:
    """:func:`decode` in the driver's process (it sees its own input and store)."""
    return decode(segment, checked=False)


__all__ = ["SEGMENT", "Segment", "Unreachable", "segments", "decode", "decode_here"]
