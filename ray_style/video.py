"""Video in and out through imageio-ffmpeg's bundled ffmpeg (the only module that uses it).

Frames stream as generators of ``(H, W, 3)`` uint8 arrays; nothing holds a whole video.
ffmpeg's own parser decides what is a video, and its complaint reaches the user in one line.
Every source frame is one frame here, with its own timestamp: nothing is duplicated or dropped
to force a constant rate, so phone and screen recordings (variable rate) keep their timing.
An output is renamed into place only once ffmpeg succeeded and the file holds every frame sent.
"""
from __future__ import annotations

import collections
import contextlib
import errno
import functools
import re
import struct
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterable, Iterator, NamedTuple, Sequence

import numpy as np

from .errors import InputError, StorageError
from .files import atomic_path, check_writable_output, storage_message
from . import sequence
from .settings import CODECS

MAX_PIXELS = 8192 * 8192  # decoded frame size we accept (inputs are untrusted)

# Output containers by extension, as ffmpeg's muxer names them (.m4v is an MP4 file).
MUXERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm"}
OUTPUT_SUFFIXES = tuple(MUXERS)
# Video codecs we write, and the containers that carry each (auto: VP9 for WebM, else H.264).
# ProRes 422 HQ (10-bit 4:2:2) and FFV1 (lossless, every frame a keyframe with slice
# checksums) are what a studio pipeline exchanges masters in.
CODEC_SUFFIXES = {"h264": (".mp4", ".m4v", ".mov", ".mkv"), "vp9": (".webm", ".mkv", ".mp4"),
                  "prores": (".mov", ".mkv"), "ffv1": (".mkv",)}
ENCODERS = {"h264": "libx264", "vp9": "libvpx-vp9", "prores": "prores_ks", "ffv1": "ffv1"}
VFR_TIMEBASE = 90000  # ticks per second for variable-rate output timestamps (MPEG's clock)
# ffmpeg's words (strerror) for the storage failures files.STORAGE_ERRNOS explains to the user.
_STORAGE_FAILURES = {"No space left on device": errno.ENOSPC, "Disk quota exceeded": errno.EDQUOT,
                     "Read-only file system": errno.EROFS, "Permission denied": errno.EACCES,
                     "File too large": errno.EFBIG}
_DAMAGE = re.compile(r"partial file|corrupt|Invalid data|error while decoding|Truncat|Error splitting", re.IGNORECASE)


@dataclass(frozen=True)
class VideoInfo:
    path: str
    frames: int  # decoded, one per source frame (not fps × duration)
    fps: Fraction  # the nominal rate (exact where the float is a known NTSC rate); the average when variable
    width: int  # as displayed: after rotation and non-square pixels
    height: int
    rotate: int
    audio_codec: str | None  # the first audio track's codec; None: no audio stream
    audio_codecs: tuple[str, ...] = ()  # every audio track's codec, in stream order
    # Each frame's presentation time in seconds from the file's start; None when frame i is at i / fps
    # (constant rate from zero, within a quarter frame).
    timestamps: tuple[float, ...] | None = None
    expected_frames: int | None = None  # what the container promises (duration × rate); None: unknown
    warnings: tuple[str, ...] = ()  # one line each, for the user (a truncated file …)
    # An image sequence (path is its printf pattern): frame i is the file numbered numbers[i].
    numbers: tuple[int, ...] | None = None
    bits: int = 8  # per channel: 16 for a sequence of 16-bit or float frames
    audio_path: str | None = None  # where a sequence's audio is (--audio)
    color: str | None = None  # the source's YUV matrix as ffmpeg names it (bt709, smpte170m…); None: untagged

    @property
    def has_audio(self) -> bool:
        return self.audio_codec is not None


def _ffmpeg() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


@functools.lru_cache(maxsize=None)
def encoders() -> frozenset[str]:
    """Names of the encoders the bundled ffmpeg has (``libvpx-vp9``, ``libopus`` …)."""
    listing = subprocess.run([_ffmpeg(), "-hide_banner", "-encoders"], capture_output=True, text=True,
                             errors="replace", stdin=subprocess.DEVNULL).stdout
    return frozenset(m.group(1) for m in re.finditer(r"^ [VAS][\w.]{5} (\S+)", listing, re.MULTILINE))


def exact_rate(fps: float) -> Fraction:
    """ffmpeg's header prints rates rounded (29.97); restore NTSC's exact fractions."""
    for base in (24, 30, 48, 60, 120):
        if abs(fps - base * 1000 / 1001) < 0.006:
            return Fraction(base * 1000, 1001)
    return Fraction(fps).limit_denominator(1001)


class _Process:
    """An ffmpeg child whose stderr is drained by a thread (a full pipe would hang it), keeping the
    last lines as evidence; leaving the ``with`` block kills it if it still runs."""

    def __init__(self, args: Sequence[str], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL):
        self.args = [_ffmpeg(), "-hide_banner", *args]
        self.tail: collections.deque[str] = collections.deque(maxlen=20)
        self.process = subprocess.Popen(self.args, stdin=stdin, stdout=stdout, stderr=subprocess.PIPE)
        self._drain = threading.Thread(target=self._read_stderr, daemon=True)
        self._drain.start()

    def _read_stderr(self) -> None:
        for raw in self.process.stderr:
            line = raw.decode(errors="replace").strip()
            if line:
                self.tail.append(line)

    def wait(self) -> int:
        code = self.process.wait()
        self._drain.join()
        return code

    def complaint(self) -> str:
        """ffmpeg's last few lines, joined into one."""
        return " | ".join(list(self.tail)[-3:]) or "no message"

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        if self.process.poll() is None:
            self.process.kill()
        if sys.is_finalizing():
            # A generator left open until the interpreter exits: the stderr thread is frozen
            # holding its pipe's lock, and closing that pipe now would abort the interpreter.
            return
        for stream in (self.process.stdin, self.process.stdout):
            if stream:
                with contextlib.suppress(OSError):
                    stream.close()
        self.wait()
        self.process.stderr.close()


