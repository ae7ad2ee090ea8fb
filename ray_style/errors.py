"""Typed errors. Each message says what was wrong, what was expected and what to do.

Only the CLI turns these into one line and an exit code (``exit_code``); the library raises
them and never prints.
"""
from __future__ import annotations


class RayStyleError(Exception):
    """Base class: anything the user can fix gets one of these, never a traceback."""

    exit_code = 1


class InputError(RayStyleError):
    """A path, image, video, option value or layer name that cannot be used."""

    exit_code = 2


class WeightsError(RayStyleError):
    """Weights that cannot be found, downloaded or parsed."""

    exit_code = 3


class JobError(RayStyleError):
    """A job directory that is locked, or was made with other settings."""

    exit_code = 4


class FrameError(RayStyleError):
    """A frame whose optimization keeps failing (NaN loss, out of memory)."""

    exit_code = 5


class StorageError(RayStyleError):
    """A write that failed for want of space or permission (disk full, quota, read-only).

    Whatever was finished before it is kept; nothing partial replaces a final file.
    """

    exit_code = 6


class ClusterError(RayStyleError):
    """A Ray cluster that cannot be reached, or cannot place a single worker in time."""

    exit_code = 7


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, a Kubernetes pod being stopped): a stop like Ctrl-C, with the same
    clean-up (the page says "stopped", no temp file or ffmpeg outlives the command); exit 143."""


def first_line(error: BaseException) -> str:
    """An error's first line, for a log or a page; its type's name when it has no message."""
    lines = str(error).splitlines()
    return lines[0] if lines else type(error).__name__


def did_you_mean(name: str, choices) -> str:
    """A ' Did you mean …?' suffix for an unknown name, or '' when nothing is close."""
    import difflib

    close = difflib.get_close_matches(name, list(choices), n=1)
    return f" Did you mean '{close[0]}'?" if close else ""
