"""The output encoded in spans and joined by a stream copy (ray_style.spans, video.encode_part
and video.join): the joined file has the timing, audio and frames one encode gives; a join
that does not add up replaces nothing. No Ray here: test_workers.py runs spans on a cluster."""
import dataclasses
import re
import subprocess
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest

from ray_style import encoder, spans, store, video
from ray_style.codec import digest, png_bytes
from ray_style.errors import InputError
from ray_style.inputs import InputDamaged, Stored, for_the_driver
from ray_style.job import PARTS
from tests.conftest import DATA


def _times(path, selector: str) -> list[float]:
    """Each packet's time of ``selector`` (``0:a:0``…), read without decoding."""
    text = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(path), "-map", selector, "-c",
                           "copy", "-f", "framecrc", "-"], capture_output=True, text=True).stdout
    base = re.search(r"#tb 0: (\d+)/(\d+)", text)
    fields = [line.split(",") for line in text.splitlines() if line and line[0] != "#"]
    return sorted(int(f[2]) * int(base.group(1)) / int(base.group(2)) for f in fields)


def _output(info, path, size, span=None, codec="auto") -> encoder.Output:
    return encoder.Output(str(path), info, size, span or (0, info.frames), info.frames, 18, codec)


def _joined(output: encoder.Output, frames, work: Path, path: Path) -> Path:
    """``output`` encoded in spans (spans.bounds) by encode_part, then joined."""
    timestamps, _, _ = encoder.timing(output)
    first = output.span[0]
    codec = video.resolve_codec(output.path, output.codec)
    parts = []
    for start, end in spans.bounds(output.span):
        part = work / f"{start}{video.PART_SUFFIX}"
        count, _ = video.encode_part(iter(frames[start:end]), part, *output.size, output.info.fps,
                                     timestamps[start - first:end - first] if timestamps else None, codec,
                                     bits=output.bits, color=video.output_color(output.info))
        assert count == end - start
        parts.append((part, start))
    return spans.join(output, parts, path)


@pytest.mark.parametrize("name,suffix,codec", [
    ("vfr_12f.mp4", ".mp4", "auto"),  # variable rate, AAC, H.264 with B-frames
    ("vfr_12f.mp4", ".mkv", "ffv1"),  # lossless: the pixels come back exactly
    ("two_audio_12f.mov", ".mov", "prores"),  # two audio tracks (one µ-law)
    ("bikes_cut.mp4", ".mkv", "auto"),  # constant rate, no audio
    ("bunny_12f.mp4", ".webm", "auto"),  # VP9, the audio re-encoded to Opus
])
def test_parts_joined_keep_every_timestamp_the_audio_and_the_frames(tmp_path, monkeypatch, name, suffix, codec):
    """Spans of 5 frames (a part of 1 or 2 frames at the end), each encoded alone, joined: the
    frame count, every frame's time, every audio track and its packets are one encode's; FFV1
    and ProRes (intra-only) decode to one encode's pixels exactly."""
    monkeypatch.setattr(spans, "SPAN", 5)
    info = video.probe(DATA / name)
    size = video.frame_size(info, 32)
    frames = list(video.decode(info, *size))
    whole = encoder.encode(_output(info, tmp_path / f"whole{suffix}", size, codec=codec), lambda f: frames[f])
    joined = _joined(_output(info, tmp_path / f"joined{suffix}", size, codec=codec), frames, tmp_path,
                     tmp_path / f"joined{suffix}")
    one, two = video.probe(whole), video.probe(joined)
    assert len(spans.bounds((0, info.frames))) >= 3
    assert (two.frames, two.fps, two.audio_codecs) == (one.frames, one.fps, one.audio_codecs) == \
        (info.frames, info.fps, two.audio_codecs)
    assert _times(joined, "0:v:0") == pytest.approx(_times(whole, "0:v:0"), abs=1e-6)
    for track in range(len(info.audio_codecs)):
        assert _times(joined, f"0:a:{track}") == pytest.approx(_times(whole, f"0:a:{track}"), abs=0.002)
    back = list(video.decode(two, *size))
    if codec in ("ffv1", "prores"):
        assert all((a == b).all() for a, b in zip(back, video.decode(one, *size)))
    if codec == "ffv1":
        assert all((a == b).all() for a, b in zip(back, frames))
    else:
        assert max(np.abs(a.astype(int) - b).mean() for a, b in zip(back, frames)) < 12


