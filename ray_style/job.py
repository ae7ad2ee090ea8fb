"""The job directory (a local folder or an object-store prefix): its layout, its records, and
the only code that writes it (through a :class:`~ray_style.store.Store`).

A frame counts as done when its file is on disk (fsynced) *and* a record in ``frames.jsonl``
vouches for it: the record names the job's fingerprint (the output-deciding manifest and the
chain plan), the file's SHA-256 and its size, and how it was rendered (device, precision).
Work nothing vouches for is never used: a file without a record, a record of other settings,
a file whose size or checksum differs, is re-rendered (with an event saying so); frames of
one job are never rendered two ways. What can be repaired is: source frames are decoded
again, flows recomputed, a source index or plan that does not describe the probed video made
again (the plan from the one the log's frames were made under). A local job folder holding a
link (symlink or hard link) or a folder where a file belongs is refused before anything is
touched (:func:`check_job_tree`). Everything else that reads a job (the page, the server, ``status``)
finds its files by the keys :mod:`ray_style.job` names (:class:`Layout` for a local folder)::

    .ray-style-job         marker: only a directory with it is a ray_style job
    manifest.json          what decides the output (checksums, settings, weights), version;
                           "run" facts (paths, threads) and "render" facts (device, precision)
    lock                   flock held by the running driver; holds its pid (a local folder)
    lease.json             the running driver's lease, renewed while it lives (an object store)
    plan.json              the chains, fixed before the first frame (a resume keeps them)
    source/index.json      frame count, shot cuts, each source frame's SHA-256, source fingerprint
    source/000123.png      decoded content frames at the output size
    flow/index.json        which source frames and flow method the cached flows belong to
    flow/000123_000122.npz flow from frame 123 to 122 and its reliability mask (not fsynced: checked)
    chains/0004/000123.png frame 123 as rendered by chain 4
    thumbs/0004/000123-source.jpg, -stylized.jpg  the live page's thumbnails of it (by its worker)
    frames.jsonl           one record per finished frame: loss, evaluations, seconds, worker, checksum
    events.jsonl           what else happened: frames redone or repaired, failures, warnings
                           (on an object store, which has no append: frames/ and events/, one
                           small object per record, in key order)
    report/                the live page while running, the evaluation at the end
"""
from __future__ import annotations

import json
import re
import threading
import time
import uuid
from pathlib import Path

import numpy as np

from . import plan
from .codec import FLOW_DAMAGE, blend, decode_png, digest, fingerprint, load_flow, png_bytes
from .errors import JobError
from .settings import changed_keys
from .store import Hold, LocalStore, Store, location, open_store

MARKER = ".ray-style-job"
MANIFEST_KEYS = ("version", "input", "settings", "frame_size")
# Everything a job writes; --restart removes these and nothing else.
OWNED = ("chains", "frames.jsonl", "events.jsonl", "frames", "events", "plan.json", "report", "manifest.json",
         "source", "flow", "thumbs", "reach-token", "encoded")
INFORMATIONAL = ("run", "render")  # manifest sections a resume does not compare
MANIFEST, PLAN, SOURCE_INDEX, FLOW_INDEX = "manifest.json", "plan.json", "source/index.json", "flow/index.json"
TOKEN = "reach-token"  # a key the driver writes: a process that reads it back reaches the store
PARTS = "encoded"  # the output's encoded spans (spans.py), each with its record beside it
FRAMES, EVENTS = "frames", "events"  # record logs (frames.jsonl and events.jsonl in a local folder)
REPORT, PAGE = "report", "report/index.html"
# Event kinds that report no problem: a worker ready, a worker given back, the optimizing share.
NEWS_EVENTS = frozenset({"joined", "released", "workers"})


def source_key(frame: int) -> str:
    return f"source/{frame:06d}.png"


def flow_key(frame: int, target: int) -> str:
    return f"flow/{frame:06d}_{target:06d}.npz"


def frame_key(chain: int, frame: int) -> str:
    return f"chains/{chain:04d}/{frame:06d}.png"


def thumb_key(chain: int, frame: int, kind: str) -> str:
    """The live page's small JPEG of a render's ``source`` or ``stylized`` frame (made by the
    worker that rendered it, where it stores its frame itself)."""
    return f"thumbs/{chain:04d}/{frame:06d}-{kind}.jpg"


class Layout:
    """Where each of a job's files lives in a local folder (nothing here opens them)."""

    def __init__(self, root):
        self.root = Path(root)
        self.marker = self.root / MARKER
        self.manifest = self.root / MANIFEST
        self.lock = self.root / "lock"
        self.plan = self.root / PLAN
        self.sources = self.root / "source"
        self.source_index = self.root / SOURCE_INDEX
        self.flows = self.root / "flow"
        self.flow_index = self.root / FLOW_INDEX
        self.chains = self.root / "chains"
        self.frames_log = self.root / f"{FRAMES}.jsonl"
        self.events_log = self.root / f"{EVENTS}.jsonl"
        self.report = self.root / REPORT
        self.page = self.root / PAGE

    def source(self, frame: int) -> Path:
        return self.root / source_key(frame)

    def flow(self, frame: int, target: int) -> Path:
        return self.root / flow_key(frame, target)

    def frame(self, chain: int, frame: int) -> Path:
        return self.root / frame_key(chain, frame)


