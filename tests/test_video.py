from fractions import Fraction

import numpy as np
import pytest

from ray_style import video
from ray_style.errors import InputError
from tests.conftest import DATA, SAMPLES, audio_only, frameless


def test_probe_counts_frames_and_sees_audio():
    info = video.probe(DATA / "bunny_12f.mp4")
    assert (info.frames, info.fps, info.width, info.height, info.audio_codec) == (12, Fraction(25), 64, 36, "aac")
    assert video.frame_size(info, 48) == (48, 28)  # even, aspect kept
    assert video.exact_rate(29.97) == Fraction(30000, 1001) and video.exact_rate(23.976) == Fraction(24000, 1001)


def test_decode_streams_scaled_frames_and_encode_keeps_rate_and_audio(tmp_path):
    info = video.probe(DATA / "bunny_12f.mp4")
    frames = list(video.decode(info, 32, 18))
    assert len(frames) == 12 and frames[0].shape == (18, 32, 3) and frames[0].dtype == np.uint8
    out = video.encode(frames, tmp_path / "out.mp4", 32, 18, Fraction(30000, 1001), info.path)
    again = video.probe(out)
    assert (again.frames, again.fps, again.audio_codec, again.width) == (12, Fraction(30000, 1001), "aac", 32)
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]  # no temp file left behind


def test_encode_failure_leaves_no_file(tmp_path):
    def broken():
        yield np.zeros((18, 32, 3), np.uint8)
        raise RuntimeError("renderer crashed")

    with pytest.raises(RuntimeError):
        video.encode(broken(), tmp_path / "out.mp4", 32, 18, Fraction(25))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("case,message", [
    ("missing", "video not found"),
    ("text", "not a video ffmpeg can read"),
    ("image", "still image"),
    ("audio", "audio-only"),
    ("empty", "no frame could be decoded"),
])
def test_bad_inputs_are_one_line_errors(tmp_path, case, message):
    path = tmp_path / f"{case}.mp4"
    if case == "text":
        path.write_text("hello\n")
    elif case == "image":
        path = SAMPLES / "chelsea.png"
    elif case == "audio":
        path = audio_only(tmp_path)
    elif case == "empty":
        path = frameless(tmp_path)
    with pytest.raises(InputError, match=message) as error:
        video.probe(path)
    assert "\n" not in str(error.value)