def test_sixteen_bit_parts_join_to_one_encodes_frames(tmp_path, monkeypatch):
    """A 16-bit FFV1 master (``--bit-depth 16``) in spans: every decoded frame of the joined file
    is one encode's, to the bit (framemd5 of the 16-bit RGB)."""
    monkeypatch.setattr(spans, "SPAN", 5)
    info = video.probe(DATA / "vfr_12f.mp4")
    size = video.frame_size(info, 32)
    frames = [frame.astype(np.uint16) * 257 + np.uint16(7) for frame in video.decode(info, *size)]
    output = dataclasses.replace(_output(info, tmp_path / "one.mkv", size, codec="ffv1"), bits=16)
    whole = encoder.encode(output, lambda f: frames[f])
    joined = _joined(dataclasses.replace(output, path=str(tmp_path / "joined.mkv")), frames, tmp_path,
                     tmp_path / "joined.mkv")

    def md5s(path):
        text = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(path), "-map", "0:v",
                               "-f", "framemd5", "-"], capture_output=True, text=True).stdout
        return [line.split(",")[-1].strip() for line in text.splitlines() if line and line[0] != "#"]

    assert "gbrp16le" in subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", str(joined)],
                                        capture_output=True, text=True).stderr
    assert len(md5s(joined)) == 12 and md5s(joined) == md5s(whole)


@pytest.mark.parametrize("name", ["vfr_12f.mp4", "bunny_12f.mp4"])
def test_a_range_joined_from_parts_is_the_range_one_encode_gives(tmp_path, monkeypatch, name):
    """``--frames 3:10``: spans cut at the whole film's multiples of SPAN (3-4, 5-9), the range's
    timing from zero and its stretch of the audio, as one encode of the range writes them."""
    monkeypatch.setattr(spans, "SPAN", 5)
    info = video.probe(DATA / name)
    size = video.frame_size(info, 32)
    frames = list(video.decode(info, *size))
    assert spans.bounds((3, 10)) == [(3, 5), (5, 10)]
    whole = encoder.encode(_output(info, tmp_path / "range.mp4", size, (3, 10)), lambda f: frames[f])
    joined = _joined(_output(info, tmp_path / "parts.mp4", size, (3, 10)), frames, tmp_path, tmp_path / "parts.mp4")
    one, two = video.probe(whole), video.probe(joined)
    assert two.frames == one.frames == 7 and two.audio_codecs == one.audio_codecs
    assert _times(joined, "0:v:0") == pytest.approx(_times(whole, "0:v:0"), abs=1e-6)
    assert _times(joined, "0:a:0") == pytest.approx(_times(whole, "0:a:0"), abs=0.002)


def test_the_sources_colour_matrix_reaches_the_joined_output(tmp_path, monkeypatch):
    monkeypatch.setattr(spans, "SPAN", 5)
    info = dataclasses.replace(video.probe(DATA / "bunny_12f.mp4"), color="smpte170m")
    size = video.frame_size(info, 32)
    frames = list(video.decode(info, *size))
    joined = _joined(_output(info, tmp_path / "out.mkv", size), frames, tmp_path, tmp_path / "out.mkv")
    assert video.probe(joined).color == "smpte170m"


def test_a_join_that_does_not_add_up_replaces_nothing(tmp_path, monkeypatch):
    """A part missing, or parts placed at the wrong times: one line, the old output untouched,
    no temp file left."""
    monkeypatch.setattr(spans, "SPAN", 5)
    info = video.probe(DATA / "bunny_12f.mp4")
    size = video.frame_size(info, 32)
    frames = list(video.decode(info, *size))
    out = tmp_path / "out" / "out.mp4"
    out.parent.mkdir()
    out.write_bytes(b"the previous output")
    output = _output(info, out, size)
    parts = []
    for start, end in spans.bounds(output.span):
        part = tmp_path / f"{start}.nut"
        video.encode_part(iter(frames[start:end]), part, *size, info.fps)
        parts.append((part, start))
    for wrong in ([parts[0], parts[2]],  # frames 5-9 missing
                  [(parts[0][0], 0), (parts[1][0], 3), (parts[2][0], 10)]):  # starts that misplace frames
        with pytest.raises(InputError) as refused:
            spans.join(output, wrong, out)
        assert "\n" not in str(refused.value) and "previous file, if any, is unchanged" in str(refused.value)
        assert out.read_bytes() == b"the previous output" and [p.name for p in out.parent.iterdir()] == ["out.mp4"]
    spans.join(output, parts, out)
    assert video.probe(out).frames == 12