def is_job_dir(root) -> bool:
    """Only the marker makes a directory a ray_style job's (a manifest alone may be anyone's)."""
    place = location(root)
    if place.remote:
        return open_store(place).exists(MARKER)
    return Layout(place.text).marker.is_file()


class DamagedFile(JobError):
    """A file of the job directory that is missing, cut short or altered: redo what made it."""

    def __init__(self, message: str, kind: str, chain: int | None, frame: int, target: int | None = None):
        super().__init__(message)
        self.kind, self.chain, self.frame, self.target = kind, chain, frame, target
        self.discarded = False  # Job.discard has forgotten it (and said so)


def manifest_fingerprint(manifest: dict) -> str:
    """What decides every frame's pixels: the manifest without its informational sections."""
    return fingerprint({k: v for k, v in manifest.items() if k not in INFORMATIONAL})


def describe_facts(facts: dict) -> str:
    """``on cpu in fp32 with 2 torch threads``: render facts (optimize.render_facts) in words."""
    text = f"on {facts.get('device')} in {facts.get('precision')}"
    if facts.get("threads"):
        text += f" with {facts['threads']} torch threads"
    switches = [name for name in ("compile", "graphs") if facts.get(name)]
    return text + (f" ({' and '.join(switches)})" if switches else "")


def _store_json(store: Store, key: str):
    """A JSON object of a store, or None when it is missing or not JSON."""
    try:
        return json.loads(store.read(key))
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError, IsADirectoryError, NotADirectoryError):
        return None


def read_manifest(root) -> dict:
    """A job's manifest, or {} when it is missing or damaged."""
    manifest = _store_json(open_store(root), MANIFEST)
    return manifest if isinstance(manifest, dict) else {}


def read_log(root) -> list[dict]:
    """The per-frame records; a line cut short by a crash is skipped."""
    return open_store(root).records(FRAMES)


def read_events(root) -> list[dict]:
    return open_store(root).records(EVENTS)


