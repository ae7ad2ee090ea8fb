"""Where bytes live: a local folder (POSIX: fsync, rename, flock) or an object-store prefix
(fsspec: s3://, gs://, az://…; write-once objects, a lease made by a conditional create).

Every path a user gives — input video, styles, output, ``--job-dir``, ``--flow-dir``, a batch
spec — is a :class:`Location`: a local path, or a URL fsspec can open. A job's files go through
a :class:`Store`, which has the same operations on both: read a key, write a key whole (a temp
file renamed into place, or one PUT), create a key only if absent, list a prefix, append a
record to a log (a line of a JSON-lines file, or one small object per record: object stores
have no append), and hold the job (a lock, or a lease).

S3-compatible endpoints come from the standard ``AWS_ENDPOINT_URL``; credentials from the
standard chain (environment, config files, instance role, IRSA). Nothing else in ray_style
opens a job's files.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from .errors import InputError, JobError, StorageError
from .files import atomic_path, storage_errors

REMOTE = ("s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "http", "https", "memory")
READ_ONLY = ("http", "https")  # inputs only: nothing is written to a web server
# A driver that stops renewing its lease (killed, its machine gone) loses the job after this
# long, and another may take it over; RAY_STYLE_LEASE_SECONDS sets it (tests use a few seconds).
LEASE_SECONDS = float(os.environ.get("RAY_STYLE_LEASE_SECONDS", 60))
RETRIES = 8  # an object-store call that fails for a network reason is tried this often (~30 s in all)
EXTRAS = {"gs": "gcs", "gcs": "gcs", "az": "azure", "abfs": "azure", "abfss": "azure"}
# The settings an fsspec file system is made from: one per scheme and these, per process.
ENVIRONMENT = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
               "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_REGION", "GOOGLE_APPLICATION_CREDENTIALS",
               "AZURE_STORAGE_CONNECTION_STRING")
_FILESYSTEMS: dict = {}


def scheme(text: str) -> str | None:
    """The URL scheme of ``text`` when it names a remote location ray_style reads, else None."""
    head, sep, _ = str(text).partition("://")
    return head.lower() if sep and head.lower() in REMOTE else None


def is_remote(text) -> bool:
    return scheme(str(text)) is not None


def filesystem(url: str):
    """The fsspec file system for ``url``'s scheme (one per scheme and credentials, per process:
    connections are reused); :class:`InputError` when its package is missing."""
    import fsspec

    protocol = scheme(url)
    key = (protocol, *(os.environ.get(name) for name in ENVIRONMENT))
    if key not in _FILESYSTEMS:
        try:
            _FILESYSTEMS[key] = fsspec.filesystem(protocol, skip_instance_cache=True)
        except ImportError:
            extra = EXTRAS.get(protocol)
            hint = f"pip install 'ray-style[{extra}]'" if extra else "pip install fsspec's package for it"
            raise InputError(f"{url}: this installation cannot read {protocol}:// ({hint})") from None
    return _FILESYSTEMS[key]


@dataclass(frozen=True)
class Location:
    """A path a user gave: local, or a URL (kept exactly as given: pathlib would turn
    ``s3://b/k`` into ``s3:/b/k``)."""

    text: str

    @property
    def remote(self) -> bool:
        return is_remote(self.text)

    @property
    def name(self) -> str:
        return self.text.rstrip("/").rsplit("/", 1)[-1]

    @property
    def suffix(self) -> str:
        name = self.name
        return name[name.rfind("."):] if "." in name else ""

    @property
    def stem(self) -> str:
        return self.name[:-len(self.suffix)] if self.suffix else self.name

    def path(self) -> Path:
        if self.remote:
            raise ValueError(f"{self.text} is not a local path")
        return Path(self.text)

    def sibling(self, name: str) -> "Location":
        """Another name in the same folder (``OUT.job`` beside ``OUT.mp4``)."""
        if self.remote:
            return Location(self.text.rstrip("/").rsplit("/", 1)[0] + "/" + name)
        return Location(str(Path(self.text).with_name(name)))

    def __str__(self) -> str:
        return self.text


def location(text) -> Location:
    """A user's path or URL; a relative local path stays relative (resolve it with
    :func:`resolved` before anything changes the working directory)."""
    if isinstance(text, Location):
        return text
    return Location(str(text))


def resolved(text, base: Path | None = None) -> Location:
    """``text`` with a local path made absolute (against ``base``, default the working
    directory); URLs unchanged. Ray Jobs replace a driver's working directory at ``ray.init``:
    paths are resolved before it."""
    place = location(text)
    if place.remote:
        return place
    path = Path(place.text).expanduser()
    return Location(str(path if path.is_absolute() else (base or Path.cwd()) / path))


def read_bytes(place) -> bytes:
    """The whole file at a local path or URL; :class:`InputError` when it is missing or
    cannot be read (credentials, permission, no such bucket)."""
    place = location(place)
    if not place.remote:
        return Path(place.text).read_bytes()
    fs = filesystem(place.text)
    try:
        return _retrying(lambda: fs.cat_file(place.text))
    except FileNotFoundError:
        raise FileNotFoundError(errno.ENOENT, "not found", place.text) from None
    except OSError as error:
        raise InputError(f"cannot read {place.text}: {_reason(error)}") from None


def exists(place) -> bool:
    place = location(place)
    if not place.remote:
        return Path(place.text).exists()
    fs = filesystem(place.text)
    try:
        return _retrying(lambda: fs.exists(place.text))
    except OSError as error:
        raise InputError(f"cannot reach {place.text}: {_reason(error)}") from None


def ffmpeg_input(place) -> str:
    """What ffmpeg opens for ``place``: the local path, or a URL it can read with ranged HTTP
    requests (an object store's presigned URL, valid for 7 days): a master is never copied
    whole onto this machine."""
    place = location(place)
    if not place.remote:
        return place.text
    if scheme(place.text) in READ_ONLY:
        return place.text
    fs = filesystem(place.text)
    if not exists(place):
        raise FileNotFoundError(errno.ENOENT, "not found", place.text)
    try:
        return fs.sign(place.text, expiration=7 * 24 * 3600)
    except NotImplementedError:
        raise InputError(f"{place.text}: this store cannot hand ffmpeg a URL; copy the video to a local disk "
                         "or an S3 bucket") from None


def upload(local: Path, place) -> None:
    """Put a finished, verified local file at ``place`` (a URL) as one object: the object store
    shows it complete (a multipart upload completes at its end) or not at all."""
    place = location(place)
    fs = filesystem(place.text)
    try:
        _retrying(lambda: fs.put_file(str(local), place.text))
    except OSError as error:
        raise StorageError(f"cannot write {place.text}: {_reason(error)}; finished frames are kept, re-run to "
                           "resume") from None


def write_bytes(place, data: bytes) -> None:
    """A whole file at a local path (atomic, durable) or a URL (one object)."""
    place = location(place)
    if not place.remote:
        with atomic_path(place.text) as temp:
            temp.write_bytes(data)
        return
    fs = filesystem(place.text)
    try:
        _retrying(lambda: fs.pipe_file(place.text, data))
    except OSError as error:
        raise StorageError(f"cannot write {place.text}: {_reason(error)}") from None


def check_writable(place, what: str = "output") -> None:
    """Before any work: a URL's bucket exists and takes a write from these credentials (a small
    probe object, written and deleted); :class:`InputError` naming why not."""
    place = location(place)
    if not place.remote:
        return
    if scheme(place.text) in READ_ONLY:
        raise InputError(f"{what} {place.text}: nothing is written to a web server; give a local path or a bucket")
    fs = filesystem(place.text)
    probe = place.text.rstrip("/") + f".ray-style-probe-{uuid.uuid4().hex[:8]}"
    try:
        _retrying(lambda: fs.pipe_file(probe, b"probe"))
        _retrying(lambda: fs.rm_file(probe))
    except OSError as error:
        reason = _reason(error)
        if not reason.startswith(("the access key", "the secret key")):
            bucket = place.text.split("://", 1)[1].split("/", 1)[0]
            try:
                fs.ls(f"{scheme(place.text)}://{bucket}", refresh=True)
            except FileNotFoundError:
                reason = "no such bucket"
            except OSError as listing:  # e.g. the credentials themselves are refused: say that
                reason = _reason(listing)
        raise InputError(f"cannot write {what} {place.text}: {reason}") from None


def identity(place) -> dict:
    """What names these exact bytes: a local file's SHA-256; for an object, its ETag, size and
    version (read from the store: the object is not downloaded)."""
    place = location(place)
    if not place.remote:
        from .files import sha256_file

        return {"sha256": sha256_file(place.text)}
    fs = filesystem(place.text)
    info = _retrying(lambda: fs.info(place.text))
    tag = info.get("ETag") or info.get("etag") or info.get("md5Hash") or info.get("generation")
    return {"etag": str(tag).strip('"'), "size": info.get("size"),
            **({"version": info["VersionId"]} if info.get("VersionId") else {})}


def _reason(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    for words, reason in (("AccessDenied", "access denied: check the credentials and the bucket's permissions"),
                          ("Access Denied", "access denied: check the credentials and the bucket's permissions"),
                          ("InvalidAccessKeyId", "the access key is not known to the store: check the credentials"),
                          ("SignatureDoesNotMatch", "the secret key does not match: check the credentials"),
                          ("signature we calculated does not match", "the secret key does not match: check the "
                                                                     "credentials"),
                          ("access key Id you provided does not exist", "the access key is not known to the store: "
                                                                         "check the credentials"),
                          ("Forbidden", "access denied: check the credentials and the bucket's permissions"),
                          ("NoSuchBucket", "no such bucket"), ("Could not connect", "the store cannot be reached")):
        if words in text:
            return reason
    return text[:200]


def _transient(error: BaseException) -> bool:
    """Whether a failed call may well succeed if tried again: the store restarting, a
    connection reset, a time-out, a "try again" from the server (botocore's own exception
    classes are not OSErrors, so they are known by name)."""
    if isinstance(error, (ConnectionError, TimeoutError)):
        return True
    name, text = type(error).__name__, str(error).lower()
    return any(word in name for word in ("Connection", "Timeout", "Endpoint")) or any(
        words in text for words in ("connect", "timed out", "serviceunavailable", "slowdown", "internalerror",
                                    "internal error", "try again", "503", "500"))


def _retrying(call, retries: int = RETRIES):
    """``call()``, again after a pause when it fails for a network reason (:func:`_transient`),
    up to ``retries`` times with growing pauses (about half a minute in all); other errors at
    once. A network failure that outlasts the retries is raised as a ConnectionError."""
    delay = 0.5
    for attempt in range(retries):
        try:
            return call()
        except (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, FileExistsError):
            raise
        except Exception as error:  # noqa: BLE001 - sorted below: transient or not
            if not _transient(error):
                raise
            if attempt == retries - 1:
                if isinstance(error, OSError):
                    raise
                raise ConnectionError(" ".join(str(error).split())) from error
        time.sleep(delay)
        delay = min(8.0, delay * 2)


# ---------------------------------------------------------------- a job's store
class Store:
    """A job's files, by key (``chains/0004/000123.png``), on one backend."""

    url: str
    shared = False  # whether machines other than this one can read it (checked, for local folders)

    def read(self, key: str) -> bytes: ...
    def write(self, key: str, data: bytes, durable: bool = True) -> None: ...
    def create(self, key: str, data: bytes) -> bool: ...
    def exists(self, key: str) -> bool: ...
    def sizes(self, prefix: str) -> dict[str, int]: ...
    def delete(self, key: str) -> None: ...
    def delete_prefix(self, prefix: str) -> None: ...
    def append(self, log: str, record: dict) -> None: ...
    def records(self, log: str) -> list[dict]: ...
    def tail(self, log: str): ...
    def hold(self, holder: str) -> "Hold": ...
    def describe(self, key: str = "") -> str: ...


class Hold:
    """This driver's hold on a job (a lock, or a lease it renews); :meth:`check` raises once it
    is lost, :meth:`release` gives it back."""

    notes: tuple[str, ...] = ()

    def check(self) -> None:
        pass

    def release(self) -> None:
        pass


def parse_line(line: str) -> dict | None:
    """One JSON record, or None. A line cut short by a crash has the next run's record glued to
    its end (the writer appends after the torn bytes): that record is recovered."""
    line = line.strip()
    if not line:
        return None
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        record = None
        start = line.find("{", 1)
        while start != -1 and record is None:
            try:
                record = json.loads(line[start:])
            except json.JSONDecodeError:
                start = line.find("{", start + 1)
    return record if isinstance(record, dict) else None


def read_records(path) -> list[dict]:
    """The dict records of a JSON-lines file (see :func:`parse_line`); [] when it is missing
    or not a file."""
    try:
        text = Path(path).read_text(errors="replace")
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return []
    return [record for record in map(parse_line, text.splitlines()) if record is not None]


class Tail:
    """New whole records of an append-only JSON-lines file since the last call.

    A last line without its newline (being written, or torn by a crash) is left for the next
    call; a file that shrank or was replaced (``--restart``) is read again from the start.
    """

    def __init__(self, path):
        self.path = Path(path)
        self.offset = 0
        self.identity: tuple[int, int] | None = None

    def read(self) -> tuple[list[dict], bool]:
        """``(records, restarted)``: ``restarted`` when the file was replaced or truncated."""
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            restarted = self.offset > 0
            self.offset, self.identity = 0, None
            return [], restarted
        restarted = False
        if self.identity not in (None, (stat.st_dev, stat.st_ino)) or stat.st_size < self.offset:
            self.offset, restarted = 0, True
        self.identity = (stat.st_dev, stat.st_ino)
        if stat.st_size == self.offset:
            return [], restarted
        try:
            with open(self.path, "rb") as handle:
                handle.seek(self.offset)
                data = handle.read(stat.st_size - self.offset)
        except IsADirectoryError:
            return [], restarted
        whole = data.rfind(b"\n") + 1
        self.offset += whole
        records = [parse_line(line) for line in data[:whole].decode("utf-8", "replace").splitlines()]
        return [r for r in records if r is not None], restarted


class LocalStore(Store):
    """A folder on this machine (or a shared volume): atomic, durable writes; records are
    lines of JSON-lines files; the job is held by an flock."""

    def __init__(self, root):
        self.root = Path(root)
        self.url = str(self.root)

    def path(self, key: str) -> Path:
        return self.root / key

    def describe(self, key: str = "") -> str:
        return str(self.path(key)) if key else str(self.root)

    def read(self, key: str) -> bytes:
        return self.path(key).read_bytes()

    def write(self, key: str, data: bytes, durable: bool = True) -> None:
        path = self.path(key)
        with storage_errors(path):
            path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path, durable=durable) as temp:
            temp.write_bytes(data)

    def create(self, key: str, data: bytes) -> bool:
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with storage_errors(path), open(path, "xb") as handle:
                handle.write(data)
        except FileExistsError:
            return False
        return True

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def sizes(self, prefix: str) -> dict[str, int]:
        """Regular files under ``prefix`` (not followed through links; temp files left out)."""
        folder = self.path(prefix) if prefix else self.root
        if not folder.is_dir() or folder.is_symlink():
            return {}
        found = {}
        for where, folders, files in os.walk(folder):
            folders[:] = [name for name in folders if not os.path.islink(os.path.join(where, name))]
            for name in files:
                path = Path(where) / name
                if not name.startswith(".") and not path.is_symlink() and path.is_file():
                    found[path.relative_to(self.root).as_posix()] = path.stat().st_size
        return found

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    def delete_prefix(self, prefix: str) -> None:
        import shutil

        target = self.path(prefix)
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()

    def append(self, log: str, record: dict) -> None:
        path = self.path(f"{log}.jsonl")
        line = json.dumps(record, allow_nan=False) + "\n"
        with storage_errors(path), open(path, "a") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())

    def records(self, log: str) -> list[dict]:
        return read_records(self.path(f"{log}.jsonl"))

    def tail(self, log: str):
        return Tail(self.path(f"{log}.jsonl"))

    def hold(self, holder: str) -> Hold:
        with storage_errors(self.root):
            self.root.mkdir(parents=True, exist_ok=True)
        return _FileLock(self.path("lock"), self.root)


