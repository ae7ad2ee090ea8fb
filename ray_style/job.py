"""The job directory: everything a video job keeps, and the only code that reads or writes it.

A frame counts as done when its file is on disk (fsynced) *and* a record in ``frames.jsonl``
vouches for it: the record names the job's fingerprint (the output-deciding manifest and the
chain plan), the file's SHA-256 and its size. Work nothing vouches for is never used: a file
without a record, a record of other settings, a file whose size or checksum differs, is
re-rendered (with an event saying so). What can be repaired is: source frames are decoded
again, flows recomputed. Layout::

    .ray-style-job         marker: this directory is a ray_style job (``--restart`` refuses others)
    manifest.json          what decides the output (checksums, settings, weights), version; "run" facts
    lock                   flock held by the running driver; holds its pid
    plan.json              the chains, fixed before the first frame (a resume keeps them)
    source/index.json      frame count, shot cuts, each source frame's SHA-256, source fingerprint
    source/000123.png      decoded content frames at the output size
    flow/index.json        which source frames and flow method the cached flows belong to
    flow/000123_000122.npz flow from frame 123 to 122 and its reliability mask (not fsynced: checked)
    chains/0004/000123.png frame 123 as rendered by chain 4
    frames.jsonl           one record per finished frame: loss, evaluations, seconds, worker, checksum
    events.jsonl           what else happened: frames redone or repaired, failures, warnings
    report/                the live page while running, the evaluation at the end
"""
from __future__ import annotations

import errno
import fcntl
import hashlib
import io
import json
import os
import re
import shutil
import time
import zipfile
import zlib
from pathlib import Path

import numpy as np

from . import plan
from .config import changed_keys
from .errors import JobError
from .files import atomic_path, storage_errors, write_text_atomic

MARKER = ".ray-style-job"
MANIFEST = "manifest.json"
# Everything a job writes; --restart removes these and nothing else.
OWNED = ("chains", "frames.jsonl", "events.jsonl", "plan.json", "report", MANIFEST, "source", "flow")
MANIFEST_KEYS = ("version", "input", "settings", "frame_size")


class DamagedFile(JobError):
    """A file of the job directory that is missing, cut short or altered: redo what made it."""

    def __init__(self, message: str, kind: str, chain: int | None, frame: int, target: int | None = None):
        super().__init__(message)
        self.kind, self.chain, self.frame, self.target = kind, chain, frame, target


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fingerprint(value) -> str:
    """A short stable hash of a JSON-able value (sorted keys)."""
    return digest(json.dumps(value, sort_keys=True).encode())[:16]


def manifest_fingerprint(manifest: dict) -> str:
    """What decides every frame's pixels: the manifest without its informational "run" part."""
    return fingerprint({k: v for k, v in manifest.items() if k != "run"})


def png_bytes(image: np.ndarray) -> bytes:
    """The PNG a job stores for ``image`` (compression 1: fast; deterministic for a Pillow version)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def decode_png(data: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


def _read_jsonl(path: Path) -> list[dict]:
    """The dict records of a JSON-lines file; a line cut short or garbled by a crash is skipped."""
    records = []
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return records
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def _read_json(path: Path):
    """A JSON file's value, or None when it is missing or not JSON."""
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError, IsADirectoryError):
        return None


def is_job_manifest(value) -> bool:
    return isinstance(value, dict) and all(key in value for key in MANIFEST_KEYS)


