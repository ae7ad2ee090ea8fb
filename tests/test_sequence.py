"""Image sequences in and out: numbering, 16-bit and float formats, jobs from and to sequences."""
import dataclasses
import os
import signal
import subprocess
import sys
from fractions import Fraction

import numpy as np
import pytest

from ray_style import sequence, video
from ray_style.cli import main
from ray_style.errors import InputError
from ray_style.runner import stylize_video
from tests.conftest import DATA, SAMPLES
from tests.test_runner import LOCAL, TINY

CLIP = DATA / "bunny_12f.mp4"
STYLE = SAMPLES / "starry_night.jpg"


def _frames(count=6, width=40, height=24):
    """Real footage at 16 bits: the clip's frames × 257 plus a seeded low-bit texture, so that
    every frame holds far more than 256 levels per channel."""
    info = video.probe(CLIP)
    out = []
    for index, frame in zip(range(count), video.decode(info, width, height)):
        texture = np.random.default_rng(index).integers(0, 256, frame.shape).astype(np.uint16)
        out.append(frame.astype(np.uint16) * 257 // 2 + texture * 64)
    return out


def _write_sequence(folder, pattern="shot_%04d.png", first=101, frames=None):
    folder.mkdir(parents=True, exist_ok=True)
    frames = frames if frames is not None else _frames()
    for index, frame in enumerate(frames):
        sequence.write(folder / (pattern % (first + index)), frame)
    return folder / pattern


# ---------------------------------------------------------------- numbering
def test_a_pattern_a_hash_pattern_and_a_folder_name_the_same_frames(tmp_path):
    _write_sequence(tmp_path)
    (tmp_path / "notes.txt").write_text("not a frame")
    for spelled in (tmp_path / "shot_%04d.png", tmp_path / "shot_####.png", tmp_path):
        found = sequence.find(spelled)
        assert found.numbers == tuple(range(101, 107)) and found.pattern == str(tmp_path / "shot_%04d.png")


def test_gaps_duplicates_and_mixed_folders_are_refused_in_one_line(tmp_path):
    pattern = _write_sequence(tmp_path / "gap")
    os.remove(str(pattern) % 103)
    with pytest.raises(InputError, match=r"miss 103"):
        sequence.find(pattern)
    twice = tmp_path / "twice"
    _write_sequence(twice, "f_%d.png", first=1, frames=_frames(2))
    (twice / "f_01.png").write_bytes((twice / "f_1.png").read_bytes())
    with pytest.raises(InputError, match=r"frame 1 is there twice \(f_01.png, f_1.png\)"):
        sequence.find(twice)
    mixed = tmp_path / "mixed"
    _write_sequence(mixed, "a_%03d.png", frames=_frames(2))
    _write_sequence(mixed, "b_%03d.png", frames=_frames(2))
    with pytest.raises(InputError, match="holds 2 sequences"):
        sequence.find(mixed)
    with pytest.raises(InputError, match="no frames match"):
        sequence.find(tmp_path / "none_%04d.png")


# ---------------------------------------------------------------- formats
@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16_bit_frames_round_trip_exactly(tmp_path, suffix):
    frame = _frames(1)[0]
    assert len(np.unique(frame)) > 256
    path = sequence.write(tmp_path / f"f{suffix}", frame)
    back = sequence.read(path)
    assert back.dtype == np.uint16 and np.array_equal(back, frame)
    eight = sequence.read(sequence.write(tmp_path / f"g{suffix}", (frame // 257).astype(np.uint8)))
    assert eight.dtype == np.uint8


def test_exr_is_linear_light_written_back_linear(tmp_path):
    import OpenEXR

    linear = np.random.default_rng(0).random((12, 16, 3)).astype(np.float16)
    with OpenEXR.File({"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage},
                      {"RGB": linear}) as exr:
        exr.write(str(tmp_path / "in.exr"))
    pixels = sequence.read(tmp_path / "in.exr")  # sRGB-encoded for the network, 16 bits
    expected = sequence.srgb_encode(linear.astype(np.float32))
    assert pixels.dtype == np.uint16 and np.abs(pixels / 65535 - expected).max() < 1e-4
    sequence.write(tmp_path / "out.exr", pixels)
    with OpenEXR.File(str(tmp_path / "out.exr")) as exr:
        back = exr.channels()["RGB"].pixels
    assert back.dtype == np.float16 and np.abs(back.astype(np.float32) - linear).max() < 2e-3


def test_grey_alpha_and_float_tiffs_read_as_rgb(tmp_path):
    import tifffile

    tifffile.imwrite(tmp_path / "grey.tif", np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000)
    tifffile.imwrite(tmp_path / "float.tif", np.full((8, 8, 3), 0.5, np.float32), photometric="rgb")
    grey, half = sequence.read(tmp_path / "grey.tif"), sequence.read(tmp_path / "float.tif")
    assert grey.shape == (8, 8, 3) and (grey[..., 0] == grey[..., 2]).all() and grey.max() == 63000
    assert half.dtype == np.uint16 and (half == 32768).all()
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(InputError, match="broken.png") as refused:
        sequence.read(tmp_path / "broken.png")
    assert "\n" not in str(refused.value)


# ---------------------------------------------------------------- jobs
SEQ = dataclasses.replace(TINY, fps="24")


def _levels(path) -> int:
    return max(len(np.unique(sequence.read(path)[..., channel])) for channel in range(3))


def test_a_16_bit_tiff_sequence_comes_back_16_bit_named_by_its_numbers(tmp_path):
    import tifffile

    source = _write_sequence(tmp_path / "in", "plate.%04d.tif")
    (tmp_path / "out").mkdir()
    result = stylize_video(source, [STYLE], tmp_path / "out" / "styled.####.tif", SEQ, weights="random",
                           executor=LOCAL)
    names = sorted(os.listdir(tmp_path / "out"))
    assert [n for n in names if n.endswith(".tif")] == [f"styled.{n:04d}.tif" for n in range(101, 107)]
    assert result.frames == 6 and (tmp_path / "out" / "styled.job").is_dir()
    written = tifffile.imread(tmp_path / "out" / "styled.0103.tif")
    assert written.dtype == np.uint16 and _levels(tmp_path / "out" / "styled.0103.tif") > 256


def test_an_exr_sequence_in_gives_an_exr_sequence_out(tmp_path):
    import OpenEXR

    folder = tmp_path / "exr"
    folder.mkdir()
    for index, frame in enumerate(_frames(4)):
        linear = sequence.srgb_decode(frame / 65535).astype(np.float16)
        with OpenEXR.File({"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage},
                          {"RGB": linear}) as exr:
            exr.write(str(folder / f"beauty.{index + 1:04d}.exr"))
    result = stylize_video(folder, [STYLE], tmp_path / "styled.%04d.exr", SEQ, weights="random", executor=LOCAL)
    assert result.frames == 4
    with OpenEXR.File(str(tmp_path / "styled.0004.exr")) as exr:
        pixels = exr.channels()["RGB"].pixels
    assert pixels.dtype == np.float16 and pixels.shape == (20, 32, 3) and 0 <= pixels.min() and pixels.max() <= 1


def test_a_sequence_with_audio_becomes_prores_at_its_rate(tmp_path):
    source = _write_sequence(tmp_path / "in")
    settings = dataclasses.replace(SEQ, fps="24000/1001", audio=str(CLIP), codec="prores")
    result = stylize_video(source, [STYLE], tmp_path / "out.mov", settings, weights="random", executor=LOCAL)
    info = video.probe(result.output)
    assert info.frames == 6 and info.fps == Fraction(24000, 1001) and info.audio_codecs == ("aac",)
    assert "prores (HQ)" in video._header(str(result.output)) and info.color == "bt709"


def test_a_range_goes_by_the_sequences_own_numbers(tmp_path):
    source = _write_sequence(tmp_path / "in")
    out = tmp_path / "out_%04d.png"
    result = stylize_video(source, [STYLE], out, SEQ, weights="random", executor=LOCAL, frames=(102, 105))
    assert sorted(p.name for p in tmp_path.glob("out_*.png")) == ["out_0102.png", "out_0103.png", "out_0104.png"]
    assert result.frames == 3
    with pytest.raises(InputError, match=r"outside the sequence's frames 101:107"):
        stylize_video(source, [STYLE], out, SEQ, weights="random", executor=LOCAL, frames=(0, 3))


def test_sequence_options_are_one_line_errors(tmp_path, capsys):
    source = _write_sequence(tmp_path / "in", frames=_frames(2))
    base = ["--weights", "random", "--executor", "local", "--size", "32", "--iters", "2"]
    cases = [
        ([str(source), str(STYLE), "-o", str(tmp_path / "o.mp4")], "give its rate with --fps"),
        ([str(CLIP), str(STYLE), "-o", str(tmp_path / "o.mp4"), "--fps", "24"], "--fps is for image sequences"),
        ([str(source), str(STYLE), "-o", str(tmp_path / "o.mp4"), "--fps", "0"], "--fps 0"),
        ([str(source), str(STYLE), "-o", str(tmp_path / "o_%04d.jpg"), "--fps", "24"], "must end in"),
        ([str(source), str(STYLE), "-o", str(tmp_path / "o.mp4"), "--fps", "24", "--audio", str(tmp_path / "no.wav")],
         "--audio"),
    ]
    for args, words in cases:
        assert main(["video", *args, *base]) == 2
        err = capsys.readouterr().err.strip()
        assert words in err and err.count("\n") == 0, err
    assert not list(tmp_path.glob("o*"))


@pytest.mark.slow
def test_a_sequence_job_killed_mid_render_resumes_to_the_same_bytes(tmp_path):
    source = _write_sequence(tmp_path / "in", frames=_frames(8))
    env = {**os.environ, "PYTHONPATH": os.getcwd()}

    def command(name):
        return ["video", str(source), str(STYLE), "-o", str(tmp_path / name / "f_%04d.png"), "--fps", "24",
                "--size", "32", "--iters", "6", "--content-layers", "relu2_1", "--style-layers", "relu1_1,relu2_1",
                "--segment-length", "4", "--overlap", "1", "--weights", "random", "--executor", "local",
                "--threads", "2", "-q"]

    for name in ("whole", "killed"):
        (tmp_path / name).mkdir()
    subprocess.run([sys.executable, "-m", "ray_style.cli", *command("whole")], check=True, env=env, timeout=300)
    victim = subprocess.Popen([sys.executable, "-m", "tests.stopping", "3", *command("killed")], env=env)
    _, status = os.waitpid(victim.pid, os.WUNTRACED)
    assert os.WIFSTOPPED(status), "the job ended before its 3rd frame"
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    subprocess.run([sys.executable, "-m", "ray_style.cli", *command("killed")], check=True, env=env, timeout=300)
    whole = sorted((tmp_path / "whole").glob("f_*.png"))
    assert [p.name for p in whole] == [f"f_{n:04d}.png" for n in range(101, 109)]
    for path in whole:
        assert path.read_bytes() == (tmp_path / "killed" / path.name).read_bytes()
        assert sequence.read(path).dtype == np.uint16
