"""Atomic, durable writes: a same-directory temp file, fsynced, then ``os.replace`` (as torch.hub
does), then the folder fsynced.

A reader never sees a partial file at a final path; a crash leaves at most a hidden temp; once a
write returns, its file survives a power cut. A full disk, a quota, a read-only file system or a
refused permission becomes a one-line :class:`StorageError`, never a traceback.
"""
from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from pathlib import Path

from .errors import StorageError

# What the user can do about each storage failure; every other OSError is not ours to explain.
STORAGE_ERRNOS = {
    errno.ENOSPC: "the disk is full; free space and re-run to resume",
    errno.EDQUOT: "the disk quota is exceeded; free space (or raise the quota) and re-run to resume",
    errno.EROFS: "the file system is read-only; make it writable or choose another folder, then re-run to resume",
    errno.EACCES: "permission denied; make the folder writable or choose another, then re-run to resume",
    errno.EPERM: "operation not permitted; make the folder writable or choose another, then re-run to resume",
    errno.EFBIG: "the file is too large for this file system; choose another, then re-run to resume",
}


def storage_message(path, error_number: int) -> str:
    """The one-line message for a storage failure ``error_number`` while writing ``path``."""
    return f"cannot write {path}: {STORAGE_ERRNOS[error_number]}"


@contextlib.contextmanager
def storage_errors(path):
    """Turn an OSError of :data:`STORAGE_ERRNOS` raised in the block into :class:`StorageError`
    naming ``path``; anything else passes through unchanged."""
    try:
        yield
    except OSError as error:
        if error.errno in STORAGE_ERRNOS:
            raise StorageError(storage_message(path, error.errno)) from error
        raise


def _create_temp(path: Path, suffix: str) -> Path:
    """A new empty hidden file beside ``path``, with the mode a plain ``open(path, "w")`` would give:
    the existing file's mode if there is one, else 0666 less the umask (not mkstemp's 0600)."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode) & 0o777
    except (FileNotFoundError, NotADirectoryError):
        mode = None
    while True:
        temp = path.with_name(f".{path.name}.{secrets.token_hex(4)}{suffix}")
        try:
            handle = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
        except FileExistsError:
            continue
        try:
            if mode is not None:
                os.fchmod(handle, mode)
        finally:
            os.close(handle)
        return temp


def fsync_path(path, directory: bool = False) -> None:
    """Flush ``path`` (a file, or with ``directory`` a folder's entries) to the disk."""
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0)
    handle = os.open(path, flags)
    try:
        os.fsync(handle)
    except OSError as error:
        # Some file systems cannot fsync a folder (EINVAL); the rename is then as durable as it gets.
        if not directory or error.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(handle)


@contextlib.contextmanager
def atomic_path(path, suffix: str | None = None, durable: bool = True):
    """Yield a temp path beside ``path``; on success fsync it, move it into place and fsync the
    folder; on any error delete it and leave an existing ``path`` untouched.

    ``suffix`` defaults to the final name's, so tools that pick a format from the extension
    (Pillow, ffmpeg) still can. ``durable=False`` skips both fsyncs (about 10 ms each on a VM
    disk): only for files that can be rebuilt and are checked before use. Storage failures
    become :class:`StorageError`.
    """
    path = Path(path)
    with storage_errors(path):
        temp = _create_temp(path, suffix or path.suffix or ".tmp")
        try:
            yield temp
            if durable:
                fsync_path(temp)
            os.replace(temp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
            raise
        if durable:
            fsync_path(path.parent if str(path.parent) else Path("."), directory=True)


def write_text_atomic(path, text: str, durable: bool = True) -> None:
    with atomic_path(path, durable=durable) as temp:
        temp.write_text(text)


def sha256_file(path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def make_folder(folder, what: str = "folder") -> Path:
    """Create ``folder`` (and its parents) unless it is there: a full or read-only disk raises
    StorageError; a file in the way, or no permission, InputError naming ``what``."""
    from .errors import InputError

    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{what} {folder} is a file: give a folder")
    try:
        with storage_errors(folder):
            folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:  # not a storage failure: a file in the path, a path that cannot be
        raise InputError(f"cannot create {what} {folder}: {error.strerror}") from None
    return folder


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


__all__ = ["atomic_path", "make_folder", "write_text_atomic", "sha256_file", "check_writable_output", "storage_errors",
           "storage_message", "fsync_path", "STORAGE_ERRNOS"]