# ---------------------------------------------------------------- the open job
class Job:
    """An open job on a store, held by this driver (a lock or a lease). Use :func:`open_job`;
    close (or exit) to let go."""

    def __init__(self, store: Store, hold: Hold, manifest: dict):
        self.store, self._hold, self.manifest = store, hold, manifest
        self.root = store.describe()  # for messages: a folder's path or the prefix's URL
        self.layout = Layout(store.root) if isinstance(store, LocalStore) else None
        self.fingerprint = manifest_fingerprint(manifest)
        self.frame_key: str | None = None  # fingerprint + plan: set by set_plan (a sweep's renders)
        self.chain_keys: dict[int, str] = {}  # chain index → fingerprint + that chain (a chain's renders)
        self._early: tuple[dict, dict] | None = None  # records by frame and stored sizes, read once (add_chains)
        self.done: dict[tuple[int, int], dict] = {}  # (chain, frame) → its vouching record
        self._source: dict | None = None
        self._token: tuple[str, str] | None = None
        self._token_lock = threading.Lock()

    # -- writing ----------------------------------------------------------------------------
    def _write(self, key: str, data: bytes, durable: bool = True) -> None:
        self._hold.check()  # a driver that lost its lease writes nothing more
        self.store.write(key, data, durable)

    def _append(self, log: str, record: dict) -> None:
        self._hold.check()
        self.store.append(log, record)

    # -- events and run facts -------------------------------------------------------------
    def event(self, kind: str, **fields) -> dict:
        """Append one event (redone, repaired, failed, warning, …) to the events log."""
        record = {"time": round(time.time(), 3), "kind": kind, **fields}
        self._append(EVENTS, record)
        return record

    def remember(self, **values) -> None:
        """Record run facts (not compared on resume) in the manifest's "run" section."""
        self.manifest.setdefault("run", {}).update(values)
        self._write_manifest()

    @property
    def run(self) -> dict:
        """The manifest's "run" facts: input, styles and output paths as given, threads."""
        run = self.manifest.get("run")
        return run if isinstance(run, dict) else {}

    def _write_manifest(self) -> None:
        self._write(MANIFEST, json.dumps(self.manifest, indent=2, sort_keys=True, allow_nan=False).encode())

    def reach_token(self) -> tuple[str, str]:
        """``(key, value)`` written into this job's store once per run: a process that reads it
        back reaches the store (store.reach: decode and encode tasks, frame workers)."""
        with self._token_lock:  # the decode's thread and the render's ask for it at once
            if self._token is None:
                token = (TOKEN, uuid.uuid4().hex)
                self._write(TOKEN, token[1].encode(), durable=False)
                self._token = token
        return self._token

    # -- the output's parts (spans) ---------------------------------------------------------
    def part_record(self, key: str) -> dict | None:
        """The record of the encoded part ``key`` (spans), where it and the part are there."""
        record = _store_json(self.store, _part_record(key))
        if not (isinstance(record, dict) and isinstance(record.get("sha256"), str) and
                isinstance(record.get("bytes"), int) and isinstance(record.get("header"), str)):
            return None
        return record if self.store.exists(key) else None

    def record_part(self, key: str, record: dict) -> None:
        """Vouch for the part ``key`` a task (or this driver) stored: its checksum and size."""
        self._write(_part_record(key), json.dumps(record, sort_keys=True).encode())

    def read_part(self, key: str, record: dict) -> bytes | None:
        """The part's bytes where they match its record, else None (gone or changed)."""
        try:
            data = self.store.read(key)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None
        return data if len(data) == record["bytes"] and digest(data) == record["sha256"] else None

    def drop_parts(self, spans: set[tuple[int, int]], frames: set[str]) -> None:
        """Remove the parts of these spans made of frames the job no longer has (rendered
        again since): no key could name them again. Parts of the same frames in another codec
        or CRF stay, for a delivery in that one."""
        found = {}
        for key in self.store.sizes(PARTS):
            named = re.search(r"/(\d+)-(\d+)-\w+\.(\w+)$", "/" + key)
            if named and (int(named.group(1)), int(named.group(2))) in spans:
                found.setdefault(key.rsplit(".", 1)[0], set()).add(named.group(3))
        for stem, suffixes in found.items():
            record = _store_json(self.store, stem + ".json") if "json" in suffixes else None
            if isinstance(record, dict) and record.get("frames_of") in frames:
                continue
            self._hold.check()
            for suffix in suffixes:
                self.store.delete(f"{stem}.{suffix}")

    # -- how frames are rendered ----------------------------------------------------------
    def recorded_threads(self) -> int | None:
        """The torch thread count the done CPU frames were rendered with (their bytes depend
        on it), else the one the job last ran with."""
        for record in self.done.values():
            facts = record.get("render")
            if isinstance(facts, dict) and isinstance(facts.get("threads"), int):
                return facts["threads"]
        threads = self.run.get("threads")
        return threads if isinstance(threads, int) else None

    def check_render(self, facts: dict) -> None:
        """Render from now on as ``facts`` say (device, precision, compile and graph switches,
        CPU threads): :class:`JobError` when done frames were rendered otherwise (one video
        never mixes two), else recorded in the manifest."""
        other = [r["render"] for r in self.done.values() if isinstance(r.get("render"), dict) and r["render"] != facts]
        if other:
            raise JobError(f"{len(other)} finished frames of this job were rendered {describe_facts(other[0])}, and "
                           f"this run would render {describe_facts(facts)}; one video never mixes the two: resume "
                           "where they were rendered (the same --device, --precision and --threads), or pass "
                           "--restart to render every frame again")
        if self.manifest.get("render") != facts:
            self.manifest["render"] = facts
            self._write_manifest()

    # -- source frames --------------------------------------------------------------------
    @property
    def source_key(self) -> str:
        """Which decode the source frames belong to: the input's identity, the frame size and
        the shot-cut setting."""
        settings = self.manifest.get("settings") if isinstance(self.manifest.get("settings"), dict) else {}
        given = self.manifest["input"]
        identity = given["sha256"] if "sha256" in given else {k: given.get(k) for k in ("etag", "size", "version")}
        return fingerprint({"input": identity, "size": self.manifest["frame_size"],
                            "cut_ratio": settings.get("cut_ratio")})

    def flow_key(self, origin) -> str:
        """Which flows are cached: of these source frames, from ``origin`` (a method's name,
        or a description of the user's flow files)."""
        return fingerprint({"source": self.source_key, "flow": origin})

    def source_index(self) -> dict | None:
        """The finished decode if it belongs to this job's :attr:`source_key` and is an index of
        the probed video (see :func:`valid_source_index`), else None (the frames are decoded and
        checked again; an index that is there but wrong is said so)."""
        index = _store_json(self.store, SOURCE_INDEX)
        ours = isinstance(index, dict) and index.get("source") == self.source_key
        self._source = index if ours and valid_source_index(index, self.manifest["input"].get("frames")) else None
        if ours and self._source is None:
            self.event("repaired", what="source index", detail="source/index.json does not describe the probed video "
                                                               "(edited or damaged); the source is checked again")
        return self._source

    def write_source(self, frame: int, image: np.ndarray) -> str:
        """Store a decoded frame; returns its SHA-256 (for the index). Not fsynced: a source
        frame lost in a crash is found by its checksum and decoded again. Thread-safe."""
        data = png_bytes(image)
        self._write(source_key(frame), data, durable=False)
        return digest(data)

    def rewrite_source(self, frame: int, image: np.ndarray) -> None:
        """Store a frame decoded again (a repair). Should it not match the recorded checksum —
        the video decodes differently now, e.g. another ffmpeg — the index follows the file,
        with a warning, rather than refusing it forever."""
        digest_now = self.write_source(frame, image)
        if self._source is not None and self._source["sha256"][frame] != digest_now:
            self._source["sha256"][frame] = digest_now
            self._write(SOURCE_INDEX, json.dumps(self._source).encode())
            self.event("warning", frame=frame, detail="a source frame decoded again differs from the first decode")
        self.event("repaired", what="source", frame=frame, detail="decoded again")

    def finish_source(self, frames: int, cuts: list[int], hashes: list[str]) -> dict:
        index = {"source": self.source_key, "frames": frames, "cuts": cuts, "sha256": hashes}
        self._write(SOURCE_INDEX, json.dumps(index).encode())
        self._source = index
        return index

    def decoded_so_far(self, hashes: list[str]) -> None:
        """The checksums of the frames decoded so far (the film's first ones, in order; the list
        is kept, not copied): what renders started before the decode ends check them against
        (:meth:`finish_source` writes the whole index)."""
        self._source = {"source": self.source_key, "frames": len(hashes), "cuts": [], "sha256": hashes}

    def damaged_sources(self) -> list[int]:
        """Source frames missing or empty (one listing; their checksums are checked when read)."""
        if self._source is None:
            return []
        sizes = self.store.sizes("source")
        return [frame for frame in range(self._source["frames"]) if not sizes.get(source_key(frame))]

    def source_digest(self, frame: int) -> str | None:
        """The recorded SHA-256 of a source frame (what a worker checks it against)."""
        return self._source["sha256"][frame] if self._source else None

    def read_source_bytes(self, frame: int) -> bytes:
        """The PNG of a source frame, checked against the index's checksum."""
        return self._read_verified(source_key(frame), self.source_digest(frame), "source", None, frame)

    def read_source(self, frame: int) -> np.ndarray:
        return decode_png(self.read_source_bytes(frame))

    # -- the plan -------------------------------------------------------------------------
    def load_plan(self, frame_count: int, cuts: list[int], overlap: int) -> list[plan.Chain] | None:
        """The chains fixed when this job first rendered, if they are still this job's and a
        plan of its video (see plan.is_plan_of); a plan.json that is not one is said so."""
        saved = _store_json(self.store, PLAN)
        if not isinstance(saved, dict) or saved.get("job") != self.fingerprint:
            return None
        chains = saved_chains(saved)
        if chains is None or not plan.is_plan_of(chains, saved.get("segment_length"), frame_count, cuts, overlap):
            self.event("repaired", what="plan", detail="plan.json is not a plan of this video's frames (edited or "
                                                       "damaged); the plan is made again, finished frames kept")
            return None
        return chains

    def has_plan(self) -> bool:
        """Whether this job has fixed its chains (plan.json, this job's)."""
        saved = _store_json(self.store, PLAN)
        return isinstance(saved, dict) and saved.get("job") == self.fingerprint

    def key_for(self, chains: list[plan.Chain], passes: list[list[plan.Sweep]] = ()) -> str:
        """The frame key of renders under these chains and refinement sweeps: what a sweep's
        renders are recorded under (a chain's renders of earlier versions were too)."""
        spans = [[c.start, c.end, c.lead_in] for c in chains]
        sweeps = [[q.index, q.start, q.end, q.backward] for stage in passes for q in stage]
        # The sweeps' layout joins the key (only when there are sweeps, so that jobs without
        # passes keep theirs): a pass frame is stored by its sweep's index, and the same index
        # under another layout would be another frame's work.
        return fingerprint([self.fingerprint, spans, sweeps] if sweeps else [self.fingerprint, spans])

    def chain_key(self, chain: plan.Chain) -> str:
        """The frame key of a chain's renders: the job and that chain alone (its frames depend on
        nothing else in the plan), so that a chain renders before the rest of the plan is known."""
        return fingerprint([self.fingerprint, "chain", [chain.start, chain.end, chain.lead_in]])

    def recorded_keys(self) -> list:
        """The frame key of each finished frame's record."""
        return [record.get("job") for record in self.store.records(FRAMES) if isinstance(record.get("job"), str)]

    def save_plan(self, chains: list[plan.Chain], **facts) -> None:
        """Fix the chains: written once, a resume reuses them whatever pool it runs on."""
        spans = [[c.start, c.end, c.lead_in] for c in chains]
        self._write(PLAN, json.dumps({"job": self.fingerprint, "chains": spans, **facts}).encode())

    def set_plan(self, chains: list[plan.Chain], passes: list[list[plan.Sweep]] = ()) -> None:
        """Render under these chains (and refinement sweeps, derived from them and the
        settings): load what the log vouches for under them."""
        self.frame_key = self.key_for(chains, passes)
        self.chain_keys = {chain.index: self.chain_key(chain) for chain in chains}
        self._early = None
        self._load_done([*chains, *(sweep for stage in passes for sweep in stage)])

    def add_chains(self, chains: list[plan.Chain]) -> None:
        """Render these chains before the plan is whole (the film still decoding): their keys,
        and their frames a run before finished (the log and the listing read once). Removes
        nothing: :meth:`set_plan`, once the plan is whole, does."""
        if self._early is None:
            self._early = self._records_by_frame(), self.store.sizes("chains")
        records, sizes = self._early
        for chain in chains:
            self.chain_keys[chain.index] = self.chain_key(chain)
            for frame in chain.frames:
                record = self._vouching((chain.index, frame), records.get((chain.index, frame), ()))
                if record is not None and sizes.get(frame_key(chain.index, frame), -1) == record.get("bytes"):
                    self.done[(chain.index, frame)] = record

    # -- optical flow ---------------------------------------------------------------------
    def open_flows(self, key: str) -> None:
        """Drop cached flows that belong to other source frames or another flow method."""
        index = _store_json(self.store, FLOW_INDEX)
        if isinstance(index, dict) and index.get("flow") == key:
            return
        self._hold.check()
        self.store.delete_prefix("flow")
        self._write(FLOW_INDEX, json.dumps({"flow": key}).encode())

    def has_flow(self, frame: int, target: int) -> bool:
        return self.store.exists(flow_key(frame, target))

    def write_flow(self, frame: int, target: int, data: bytes) -> None:
        """A flow file (codec.flow_bytes) for ``frame → target``, whole; not fsynced: a flow
        lost in a crash is checked when read and computed again."""
        self._write(flow_key(frame, target), data, durable=False)

    def read_flow_bytes(self, frame: int, target: int) -> bytes:
        """The stored flow file, checked to load (a damaged one raises :class:`DamagedFile`)."""
        data = self._read_verified(flow_key(frame, target), None, "flow", None, frame, target)
        try:
            load_flow(data)
        except FLOW_DAMAGE as error:
            raise DamagedFile(f"flow {self.store.describe(flow_key(frame, target))} is damaged ({error})", "flow",
                              None, frame, target) from None
        return data

    # -- rendered frames ------------------------------------------------------------------
    def is_done(self, chain: int, frame: int) -> bool:
        return (chain, frame) in self.done

    def write_frame(self, chain: int, frame: int, data: bytes, record: dict) -> dict:
        """Store a rendered frame (PNG bytes) and the record that vouches for it, in that order:
        a crash between the two leaves a file no record vouches for, which is redone."""
        self._write(frame_key(chain, frame), data)
        return self.vouch(chain, frame, data, record)

    def vouch(self, chain: int, frame: int, data: bytes | None, record: dict) -> dict:
        """Append the record that vouches for a frame already stored (by this driver, or by the
        worker that rendered it: ``data`` None, its checksum and size in ``record``)."""
        checks = {"sha256": digest(data), "bytes": len(data)} if data is not None else \
            {"sha256": record["sha256"], "bytes": record["bytes"]}
        record = {"chain": chain, "frame": frame, "time": round(time.time(), 3), **record, **checks,
                  "job": self.chain_keys.get(chain, self.frame_key)}
        self._append(FRAMES, record)
        self.done[(chain, frame)] = record
        return record

    def frame_digest(self, chain: int, frame: int) -> str | None:
        record = self.done.get((chain, frame))
        return record["sha256"] if record else None

    def read_frame_bytes(self, chain: int, frame: int) -> bytes:
        record = self.done.get((chain, frame))
        if record is None:
            raise DamagedFile(f"frame {frame} of chain {chain} is not done", "frame", chain, frame)
        return self._read_verified(frame_key(chain, frame), record["sha256"], "frame", chain, frame)

    def read_frame(self, chain: int, frame: int) -> np.ndarray:
        return decode_png(self.read_frame_bytes(chain, frame))

    def discard(self, damage: DamagedFile) -> None:
        """Forget a damaged file so that it is made again, and say so in the events."""
        if damage.kind == "frame":
            self.done.pop((damage.chain, damage.frame), None)
            key = frame_key(damage.chain, damage.frame)
        elif damage.kind == "flow":
            key = flow_key(damage.frame, damage.target)
        else:
            key = source_key(damage.frame)
        self._hold.check()
        self.store.delete(key)
        damage.discarded = True
        self.event("repaired", what=damage.kind, chain=damage.chain, frame=damage.frame,
                   **({"target": damage.target} if damage.target is not None else {}), detail=str(damage))

    def blend(self, sources: list[tuple[int, float]], frame: int) -> np.ndarray:
        """The final ``frame`` from ``[(chain, weight), …]`` (plan.frame_sources): one chain's
        render, or a seam's cross-fade of two chains'."""
        return blend([self.read_frame(chain, frame) for chain, _ in sources], [weight for _, weight in sources])

    def _load_done(self, sequences) -> None:
        """Records of this frame key whose files are there with the recorded size; anything
        else under chains/ is removed."""
        wanted = {(c.index, f) for c in sequences for f in c.frames}
        by_frame = self._records_by_frame()
        records = {}
        for frame_id in wanted & by_frame.keys():
            record = self._vouching(frame_id, by_frame[frame_id])
            if record is not None:
                records[frame_id] = record
        sizes = self.store.sizes("chains")
        self.done, damaged, stale = {}, [], 0
        for frame_id, record in records.items():
            if sizes.get(frame_key(*frame_id), -1) == record.get("bytes"):
                self.done[frame_id] = record
            else:
                damaged.append(frame_id)
        for key in sizes:
            frame_id = _frame_id(key)
            if frame_id not in self.done:
                stale += frame_id is not None and frame_id not in damaged
                self._hold.check()
                self.store.delete(key)
        for chain, frame in damaged:
            self.event("repaired", what="frame", chain=chain, frame=frame,
                       detail="file missing or of another size than recorded; it is rendered again")
        if stale:
            self.event("warning", detail=f"{stale} frame file(s) that no record of this job vouches for were "
                                         "removed (other settings, or a crash before the record)")

    def _records_by_frame(self) -> dict[tuple[int, int], list[dict]]:
        """The frames log's records, by ``(sequence, frame)``, each frame's in log order."""
        by_frame: dict[tuple[int, int], list[dict]] = {}
        for record in self.store.records(FRAMES):
            chain, frame = record.get("chain"), record.get("frame")
            if isinstance(chain, int) and isinstance(frame, int):
                by_frame.setdefault((chain, frame), []).append(record)
        return by_frame

    def _vouching(self, frame_id: tuple[int, int], records) -> dict | None:
        """The record that vouches for a frame, of its records in log order: the latest (a
        redone frame's) with a checksum, made under the frame's key — its chain's, or the whole
        plan's (a sweep's; a chain's in earlier versions)."""
        keys = {self.frame_key, self.chain_keys.get(frame_id[0])} - {None}
        return next((r for r in reversed(records) if r.get("job") in keys and isinstance(r.get("sha256"), str)),
                    None)

    # -- file plumbing --------------------------------------------------------------------
    def _read_verified(self, key: str, expected: str | None, kind: str, chain, frame, target=None) -> bytes:
        try:
            data = self.store.read(key)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise DamagedFile(f"{self.store.describe(key)} is missing", kind, chain, frame, target) from None
        if not data or (expected is not None and digest(data) != expected):
            raise DamagedFile(f"{self.store.describe(key)} does not match its recorded checksum", kind, chain, frame,
                              target)
        return data

    def close(self) -> None:
        if self._hold is not None:
            self._hold.release()
            self._hold = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _part_record(key: str) -> str:
    return key.rsplit(".", 1)[0] + ".json"


