"""What a task reads: bytes it carries, or where they are in the job's store (:class:`Stored`:
keys and checksums, read and checked by the process that does the work). Frame renders
(ray_style.render) and span encodes (ray_style.spans) read their images through here, and a
CPU task (a segment's decode, a span's encode) that cannot do its work where it landed says
so with :class:`Unreachable`; the module imports no torch, so a CPU task's process stays light.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .codec import blend, decode_png, digest, png_bytes
from .errors import RayStyleError
from .store import NotReached, opened, reach


@dataclass(frozen=True)
class Stored:
    """Bytes the worker reads from the job's store itself: one object, or a seam's cross-fade of
    several PNGs (``(key, sha256 or None, weight)`` each), every one checked."""

    parts: tuple[tuple[str, str | None, float], ...]


Payload = bytes | Stored  # what a task carries for one input: the bytes, or where they are


class Redo(Exception):
    """A frame that cannot render as asked, through no fault of its own: render it again once
    the driver has acted (not counted as a failure)."""


class InputDamaged(Redo):
    """An input the task named is missing or does not match its checksum: made again, then the
    frame renders again."""

    def __init__(self, key: str, detail: str):
        super().__init__(key, detail)
        self.key, self.detail = key, detail

    def __str__(self) -> str:
        return self.detail


class Unreachable(Exception):
    """This process cannot do a CPU task the driver handed out: it does not see the input or the
    job's store the driver named, or has no room to work. The driver's threads do it instead."""


def check_reach(url: str, token: tuple[str, str]) -> None:
    """:class:`Unreachable` unless this process reads the driver's ``token`` in the store at ``url``."""
    try:
        reach(url, token)
    except NotReached as error:
        raise Unreachable(str(error)) from None


def for_the_driver(error: BaseException) -> bool:
    """Whether a CPU task's failure is one the driver's threads can do better: the input or the
    store not seen there (:class:`Unreachable`), no CPU took it in time, its node lost — any
    failure but a RayStyleError (a full store: that stops the job) or a damaged input."""
    return isinstance(error, Unreachable) or (isinstance(error, Exception) and
                                              not isinstance(error, (RayStyleError, InputDamaged)))


def fetch(payload: Payload, store: str | None) -> bytes:
    """The bytes of an input: carried by the task, or read from the job's store (its folder or
    URL) and checked."""
    if not isinstance(payload, Stored):
        return payload
    if len(payload.parts) != 1:
        return png_bytes(fetch_image(payload, store))
    key, expected, _ = payload.parts[0]
    place = opened(store)
    try:
        data = place.read(key)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise InputDamaged(key, f"{place.describe(key)} is missing") from None
    if not data or (expected is not None and digest(data) != expected):
        raise InputDamaged(key, f"{place.describe(key)} does not match its recorded checksum")
    return data


def fetch_image(payload: Payload, store: str | None) -> np.ndarray:
    """An input image: one PNG, or a seam's cross-fade of several (the blend the driver would make)."""
    if not isinstance(payload, Stored) or len(payload.parts) == 1:
        return decode_png(fetch(payload, store))
    images = [decode_png(fetch(Stored((part,)), store)) for part in payload.parts]
    return blend(images, [weight for _, _, weight in payload.parts])


__all__ = ["Stored", "Payload", "Redo", "InputDamaged", "Unreachable", "check_reach", "for_the_driver", "fetch",
           "fetch_image"]