class _FileLock(Hold):
    def __init__(self, path: Path, root: Path):
        with storage_errors(path):
            handle = open(path, "a+")
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
        self.handle = handle

    def release(self) -> None:
        if self.handle is not None:
            fcntl.flock(self.handle, fcntl.LOCK_UN)
            self.handle.close()
            self.handle = None


class ObjectStore(Store):
    """A prefix of an object store: every object written once and whole (one PUT), records one
    small object each (``frames/<time>-<id>.json``, listed in key order), the job held by a
    lease object created only if absent and renewed while the driver lives."""

    shared = True

    def __init__(self, url: str):
        self.url = url.rstrip("/")
        self.fs = filesystem(self.url)
        self._sequence = 0
        self._watchers: dict[str, list[list]] = {}

    def _full(self, key: str) -> str:
        return f"{self.url}/{key}" if key else self.url

    def describe(self, key: str = "") -> str:
        return self._full(key)

    def _call(self, what: str, key: str, call):
        try:
            return _retrying(call)
        except FileNotFoundError:
            raise
        except PermissionError as error:
            raise StorageError(f"cannot {what} {self._full(key)}: permission denied ({_reason(error)})") from None
        except OSError as error:
            raise StorageError(f"cannot {what} {self._full(key)}: {_reason(error)}; finished work is kept, "
                               "re-run to resume") from None

    def read(self, key: str) -> bytes:
        return self._call("read", key, lambda: self.fs.cat_file(self._full(key)))

    def write(self, key: str, data: bytes, durable: bool = True) -> None:
        self._call("write", key, lambda: self.fs.pipe_file(self._full(key), data))

    def create(self, key: str, data: bytes) -> bool:
        try:
            self._call("create", key, lambda: self.fs.pipe_file(self._full(key), data, mode="create"))
        except StorageError as error:
            if "pre-condition" in str(error) or "PreconditionFailed" in str(error):
                return False
            raise
        return True

    def replace_if(self, key: str, data: bytes, etag: str) -> bool:
        """Overwrite ``key`` only if it still has ``etag`` (S3 ``If-Match``)."""
        try:
            self._call("write", key, lambda: self.fs.pipe_file(self._full(key), data, IfMatch=etag))
        except StorageError as error:
            if "pre-condition" in str(error) or "PreconditionFailed" in str(error):
                return False
            raise
        return True

    def etag(self, key: str) -> str | None:
        try:
            info = self._call("read", key, lambda: self.fs.info(self._full(key), refresh=True))
        except FileNotFoundError:
            return None
        return info.get("ETag")

    def exists(self, key: str) -> bool:
        return self.etag(key) is not None

    def sizes(self, prefix: str) -> dict[str, int]:
        base = self._full(prefix).rstrip("/")
        try:
            found = self._call("list", prefix, lambda: self.fs.find(base, detail=True, refresh=True)
                               if self.fs.exists(base) else {})
        except FileNotFoundError:
            return {}
        strip = len(self.fs._strip_protocol(self.url)) + 1
        return {self.fs._strip_protocol(name)[strip:]: info.get("size", 0) for name, info in found.items()
                if info.get("type") != "directory"}

    def delete(self, key: str) -> None:
        try:
            self._call("delete", key, lambda: self.fs.rm_file(self._full(key)))
        except FileNotFoundError:
            pass

    def delete_prefix(self, prefix: str) -> None:
        keys = list(self.sizes(prefix))
        if keys:
            self._call("delete", prefix, lambda: self.fs.rm([self._full(k) for k in keys]))

    def append(self, log: str, record: dict) -> None:
        self._sequence += 1
        name = f"{log}/{time.time_ns():020d}-{os.getpid()}-{self._sequence:06d}-{uuid.uuid4().hex[:6]}.json"
        self.write(name, json.dumps(record, allow_nan=False).encode())
        for buffer in self._watchers.get(log, ()):
            buffer.append((name, record))

    def watch(self, log: str) -> list:
        """A list that receives ``(key, record)`` for every record appended to ``log`` through
        this object from now on: a tail in the process that writes the records (the driver's
        live page) reads them here instead of listing and fetching each one again."""
        buffer: list = []
        self._watchers.setdefault(log, []).append(buffer)
        return buffer

    def records(self, log: str) -> list[dict]:
        return [record for _, record in self.keyed_records(sorted(self.sizes(log)))]

    def keyed_records(self, keys: list[str]) -> list[tuple[str, dict]]:
        """``(key, record)`` of each of ``keys`` that holds a JSON object (fetched concurrently)."""
        if not keys:
            return []
        log = keys[0].rsplit("/", 1)[0]
        contents = self._call("read", log, lambda: self.fs.cat([self._full(k) for k in keys], on_error="omit"))
        contents = {self.fs._strip_protocol(name): data for name, data in contents.items()}
        records = []
        for key in keys:
            data = contents.get(self.fs._strip_protocol(self._full(key)))
            try:
                record = json.loads(data) if data else None
            except (ValueError, UnicodeDecodeError):
                record = None
            if isinstance(record, dict):
                records.append((key, record))
        return records

    def tail(self, log: str) -> "ObjectTail":
        return ObjectTail(self, log)

    def hold(self, holder: str) -> Hold:
        return Lease(self, holder)