class Job:
    """An open, locked job directory. Use :func:`open_job`; close (or exit) to unlock."""

    def __init__(self, root: Path, lock_handle, manifest: dict):
        self.root, self._lock, self.manifest = root, lock_handle, manifest
        self.fingerprint = manifest_fingerprint(manifest)
        self.frame_key: str | None = None  # fingerprint + plan: set by set_plan
        self.done: dict[tuple[int, int], dict] = {}  # (chain, frame) → its vouching record
        self._source: dict | None = None

    # -- events and run facts -------------------------------------------------------------
    def event(self, kind: str, **fields) -> dict:
        """Append one event (redone, repaired, failed, warning, …) to events.jsonl."""
        record = {"time": round(time.time(), 3), "kind": kind, **fields}
        self._append(self.root / "events.jsonl", record)
        return record

    def remember(self, **values) -> None:
        """Record run facts (not compared on resume) in the manifest's "run" section."""
        self.manifest.setdefault("run", {}).update(values)
        write_text_atomic(self.root / MANIFEST, json.dumps(self.manifest, indent=2, sort_keys=True))

    def _append(self, path: Path, record: dict) -> None:
        line = json.dumps(record, allow_nan=False) + "\n"
        with storage_errors(path), open(path, "a") as log:
            log.write(line)
            log.flush()
            os.fsync(log.fileno())

    # -- source frames --------------------------------------------------------------------
    def source_path(self, frame: int) -> Path:
        return self.root / "source" / f"{frame:06d}.png"

    def source_index(self, source_key: str) -> dict | None:
        """The finished decode if it belongs to ``source_key`` (input, size, cut settings), else None."""
        index = _read_json(self.root / "source" / "index.json")
        valid = (isinstance(index, dict) and index.get("source") == source_key
                 and isinstance(index.get("frames"), int) and isinstance(index.get("sha256"), list)
                 and len(index["sha256"]) == index["frames"] and isinstance(index.get("cuts"), list))
        self._source = index if valid else None
        return self._source

    def write_source(self, frame: int, image: np.ndarray) -> str:
        """Store a decoded frame; returns its SHA-256 (for the index). Not fsynced: a source
        frame lost in a crash is found by its checksum and decoded again. Thread-safe."""
        data = png_bytes(image)
        self._write_bytes(self.source_path(frame), data, durable=False)
        return digest(data)

    def rewrite_source(self, frame: int, image: np.ndarray) -> None:
        """Store a frame decoded again (a repair). Should it not match the recorded checksum —
        the video decodes differently now, e.g. another ffmpeg — the index follows the file,
        with a warning, rather than refusing it forever."""
        digest_now = self.write_source(frame, image)
        if self._source is not None and self._source["sha256"][frame] != digest_now:
            self._source["sha256"][frame] = digest_now
            write_text_atomic(self.root / "source" / "index.json", json.dumps(self._source))
            self.event("warning", frame=frame, detail="a source frame decoded again differs from the first decode")
        self.event("repaired", what="source", frame=frame, detail="decoded again")

    def finish_source(self, source_key: str, frames: int, cuts: list[int], hashes: list[str]) -> dict:
        index = {"source": source_key, "frames": frames, "cuts": cuts, "sha256": hashes}
        write_text_atomic(self.root / "source" / "index.json", json.dumps(index))
        self._source = index
        return index

    def damaged_sources(self) -> list[int]:
        """Source frames missing or empty (a stat each; their checksums are checked when read)."""
        if self._source is None:
            return []
        return [frame for frame in range(self._source["frames"]) if not self.source_path(frame).is_file()
                or self.source_path(frame).stat().st_size == 0]

    def read_source_bytes(self, frame: int) -> bytes:
        """The PNG of a source frame, checked against the index's checksum."""
        expected = self._source["sha256"][frame] if self._source else None
        return self._read_verified(self.source_path(frame), expected, "source", None, frame)

    def read_source(self, frame: int) -> np.ndarray:
        return decode_png(self.read_source_bytes(frame))

    # -- the plan -------------------------------------------------------------------------
    def load_plan(self) -> list[plan.Chain] | None:
        """The chains fixed when this job first rendered, if they are still this job's."""
        saved = _read_json(self.root / "plan.json")
        if not isinstance(saved, dict) or saved.get("job") != self.fingerprint:
            return None
        return saved_chains(saved)

    def save_plan(self, chains: list[plan.Chain], **facts) -> None:
        """Fix the chains: written once, a resume reuses them whatever pool it runs on."""
        spans = [[c.start, c.end, c.lead_in] for c in chains]
        write_text_atomic(self.root / "plan.json", json.dumps({"job": self.fingerprint, "chains": spans, **facts}))

    def set_plan(self, chains: list[plan.Chain], passes: list[list[plan.Sweep]] = ()) -> None:
        """Render under these chains (and refinement sweeps, derived from them and the
        settings): load what the log vouches for under them."""
        spans = [[c.start, c.end, c.lead_in] for c in chains]
        sweeps = [[q.index, q.start, q.end, q.backward] for stage in passes for q in stage]
        # The sweeps' layout joins the key (only when there are sweeps, so that jobs without
        # passes keep theirs): a pass frame is stored by its sweep's index, and the same index
        # under another layout would be another frame's work.
        self.frame_key = fingerprint([self.fingerprint, spans, sweeps] if sweeps else [self.fingerprint, spans])
        self._load_done([*chains, *(sweep for stage in passes for sweep in stage)])

    # -- optical flow ---------------------------------------------------------------------
    def flow_path(self, frame: int, target: int) -> Path:
        return self.root / "flow" / f"{frame:06d}_{target:06d}.npz"

    def open_flows(self, flow_key: str) -> None:
        """Drop cached flows that belong to other source frames or another flow method."""
        folder = self.root / "flow"
        index = _read_json(folder / "index.json")
        if folder.exists() and (not isinstance(index, dict) or index.get("flow") != flow_key):
            shutil.rmtree(folder)
        if not folder.exists():
            folder.mkdir()
            write_text_atomic(folder / "index.json", json.dumps({"flow": flow_key}))

    def has_flow(self, frame: int, target: int) -> bool:
        return self.flow_path(frame, target).is_file()

    def write_flow(self, frame: int, target: int, data: bytes) -> None:
        """A flow file (see flowcache.flow_bytes) for ``frame → target``, atomically; not
        fsynced: a flow lost in a crash is checked when read and computed again."""
        path = self.flow_path(frame, target)
        with storage_errors(path), atomic_path(path, durable=False) as temp:
            temp.write_bytes(data)

    def read_flow_bytes(self, frame: int, target: int) -> bytes:
        """The stored flow file, checked to load (a damaged one raises :class:`DamagedFile`)."""
        path = self.flow_path(frame, target)
        data = self._read_verified(path, None, "flow", None, frame, target)
        try:
            load_flow(data)
        except (ValueError, OSError, KeyError, EOFError, zipfile.BadZipFile) as error:
            raise DamagedFile(f"flow {path} is damaged ({error})", "flow", None, frame, target) from None
        return data

    # -- rendered frames ------------------------------------------------------------------
    def frame_path(self, chain: int, frame: int) -> Path:
        return frame_path(self.root, chain, frame)

    def is_done(self, chain: int, frame: int) -> bool:
        return (chain, frame) in self.done

    def write_frame(self, chain: int, frame: int, data: bytes, record: dict) -> dict:
        """Store a rendered frame (PNG bytes) and the record that vouches for it, in that order:
        a crash between the two leaves a file no record vouches for, which is redone."""
        self._write_bytes(self.frame_path(chain, frame), data)
        record = {"chain": chain, "frame": frame, "time": round(time.time(), 3), **record,
                  "sha256": digest(data), "bytes": len(data), "job": self.frame_key}
        self._append(self.root / "frames.jsonl", record)
        self.done[(chain, frame)] = record
        return record

    def read_frame_bytes(self, chain: int, frame: int) -> bytes:
        record = self.done.get((chain, frame))
        if record is None:
            raise DamagedFile(f"frame {frame} of chain {chain} is not done", "frame", chain, frame)
        return self._read_verified(self.frame_path(chain, frame), record["sha256"], "frame", chain, frame)

    def read_frame(self, chain: int, frame: int) -> np.ndarray:
        return decode_png(self.read_frame_bytes(chain, frame))

    def discard(self, damage: DamagedFile) -> None:
        """Forget a damaged file so that it is made again, and say so in events.jsonl."""
        if damage.kind == "frame":
            self.done.pop((damage.chain, damage.frame), None)
            path = self.frame_path(damage.chain, damage.frame)
        elif damage.kind == "flow":
            path = self.flow_path(damage.frame, damage.target)
        else:
            path = self.source_path(damage.frame)
        path.unlink(missing_ok=True)
        self.event("repaired", what=damage.kind, chain=damage.chain, frame=damage.frame,
                   **({"target": damage.target} if damage.target is not None else {}), detail=str(damage))

    def blend(self, chains: list[plan.Chain], frame: int) -> np.ndarray:
        """The final ``frame``: its chain's render, or a seam's cross-fade of two chains'."""
        sources = plan.frame_sources(chains, frame)
        if len(sources) == 1:
            return self.read_frame(sources[0][0], frame)
        mixed = sum(weight * self.read_frame(chain, frame).astype(np.float32) for chain, weight in sources)
        return np.clip(np.rint(mixed), 0, 255).astype(np.uint8)

    def _load_done(self, chains: list[plan.Chain]) -> None:
        """What the log vouches for under this plan; anything else in chains/ is removed."""
        wanted = {(c.index, f) for c in chains for f in c.frames}
        records = {}
        for record in _read_jsonl(self.root / "frames.jsonl"):
            key = (record.get("chain"), record.get("frame"))
            if record.get("job") == self.frame_key and key in wanted and isinstance(record.get("sha256"), str):
                records[key] = record  # the latest record of a frame wins (a redone frame)
        self.done, damaged, stale = {}, [], 0
        for key, record in records.items():
            path = self.frame_path(*key)
            size = path.stat().st_size if path.is_file() else -1
            if size == record.get("bytes"):
                self.done[key] = record
            else:
                damaged.append(key)
        chains_dir = self.root / "chains"
        if chains_dir.is_dir():
            for path in chains_dir.glob("*/*"):
                key = _frame_key(path)
                if key not in self.done:
                    stale += key is not None and key not in damaged
                    path.unlink()
        for chain, frame in damaged:
            self.event("repaired", what="frame", chain=chain, frame=frame,
                       detail="file missing or of another size than recorded; it is rendered again")
        if stale:
            self.event("warning", detail=f"{stale} frame file(s) that no record of this job vouches for were "
                                         "removed (other settings, or a crash before the record)")

    # -- file plumbing --------------------------------------------------------------------
    def _write_bytes(self, path: Path, data: bytes, durable: bool = True) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with storage_errors(path), atomic_path(path, durable=durable) as temp:
            temp.write_bytes(data)

    def _read_verified(self, path: Path, expected: str | None, kind: str, chain, frame, target=None) -> bytes:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise DamagedFile(f"{path} is missing", kind, chain, frame, target) from None
        if not data or (expected is not None and digest(data) != expected):
            raise DamagedFile(f"{path} does not match its recorded checksum", kind, chain, frame, target)
        return data

    def close(self) -> None:
        if self._lock is not None:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()
            self._lock = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