def _a_job_store(tmp_path, frames) -> tuple[str, tuple[str, str], list[Stored]]:
    """A folder store holding ``frames`` as PNGs, its reach token, and each frame's Stored."""
    place = store.opened(str(tmp_path / "job"))
    place.write("reach-token", b"token-value")
    images = []
    for number, frame in enumerate(frames):
        data = png_bytes(frame)
        place.write(f"frames/{number}.png", data)
        images.append(Stored(((f"frames/{number}.png", digest(data), 1.0),)))
    return str(tmp_path / "job"), ("reach-token", "token-value"), images


def test_a_span_task_reads_its_frames_from_the_store_and_stores_its_part(tmp_path):
    """spans.encode: the frames read and checked from the job's store, a seam's two renders
    blended there, the part stored under its key with its checksum; a store it does not reach
    (another token) is Unreachable, a frame changed since is InputDamaged."""
    info = video.probe(DATA / "vfr_12f.mp4")
    size = video.frame_size(info, 32)
    frames = list(video.decode(info, *size))
    url, token, images = _a_job_store(tmp_path, frames)
    output = _output(info, tmp_path / "out.mp4", size)
    seam = Stored((images[3].parts[0][:2] + (0.5,), images[4].parts[0][:2] + (0.5,)))
    span = spans.make(output, 2, 6, (images[2], seam, images[4], images[5]), url, token)
    assert span.key.startswith(f"{PARTS}/0000002-0000006-") and span.key.endswith(".nut")
    record = spans.encode(span)
    data = store.opened(url).read(span.key)
    assert record == {"sha256": digest(data), "bytes": len(data), "frames": 4, "header": record["header"]}
    part = tmp_path / "part.nut"
    part.write_bytes(data)
    assert len(_times(part, "0:v:0")) == 4
    # The key names what the bytes depend on: another frame, another codec, another CRF.
    other = spans.make(output, 2, 6, (images[2], images[3], images[4], images[5]), url, token)
    assert other.key != span.key
    assert spans.make(dataclasses.replace(output, crf=20), 2, 6, span.images, url, token).key != span.key
    assert spans.make(output, 2, 6, span.images, url, token).key == span.key
    with pytest.raises(spans.Unreachable):
        spans.encode(dataclasses.replace(span, token=(token[0], "another store's")))
    store.opened(url).write("frames/5.png", png_bytes(frames[0]))
    with pytest.raises(InputDamaged) as damaged:
        spans.encode(span)
    assert damaged.value.key == "frames/5.png"


def test_a_span_task_without_room_for_its_part_hands_it_to_the_driver(tmp_path, monkeypatch):
    """A node whose temp folder is full cannot encode: Unreachable (the driver encodes the span);
    the driver's own full disk is its error (StorageError: one line, the job stops)."""
    from ray_style.errors import StorageError

    info = video.probe(DATA / "bunny_12f.mp4")
    size = video.frame_size(info, 32)
    url, token, images = _a_job_store(tmp_path, list(video.decode(info, *size))[:3])
    span = spans.make(_output(info, tmp_path / "out.mp4", size), 0, 3, tuple(images), url, token)

    def full(*args, **kwargs):
        raise StorageError("no space left on device: /tmp")

    monkeypatch.setattr(video, "encode_part", full)
    with pytest.raises(spans.Unreachable, match="no room to encode here"):
        spans.encode(span)
    assert for_the_driver(spans.Unreachable("x")) and not for_the_driver(StorageError("disk full"))
    with pytest.raises(StorageError):
        spans.encode_here(span)
