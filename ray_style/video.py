"""Video in and out through imageio-ffmpeg's bundled ffmpeg (the only module that uses it).

Frames stream as generators of ``(H, W, 3)`` uint8 arrays; nothing holds a whole video.
ffmpeg's own parser decides what is a video, and its complaint reaches the user in one line.
"""
from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from .errors import InputError
from .files import atomic_path, check_writable_output

MAX_PIXELS = 8192 * 8192  # decoded frame size we accept (inputs are untrusted)


@dataclass(frozen=True)
class VideoInfo:
    path: str
    frames: int  # counted by decoding, not fps × duration
    fps: Fraction  # exact where the float is a known NTSC rate (30000/1001 …)
    width: int  # as displayed: after rotation and non-square pixels
    height: int
    rotate: int
    audio_codec: str | None  # None: no audio stream

    @property
    def has_audio(self) -> bool:
        return self.audio_codec is not None


def _ffmpeg() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def exact_rate(fps: float) -> Fraction:
    """ffmpeg's header prints rates rounded (29.97); restore NTSC's exact fractions."""
    for base in (24, 30, 48, 60, 120):
        if abs(fps - base * 1000 / 1001) < 0.006:
            return Fraction(base * 1000, 1001)
    return Fraction(fps).limit_denominator(1001)


def _header(path: Path) -> str:
    result = subprocess.run([_ffmpeg(), "-hide_banner", "-i", str(path)], capture_output=True, text=True,
                            errors="replace", stdin=subprocess.DEVNULL)
    return result.stderr


def probe(path) -> VideoInfo:
    """Everything we need about an input video, or :class:`InputError` saying why it is not one."""
    import imageio_ffmpeg

    path = Path(path)
    if not path.is_file():
        raise InputError(f"video not found: {path}")
    header = _header(path)
    video_line = next((line for line in header.splitlines() if re.search(r"Stream #.*: Video:", line)), None)
    container = re.search(r"Input #0, ([\w,]+), from", header)
    if video_line is None:
        complaint = next((line.strip() for line in header.splitlines() if str(path) in line and "Input #0" not in line),
                         "no video stream")
        kind = "an audio-only file" if re.search(r"Stream #.*: Audio:", header) else "not a video ffmpeg can read"
        raise InputError(f"{path} is {kind} ({complaint}): give a video file such as .mp4, .mov or .mkv")
    if container and re.search(r"_pipe|image2", container.group(1)):
        raise InputError(f"{path} is a still image, not a video: use `ray-style image` for it")
    try:
        reader = imageio_ffmpeg.read_frames(str(path))
        meta = next(reader)
        reader.close()
        frames, _ = imageio_ffmpeg.count_frames_and_secs(str(path))
    except (RuntimeError, OSError, StopIteration) as error:
        raise InputError(f"{path} has a video stream but no frame could be decoded "
                         f"(ffmpeg: {str(error).strip().splitlines()[-1]}): the file is empty or damaged") from None
    if frames < 1:
        raise InputError(f"{path} has a video stream but no frame could be decoded: the file is empty or damaged")
    if not meta.get("fps"):
        raise InputError(f"{path}: ffmpeg reports no frame rate; remux it with a constant rate first")
    width, height = meta["size"]
    sar = re.search(r"\[SAR (\d+):(\d+) DAR", video_line)
    if sar and int(sar.group(1)) and int(sar.group(2)):  # non-square pixels: display width differs
        width = round(width * int(sar.group(1)) / int(sar.group(2)))
    rotate = int(meta.get("rotate") or 0) % 360
    if rotate in (90, 270):
        width, height = height, width
    if width * height > MAX_PIXELS:
        raise InputError(f"{path} is {width}x{height}: larger than we decode ({MAX_PIXELS} pixels)")
    audio = re.search(r"Stream #.*: Audio: (\w+)", header)
    return VideoInfo(str(path), int(frames), exact_rate(float(meta["fps"])), int(width), int(height),
                     rotate, audio.group(1) if audio else None)


def frame_size(info: VideoInfo, size: int | None) -> tuple[int, int]:
    """Output ``(w, h)``: the display aspect kept, long edge ``size`` (or the source's), even."""
    long_edge = size or max(info.width, info.height)
    scale = long_edge / max(info.width, info.height)
    return (max(2, round(info.width * scale / 2) * 2), max(2, round(info.height * scale / 2) * 2))


def decode(info: VideoInfo, width: int, height: int) -> Iterator[np.ndarray]:
    """Stream every frame, scaled to ``width × height`` RGB (ffmpeg applies the rotation)."""
    import logging

    import imageio_ffmpeg

    # imageio-ffmpeg warns that the scaled size differs from the source's: that is the point.
    logging.getLogger("imageio_ffmpeg").setLevel(logging.ERROR)
    reader = imageio_ffmpeg.read_frames(info.path, output_params=["-vf", f"scale={width}:{height}:flags=lanczos"])
    try:
        next(reader)
        for raw in reader:
            yield np.frombuffer(raw, np.uint8).reshape(height, width, 3)
    finally:
        reader.close()


def encode(frames: Iterable[np.ndarray], path, width: int, height: int, fps: Fraction,
           audio_from: str | None = None, crf: int = 18) -> Path:
    """H.264 MP4 of ``frames`` at exactly ``fps``, the source's audio copied; atomic."""
    import imageio_ffmpeg

    path = check_writable_output(path)
    with atomic_path(path, suffix=".mp4") as temp:
        writer = imageio_ffmpeg.write_frames(
            str(temp), (width, height), fps=fps, codec="libx264", pix_fmt_out="yuv420p", quality=None,
            macro_block_size=2, output_params=["-crf", str(crf), "-movflags", "+faststart"],
            audio_path=audio_from, audio_codec="copy" if audio_from else None, ffmpeg_log_level="error")
        writer.send(None)
        try:
            for frame in frames:
                writer.send(np.ascontiguousarray(frame))
        finally:
            writer.close()
    return path


__all__ = ["VideoInfo", "probe", "frame_size", "decode", "encode", "exact_rate"]