_NPY_HEADER = re.compile(r"\{'descr': '([<>|]?[a-z]\d+)', 'fortran_order': False, "
                         r"'shape': \((\d+(?:, \d+)*),?\), \} *\n")


def _npy_array(data: bytes) -> np.ndarray:
    """The array of an ``.npy`` file as numpy writes one (C order, a plain dtype), read without
    numpy's header parser. That parser calls ``ast.literal_eval``, and CPython before 3.11.8
    raises "SystemError: AST constructor recursion depth mismatch" when two threads build ASTs
    at once (gh-106905): the flows are read by a thread per core, and CI met that error."""
    if data[:6] != b"\x93NUMPY" or len(data) < 12:
        raise ValueError("not an .npy array")
    length, start = (int.from_bytes(data[8:10], "little"), 10) if data[6] == 1 else \
        (int.from_bytes(data[8:12], "little"), 12)
    match = _NPY_HEADER.fullmatch(data[start:start + length].decode("latin-1"))
    if match is None:
        raise ValueError(f"unexpected .npy header {data[start:start + length][:80]!r}")
    shape = tuple(int(n) for n in match.group(2).split(", "))
    return np.frombuffer(data, np.dtype(match.group(1)), int(np.prod(shape)), start + length).reshape(shape)


def load_flow(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """``(flow (H, W, 2) float32, mask (H, W) float32 in [0, 1])`` from a flow file's bytes
    (an ``.npz`` of float16 ``back`` and uint8 ``mask``, 255 = reliable). Damage raises
    ValueError, KeyError or zipfile.BadZipFile."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            back, mask = _npy_array(archive.read("back.npy")), _npy_array(archive.read("mask.npy"))
    except zlib.error as error:
        raise ValueError(f"damaged compressed data ({error})") from None
    if back.ndim != 3 or back.shape[2] != 2 or mask.shape != back.shape[:2]:
        raise ValueError(f"a flow of shape {back.shape} with a mask of shape {mask.shape}")
    return back.astype(np.float32), mask.astype(np.float32) / 255


def _frame_key(path: Path) -> tuple[int, int] | None:
    try:
        return int(path.parent.name), int(path.stem)
    except ValueError:
        return None


def frame_path(root, chain: int, frame: int) -> Path:
    """Where ``chain``'s render of ``frame`` lives (readable without taking the lock)."""
    return Path(root) / "chains" / f"{chain:04d}" / f"{frame:06d}.png"


def _is_ours(root: Path) -> bool:
    return (root / MARKER).exists() or is_job_manifest(_read_json(root / MANIFEST))


def _lock(root: Path):
    with storage_errors(root / "lock"):
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


def remove_stale_temps(folder: Path, name: str | None = None) -> int:
    """Delete the temp files atomic writes leave when a process is killed mid-write
    (``.NAME.<8 hex>SUFFIX``, see files.atomic_path): all of them under a job directory, or only
    those of the file ``name`` in ``folder`` (an output's folder is the user's). Returns how many."""
    prefix = re.escape(name) if name else ".+"
    pattern = re.compile(rf"^\.{prefix}\.[0-9a-f]{{8}}(\.[A-Za-z0-9]+)?$")
    paths = folder.glob(f".{name}.*") if name else folder.rglob(".*")
    removed = 0
    for path in list(paths):
        if path.is_file() and pattern.match(path.name) and path.name != MARKER:
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def _clear(root: Path, keep=()) -> None:
    for name in OWNED:
        target = root / name
        if name in keep:
            continue
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()


def open_job(root, manifest: dict, restart: bool = False) -> Job:
    """Create or resume the job in ``root``, locked for this process.

    ``root`` must be absent, empty, or a ray_style job directory (anything else is refused,
    with or without ``restart``). An existing manifest must match ``manifest`` on every key
    but ``"run"``; otherwise :class:`JobError` lists the changes, unless ``restart``, which
    deletes the job's own files (the decoded source frames and flows are kept when they still
    apply: they are checked against their own fingerprints). A missing or unreadable
    manifest is replaced: the frames are checked against their records' fingerprints.
    """
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise JobError(f"job directory {root} is a file: choose another --job-dir")
    if root.is_dir() and any(root.iterdir()) and not _is_ours(root):
        raise JobError(f"{root} is not a ray-style job directory (it has files, and no {MARKER} or job manifest): "
                       "choose another --job-dir; nothing there was changed")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise JobError(f"cannot create job directory {root}: {error.strerror}") from None
    write_text_atomic(root / MARKER, json.dumps({"tool": "ray-style"}))
    handle = _lock(root)
    try:
        swept = remove_stale_temps(root)  # what a kill -9 mid-write left; we hold the lock, nobody writes
        path = root / MANIFEST
        old = _read_json(path)
        events = []
        if path.exists() and not is_job_manifest(old):
            events.append("manifest.json was unreadable; it is rewritten and every frame is checked against "
                          "its own record")
            old = None
        if old is not None:
            changes = changed_keys({k: v for k, v in old.items() if k != "run"},
                                   {k: v for k, v in manifest.items() if k != "run"})
            if changes and not restart:
                raise JobError(f"job directory {root} holds a job with other settings ({'; '.join(changes)}): "
                               "re-run with the same settings to resume, pass --restart to start over, "
                               "or choose another --job-dir")
            if not changes and not restart:
                manifest = {**manifest, "run": {**old.get("run", {}), **manifest.get("run", {})}}
        if restart:
            _clear(root, keep=("source", "flow"))  # checked against their fingerprints when used
        write_text_atomic(path, json.dumps(manifest, indent=2, sort_keys=True, allow_nan=False))
        job = Job(root, handle, manifest)
        for detail in events:
            job.event("warning", detail=detail)
        if swept:
            job.event("repaired", what="temp files", detail=f"{swept} left by an interrupted write, removed")
        return job
    except BaseException:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()
        raise


def read_log(root) -> list[dict]:
    """The per-frame records; a line cut short by a crash is skipped."""
    return _read_jsonl(Path(root) / "frames.jsonl")


def read_events(root) -> list[dict]:
    return _read_jsonl(Path(root) / "events.jsonl")


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


def saved_chains(saved) -> list[plan.Chain] | None:
    """The chains a plan.json holds, or None when it holds none that make sense."""
    try:
        return [plan.Chain(i, int(s), int(e), int(lead)) for i, (s, e, lead) in enumerate(saved["chains"])]
    except (KeyError, TypeError, ValueError):
        return None


def job_status(root) -> dict:
    """What a job directory holds, running or not (for `ray-style status`); never raises on a
    damaged file, only on a directory that is not a job's."""
    root = Path(root)
    if not root.is_dir():
        raise JobError(f"{root} is not a directory: give a job directory (OUTPUT.job)")
    manifest = _read_json(root / MANIFEST)
    if not isinstance(manifest, dict):
        if not (root / MARKER).exists():
            raise JobError(f"{root} is not a ray-style job directory (no readable manifest.json)")
        manifest = {}
    run = manifest.get("run") if isinstance(manifest.get("run"), dict) else {}
    frames = manifest.get("input", {}).get("frames") if isinstance(manifest.get("input"), dict) else None
    status = {"job_dir": str(root), "running": is_locked(root), "input": run.get("input"), "output": run.get("output"),
              "frames": frames, "decoded": False, "damaged": not is_job_manifest(manifest)}
    index = _read_json(root / "source" / "index.json")
    saved = _read_json(root / "plan.json")
    if isinstance(index, dict) and isinstance(index.get("frames"), int):
        status.update(decoded=True, frames=index["frames"],
                      shot_cuts=index.get("cuts") if isinstance(index.get("cuts"), list) else [])
    records = read_log(root)
    chains = saved_chains(saved) if isinstance(saved, dict) else None
    if chains is not None:
        settings = manifest.get("settings") if isinstance(manifest.get("settings"), dict) else {}
        passes = settings.get("passes") if isinstance(settings.get("passes"), int) else 0
        cuts = status.get("shot_cuts", [])
        sweeps = plan.refinement_passes(chains, cuts, max((c.end for c in chains), default=0), passes)
        sequences = [*chains, *(sweep for stage in sweeps for sweep in stage)]
        keys = {(r.get("chain"), r.get("frame")) for r in records}
        status.update(chains=len(chains), renders_total=sum(len(q.frames) for q in sequences),
                      renders_done=sum(1 for q in sequences for f in q.frames
                                       if (q.index, f) in keys and frame_path(root, q.index, f).is_file()))
    timed = [r for r in records[-50:] if isinstance(r.get("seconds"), (int, float))]
    if timed:
        status.update(mean_seconds_per_frame=round(float(np.mean([r["seconds"] for r in timed])), 3),
                      last_frame=records[-1].get("frame"), workers=sorted({str(r.get("worker")) for r in records}))
    status["events"] = {}
    for event in read_events(root):
        status["events"][str(event.get("kind"))] = status["events"].get(str(event.get("kind")), 0) + 1
    output = status.get("output")
    status["finished"] = bool(output and os.path.exists(output) and status.get("renders_total")
                              and status.get("renders_done") == status.get("renders_total"))
    return status


def job_seams(root) -> list[int]:
    """The seams (see plan.seams) of the job in ``root``, from its plan and shot cuts; [] when
    they cannot be read."""
    saved, index = _read_json(Path(root) / "plan.json"), _read_json(Path(root) / "source" / "index.json")
    chains = saved_chains(saved) if isinstance(saved, dict) else None
    cuts = index.get("cuts") if isinstance(index, dict) and isinstance(index.get("cuts"), list) else []
    return plan.seams(chains, cuts) if chains else []


def job_flows(root, size: tuple[int, int]):
    """``t ↦ (flow t → t+1, mask)`` from a job's cached flows, when they have ``size``; else None."""
    folder = Path(root) / "flow"

    def forward(t: int):
        path = folder / f"{t:06d}_{t + 1:06d}.npz"
        try:
            pair = load_flow(path.read_bytes())
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            return None
        return pair if pair[0].shape[:2] == (size[1], size[0]) else None

    return forward


__all__ = ["Job", "DamagedFile", "open_job", "job_seams", "job_flows", "remove_stale_temps", "read_log", "read_events", "is_locked", "frame_path", "job_status",
           "png_bytes", "decode_png", "load_flow", "fingerprint", "manifest_fingerprint"]