def damage_of(key: str, detail: str) -> DamagedFile:
    """The damaged file a key names (a worker found it missing or altered)."""
    name = Path(key).stem
    if key.startswith("chains/") and _frame_id(key):
        chain, frame = _frame_id(key)
        return DamagedFile(detail, "frame", chain, frame)
    if key.startswith("flow/") and "_" in name:
        frame, target = (int(part) for part in name.split("_"))
        return DamagedFile(detail, "flow", None, frame, target)
    return DamagedFile(detail, "source", None, int(name))


def _frame_id(key: str) -> tuple[int, int] | None:
    parts = key.split("/")
    try:
        return (int(parts[1]), int(Path(parts[2]).stem)) if len(parts) == 3 and parts[0] == "chains" else None
    except ValueError:
        return None


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


FILE_NAMES = (MARKER, "lock", "lease.json", "reach-token")  # files of the job without a suffix telling so
FILE_SUFFIXES = (".png", ".jpg", ".npz", ".json", ".jsonl", ".html", ".mp4", ".svg", ".nut")


def check_job_tree(folder: Path) -> None:
    """Refuse a job folder that holds a link — a symlink (a re-run would write or delete where it
    leads) or a file with a second name (a hard link: an append would change the other file) —
    or a folder where the job keeps a file (a frame, a record, the lock)."""
    import os

    pending = [str(folder)]
    while pending:
        with os.scandir(pending.pop()) as entries:
            for entry in entries:
                if entry.is_symlink():
                    raise JobError(f"{entry.path} is a symbolic link: a job directory holds no links (a re-run could "
                                   "write or delete where it leads); remove it and re-run — nothing was changed")
                if entry.is_dir(follow_symlinks=False):
                    if entry.name in FILE_NAMES or entry.name.endswith(FILE_SUFFIXES):
                        raise JobError(f"{entry.path} is a folder where the job keeps a file: remove it and re-run "
                                       "— nothing was changed")
                    pending.append(entry.path)
                elif entry.is_file(follow_symlinks=False) and entry.stat(follow_symlinks=False).st_nlink > 1:
                    raise JobError(f"{entry.path} has another name elsewhere (a hard link): a job directory's files "
                                   "are its own; remove it (or replace it by a copy) and re-run — nothing was changed")