# ---------------------------------------------------------------- probing

def _header(path: Path) -> str:
    result = subprocess.run([_ffmpeg(), "-hide_banner", "-i", str(path)], capture_output=True, text=True,
                            errors="replace", stdin=subprocess.DEVNULL)
    return result.stderr


def _streams(header: str) -> list[tuple[str, str, list[str]]]:
    """``(kind, stream line, its metadata lines)`` for each stream of input #0, in order."""
    streams: list[tuple[str, str, list[str]]] = []
    for line in header.split("Output #0")[0].splitlines():
        match = re.match(r"\s*Stream #0:\d+.*?: (Video|Audio|Subtitle|Data|Attachment):", line)
        if match:
            streams.append((match.group(1), line, []))
        elif streams and line.startswith("      "):
            streams[-1][2].append(line)
    return streams


def _audio_codecs(header: str) -> tuple[str, ...]:
    return tuple(re.search(r"Audio: (\w+)", line).group(1) for kind, line, _ in _streams(header) if kind == "Audio")


def _seconds(text: str) -> float | None:
    match = re.search(r"(\d+):(\d\d):(\d\d(?:\.\d+)?)", text)
    return int(match.group(1)) * 3600 + int(match.group(2)) * 60 + float(match.group(3)) if match else None


def _nominal_rate(line: str) -> float | None:
    """The stream's average rate ("25 fps"), else its base rate ("25 tbr", "1k tbr")."""
    for pattern in (r"([\d.]+)(k?) fps", r"([\d.]+)(k?) tbr"):
        match = re.search(pattern, line)
        if match and float(match.group(1)) > 0:
            return float(match.group(1)) * (1000 if match.group(2) else 1)
    return None


def _display_size(line: str, extra: list[str]) -> tuple[int, int, int]:
    """``(width, height, rotate)`` as displayed, from the stream line and its side data."""
    width, height = map(int, re.search(r", (\d{1,6})x(\d{1,6})", line).groups())
    sar = re.search(r"\[SAR (\d+):(\d+) DAR", line)
    if sar and int(sar.group(1)) and int(sar.group(2)):  # non-square pixels: display width differs
        width = round(width * int(sar.group(1)) / int(sar.group(2)))
    # ffmpeg ≥ 6 prints a display matrix (counter-clockwise degrees); older ones a "rotate" tag.
    matrix = next((re.search(r"rotation of (-?[\d.]+) degrees", x, re.IGNORECASE) for x in extra
                   if re.search(r"rotation of", x, re.IGNORECASE)), None)
    tag = next((re.search(r"rotate\s+:\s*(-?\d+)", x) for x in extra if re.search(r"rotate\s+:", x)), None)
    rotate = round(-float(matrix.group(1))) % 360 if matrix else int(tag.group(1)) % 360 if tag else 0
    if rotate in (90, 270):
        width, height = height, width
    return width, height, rotate


TAIL_SECONDS = 3.0  # the end of a video decoded to check what its packets say


def _packet_times(path) -> list[float | None]:
    """Every video packet's presentation time, in display order, read without decoding (a
    stream copy to ffmpeg's framecrc muxer: the cost of reading the file)."""
    return _read_back(path).times


def _times_of(framecrc: str) -> list[float | None]:
    """The presentation times in ffmpeg's framecrc text, sorted (display order) where all have one."""
    base, times = None, []
    for line in framecrc.splitlines():
        found = re.match(r"#tb 0: (\d+)/(\d+)", line)
        if found:
            base = Fraction(int(found.group(1)), int(found.group(2)))
        elif line and not line.startswith("#") and base is not None:
            fields = [field.strip() for field in line.split(",")]
            times.append(float(int(fields[2]) * base) if len(fields) > 2 and fields[2].lstrip("-").isdigit() else None)
    if None in times:
        return times  # no order to sort into: the caller decodes instead
    return sorted(times)


