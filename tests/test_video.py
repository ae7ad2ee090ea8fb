import os
import re
import stat
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest

from ray_style import files, video
from ray_style.errors import InputError, StorageError
from tests.conftest import DATA, SAMPLES, audio_only, frameless


def test_probe_counts_frames_and_sees_audio():
    info = video.probe(DATA / "bunny_12f.mp4")
    assert (info.frames, info.fps, info.width, info.height, info.audio_codec) == (12, Fraction(25), 64, 36, "aac")
    assert (info.audio_codecs, info.timestamps, info.expected_frames, info.warnings) == (("aac",), None, 12, ())
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
    assert _ffmpeg_children() == []  # ffmpeg never outlives an error


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


# ---------------------------------------------------------------- media safety

VFR_TIMES = (0.0, 0.04, 0.08, 0.12, 0.16, 0.2, 0.32, 0.4, 0.52, 0.6, 0.72, 0.8)


def _ffmpeg(*args, **kwargs):
    return subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", *args], capture_output=True, text=True,
                          **kwargs)


def _packets(path, selector: str) -> list[tuple[float, float]]:
    """``(start, end)`` seconds of each packet of ``selector`` (e.g. ``0:a:0``), read without decoding."""
    text = _ffmpeg("-v", "error", "-i", str(path), "-map", selector, "-c", "copy", "-f", "framecrc", "-").stdout
    base = Fraction(re.search(r"#tb 0: (\d+/\d+)", text).group(1))
    fields = [line.split(",") for line in text.splitlines() if line and line[0] != "#"]
    return sorted((float(int(f[2]) * base), float((int(f[2]) + int(f[3])) * base)) for f in fields)


def _packet_times(path, selector: str) -> list[float]:
    return [start for start, _ in _packets(path, selector)]


def _ffmpeg_children() -> list[str]:
    """This process's ffmpeg children, from each thread's /proc children list; a thread (or a
    child) that ends while they are read is passed over."""
    tasks = Path("/proc/self/task")
    if not tasks.exists() or not any((t / "children").exists() for t in tasks.iterdir()):
        pytest.skip("cannot list child processes here")
    found = []
    for task in tasks.iterdir():
        try:
            kids = (task / "children").read_text().split()
        except FileNotFoundError:
            continue
        for kid in kids:
            try:
                if b"ffmpeg" in Path(f"/proc/{kid}/cmdline").read_bytes():
                    found.append(kid)
            except FileNotFoundError:
                continue
    return found


def _good_output(folder) -> tuple[Path, bytes]:
    info = video.probe(DATA / "bunny_12f.mp4")
    out = video.encode(video.decode(info, 32, 18), Path(folder) / "out.mp4", 32, 18, info.fps, info)
    return out, out.read_bytes()


def test_probe_reads_every_frames_timestamp_of_variable_rate_video():
    info = video.probe(DATA / "vfr_12f.mp4")  # the repro: 25 fps for 5 frames, then about 10
    assert info.frames == 12 and info.timestamps == VFR_TIMES
    assert info.expected_frames == 12 and info.warnings == ()
    assert 13 <= info.fps <= 17  # the average rate
    frames = list(video.decode(info, 32, 18))
    assert len(frames) == 12  # one per source frame: none duplicated to fill a constant rate
    assert video.probe(DATA / "bunny_12f.mp4").timestamps is None  # constant rate


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_variable_rate_output_keeps_the_inputs_timing_and_audio(tmp_path, suffix):
    info = video.probe(DATA / "vfr_12f.mp4")
    out = video.encode(video.decode(info, 32, 18), tmp_path / f"out{suffix}", 32, 18, info.fps, info,
                       timestamps=info.timestamps)
    again = video.probe(out)
    assert again.frames == 12 and again.audio_codecs == ("aac",)
    assert np.abs(np.array(again.timestamps) - np.array(VFR_TIMES)).max() < 0.002  # far within one frame
    # Audio is copied packet for packet at the same times: in sync with the frames.
    assert _packet_times(out, "0:a:0") == pytest.approx(_packet_times(info.path, "0:a:0"), abs=0.002)


