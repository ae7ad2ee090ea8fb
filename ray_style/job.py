"""The job directory: manifest, lock, decoded source frames, finished frames, per-frame log.

A frame is done when its file exists; every file lands atomically, so an interrupted run
leaves only whole frames and a re-run continues from them. Layout::

    manifest.json          what decides the output (checksums, settings, weights), version
    lock                   flock held by the running driver; holds its pid
    source/000123.png      decoded content frames at the output size
    source/index.json      frame count and shot cuts, written when decoding finished
    flow/000123.npz        flow from frame 123 to 122 and its reliability mask (--init flow)
    chains/0004/000123.png frame 123 as rendered by chain 4
    frames.jsonl           one record per finished frame: loss, evaluations, seconds, worker
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np

from . import images
from .config import changed_keys
from .errors import JobError
from .files import atomic_path, write_text_atomic

MANIFEST = "manifest.json"
OWNED = ("source", "flow", "chains", "frames.jsonl", MANIFEST, "report")


class Job:
    """An open, locked job directory. Use :func:`open_job`; close (or exit) to unlock."""

    def __init__(self, root: Path, lock_handle):
        self.root, self._lock = root, lock_handle
        self.manifest: dict = json.loads((root / MANIFEST).read_text())

    # paths
    def source_path(self, frame: int) -> Path:
        return self.root / "source" / f"{frame:06d}.png"

    def frame_path(self, chain: int, frame: int) -> Path:
        return frame_path(self.root, chain, frame)

    # source frames
    def source_index(self) -> dict | None:
        return source_index(self.root)

    def write_source(self, frame: int, image: np.ndarray) -> None:
        self.source_path(frame).parent.mkdir(exist_ok=True)
        images.save_image(image, self.source_path(frame), compress_level=1)

    def finish_source(self, frames: int, cuts: list[int]) -> None:
        write_text_atomic(self.root / "source" / "index.json", json.dumps({"frames": frames, "cuts": cuts}))

    def read_source(self, frame: int) -> np.ndarray:
        return images.load_image(self.source_path(frame))

    # optical flow (--init flow)
    def flow_path(self, frame: int) -> Path:
        return self.root / "flow" / f"{frame:06d}.npz"

    def write_flow(self, frame: int, back: np.ndarray, mask: np.ndarray) -> None:
        """Flow from ``frame`` to ``frame - 1`` and its reliability mask, atomically."""
        path = self.flow_path(frame)
        path.parent.mkdir(exist_ok=True)
        with atomic_path(path) as temp:
            with open(temp, "wb") as handle:
                np.savez_compressed(handle, back=back.astype(np.float16), mask=mask.astype(np.uint8))

    def read_flow(self, frame: int) -> tuple[np.ndarray, np.ndarray]:
        with np.load(self.flow_path(frame)) as data:
            return data["back"].astype(np.float32), data["mask"].astype(np.float32)

    # rendered frames
    def is_done(self, chain: int, frame: int) -> bool:
        return self.frame_path(chain, frame).exists()

    def write_frame(self, chain: int, frame: int, image: np.ndarray, record: dict) -> None:
        path = self.frame_path(chain, frame)
        path.parent.mkdir(parents=True, exist_ok=True)
        images.save_image(image, path, compress_level=1)
        with open(self.root / "frames.jsonl", "a") as log:
            log.write(json.dumps({"chain": chain, "frame": frame, "time": time.time(), **record}) + "\n")

    def read_frame(self, chain: int, frame: int) -> np.ndarray:
        return images.load_image(self.frame_path(chain, frame))

    def close(self) -> None:
        if self._lock is not None:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()
            self._lock = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def frame_path(root, chain: int, frame: int) -> Path:
    """Where ``chain``'s render of ``frame`` lives (readable without taking the lock)."""
    return Path(root) / "chains" / f"{chain:04d}" / f"{frame:06d}.png"


def source_index(root) -> dict | None:
    """Frame count and shot cuts once decoding finished, else None (no lock needed)."""
    path = Path(root) / "source" / "index.json"
    return json.loads(path.read_text()) if path.exists() else None


def _lock(root: Path):
    handle = open(root / "lock", "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        if error.errno not in (errno.EAGAIN, errno.EACCES):
            raise
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise JobError(f"job directory {root} is in use by another run (pid {holder}): wait for it to "
                       f"finish or stop it; `ray-style status {root}` shows its progress") from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


def open_job(root, manifest: dict, restart: bool = False) -> Job:
    """Create or resume the job in ``root``, locked for this process.

    An existing manifest must match ``manifest`` on every key but ``"run"`` (informational:
    paths, workers, time); otherwise :class:`JobError` lists the changes, unless ``restart``,
    which deletes the job's files and starts over.
    """
    root = Path(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise JobError(f"cannot create job directory {root}: {error.strerror}") from None
    handle = _lock(root)
    try:
        path = root / MANIFEST
        if path.exists():
            old = json.loads(path.read_text())
            changes = changed_keys({k: v for k, v in old.items() if k != "run"},
                                   {k: v for k, v in manifest.items() if k != "run"})
            if changes and not restart:
                raise JobError(f"job directory {root} holds a job with other settings ({'; '.join(changes)}): "
                               "re-run with the same settings to resume, pass --restart to start over, "
                               "or choose another --job-dir")
            if changes or restart:
                for name in OWNED:
                    target = root / name
                    if target.is_dir():
                        shutil.rmtree(target)
                    elif target.exists():
                        target.unlink()
            else:
                manifest = {**manifest, "run": {**old.get("run", {}), **manifest.get("run", {})}}
        write_text_atomic(path, json.dumps(manifest, indent=2, sort_keys=True))
        return Job(root, handle)
    except BaseException:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()
        raise


def read_log(root) -> list[dict]:
    """The per-frame records; a line cut short by a crash is skipped."""
    path = Path(root) / "frames.jsonl"
    records = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records


def is_locked(root) -> bool:
    path = Path(root) / "lock"
    if not path.exists():
        return False
    with open(path) as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False


__all__ = ["Job", "open_job", "read_log", "is_locked", "frame_path", "source_index"]