def _decoded_times(path, seek: float = 0.0) -> tuple[list[float | None], bool, str]:
    """Decode from ``seek`` seconds on (the whole video by default): ``(presentation times,
    ffmpeg reported damage, its last line)``."""
    times: list[float | None] = []
    damaged, last = False, "no message"
    start = ["-ss", f"{seek:.6f}", "-copyts"] if seek > 0 else []
    args = ["-nostdin", "-nostats", *start, "-i", str(path), "-map", "0:v:0", "-an", "-sn", "-dn",
            "-fps_mode", "passthrough", "-vf", "showinfo=checksum=0", "-f", "null", "-"]
    process = subprocess.Popen([_ffmpeg(), "-hide_banner", *args], stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        for raw in process.stderr:
            line = raw.decode(errors="replace").strip()
            frame = re.search(r"\bn:\s*\d+\s+pts:\s*\S+\s+pts_time:(\S+)", line)
            if frame:
                times.append(float(frame.group(1)) if frame.group(1) != "NOPTS" else None)
            elif line and "Parsed_showinfo" not in line:
                damaged = damaged or bool(_DAMAGE.search(line))
                last = line
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
        process.stderr.close()
    return times, damaged, last


def _frame_times(path, pixels: bool = True) -> tuple[list[float | None], bool, str]:
    """Every frame's presentation time, one per source frame: ``(times, ffmpeg reported damage,
    its last line)``. ``pixels``: decode every frame (the cost of a full decode). Else read the
    packets' times (no decoding) and decode only the last :data:`TAIL_SECONDS` to check them:
    a file cut short leaves a packet that decodes to nothing; any disagreement, or packets
    without times, and the whole video is decoded after all."""
    if pixels:
        return _decoded_times(path)
    times = _packet_times(path)
    if not times or None in times:
        return _decoded_times(path)
    first = next(k for k, t in enumerate(times) if t >= times[-1] - TAIL_SECONDS)
    seek = (times[first - 1] + times[first]) / 2 if first > 0 else 0.0  # between two frames: no rounding at stake
    window = times[first:]
    tail, damaged, last = _decoded_times(path, seek)
    if damaged or len(tail) != len(window) or any(t is None or abs(t - w) > 1e-3 for t, w in zip(tail, window)):
        return _decoded_times(path)
    return times, False, last


def _timing(times: list[float | None], nominal: float | None) -> tuple[Fraction, tuple[float, ...] | None]:
    """``(fps, timestamps)``: timestamps is None when frame i sits at i / fps within a quarter frame."""
    known = [t for t in times if t is not None]
    increasing = len(known) == len(times) and all(b > a for a, b in zip(known, known[1:]))
    average = (len(known) - 1) / (known[-1] - known[0]) if increasing and len(known) > 1 else None
    rate = nominal or average
    if not rate:
        return Fraction(0), None
    fps = exact_rate(rate)
    if not increasing:  # missing or disordered timestamps: nothing to keep, fall back to the nominal rate
        return fps, None
    period = 1 / float(fps)
    if all(abs(t - i * period) <= period / 4 for i, t in enumerate(known)):
        return fps, None
    return (exact_rate(average) if average else fps), tuple(round(t, 6) for t in known)


def _expected(header: str, line: str, extra: list[str], rate: float | None, start: float) -> tuple[int | None, int]:
    """``(frames the container promises, slack)``: the video stream's own duration where the container
    records it (Matroska), else the file's, which includes audio that may outlast the video by a
    fraction of a second; the slack absorbs that so only real losses are reported."""
    own = next((_seconds(x) for x in extra if re.match(r"\s*DURATION\s*:", x)), None)
    whole = re.search(r"Duration: (\d+:\d\d:\d\d(?:\.\d+)?)", header)
    duration = own if own is not None else _seconds(whole.group(1)) if whole else None
    if duration is None or not rate:
        return None, 0
    return round((duration - start) * rate), (1 if own is not None else max(1, round(0.25 * rate)))


def _average_rate(line: str) -> float | None:
    match = re.search(r"([\d.]+)(k?) fps", line)
    return float(match.group(1)) * (1000 if match.group(2) else 1) if match and float(match.group(1)) > 0 else None


def probe(path, label: str | None = None, pixels: bool = True) -> VideoInfo:
    """Everything we need about an input video, or :class:`InputError` saying why it is not one.
    ``path``: a local file, or a URL ffmpeg reads (store.ffmpeg_input); ``label``: how messages
    name it (a presigned URL is not for a user's screen).

    ``pixels``: decode the video once, to count frames and read each one's timestamp (what
    checks that a file we wrote plays). Else (a job's input, probed by the head) its packets
    are read without decoding and only its end is decoded to check them (_frame_times)."""
    remote = "://" in str(path)
    if not remote:
        path = Path(path)
        if not path.is_file():
            raise InputError(f"video not found: {path}")
    name = label or str(path)
    header = _header(path)
    streams = _streams(header)
    video = next(((line, extra) for kind, line, extra in streams if kind == "Video"), None)
    container = re.search(r"Input #0, ([\w,]+), from", header)
    if video is None:
        complaint = next((line.strip() for line in header.splitlines() if str(path) in line and "Input #0" not in line),
                         "no video stream")
        kind = "an audio-only file" if any(k == "Audio" for k, _, _ in streams) else "not a video ffmpeg can read"
        raise InputError(f"{name} is {kind} ({complaint}): give a video file such as .mp4, .mov or .mkv")
    if container and re.search(r"_pipe|image2", container.group(1)):
        raise InputError(f"{name} is a still image, not a video: use `ray-style image` for it")
    line, extra = video
    try:
        width, height, rotate = _display_size(line, extra)
    except AttributeError:
        raise InputError(f"{name}: ffmpeg reports no frame size for its video stream; the file is damaged") from None
    if width * height > MAX_PIXELS:
        raise InputError(f"{name} is {width}x{height}: larger than we decode ({MAX_PIXELS} pixels)")
    times, damaged, last = _frame_times(path, pixels)
    if not times:
        raise InputError(f"{name} has a video stream but no frame could be decoded "
                         f"(ffmpeg: {last}): the file is empty or damaged")
    nominal = _nominal_rate(line)
    fps, timestamps = _timing(times, nominal)
    if not fps:
        raise InputError(f"{name}: ffmpeg reports no frame rate and the frames carry no timestamps; "
                         "remux it with a constant rate first")
    # A variable-rate stream's base rate ("1k tbr") says nothing about its length; its average does.
    expected, slack = _expected(header, line, extra, _average_rate(line) or float(fps), times[0] or 0.0)
    warnings = []
    if expected is not None and len(times) < expected - (0 if damaged else slack):
        warnings.append(f"{name}: decoded {len(times)} frames but the container promises {expected}; "
                        "the file looks truncated or damaged, so the output will be shorter")
    codecs = _audio_codecs(header)
    tags = re.search(r"\w+\((?:tv|pc)?(?:, )?(bt709|bt470bg|smpte170m|bt2020nc|bt2020c|smpte240m|fcc)", line)
    return VideoInfo(str(path), len(times), fps, int(width), int(height), rotate, codecs[0] if codecs else None,
                     codecs, timestamps, expected, tuple(warnings), color=tags.group(1) if tags else None)


def probe_sequence(text, fps, audio=None) -> VideoInfo:
    """An image sequence (a pattern or a folder, :mod:`ray_style.sequence`) as a constant-rate
    video of ``fps`` frames per second, with the audio of ``audio`` (a media file) if given."""
    if fps is None:
        raise InputError(f"{text} is an image sequence: give its rate with --fps (e.g. 24 or 24000/1001)")
    if isinstance(fps, (int, Fraction)) or "/" in str(fps):
        rate = Fraction(fps)
    else:
        rate = exact_rate(float(fps))  # 29.97 means 30000/1001
    if rate <= 0:
        raise InputError(f"--fps {fps}: give a rate > 0")
    frames = sequence.find(text)
    width, height, bits = sequence.header(frames.path(frames.numbers[0]))
    if width * height > MAX_PIXELS:
        raise InputError(f"{frames.path(frames.numbers[0])} is {width}x{height}: larger than we read ({MAX_PIXELS} "
                         "pixels)")
    codecs: tuple[str, ...] = ()
    if audio is not None:
        if not Path(audio).is_file():
            raise InputError(f"--audio {audio}: no such file")
        codecs = _audio_codecs(_header(Path(audio)))
        if not codecs:
            raise InputError(f"--audio {audio} has no audio track ffmpeg can read")
    return VideoInfo(frames.pattern, len(frames.numbers), rate, width, height, 0, codecs[0] if codecs else None,
                     codecs, numbers=frames.numbers, bits=bits, audio_path=None if audio is None else str(audio))


def frame_size(info: VideoInfo, size: int | None) -> tuple[int, int]:
    """Output ``(w, h)``: the display aspect kept, long edge ``size`` (or the source's), even."""
    long_edge = size or max(info.width, info.height)
    scale = long_edge / max(info.width, info.height)
    return (max(2, round(info.width * scale / 2) * 2), max(2, round(info.height * scale / 2) * 2))


def _rgb_frames(width: int, height: int) -> list[str]:
    """How decoded frames leave ffmpeg: scaled to ``width × height``, raw RGB on stdout. One
    definition for :func:`decode` and :func:`decode_at`, so a frame decoded again to repair a
    job has the bytes the first decode gave."""
    return ["-vf", f"scale={width}:{height}:flags=lanczos", "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"]


def decode(info: VideoInfo, width: int, height: int, bits: int = 8) -> Iterator[np.ndarray]:
    """Stream every source frame, exactly once each, scaled to ``width × height`` RGB
    (ffmpeg applies the rotation), uint8 or (``bits=16``, for a sequence) uint16."""
    if info.numbers is not None:
        for index in range(info.frames):
            yield decode_at(info, index, width, height, bits)
        return
    args = ["-nostdin", "-v", "error", "-i", info.path, "-map", "0:v:0", "-an", "-sn", "-dn",
            "-fps_mode", "passthrough", *_rgb_frames(width, height)]
    size, count = width * height * 3, 0
    with _Process(args, stdout=subprocess.PIPE) as ffmpeg:
        while True:
            raw = ffmpeg.process.stdout.read(size)
            if len(raw) < size:
                break
            count += 1
            yield np.frombuffer(raw, np.uint8).reshape(height, width, 3)
        if ffmpeg.wait() != 0 and count < info.frames:
            raise InputError(f"{info.path}: ffmpeg stopped after {count} of {info.frames} frames "
                             f"({ffmpeg.complaint()}): the file changed or is damaged")


def decode_span(info: VideoInfo, start: int, end: int, width: int, height: int, bits: int = 8) -> Iterator[np.ndarray]:
    """Frames ``start`` … ``end - 1``, as :func:`decode` gives them (the same bytes), without
    decoding what comes before the keyframe they start after: ffmpeg seeks to the middle of
    frames ``start - 1`` and ``start`` and keeps ``end - start`` frames. What a worker decodes
    one segment of a video with."""
    if info.numbers is not None:
        for index in range(start, end):
            yield decode_at(info, index, width, height, bits)
        return
    at = (lambda i: info.timestamps[i]) if info.timestamps else (lambda i: i / float(info.fps))
    seek = ["-ss", f"{(at(start - 1) + at(start)) / 2:.6f}"] if start > 0 else []
    args = ["-nostdin", "-v", "error", *seek, "-i", info.path, "-map", "0:v:0", "-an", "-sn", "-dn",
            "-fps_mode", "passthrough", "-frames:v", str(end - start), *_rgb_frames(width, height)]
    size, count = width * height * 3, 0
    with _Process(args, stdout=subprocess.PIPE) as ffmpeg:
        while count < end - start:
            raw = ffmpeg.process.stdout.read(size)
            if len(raw) < size:
                break
            count += 1
            yield np.frombuffer(raw, np.uint8).reshape(height, width, 3)
        ffmpeg.wait()
    if count < end - start:
        raise InputError(f"{info.path}: frames {start}-{end - 1} decoded to {count} frames "
                         f"({ffmpeg.complaint()}): the file changed or is damaged")


def decode_at(info: VideoInfo, frame: int, width: int, height: int, bits: int = 8) -> np.ndarray:
    """One frame, by its number, without decoding what comes before it: ffmpeg seeks to the
    keyframe before its timestamp and decodes from there (a preview of a film in seconds)."""
    if info.numbers is not None:
        image = sequence.read(info.path % info.numbers[frame])
        if image.shape[:2] != (info.height, info.width):
            raise InputError(f"{info.path % info.numbers[frame]} is {image.shape[1]}x{image.shape[0]}, not "
                             f"{info.width}x{info.height} like the sequence's first frame")
        return sequence.to_depth(sequence.resize(image, width, height), bits)
    seconds = info.timestamps[frame] if info.timestamps else frame / float(info.fps)
    args = ["-nostdin", "-v", "error", "-ss", f"{max(0.0, seconds):.6f}", "-i", info.path, "-map", "0:v:0",
            "-frames:v", "1", *_rgb_frames(width, height)]
    with _Process(args, stdout=subprocess.PIPE) as ffmpeg:
        raw = ffmpeg.process.stdout.read(width * height * 3)
        ffmpeg.wait()
    if len(raw) < width * height * 3:
        raise InputError(f"{info.path}: no frame could be decoded at {seconds:.3f} s ({ffmpeg.complaint()})")
    return np.frombuffer(raw, np.uint8).reshape(height, width, 3).copy()


# ---------------------------------------------------------------- encoding

def suffix_of(path) -> str:
    """The lower-case extension of a path or URL (pathlib would mangle ``s3://``)."""
    name = str(path).rstrip("/").rsplit("/", 1)[-1]
    return name[name.rfind("."):].lower() if "." in name else ""


def resolve_codec(path, codec: str = "auto") -> str:
    """The video codec ``--codec`` means for an output ``path``: ``auto`` is VP9 in WebM, else H.264."""
    if codec == "auto":
        return "vp9" if suffix_of(path) == ".webm" else "h264"
    return codec


def check_output_suffix(path, codec: str = "auto"):
    """``path`` if we can write its container with ``codec``, else :class:`InputError` (call
    before any work)."""
    suffix = suffix_of(path)
    if suffix not in MUXERS:
        raise InputError(f"output {path} must end in {', '.join(OUTPUT_SUFFIXES)}")
    if codec not in CODECS:
        raise InputError(f"unknown --codec {codec!r}: use {', '.join(CODECS)}")
    chosen = resolve_codec(path, codec)
    if suffix not in CODEC_SUFFIXES[chosen]:
        raise InputError(f"--codec {chosen} is not written into {suffix} files: name the output "
                         f"{' or '.join(CODEC_SUFFIXES[chosen])}")
    if suffix == ".webm" and not ({"libvpx-vp9"} <= encoders() and encoders() & {"libopus", "libvorbis"}):
        raise InputError(f"cannot write {path}: this ffmpeg has no VP9 or Opus/Vorbis encoder for WebM; "
                         "use .mp4, .mov or .mkv")
    if ENCODERS[chosen] not in encoders():
        raise InputError(f"cannot write {path}: this ffmpeg has no {ENCODERS[chosen]} encoder for --codec {chosen}")
    return path


def _audio_source(source) -> tuple[str | None, tuple[str, ...]]:
    """``(path, audio codecs)`` of a VideoInfo or a media path (read from its header)."""
    if source is None:
        return None, ()
    if isinstance(source, VideoInfo):
        return (source.audio_path if source.numbers is not None else source.path,
                source.audio_codecs or ((source.audio_codec,) if source.audio_codec else ()))
    return str(source), _audio_codecs(_header(str(source)))


def _fits(source: str, track: int | None, muxer: str, codec: str) -> bool:
    """Whether ffmpeg can write audio ``track`` (every track: None) of ``source`` as ``codec``
    into ``muxer``: a fraction-of-a-second dry run into a pipe, so ffmpeg's own rules decide."""
    fragmented = ["-movflags", "frag_keyframe+empty_moov"] if muxer in ("mp4", "mov") else []
    args = ["-nostdin", "-v", "error", "-i", source, "-map", "0:a" if track is None else f"0:a:{track}",
            "-c:a", codec, "-t", "0.2", *fragmented, "-f", muxer, "pipe:1"]
    return subprocess.run([_ffmpeg(), "-hide_banner", *args], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL).returncode == 0


def _reencoder(muxer: str) -> str:
    if muxer != "webm":
        return "aac"
    return "libopus" if "libopus" in encoders() else "libvorbis"


def plan_audio(source, path) -> tuple[str, ...]:
    """For each audio track of ``source`` (a VideoInfo or a path), ``"copy"`` where the container
    ``path`` names can hold its codec, else the encoder that re-encodes it (AAC; Opus for WebM).
    :class:`InputError` if a track can be neither: call it before the work, encode calls it again."""
    source_path, codecs = _audio_source(source)
    if not codecs:
        return ()
    muxer = MUXERS[suffix_of(check_output_suffix(path))]
    if _fits(source_path, None, muxer, "copy"):
        return ("copy",) * len(codecs)
    plan = []
    for track, codec in enumerate(codecs):
        if _fits(source_path, track, muxer, "copy"):
            plan.append("copy")
        elif _fits(source_path, track, muxer, _reencoder(muxer)):
            plan.append(_reencoder(muxer))
        else:
            raise InputError(f"{source_path}: audio track {track + 1} ({codec}) can be neither copied into nor "
                             f"re-encoded for {suffix_of(path)}; remux the input without it")
    return tuple(plan)


# A source's YUV matrix → (swscale's name for it, primaries, transfer) of the output's tags.
_COLORS = {"bt709": ("bt709", "bt709", "bt709"), "smpte170m": ("smpte170m", "smpte170m", "smpte170m"),
           "bt470bg": ("bt470", "bt470bg", "smpte170m"), "bt2020nc": ("bt2020", "bt2020", "bt2020-10"),
           "bt2020c": ("bt2020", "bt2020", "bt2020-10"), "smpte240m": ("smpte240m", "smpte240m", "smpte240m"),
           "fcc": ("fcc", "bt470m", "gamma22")}


def output_color(source: "VideoInfo | None") -> str | None:
    """The YUV matrix an output is converted with and tagged as, carried from the source: a
    tagged video's own; BT.709 for an image sequence (sRGB shares Rec.709's primaries); None for
    an untagged video (its frames were decoded with swscale's default, and are encoded back with
    it, untagged, as the source was)."""
    if source is None:
        return None
    if source.numbers is not None:
        return "bt709"
    return source.color if source.color in _COLORS else None


def _color_args(color: str | None) -> list[str]:
    """Convert RGB → YUV with ``color``'s matrix, limited range, and tag the stream so players
    decode it with the same one."""
    if color is None:
        return []
    matrix, primaries, transfer = _COLORS[color]
    return ["-vf", f"scale=out_color_matrix={matrix}:out_range=tv,"
                   f"setparams=colorspace={color}:color_primaries={primaries}:color_trc={transfer}:range=tv"]


def _video_args(codec: str, crf: int, bits: int = 8, color: str | None = None) -> list[str]:
    if codec != "ffv1":
        return _color_args(color) + _codec_args(codec, crf, bits)
    return _codec_args(codec, crf, bits)


def _codec_args(codec: str, crf: int, bits: int) -> list[str]:
    if codec == "vp9":
        # VP9's quality scale is not x264's: its suggested 31 for HD matches x264's default 23.
        return ["-c:v", "libvpx-vp9", "-crf", str(min(63, round(crf * 31 / 23))), "-b:v", "0",
                "-row-mt", "1", "-deadline", "good", "-cpu-used", "2", "-pix_fmt", "yuv420p"]
    if codec == "prores":  # profile 3 = 422 HQ; "apl0" is the vendor tag Apple's own decoders expect
        return ["-c:v", "prores_ks", "-profile:v", "3", "-vendor", "apl0", "-pix_fmt", "yuv422p10le"]
    if codec == "ffv1":  # lossless RGB, intra-only, CRC-checked slices (FFV1 version 3)
        return ["-c:v", "ffv1", "-level", "3", "-g", "1", "-slicecrc", "1", "-pix_fmt",
                "gbrp16le" if bits == 16 else "gbrp"]
    return ["-c:v", "libx264", "-crf", str(crf), "-pix_fmt", "yuv420p"]


def _ivf_header(width: int, height: int, timebase: Fraction, bits: int = 8) -> bytes:
    """An IVF stream header for raw RGB frames (24 bits, or 48 little-endian: FourCC ``RGB0``,
    i.e. RGB and 48): the simplest container that carries each frame's timestamp through a
    pipe (rawvideo has none; a variable rate needs them)."""
    return (b"DKIF" + struct.pack("<HH", 0, 32) + (b"RGB\x18" if bits == 8 else b"RGB0")
            + struct.pack("<HHII", width, height, timebase.denominator, timebase.numerator) + bytes(8))


def _ticks(count: int, fps: Fraction, timestamps: Sequence[float] | None, first: float) -> int:
    """Frame ``count``'s timestamp in IVF ticks (1/fps for a constant rate, else 1/VFR_TIMEBASE)."""
    if timestamps is None:
        return count
    if count >= len(timestamps):
        raise ValueError(f"encode got more frames than the {len(timestamps)} timestamps given")
    return round((timestamps[count] - first) * VFR_TIMEBASE)


def _feed(ffmpeg: _Process, frames: Iterable[np.ndarray], width: int, height: int, fps: Fraction,
          timestamps: Sequence[float] | None, bits: int = 8) -> tuple[int, int]:
    """Send every frame to ffmpeg's stdin: ``(frames given, frames sent)`` (fewer sent if ffmpeg died).

    ``frames`` is consumed: a generator is closed however this ends, so one that decodes with its
    own ffmpeg (:func:`decode`) never outlives a failed encode, whoever still holds it."""
    timebase = 1 / fps if timestamps is None else Fraction(1, VFR_TIMEBASE)
    first = timestamps[0] if timestamps else 0.0
    given, sent, last_tick = 0, 0, -1
    try:
        ffmpeg.process.stdin.write(_ivf_header(width, height, timebase, bits))
        for frame in frames:
            given += 1
            if frame.shape != (height, width, 3) or frame.dtype not in (np.uint8, np.uint16):
                raise ValueError(f"encode expects ({height}, {width}, 3) uint8 frames, got {frame.shape} {frame.dtype}")
            frame = sequence.to_depth(frame, bits).astype("<u2" if bits == 16 else np.uint8, copy=False)
            tick = max(_ticks(sent, fps, timestamps, first), last_tick + 1)  # strictly increasing for the muxer
            ffmpeg.process.stdin.write(struct.pack("<IQ", frame.nbytes, tick))
            ffmpeg.process.stdin.write(np.ascontiguousarray(frame).data)
            sent, last_tick = sent + 1, tick
        ffmpeg.process.stdin.close()
    except BrokenPipeError:  # ffmpeg quit early: its stderr says why
        pass
    finally:
        if hasattr(frames, "close"):
            frames.close()
    return given, sent


class _ReadBack(NamedTuple):
    """A file's video packets read without decoding (a stream copy to ffmpeg's framecrc muxer)."""

    times: list  # every video packet's presentation time, in display order (None: it has none)
    header: str  # the checksum of the video stream's header (its extradata), "none" without one
    audio: int  # audio streams
    codec: str  # the video stream's codec, as ffmpeg names it
    complaint: str  # ffmpeg's last line
    ok: bool  # ffmpeg read the whole file


def _read_back(path) -> _ReadBack:
    args = ["-nostdin", "-nostats", "-i", str(path), "-map", "0:v:0", "-c", "copy", "-f", "framecrc", "-"]
    done = subprocess.run([_ffmpeg(), "-hide_banner", *args], stdin=subprocess.DEVNULL, capture_output=True)
    text, log = done.stdout.decode(errors="replace"), done.stderr.decode(errors="replace")
    header = re.search(r"^#extradata 0:\s*(\d+),\s*(\w+)", text, re.MULTILINE)
    streams = _streams(log)
    lines = [x.strip() for x in log.splitlines() if x.strip()]
    return _ReadBack(_times_of(text), f"{header.group(1)}:{header.group(2)}" if header else "none",
                     sum(1 for kind, _, _ in streams if kind == "Audio"),
                     next((re.search(r"Video: (\w+)", line).group(1) for kind, line, _ in streams if kind == "Video"),
                          "none"), lines[-1] if lines else "no message", done.returncode == 0)


def _written(path: Path) -> tuple[int, int, str, str]:
    """``(video packets, audio streams, video codec, ffmpeg's complaint)`` of a written file, by
    reading its packets without decoding them."""
    back = _read_back(path)
    return len(back.times) if back.ok else 0, back.audio, back.codec, back.complaint


def encode(frames: Iterable[np.ndarray], path, width: int, height: int, fps: Fraction, audio_from=None,
           crf: int = 18, timestamps: Sequence[float] | None = None,
           audio_window: tuple[float, float] | None = None, codec: str = "auto", bits: int = 8) -> Path:
    """Write ``frames`` to ``path`` in the container its extension names, in ``codec`` (H.264 by
    default, VP9 for WebM; ProRes 422 HQ or lossless FFV1: :data:`CODECS`) with
    every audio track of ``audio_from`` (a VideoInfo or a path), each copied where the container
    holds its codec, else re-encoded; atomic, and verified before it replaces anything.

    ``timestamps`` (seconds from the file's start, one per frame; a VideoInfo's): a variable-rate
    output with exactly that timing; None: frame i at i / ``fps``. ``audio_window``: ``(start,
    duration)`` seconds of the source's audio to keep (a range of the video). ``bits``: 16 sends
    the frames (uint8 or uint16) to ffmpeg at 16 bits per channel, for FFV1's 16-bit RGB and
    ProRes's 10 bits; 8 at 8. Raises
    :class:`StorageError` for a full disk, :class:`InputError` for any other ffmpeg failure; an
    old ``path`` is then untouched.
    """
    path = check_output_suffix(check_writable_output(path), codec)
    codec = resolve_codec(path, codec)
    fps = _rate(fps)
    muxer = MUXERS[path.suffix.lower()]
    source, _ = _audio_source(audio_from)
    audio = plan_audio(audio_from, path)
    args = ["-v", "error", "-y", *_raw_input(timestamps), *_audio_args(source, audio, audio_window)]
    args += ["-fps_mode", "passthrough", "-enc_time_base", "demux", *_video_args(codec, crf, bits, output_color(audio_from if isinstance(audio_from, VideoInfo)
                                                                   else None))]
    if muxer in ("mp4", "mov"):
        args += ["-movflags", "+faststart"]

    def check(temp: Path, sent: int) -> str | None:
        packets, tracks, written, complaint = _written(temp)
        if (packets, tracks, written) != (sent, len(audio), codec):  # our codec names are ffmpeg's stream names
            return (f"the written file holds {packets} frames ({written}) and {tracks} audio tracks, "
                    f"not {sent} ({codec}) and {len(audio)} ({complaint})")
        return None

    _write(frames, path, [*args, "-f", muxer], width, height, fps, timestamps, bits, check)
    return path


def _write(frames: Iterable[np.ndarray], path: Path, args: list[str], width: int, height: int, fps: Fraction,
           timestamps: Sequence[float] | None, bits: int, check: Callable[[Path, int], str | None]) -> int:
    """Feed ``frames`` to ffmpeg (``args``: everything but the output file) writing ``path``:
    atomic, and ``check(temp, frames sent)`` — what is wrong with the file, or None — before it
    replaces anything (:func:`_fail` otherwise). Returns the frames sent."""
    with atomic_path(path) as temp:
        with _Process([*args, str(temp)], stdin=subprocess.PIPE) as ffmpeg:
            given, sent = _feed(ffmpeg, frames, width, height, fps, timestamps, bits)
            code = ffmpeg.wait()
            failure = ffmpeg.complaint() if code != 0 else None
        if given == 0:
            raise InputError(f"nothing to write to {path}: no frames were given")
        if failure is None:
            failure = check(temp, sent)
        if failure is not None:
            _fail(path, failure, ffmpeg.tail)
    return sent


def _fail(path: Path, failure: str, tail) -> None:
    """Raise what stopped ffmpeg writing ``path``: :class:`StorageError` for a full disk (its
    last lines say so), else :class:`InputError`."""
    for line in tail:
        for words, number in _STORAGE_FAILURES.items():
            if words.lower() in line.lower():
                raise StorageError(f"{storage_message(path, number)} (ffmpeg: {line})")
    raise InputError(f"ffmpeg could not write {path} ({failure}); the previous file, if any, is unchanged")


def _audio_args(source: str | None, audio: tuple[str, ...], window: tuple[float, float] | None) -> list[str]:
    """ffmpeg's arguments that add every audio track of ``source`` (``window``: a stretch of it)
    to the video of input 0, each copied or re-encoded as plan_audio says; none without audio."""
    if not audio:
        return []
    args = ["-ss", f"{window[0]:.6f}", "-t", f"{window[1]:.6f}"] if window is not None else []
    args += ["-i", source, "-map", "0:v:0", "-map", "1:a"]
    for track, audio_codec in enumerate(audio):
        args += [f"-c:a:{track}", audio_codec]
    return args


def _raw_input(timestamps: Sequence[float] | None) -> list[str]:
    """ffmpeg's arguments for the frames _feed sends (the first timestamp: ffmpeg would start
    the video at zero)."""
    inputs = ["-c:v", "rawvideo", "-f", "ivf", "-i", "pipe:0"]
    return ["-itsoffset", f"{timestamps[0]:.6f}", *inputs] if timestamps else inputs


def _rate(fps) -> Fraction:
    fps = Fraction(fps) if isinstance(fps, (int, Fraction)) else exact_rate(float(fps))
    if fps <= 0 or fps.numerator >= 1 << 32 or fps.denominator >= 1 << 32:
        raise ValueError(f"encode needs a positive frame rate that fits a 32-bit fraction, not {fps}")
    return fps


# ---------------------------------------------------------------- an output in parts
PART_SUFFIX = ".nut"  # a span of an output encoded alone: NUT carries any codec, every pts and dts exactly
PART_VERSION = 1  # how encode_part writes a part: a change of its arguments changes this (parts' keys)


@functools.lru_cache(maxsize=None)
def ffmpeg_build() -> str:
    """Which ffmpeg encodes here (the first line of ``ffmpeg -version``): part of a part's key."""
    done = subprocess.run([_ffmpeg(), "-version"], capture_output=True, text=True, errors="replace",
                          stdin=subprocess.DEVNULL)
    return (done.stdout.splitlines() or ["unknown"])[0].strip()


def encode_part(frames: Iterable[np.ndarray], path, width: int, height: int, fps, timestamps=None,
                codec: str = "h264", crf: int = 18, bits: int = 8, color: str | None = None) -> tuple[int, str]:
    """A span of an output encoded alone, for :func:`join`: the codec settings :func:`encode`
    uses (``color``: the source's matrix, output_color), on one thread (a span's task holds one
    CPU; and one thread makes x264's bytes depend on the frames alone, wherever it runs).
    ``timestamps``: the frames' times (a variable rate), else frame i at i / ``fps``; the part
    starts at zero either way (join places it). Atomic; verified: ``(frames written, checksum of its stream header)`` — the parts of one
    output must share that header, which join's stream copy keeps from the first."""
    path, fps = Path(path), _rate(fps)
    codec = "h264" if codec == "auto" else codec
    # From zero, whatever its times: join places each part at its start (a part's own start
    # time is not what every demuxer reports for a part of a frame or two).
    args = ["-v", "error", "-y", *_raw_input(None), "-fps_mode", "passthrough", "-enc_time_base", "demux",
            *_video_args(codec, crf, bits, color), "-threads", "1"]
    header = []

    def check(temp: Path, sent: int) -> str | None:
        back = _read_back(temp)
        header.append(back.header)
        return f"the written part holds {len(back.times)} frames, not {sent}" if len(back.times) != sent else None

    sent = _write(frames, path, [*args, "-f", "nut"], width, height, fps, timestamps, bits, check)
    return sent, header[0]


def join(parts: Sequence[tuple[Path, float]], end: float, frames: int, path, fps,
         timestamps: Sequence[float] | None = None, audio_from=None, audio_window: tuple[float, float] | None = None,
         codec: str = "auto") -> Path:
    """The video ``path`` of ``frames`` frames from ``parts`` (:func:`encode_part`'s files,
    each with the time its first frame shows, in seconds from the first part's; ``end``: when
    the last frame ends): a stream copy, with every audio track of ``audio_from`` as
    :func:`encode` writes them. The frames are at ``timestamps`` (a variable rate: as
    :func:`encode` was given them), else at i / ``fps``. Atomic; verified before it replaces
    anything: the frame count, the codec, the audio tracks and every frame's time (within a
    millisecond)."""
    path = check_output_suffix(check_writable_output(path), codec)
    codec, fps = resolve_codec(path, codec), _rate(fps)
    muxer = MUXERS[path.suffix.lower()]
    source, _ = _audio_source(audio_from)
    audio = plan_audio(audio_from, path)
    with tempfile.TemporaryDirectory(prefix="ray-style-join-") as work:
        listing = Path(work) / "parts.ffconcat"
        # Each part lasts until the next starts, in whole microseconds of the absolute times
        # (ffmpeg's clock for concat): no rounding adds up over thousands of parts.
        starts = [round(start * 1_000_000) for _, start in parts] + [round(end * 1_000_000)]
        lines = ["ffconcat version 1.0"]
        for (part, _), start, stop in zip(parts, starts, starts[1:]):
            quoted = str(Path(part).resolve()).replace("'", "'\\''")
            lines += [f"file '{quoted}'", f"duration {stop - start}us"]
        listing.write_text("\n".join(lines) + "\n")
        offset = ["-itsoffset", f"{timestamps[0]:.6f}"] if timestamps else []
        args = ["-v", "error", "-y", *offset, "-f", "concat", "-safe", "0", "-i", str(listing),
                *(_audio_args(source, audio, audio_window) or ["-map", "0:v:0"]), "-c:v", "copy"]
        if muxer in ("mp4", "mov"):
            args += ["-movflags", "+faststart"]
        with atomic_path(path) as temp:
            with _Process([*args, "-f", muxer, str(temp)]) as ffmpeg:
                code = ffmpeg.wait()
                failure = ffmpeg.complaint() if code != 0 else None
            if failure is None:
                failure = _check_joined(temp, frames, timestamps, fps, len(audio), codec)
            if failure is not None:
                _fail(path, failure, ffmpeg.tail)
    return path


def _check_joined(path: Path, frames: int, timestamps, fps: Fraction, tracks: int, codec: str) -> str | None:
    """What is wrong with a joined file, or None: its frames, codec, audio tracks and times."""
    back = _read_back(path)  # one read of the file for all of it
    times = back.times
    expected = list(timestamps) if timestamps else [float(i / fps) for i in range(frames)]
    if len(expected) != frames:
        return f"{len(expected)} timestamps for {frames} frames"
    packets = len(times) if back.ok else 0
    if (packets, back.audio, back.codec) != (len(expected), tracks, codec):
        return (f"the joined file holds {packets} frames ({back.codec}) and {back.audio} audio tracks, "
                f"not {len(expected)} ({codec}) and {tracks} ({back.complaint})")
    wrong = next((i for i, (t, e) in enumerate(zip(times, expected)) if t is None or abs(t - e) > 1e-3), None)
    if len(times) != len(expected) or wrong is not None:
        at = f"frame {wrong} at {times[wrong]} s, not {expected[wrong]:.6f} s" if wrong is not None else \
            f"{len(times)} packet times"
        return f"the joined file's timing is not the frames' ({at})"
    return None


__all__ = ["VideoInfo", "probe", "frame_size", "decode", "decode_at", "encode", "encode_part", "join", "PART_SUFFIX", "exact_rate", "check_output_suffix",
           "plan_audio", "encoders", "resolve_codec", "probe_sequence", "OUTPUT_SUFFIXES", "CODECS", "MAX_PIXELS"]