def test_a_video_that_starts_after_its_audio_keeps_the_offset(tmp_path):
    late = tmp_path / "late.mp4"
    clip = str(DATA / "bunny_12f.mp4")
    _ffmpeg("-v", "error", "-itsoffset", "0.2", "-i", clip, "-i", clip, "-map", "0:v", "-map", "1:a", "-c", "copy",
            str(late), check=True)
    info = video.probe(late)
    assert info.timestamps[0] == pytest.approx(0.2) and info.frames == 12
    out = video.encode(video.decode(info, 32, 18), tmp_path / "out.mp4", 32, 18, info.fps, info,
                       timestamps=info.timestamps)
    assert video.probe(out).timestamps == pytest.approx(info.timestamps, abs=0.002)


def test_truncated_input_warns_with_frames_decoded_and_expected():
    info = video.probe(DATA / "truncated_12f.mp4")  # bunny_12f with its moov first, cut at 5000 bytes
    assert (info.frames, info.expected_frames) == (5, 12)
    assert len(info.warnings) == 1 and "decoded 5 frames" in info.warnings[0] and "promises 12" in info.warnings[0]
    assert "\n" not in info.warnings[0]


def test_mulaw_audio_is_reencoded_to_aac_for_mp4(tmp_path):
    # The repro: `-c:v copy -c:a pcm_mulaw mulaw.mov`, stylized to m.mp4, gave a 0-byte file.
    info = video.probe(DATA / "mulaw_12f.mov")
    assert video.plan_audio(info, tmp_path / "m.mp4") == ("aac",)
    assert video.plan_audio(info, tmp_path / "m.mov") == ("copy",)  # QuickTime holds mu-law as it is
    out = video.encode(video.decode(info, 32, 18), tmp_path / "m.mp4", 32, 18, info.fps, info)
    again = video.probe(out)  # decodes every frame: playable
    assert (again.frames, again.audio_codecs) == (12, ("aac",)) and out.stat().st_size > 1000


@pytest.mark.parametrize("suffix,codecs", [
    (".mp4", ("aac", "aac")),  # AAC copied, mu-law re-encoded
    (".mkv", ("aac", "pcm_mulaw")),  # Matroska holds both as they are
    (".mov", ("aac", "pcm_mulaw")),
])
def test_every_audio_track_is_kept(tmp_path, suffix, codecs):
    info = video.probe(DATA / "two_audio_12f.mov")
    assert info.audio_codecs == ("aac", "pcm_mulaw") and info.audio_codec == "aac"
    out = video.encode(video.decode(info, 32, 18), tmp_path / f"out{suffix}", 32, 18, info.fps, info)
    assert video.probe(out).audio_codecs == codecs
    # The whole second track, to within one AAC frame (1024 samples at its 8 kHz) where re-encoded.
    assert _packets(out, "0:a:1")[-1][1] == pytest.approx(_packets(info.path, "0:a:1")[-1][1], abs=0.13)


@pytest.mark.parametrize("suffix,magic,codec", [
    (".mp4", b"ftypisom", "h264"),
    (".m4v", b"ftypisom", "h264"),
    (".mov", b"ftypqt  ", "h264"),
    (".mkv", b"matroska", "h264"),
])
def test_the_extension_names_the_container(tmp_path, suffix, magic, codec):
    info = video.probe(DATA / "bunny_12f.mp4")
    out = video.encode(video.decode(info, 32, 18), tmp_path / f"out{suffix}", 32, 18, info.fps, info)
    assert magic in out.read_bytes()[:64]
    assert f"Video: {codec}" in _ffmpeg("-i", str(out)).stderr
    assert video.probe(out).frames == 12


def test_webm_is_vp9_with_opus_or_refused(tmp_path, monkeypatch):
    info = video.probe(DATA / "two_audio_12f.mov")
    if "libvpx-vp9" in video.encoders():
        out = video.encode(video.decode(info, 32, 18), tmp_path / "out.webm", 32, 18, info.fps, info)
        assert b"webm" in out.read_bytes()[:64] and "Video: vp9" in _ffmpeg("-i", str(out)).stderr
        assert video.probe(out).audio_codecs in (("opus", "opus"), ("vorbis", "vorbis"))
    monkeypatch.setattr(video, "encoders", lambda: frozenset({"libx264", "aac"}))
    with pytest.raises(InputError, match="no VP9"):
        video.check_output_suffix(tmp_path / "x.webm")