class ObjectTail:
    """New records of an object-store log since the last call. The first call lists the log
    (records are named in the order they were written) and fetches what it holds; after that,
    the records this process appends through the same store are taken from memory: the job's
    one writer is the driver that holds its lease, so its own page never lists the log again
    (a listing grows with the film: 170 pages of keys for a 2-hour one, every rewrite)."""

    def __init__(self, store: ObjectStore, log: str):
        self.store, self.log = store, log
        self.mine = store.watch(log)  # registered before the listing: nothing falls between
        self.listed = False

    def read(self) -> tuple[list[dict], bool]:
        count = len(self.mine)  # appends may go on meanwhile: they wait for the next call
        mine = self.mine[:count]
        del self.mine[:count]
        if self.listed:
            return [record for _, record in mine], False
        keys = sorted(self.store.sizes(self.log))
        listed = set(keys)
        self.listed = True
        fetched = [record for _, record in self.store.keyed_records(keys)]
        return fetched + [record for key, record in mine if key not in listed], False


class Lease(Hold):
    """One driver at a time on an object-store job: ``lease.json`` created only if absent,
    renewed every third of :data:`LEASE_SECONDS` with a conditional write (``If-Match``), taken
    over once it has expired (the driver that held it has died or lost the store: said in a
    note), released on exit. A driver that fails to renew stops before it writes again."""

    KEY = "lease.json"

    def __init__(self, store: ObjectStore, holder: str, seconds: float = LEASE_SECONDS):
        self.store, self.seconds = store, seconds
        self.me = {"holder": holder, "host": socket.gethostname(), "pid": os.getpid(), "id": uuid.uuid4().hex}
        self.lost: str | None = None
        self.notes = ()
        if not store.create(self.KEY, self._body()):
            self._take_over()
        self.etag = store.etag(self.KEY)
        self.valid_until = time.time() + seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew_forever, name="lease", daemon=True)
        self._thread.start()

    def _body(self) -> bytes:
        return json.dumps({**self.me, "expires": time.time() + self.seconds}).encode()

    def _take_over(self) -> None:
        etag = self.store.etag(self.KEY)
        try:
            current = json.loads(self.store.read(self.KEY))
        except (FileNotFoundError, ValueError):
            current = {}
        expires = current.get("expires", 0) if isinstance(current, dict) else 0
        if isinstance(expires, (int, float)) and expires > time.time():
            raise JobError(f"{self.store.url} is in use by another driver ({current.get('holder', '?')} on "
                           f"{current.get('host', '?')}, pid {current.get('pid', '?')}; its lease runs "
                           f"{expires - time.time():.0f} s more): wait for it to finish, or stop it and re-run "
                           f"once its lease has expired")
        if etag is None:
            taken = self.store.create(self.KEY, self._body())
        else:
            taken = self.store.replace_if(self.KEY, self._body(), etag)
        if not taken:
            raise JobError(f"{self.store.url}: another driver took the job at the same moment; this one stops")
        if current:
            self.notes = (f"took over the job from {current.get('holder', '?')} on {current.get('host', '?')} "
                          f"(pid {current.get('pid', '?')}), whose lease had expired",)

    def _renew_forever(self) -> None:
        while not self._stop.wait(self.seconds / 3):
            try:
                renewed_at = time.time()
                if not self.store.replace_if(self.KEY, self._body(), self.etag):
                    self.lost = "another driver took the job's lease"
                    return
                self.etag = self.store.etag(self.KEY)
                self.valid_until = renewed_at + self.seconds
            except Exception as error:  # noqa: BLE001 - renewal keeps trying until the lease runs out
                if time.time() > self.valid_until:
                    self.lost = f"the lease could not be renewed in time ({' '.join(str(error).split())[:160]})"
                    return

    def check(self) -> None:
        if self.lost:
            raise JobError(f"{self.store.url}: this driver lost the job ({self.lost}); finished work is kept")

    def release(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        if not self.lost and self.store.etag(self.KEY) == self.etag:
            self.store.delete(self.KEY)


_OPENED: dict = {}  # this process's stores, by URL (a worker's: opened once, kept across its tasks)
_REACHED: set = set()  # the (store, token) pairs this process has read


def opened(url: str) -> Store:
    """The store at ``url``, opened once per process."""
    if url not in _OPENED:
        _OPENED[url] = open_store(url)
    return _OPENED[url]


class NotReached(Exception):
    """This process does not read the driver's token in the store at ``url``."""

    def __init__(self, url: str, detail: str):
        super().__init__(f"{url}: {detail}")
        self.url, self.detail = url, detail


def reach(url: str, token: tuple[str, str]) -> None:
    """:class:`NotReached` unless this process reads ``token`` (the driver wrote it) in the
    store at ``url``: a folder of the same name on another machine is another store."""
    if (url, token) in _REACHED:
        return
    key, value = token
    try:
        found = opened(url).read(key).decode()
    except Exception as error:  # noqa: BLE001 - any failure to read it means: not reachable from here
        raise NotReached(url, " ".join(str(error).split())[:200] or type(error).__name__) from None
    if found != value:
        raise NotReached(url, "another store is mounted at that path here")
    _REACHED.add((url, token))


def open_store(place) -> Store:
    """The store of a job directory: a local folder, or an object-store prefix."""
    if isinstance(place, Store):
        return place
    place = location(place)
    if not place.remote:
        return LocalStore(place.text)
    if scheme(place.text) in READ_ONLY:
        raise InputError(f"{place.text}: a job cannot live on a web server; give a local folder or a bucket "
                         "(s3://, gs://, az://)")
    return ObjectStore(place.text)


__all__ = ["Location", "location", "resolved", "is_remote", "scheme", "read_bytes", "exists", "ffmpeg_input",
           "identity", "upload", "check_writable", "write_bytes", "Store", "LocalStore", "ObjectStore", "Lease", "Hold",
           "open_store", "filesystem", "parse_line", "read_records", "Tail", "LEASE_SECONDS"]
