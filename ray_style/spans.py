"""The output encoded on the workers: cut into spans of :data:`SPAN` frames, each encoded by a
CPU task as soon as its frames are final, and joined by a stream copy (video.join).

A span's task reads its frames from the job's store (the keys and checksums the driver names:
inputs.Stored, a seam's two renders blended there as the driver would), encodes them alone
(video.encode_part: the output's codec settings, one thread) and stores the part in the job
(``encoded/``) before it answers with the part's checksum; the driver records it. The key names
everything the bytes depend on — the frames' checksums, the codec settings, the frames' times,
ffmpeg's build — so a resumed job reuses the parts it has (the same bytes: the same output) and
never one whose frames changed. A task that cannot see the store (or no CPU takes it in
``--placement-timeout``, or its node is lost for good) hands its span to the driver's threads,
which encode it the same way. Only the join runs on the driver: a stream copy with the audio,
verified (frame count, codec, audio tracks, every frame's time) before it replaces the output.
"""
from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

from . import encoder, store, video
from .codec import digest
from .errors import StorageError
from .inputs import InputDamaged, Stored, Unreachable, check_reach, fetch_image
from .job import PARTS

SPAN = 240  # output frames a task encodes: ~10 s of film, a fraction of a GPU hour's output


@dataclass(frozen=True)
class Span:
    """Output frames ``start`` … ``end - 1`` (``images``: each one's final image in the store),
    encoded into the part ``key`` of the job's store ``store``."""

    start: int
    end: int
    images: tuple[Stored, ...]
    size: tuple[int, int]
    fps: object  # Fraction
    timestamps: tuple[float, ...] | None  # the frames' times (a variable rate), else frame i at i / fps
    codec: str
    crf: int
    bits: int
    color: str | None
    store: str
    token: tuple[str, str]
    key: str
    frames: str  # a checksum of the frames it is made of (its record keeps it: job.drop_parts)


def bounds(span: tuple[int, int]) -> list[tuple[int, int]]:
    """The output ``span`` cut at multiples of :data:`SPAN` (the same cuts for a range of the
    film as for the whole: a range reuses the whole film's parts inside it)."""
    first, end = span
    cuts = [first, *range((first // SPAN + 1) * SPAN, end, SPAN), end]
    return list(zip(cuts, cuts[1:]))


def make(output: encoder.Output, start: int, end: int, images: tuple[Stored, ...], job_store: str,
         token: tuple[str, str], timestamps: list[float] | None = None) -> Span:
    """The span of ``output`` from ``start`` to ``end``, its part's key made from everything
    its bytes depend on. ``timestamps``: encoder.timing's, where the caller has them (a film's
    are long: computed once, not per span)."""
    if timestamps is None:
        timestamps = encoder.timing(output)[0]
    first = output.span[0]
    times = tuple(timestamps[start - first:end - first]) if timestamps else None
    codec = video.resolve_codec(output.path, output.codec)
    color = video.output_color(output.info)
    frames = hashlib.sha256(json.dumps([list(map(list, image.parts)) for image in images]).encode()).hexdigest()
    facts = {"images": frames, "size": list(output.size),
             "fps": str(output.info.fps), "times": [round(t - times[0], 6) for t in times] if times else None,
             "codec": codec, "crf": output.crf, "bits": output.bits, "color": color,
             "ffmpeg": video.ffmpeg_build(), "part": video.PART_VERSION}
    name = hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:24]
    return Span(start, end, images, output.size, output.info.fps, times, codec, output.crf, output.bits, color,
                job_store, token, f"{PARTS}/{start:07d}-{end:07d}-{name}{video.PART_SUFFIX}", frames[:24])


def encode(span: Span, checked: bool = True) -> dict:
    """Encode ``span`` into its part in the job's store: ``{"sha256", "bytes", "frames",
    "header"}`` (video.encode_part's stream header checksum). Raises inputs.Unreachable
    where this process does not see the driver's store (not ``checked``: the driver's own
    process, which does), inputs.InputDamaged for a frame missing or changed."""
    if checked:
        check_reach(span.store, span.token)
    frames = (fetch_image(image, span.store) for image in span.images)  # 8 or 16 bits: encode_part converts
    try:
        with tempfile.TemporaryDirectory(prefix="ray-style-span-") as work:
            part = Path(work) / f"part{video.PART_SUFFIX}"
            count, header = video.encode_part(frames, part, *span.size, span.fps, span.timestamps, span.codec,
                                              span.crf, span.bits, span.color)
            data = part.read_bytes()
    except (StorageError, OSError) as error:  # this machine's temp folder full: the driver can do it
        if not checked:
            raise
        raise Unreachable(f"no room to encode here ({error})") from None
    store.opened(span.store).write(span.key, data)  # the job's store full: that stops the job
    return {"sha256": digest(data), "bytes": len(data), "frames": count, "header": header}


def encode_here(span: Span) -> dict:
    """:func:`encode` in the driver's process (it sees its own store)."""
    return encode(span, checked=False)


def join(output: encoder.Output, parts: list[tuple[Path, int]], path: Path) -> Path:
    """``output`` at the local ``path`` from its parts (each with its first output frame), in order."""
    timestamps, window, starts = encoder.timing(output)
    first = output.span[0]
    return video.join([(part, starts[start - first]) for part, start in parts], starts[-1], output.span[1] - first,
                      path, output.info.fps, timestamps, output.info, window,
                      video.resolve_codec(output.path, output.codec))


__all__ = ["SPAN", "Span", "Unreachable", "InputDamaged", "bounds", "make", "encode", "encode_here",
           "join"]