def test_unknown_output_extension_is_refused_up_front(tmp_path):
    assert set(video.OUTPUT_SUFFIXES) == {".mp4", ".m4v", ".mov", ".mkv", ".webm"}
    assert video.check_output_suffix(tmp_path / "X.MKV") == tmp_path / "X.MKV"
    with pytest.raises(InputError, match=r"must end in .mp4") as error:
        video.check_output_suffix(tmp_path / "x.avi")
    assert "\n" not in str(error.value)


def _full_temp(final, suffix):
    """A temp beside the output that is a link to /dev/full: every write fails with ENOSPC."""
    temp = final.with_name(f".{final.name}.full{suffix}")
    temp.symlink_to("/dev/full")
    return temp


def test_disk_full_while_encoding_keeps_the_previous_output(tmp_path, monkeypatch):
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full on this system")
    out, before = _good_output(tmp_path)
    info = video.probe(DATA / "bunny_12f.mp4")
    monkeypatch.setattr(files, "_create_temp", _full_temp)
    with pytest.raises(StorageError, match="free space and re-run") as error:
        video.encode(video.decode(info, 32, 18), out, 32, 18, info.fps, info)
    assert "No space left on device" in str(error.value) and "\n" not in str(error.value)
    assert out.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["out.mp4"]
    assert _ffmpeg_children() == []


@pytest.fixture()
def small_tmpfs(tmp_path):
    """A 200 KiB tmpfs: a real full disk. Needs root (mount); skipped elsewhere."""
    folder = tmp_path / "small"
    folder.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root; the /dev/full variant covers this case")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200k", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_disk_full_on_a_real_small_tmpfs_keeps_the_previous_output(small_tmpfs):
    out, before = _good_output(small_tmpfs)
    noise = np.random.default_rng(0)
    frames = (noise.integers(0, 256, (96, 96, 3), dtype=np.uint8) for _ in range(40))  # far more than 200 KiB
    with pytest.raises(StorageError, match="No space left on device"):
        video.encode(frames, out, 96, 96, Fraction(25), DATA / "bunny_12f.mp4", crf=0)
    assert out.read_bytes() == before and [p.name for p in small_tmpfs.iterdir()] == ["out.mp4"]


def test_ffmpeg_failure_is_one_line_and_keeps_the_previous_output(tmp_path, monkeypatch):
    out, before = _good_output(tmp_path)
    info = video.probe(DATA / "bunny_12f.mp4")
    monkeypatch.setattr(video, "_video_args", lambda *args: ["-c:v", "no_such_encoder"])
    with pytest.raises(InputError, match="ffmpeg could not write") as error:
        video.encode(video.decode(info, 32, 18), out, 32, 18, info.fps, info)
    assert "\n" not in str(error.value)
    assert out.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["out.mp4"]
    assert _ffmpeg_children() == []


def test_a_failed_encode_closes_the_decoder_it_was_fed(tmp_path, monkeypatch):
    """The frames come from a decode whose ffmpeg is blocked on a full pipe (50 frames at 320 px
    are far more than a pipe holds) and the caller keeps the traceback, which holds the generator:
    encode itself must close it, or that ffmpeg lives on (a CI run caught it doing so)."""
    info = video.probe(SAMPLES / "bigbuckbunny_2s.mp4")
    monkeypatch.setattr(video, "_video_args", lambda *args: ["-c:v", "no_such_encoder"])
    frames = video.decode(info, 320, 180)
    with pytest.raises(InputError, match="ffmpeg could not write") as error:
        video.encode(frames, tmp_path / "out.mp4", 320, 180, info.fps, info)
    assert error.value is not None and frames.gi_frame is None  # closed, though still referenced
    assert _ffmpeg_children() == []


def test_a_file_short_of_frames_is_never_renamed_into_place(tmp_path, monkeypatch):
    out, before = _good_output(tmp_path)
    info = video.probe(DATA / "bunny_12f.mp4")
    real = video._written
    monkeypatch.setattr(video, "_written", lambda path: (real(path)[0] - 1, *real(path)[1:]))
    with pytest.raises(InputError, match="holds 11 frames"):
        video.encode(video.decode(info, 32, 18), out, 32, 18, info.fps, info)
    assert out.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["out.mp4"]


