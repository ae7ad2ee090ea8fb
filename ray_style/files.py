"""Atomic writes: a same-directory temp file, then ``os.replace`` (as torch.hub does).

A reader never sees a partial file at a final path; a crash leaves at most a hidden temp.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path, suffix: str | None = None):
    """Yield a temp path beside ``path``; on success move it into place, else delete it.

    ``suffix`` defaults to the final name's, so tools that pick a format from the
    extension (Pillow, ffmpeg) still can.
    """
    path = Path(path)
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or path.suffix or ".tmp",
                                    dir=path.parent)
    os.close(handle)
    try:
        yield Path(temp)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise


def write_text_atomic(path, text: str) -> None:
    with atomic_path(path) as temp:
        temp.write_text(text)


def sha256_file(path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_writable_output(path, inputs=()) -> Path:
    """Raise InputError unless ``path`` can be created (its folder exists and is writable)
    and is none of ``inputs`` (an output never replaces what it is made from)."""
    from .errors import InputError

    path = Path(path)
    for source in inputs:
        if Path(source).exists() and path.exists() and path.resolve() == Path(source).resolve():
            raise InputError(f"output {path} is also an input: choose another output name")
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise InputError(f"output {path} is a directory: give a file name")
    if not folder.is_dir():
        raise InputError(f"cannot write {path}: folder {folder} does not exist (create it first)")
    if not os.access(folder, os.W_OK):
        raise InputError(f"cannot write {path}: folder {folder} is not writable")
    return path


__all__ = ["atomic_path", "write_text_atomic", "sha256_file", "check_writable_output"]