def _not_ours(store: Store) -> bool:
    """Whether a store holds files and no job marker (a folder of the user's)."""
    if store.exists(MARKER):
        return False
    if isinstance(store, LocalStore):
        return store.root.is_dir() and any(store.root.iterdir())
    return bool(store.sizes(""))


def open_job(root, manifest: dict, restart: bool = False) -> Job:
    """Create or resume the job in ``root`` (a folder, or an object-store prefix), held by
    this driver.

    ``root`` must be absent, empty, or a ray_style job directory (its marker; anything else is
    refused, with or without ``restart``). An existing manifest must match ``manifest`` on
    every key but the informational sections; otherwise :class:`JobError` lists the changes,
    unless ``restart``, which deletes the job's own files (the decoded source frames and flows
    are kept when they still apply: they are checked against their own fingerprints). A
    missing or unreadable manifest is replaced: the frames are checked against their records'
    fingerprints.
    """
    store = open_store(root)
    if isinstance(store, LocalStore):
        folder = store.root
        if folder.exists() and not folder.is_dir():
            raise JobError(f"job directory {folder} is a file: choose another --job-dir")
    if _not_ours(store):
        raise JobError(f"{store.describe()} is not a ray-style job directory (it has files, and no {MARKER} marker): "
                       "choose another --job-dir; nothing there was changed")
    if isinstance(store, LocalStore) and store.root.is_dir():
        check_job_tree(store.root)
    if isinstance(store, LocalStore):
        try:
            store.root.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise JobError(f"cannot create job directory {store.root}: {error.strerror}") from None
    store.write(MARKER, json.dumps({"tool": "ray-style"}).encode())
    hold = store.hold("ray-style")  # the lease adds host and pid
    try:
        # What a kill -9 mid-write left; we hold the job, nobody writes.
        swept = remove_stale_temps(store.root) if isinstance(store, LocalStore) else 0
        old = _store_json(store, MANIFEST)
        events = list(hold.notes)
        if store.exists(MANIFEST) and not is_job_manifest(old):
            events.append("manifest.json was unreadable; it is rewritten and every frame is checked against "
                          "its own record")
            old = None
        if old is not None:
            changes = changed_keys({k: v for k, v in old.items() if k not in INFORMATIONAL},
                                   {k: v for k, v in manifest.items() if k not in INFORMATIONAL})
            if changes and not restart:
                raise JobError(f"job directory {store.describe()} holds a job with other settings "
                               f"({'; '.join(changes)}): re-run with the same settings to resume, pass --restart to "
                               "start over, or choose another --job-dir")
            if not changes and not restart:
                manifest = {**old, **manifest, "run": {**(old.get("run") or {}), **manifest.get("run", {})}}
        if restart:
            for name in OWNED:
                if name not in ("source", "flow"):  # checked against their fingerprints when used
                    store.delete_prefix(name)
            manifest = {k: v for k, v in manifest.items() if k != "render"}
        job = Job(store, hold, manifest)
        job._write_manifest()
        for detail in events:
            job.event("warning", detail=detail)
        if swept:
            job.event("repaired", what="temp files", detail=f"{swept} left by an interrupted write, removed")
        return job
    except BaseException:
        hold.release()
        raise


