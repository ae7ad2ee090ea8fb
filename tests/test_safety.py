"""Data safety end to end: a damaged job directory is repaired, stale work is never used, a
full disk stops the job with one line and keeps what was finished (issue: no run may destroy a
good output, reuse stale work, or leave a job that cannot finish)."""
import dataclasses
import errno
import json
import shutil

import numpy as np
import pytest

from ray_style import video
from ray_style.cli import main
from ray_style.errors import JobError, StorageError
from ray_style.job import png_bytes, read_events
from ray_style.runner import stylize_video
from tests.conftest import SAMPLES, start_until_a_frame
from tests.test_runner import CLIP, LOCAL, STYLE, TINY, frames_of, run

FLOW = dataclasses.replace(TINY, init="flow")


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One finished --init flow job (frames, flows, output), copied by each test that damages it."""
    folder = tmp_path_factory.mktemp("finished")
    result = run(folder, FLOW)  # with its report: the workers' flows are cached for it
    return folder, frames_of(result.job_dir), result.output.read_bytes()


@pytest.fixture()
def job(finished, tmp_path):
    folder, _, _ = finished
    shutil.copytree(folder / "out.job", tmp_path / "out.job")
    shutil.copy(folder / "out.mp4", tmp_path / "out.mp4")
    return tmp_path / "out.job"


def repaired_events(job_dir):
    return [e for e in read_events(job_dir) if e["kind"] == "repaired"]


@pytest.mark.parametrize("damage", ["zero bytes", "truncated", "10x10 png", "bit rot", "deleted"])
def test_a_damaged_frame_is_rendered_again_to_the_same_bytes(finished, job, tmp_path, damage):
    _, reference, _ = finished
    path = job / "chains" / "0001" / "000005.png"
    data = path.read_bytes()
    if damage == "zero bytes":
        path.write_bytes(b"")
    elif damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "10x10 png":
        path.write_bytes(png_bytes(np.zeros((10, 10, 3), np.uint8)))
    elif damage == "bit rot":
        path.write_bytes(data[:-30] + bytes(b ^ 0xFF for b in data[-30:-12]) + data[-12:])
    else:
        path.unlink()
    result = run(tmp_path, FLOW, report=False)
    assert result.rendered == 1 and frames_of(job) == reference
    assert video.probe(result.output).frames == 12
    assert [(e["what"], e["frame"]) for e in repaired_events(job)] == [("frame", 5)]


def test_a_damaged_flow_and_a_missing_source_frame_are_made_again(finished, job, tmp_path):
    _, reference, _ = finished
    # Frame 5's chain must render it again: it needs its source frame, which is gone, and sends
    # back the flow 4 → 5 the report reads, whose cached file is cut short.
    (job / "chains" / "0001" / "000005.png").unlink()
    flow = job / "flow" / "000004_000005.npz"
    flow.write_bytes(flow.read_bytes()[:50])
    (job / "source" / "000005.png").unlink()
    result = stylize_video(CLIP, [STYLE], tmp_path / "out.mp4", FLOW, weights="random", executor=LOCAL)
    assert frames_of(job) == reference and video.probe(result.output).frames == 12
    assert {e["what"] for e in repaired_events(job)} >= {"source", "frame"}
    from ray_style.codec import load_flow

    assert load_flow(flow.read_bytes())[0].shape == (18, 32, 2)  # written again whole
    assert result.evaluation.frames == 12


def test_an_edited_source_index_is_not_trusted(finished, job, tmp_path):
    _, reference, _ = finished
    index = json.loads((job / "source" / "index.json").read_text())
    (job / "source" / "index.json").write_text(json.dumps({**index, "frames": 3}))
    result = run(tmp_path, FLOW, report=False)
    assert video.probe(result.output).frames == 12 and frames_of(job) == reference


@pytest.mark.parametrize("change", ["style", "size"])
def test_without_a_manifest_stale_frames_are_never_used(finished, job, tmp_path, change):
    _, reference, _ = finished
    (job / "manifest.json").unlink()
    if change == "style":
        result = stylize_video(CLIP, [SAMPLES / "chelsea.png"], tmp_path / "out.mp4", FLOW, weights="random",
                               executor=LOCAL, report=False)
        assert result.resumed == 0 and result.rendered == 16
        assert not set(frames_of(job).items()) & set(reference.items())
    else:
        bigger = dataclasses.replace(FLOW, style=dataclasses.replace(FLOW.style, size=48))
        result = run(tmp_path, bigger, report=False)
        info = video.probe(result.output)
        assert (info.frames, info.width) == (12, 48) and result.resumed == 0


def test_a_full_disk_while_rendering_stops_with_one_line_and_keeps_the_frames(tmp_path, monkeypatch, capsys):
    from ray_style import job as job_module

    real = job_module.Job.vouch
    written = []

    def disk_fills_after_five(self, chain, frame, data, record):
        if len(written) == 5:
            raise StorageError(f"no space left on device writing {self.layout.frame(chain, frame)}: free space "
                               "and re-run to resume")
        written.append((chain, frame))
        return real(self, chain, frame, data, record)

    monkeypatch.setattr(job_module.Job, "vouch", disk_fills_after_five)
    argv = ["video", str(CLIP), str(STYLE), "-o", str(tmp_path / "out.mp4"), "--weights", "random", "--size", "32",
            "--iters", "3", "--segment-length", "5", "--overlap", "2", "--executor", "local", "--no-report", "-q"]
    assert main(argv) == 6
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no space left" in err and "Traceback" not in err
    assert not (tmp_path / "out.mp4").exists()
    monkeypatch.setattr(job_module.Job, "vouch", real)
    assert main(argv) == 0  # space freed: the run resumes from the five kept frames
    assert len(json.loads((tmp_path / "out.job" / "manifest.json").read_text())) > 0
    resumed = [line for line in (tmp_path / "out.job" / "frames.jsonl").read_text().splitlines()]
    assert len(resumed) == 16 + 12  # every frame once; and the two seams refined (the default), 6 renders each


def test_a_real_enospc_from_the_file_system_is_one_line(tmp_path, monkeypatch, capsys):
    """The OSError itself, as a full disk raises it deep inside a write."""
    from ray_style import store

    def full(self, key, data, durable=True):
        raise OSError(errno.ENOSPC, "No space left on device", str(self.path(key)))

    monkeypatch.setattr(store.LocalStore, "write", full)
    argv = ["video", str(CLIP), str(STYLE), "-o", str(tmp_path / "out.mp4"), "--weights", "random", "--size", "32",
            "--iters", "3", "--executor", "local", "-q"]
    assert main(argv) == 6
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "No space left on device" in err


def test_restart_refuses_a_directory_it_does_not_own(tmp_path, capsys):
    folder = tmp_path / "out.job"
    (folder / "source").mkdir(parents=True)
    (folder / "manifest.json").write_text('{"someone": "else"}')
    (folder / "source" / "keep.txt").write_text("mine")
    argv = ["video", str(CLIP), str(STYLE), "-o", str(tmp_path / "out.mp4"), "--weights", "random", "--size", "32",
            "--iters", "3", "--executor", "local", "--restart", "-q"]
    assert main(argv) == JobError.exit_code
    assert "not a ray-style job directory" in capsys.readouterr().err
    assert (folder / "source" / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize("argv,message", [
    (["--size", "20"], "use --size 27 or more"),  # 27 gives 28x16 frames
    (["--threads", "-2"], "--threads -2: need at least 1"),
    (["--optimizer", "adam", "--learning-rate", "nan"], "--learning-rate must be a number > 0"),
    (["--content-weight", "inf"], "--content-weight must be a finite number"),
    (["--tv-weight", "nan"], "--tv-weight must be a finite number"),
    (["--temporal-weight", "nan"], "--temporal-weight must be a finite number"),
    (["--cut-ratio", "nan"], "--cut-ratio must be ≥ 0"),
    (["--gpus-per-worker", "-1"], "--gpus-per-worker -1"),
])
def test_bad_numbers_are_one_line_errors(tmp_path, capsys, argv, message):
    code = main(["video", str(CLIP), str(STYLE), "-o", str(tmp_path / "out.mp4"), "--weights", "random",
                 "--executor", "local", "-q", *argv])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "out.mp4").exists()


def test_a_thin_video_names_the_smallest_size_that_works(tmp_path, capsys):
    import subprocess

    import imageio_ffmpeg

    thin = tmp_path / "thin.mp4"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(CLIP), "-vf", "scale=640:8,setsar=1", "-frames:v",
                    "3", str(thin)], check=True)
    assert main(["video", str(thin), str(STYLE), "-o", str(tmp_path / "o.mp4"), "--size", "64", "--weights", "random",
                 "--executor", "local", "-q"]) == 2
    assert "use --size 1200 or more" in capsys.readouterr().err  # 1200x16 frames


def test_status_of_a_damaged_job_reports_what_it_can(job, capsys):
    (job / "source" / "index.json").write_text("{garbage")
    (job / "frames.jsonl").write_text("nonsense\n[1]\n")
    assert main(["status", str(job)]) == 0
    assert "stopped" in capsys.readouterr().out
    (job / "manifest.json").write_text('{"version": "0.1.0"}')  # keys missing
    assert main(["status", str(job), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["damaged"] and not status["decoded"]


@pytest.mark.parametrize("link", ["chains folder", "frame file", "hard-linked log"])
def test_a_link_in_the_job_is_refused_and_nothing_is_touched_through_it(finished, job, tmp_path, capsys, link):
    """A symlink under chains/ once made a re-run empty the folder it led to."""
    theirs = tmp_path / "mydocs"
    theirs.mkdir()
    (theirs / "000010.png").write_bytes(b"their picture")
    (theirs / "notes.txt").write_text("their notes")
    if link == "chains folder":
        (job / "chains" / "0003").symlink_to(theirs)
        named = job / "chains" / "0003"
    elif link == "frame file":
        (job / "chains" / "0001" / "000005.png").unlink()
        (job / "chains" / "0001" / "000005.png").symlink_to(theirs / "000010.png")
        named = job / "chains" / "0001" / "000005.png"
    else:
        (theirs / "notes.txt").write_bytes((job / "frames.jsonl").read_bytes())  # their copy of the log
        (job / "frames.jsonl").unlink()
        (job / "frames.jsonl").hardlink_to(theirs / "notes.txt")
        named = job / "frames.jsonl"
    before = {p.name: p.read_bytes() for p in theirs.iterdir()}
    argv = ["video", str(CLIP), str(STYLE), "-o", str(tmp_path / "out.mp4"), "--weights", "random", "--size", "32",
            "--iters", "6", "--executor", "local", "-q"]
    assert main(argv) == JobError.exit_code
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(named) in err and "Traceback" not in err
    assert {p.name: p.read_bytes() for p in theirs.iterdir()} == before


def test_an_index_with_fewer_frames_and_their_checksums_is_not_trusted(finished, job, tmp_path):
    """An edited index that is consistent in itself (3 frames, 3 checksums) still is not an index
    of the probed video: the source is decoded again, the whole video delivered, nothing lost."""
    _, reference, output = finished
    index = json.loads((job / "source" / "index.json").read_text())
    (job / "source" / "index.json").write_text(json.dumps({**index, "frames": 3, "sha256": index["sha256"][:3]}))
    result = run(tmp_path, FLOW, report=False)
    assert video.probe(result.output).frames == 12 and frames_of(job) == reference and result.rendered == 0
    assert "source index" in {e.get("what") for e in repaired_events(job)}


@pytest.mark.parametrize("chains", [[[0, 10 ** 12, 0]], [[0, 2, 0]], [[-3, 40, 0]], "deleted"])
def test_an_edited_plan_is_rebuilt_and_no_finished_frame_is_lost(finished, job, tmp_path, capsys, chains):
    _, reference, output = finished
    if chains == "deleted":
        (job / "plan.json").unlink()
    else:
        saved = json.loads((job / "plan.json").read_text())
        (job / "plan.json").write_text(json.dumps({**saved, "chains": chains}))
    assert main(["status", str(job)]) == 0  # at once, whatever the plan says
    assert "stopped" in capsys.readouterr().out
    result = run(tmp_path, FLOW, report=False)
    assert result.rendered == 0 and frames_of(job) == reference
    assert result.output.read_bytes() == output


@pytest.mark.parametrize("executor", ["local", pytest.param("ray", marks=[pytest.mark.ray, pytest.mark.slow])])
def test_sigterm_stops_like_ctrl_c(tmp_path, executor):
    """A Kubernetes pod stop is a SIGTERM: one line, exit 143, the page says "stopped", and no
    ffmpeg or temp file outlives the command; the same command then resumes."""
    import os
    import signal
    import subprocess
    import sys

    import psutil

    out = tmp_path / "out.mp4"
    argv = [sys.executable, "-m", "ray_style.cli", "video", str(CLIP), str(STYLE), "-o", str(out), "--weights",
            "random", "--size", "32", "--iters", "40", "--segment-length", "12", "-q", "--executor", executor,
            *(["--max-workers", "1", "--threads", "1"] if executor == "ray" else ["--threads", "1"])]
    process = start_until_a_frame(argv, tmp_path / "out.job")
    helpers = [p for p in psutil.Process(process.pid).children(recursive=True) if "ffmpeg" in p.name()]
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 143, err
    assert err.strip().splitlines()[-1] == ("ray-style: stopped (SIGTERM); finished work is kept, re-run the same "
                                            "command to resume") and "Traceback" not in err
    assert 'id="state">stopped<' in (tmp_path / "out.job" / "report" / "index.html").read_text()
    assert not [p for p in helpers if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not [name for name in os.listdir(tmp_path) if name.startswith(".")]  # no temp output left
    assert not out.exists()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert video.probe(out).frames == 12