def test_outputs_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        out, _ = _good_output(tmp_path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o644


def test_no_ffmpeg_outlives_an_abandoned_decode():
    info = video.probe(DATA / "bunny_12f.mp4")
    frames = video.decode(info, 32, 18)
    next(frames)
    assert len(_ffmpeg_children()) == 1
    frames.close()
    assert _ffmpeg_children() == []


def test_a_decode_left_open_at_exit_neither_aborts_python_nor_leaves_ffmpeg(tmp_path):
    """A decode still open when the interpreter exits (an error path that kept it) is finalized
    then: that must not abort Python (exit 134, "Fatal Python error") nor leave its ffmpeg running."""
    script = tmp_path / "leave_open.py"
    script.write_text(
        "import sys\nfrom ray_style import video\n"
        f"frames = video.decode(video.probe({str(SAMPLES / 'bigbuckbunny_2s.mp4')!r}), 320, 180)\n"
        "next(frames)\nprint(frames.gi_frame.f_locals['ffmpeg'].process.pid, flush=True)\nsys.exit(3)\n")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 3 and "Fatal Python error" not in done.stderr, done.stderr
    pid = int(done.stdout.split()[0])
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(pid)


def _alive(pid: int) -> bool:
    """Running, not a zombie waiting to be reaped."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def test_no_frames_is_one_line_and_writes_nothing(tmp_path):
    with pytest.raises(InputError, match="no frames were given"):
        video.encode(iter([]), tmp_path / "out.mp4", 32, 18, Fraction(25))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("fps,expected", [(25, Fraction(25)), (29.97, Fraction(30000, 1001)), (Fraction(24), Fraction(24))])
def test_encode_takes_any_number_as_the_rate(tmp_path, fps, expected):
    frames = [np.full((18, 32, 3), 10 * i, np.uint8) for i in range(3)]
    assert video.probe(video.encode(frames, tmp_path / "out.mp4", 32, 18, fps)).fps == expected


@pytest.mark.parametrize("clip", ["bunny_12f.mp4", "vfr_12f.mp4"])
def test_a_frame_can_be_decoded_alone_by_seeking(clip):
    info = video.probe(DATA / clip)
    frames = list(video.decode(info, 32, 18))
    for number in (0, 5, 11):
        assert np.array_equal(video.decode_at(info, number, 32, 18), frames[number])


@pytest.mark.parametrize("codec,suffix,expected", [
    ("prores", ".mov", "Video: prores (HQ)"),
    ("prores", ".mkv", "Video: prores (HQ)"),
    ("ffv1", ".mkv", "Video: ffv1"),
])
def test_studio_codecs_keep_timing_audio_and_frame_count(tmp_path, codec, suffix, expected):
    """ProRes 422 HQ (10-bit 4:2:2) and lossless FFV1, from a variable-rate input with audio:
    every timestamp, the audio packets, the frame count; FFV1 gives back the exact pixels."""
    info = video.probe(DATA / "vfr_12f.mp4")
    frames = list(video.decode(info, 32, 18))
    out = video.encode(iter(frames), tmp_path / f"out{suffix}", 32, 18, info.fps, info,
                       timestamps=info.timestamps, codec=codec)
    header = _ffmpeg("-i", str(out)).stderr
    assert expected in header and ("yuv422p10le" in header if codec == "prores" else "gbr" in header)
    again = video.probe(out)
    assert again.frames == 12 and again.audio_codecs == info.audio_codecs
    assert np.abs(np.array(again.timestamps) - np.array(VFR_TIMES)).max() < 0.002
    assert _packet_times(out, "0:a:0") == pytest.approx(_packet_times(info.path, "0:a:0"), abs=0.002)
    back = list(video.decode(again, 32, 18))
    if codec == "ffv1":
        assert all((a == b).all() for a, b in zip(frames, back))
    else:  # 10-bit 4:2:2 is closer to the frames than the default H.264 (CRF 18, 4:2:0)
        h264 = list(video.decode(video.probe(video.encode(iter(frames), tmp_path / "h264.mkv", 32, 18, info.fps)),
                                 32, 18))
        error = [np.abs(a.astype(int) - b).mean() for a, b in zip(frames, back)]
        assert np.mean(error) < np.mean([np.abs(a.astype(int) - b).mean() for a, b in zip(frames, h264)])


@pytest.mark.parametrize("name,codec", [("out.mp4", "prores"), ("out.mov", "ffv1"), ("out.webm", "h264"),
                                        ("out.mp4", "dnxhd")])
def test_a_codec_its_container_cannot_carry_is_refused_up_front(tmp_path, name, codec):
    with pytest.raises(InputError) as refused:
        video.check_output_suffix(str(tmp_path / name), codec)
    assert "\n" not in str(refused.value) and "--codec" in str(refused.value)


@pytest.mark.parametrize("color", [None, "bt709", "smpte170m", "bt470bg"])
def test_the_sources_colour_matrix_is_carried_to_the_output(tmp_path, color):
    """A tagged source's YUV matrix converts and tags the output (players decode it as the source
    was decoded); an untagged source gives an untagged output, encoded as it was decoded."""
    import dataclasses

    info = dataclasses.replace(video.probe(DATA / "bunny_12f.mp4"), color=color)
    frames = list(video.decode(info, 32, 18))
    out = video.encode(iter(frames), tmp_path / "out.mkv", 32, 18, info.fps, info)
    again = video.probe(out)
    assert again.color == color
    assert ("-vf" in video._color_args(color)) == (color is not None)


@pytest.mark.parametrize("name", ["bunny_12f.mp4", "vfr_12f.mp4", "bikes_cut.mp4", "mulaw_12f.mov"])
def test_a_video_decoded_in_segments_gives_the_bytes_of_one_decode(name):
    """What a worker decodes for frames A … B-1 (a seek to the keyframe before A, then exact
    frames) is what one decode of the whole video gives for them, at any segment length."""
    info = video.probe(DATA / name)
    size = video.frame_size(info, 48)
    whole = np.stack(list(video.decode(info, *size)))
    for length in (1, 5, 7, info.frames):
        parts = [np.stack(list(video.decode_span(info, start, min(info.frames, start + length), *size)))
                 for start in range(0, info.frames, length)]
        assert np.array_equal(np.concatenate(parts), whole), length


@pytest.mark.parametrize("name", ["bunny_12f.mp4", "vfr_12f.mp4", "bikes_cut.mp4", "mulaw_12f.mov",
                                  "two_audio_12f.mov", "truncated_12f.mp4"])
def test_the_heads_probe_reads_packets_and_agrees_with_a_full_decode(name):
    """A job's input is probed from its packets (no pixels) with only its end decoded: the same
    facts as decoding every frame — a file cut short included (its last packet decodes to
    nothing, the end's decode sees it, and the whole file is decoded after all)."""
    assert video.probe(DATA / name, pixels=False) == video.probe(DATA / name)


def test_a_long_videos_probe_decodes_only_its_end(monkeypatch):
    """Over TAIL_SECONDS long: the packets give the frames, a decode of the last seconds checks them."""
    whole, cut_short = video.probe(DATA / "bunny_12f.mp4"), video.probe(DATA / "truncated_12f.mp4")
    monkeypatch.setattr(video, "TAIL_SECONDS", 0.1)
    seeks = []
    real = video._decoded_times
    monkeypatch.setattr(video, "_decoded_times", lambda path, seek=0.0: seeks.append(seek) or real(path, seek))
    assert video.probe(DATA / "bunny_12f.mp4", pixels=False) == whole
    assert len(seeks) == 1 and 0.32 < seeks[0] < 0.36  # one decode, of the end only
    seeks.clear()  # a file cut short: the end's decode disagrees with the packets, the whole is decoded
    assert video.probe(DATA / "truncated_12f.mp4", pixels=False) == cut_short
    assert len(seeks) == 2 and seeks[0] > 0 and seeks[1] == 0.0


def test_segments_are_balanced_over_the_cpus_that_decode_them():
    from ray_style import sources

    def lengths(frames, cpus):
        info = video.VideoInfo(str(DATA / "bunny_12f.mp4"), frames, Fraction(24), 64, 48, 0, None)
        made = sources.segments(info, (64, 48), 8, "/job", ("k", "v"), cpus)
        assert [s.start for s in made] == sorted(s.start for s in made) and made[-1].end == frames
        assert all(a.end == b.start for a, b in zip(made, made[1:]))  # every frame once, in order
        return [s.end - s.start for s in made]

    assert lengths(250, 2) == [125, 125]  # not 240 + 10: one CPU would decode alone
    # the first segment's frames shared by the CPUs: the film's opening is decoded first, together
    assert lengths(1500, 2) == [94, 94] + [188] * 6 + [184]
    film = lengths(172_800, 16)
    assert film[:16] == [15] * 16 and set(film[16:]) == {240}  # a film: then segments of 240 frames
    assert lengths(5, 4) == [2, 2, 1]  # never an empty segment