def valid_source_index(index, frames) -> bool:
    """Whether a source index describes ``frames`` frames (the probe's count, when known): one
    SHA-256 per frame, shot cuts strictly inside the video in order."""
    if not isinstance(index, dict) or not _count(index.get("frames")) or (_count(frames) and index["frames"] != frames):
        return False
    hashes, cuts = index.get("sha256"), index.get("cuts")
    return (isinstance(hashes, list) and len(hashes) == index["frames"]
            and all(isinstance(h, str) and len(h) == 64 for h in hashes)
            and isinstance(cuts, list) and all(_count(c) and 0 < c < index["frames"] for c in cuts)
            and cuts == sorted(set(cuts)))


def _count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _saved_plan(store: Store, manifest: dict) -> tuple[dict | None, list[plan.Chain] | None]:
    """A stopped or running job's source index and chains, each when it is valid (an index of
    the probed video; a plan of its frames)."""
    index = _store_json(store, SOURCE_INDEX)
    if not valid_source_index(index, _probed_frames(manifest)):
        return None, None
    saved = _store_json(store, PLAN)
    settings = manifest.get("settings") if isinstance(manifest.get("settings"), dict) else {}
    chains = saved_chains(saved) if isinstance(saved, dict) else None
    if chains is not None and not plan.is_plan_of(chains, saved.get("segment_length"), index["frames"],
                                                  index["cuts"], settings.get("overlap")):
        chains = None
    return index, chains


def _probed_frames(manifest: dict) -> int | None:
    frames = manifest.get("input", {}).get("frames") if isinstance(manifest.get("input"), dict) else None
    return frames if _count(frames) else None


def is_job_manifest(value) -> bool:
    return isinstance(value, dict) and all(key in value for key in MANIFEST_KEYS)


def is_locked(root) -> bool:
    """Whether a driver holds the job now (its lock, or a lease that has not expired)."""
    place = location(root)
    if place.remote:
        lease = _store_json(open_store(place), "lease.json")
        return isinstance(lease, dict) and isinstance(lease.get("expires"), (int, float)) and \
            lease["expires"] > time.time()
    import fcntl

    path = Layout(place.text).lock
    if not path.is_file():
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


# ---------------------------------------------------------------- reading a job from outside
def job_status(root) -> dict:
    """What a job directory holds, running or not (for `ray-style status`); never raises on a
    damaged file, only on a directory that is not a job's."""
    place = location(root)
    if not place.remote and not Path(place.text).is_dir():
        raise JobError(f"{place} is not a directory: give a job directory (OUTPUT.job)")
    if not is_job_dir(place):
        raise JobError(f"{place} is not a ray-style job directory (no {MARKER} marker)")
    store = open_store(place)
    manifest = read_manifest(place)
    run = manifest.get("run") if isinstance(manifest.get("run"), dict) else {}
    index, chains = _saved_plan(store, manifest)
    status = {"job_dir": str(place), "running": is_locked(place), "input": _text(run.get("input")),
              "output": _text(run.get("output")), "frames": index["frames"] if index else _probed_frames(manifest),
              "decoded": index is not None, "damaged": not is_job_manifest(manifest)}
    if index:
        status["shot_cuts"] = index["cuts"]
    records = store.records(FRAMES)
    if chains is not None:
        settings = manifest.get("settings") if isinstance(manifest.get("settings"), dict) else {}
        passes = settings.get("passes") if isinstance(settings.get("passes"), int) else 0
        sweeps = plan.refinement_passes(chains, index["cuts"], index["frames"], passes)
        sequences = [*chains, *(sweep for stage in sweeps for sweep in stage)]
        keys = {(r.get("chain"), r.get("frame")) for r in records}
        stored = store.sizes("chains")
        status.update(chains=len(chains), renders_total=sum(len(q.frames) for q in sequences),
                      renders_done=sum(1 for q in sequences for f in q.frames
                                       if (q.index, f) in keys and frame_key(q.index, f) in stored))
    timed = [r for r in records[-50:] if isinstance(r.get("seconds"), (int, float))]
    if timed:
        status.update(mean_seconds_per_frame=round(float(np.mean([r["seconds"] for r in timed])), 3),
                      last_frame=records[-1].get("frame"), workers=sorted({str(r.get("worker")) for r in records}))
    status["events"] = {}
    for event in store.records(EVENTS):
        status["events"][str(event.get("kind"))] = status["events"].get(str(event.get("kind")), 0) + 1
    output = status.get("output")
    from . import store as stores

    status["finished"] = bool(output and stores.exists(output) and status.get("renders_total")
                              and status.get("renders_done") == status.get("renders_total"))
    return status


def _text(value) -> str | None:
    return value if isinstance(value, str) else None


def job_seams(root) -> list[int]:
    """The seams (see plan.seams) of the job in ``root``, from its plan and shot cuts; [] when
    they cannot be read."""
    index, chains = _saved_plan(open_store(root), read_manifest(root))
    return plan.seams(chains, index["cuts"]) if chains else []


def job_flows(root, size: tuple[int, int]):
    """``t ↦ (flow t → t+1, mask)`` from a job's cached flows, when they have ``size``; else None."""
    store = open_store(root)

    def forward(t: int):
        try:
            pair = load_flow(store.read(flow_key(t, t + 1)))
        except (FileNotFoundError, *FLOW_DAMAGE):
            return None
        return pair if pair[0].shape[:2] == (size[1], size[0]) else None

    return forward


__all__ = ["Job", "Layout", "DamagedFile", "open_job", "is_job_dir", "job_seams", "job_flows", "remove_stale_temps",
           "read_log", "read_events", "read_manifest",
           "is_locked", "job_status", "manifest_fingerprint", "describe_facts", "MARKER", "source_key",
           "frame_key", "flow_key", "thumb_key", "damage_of", "FRAMES", "EVENTS", "PAGE", "REPORT"]
