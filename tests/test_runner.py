"""The video job end to end, without Ray (the same driver loop as with it)."""
import dataclasses
import os
import signal
import subprocess
import sys
import time
from fractions import Fraction

import pytest

from ray_style import video
from ray_style.config import StyleSettings, VideoSettings
from ray_style.errors import FrameError, InputError, JobError
from ray_style.runner import job_status, stylize_video
from tests.conftest import DATA, SAMPLES

TINY = VideoSettings(style=StyleSettings(size=32, iters=6, content_weight=1.0, style_weight=1e3),
                     segment_length=5, overlap=2)
CLIP = DATA / "bunny_12f.mp4"
STYLE = SAMPLES / "starry_night.jpg"


def run(tmp_path, settings=TINY, name="out", **kwargs):
    return stylize_video(CLIP, [STYLE], tmp_path / f"{name}.mp4", settings, weights="random",
                         executor="local", threads=2, **kwargs)


def frames_of(job_dir):
    return {p.relative_to(job_dir): p.read_bytes() for p in sorted((job_dir / "chains").rglob("*.png"))}


def test_video_keeps_frame_count_rate_and_audio(tmp_path):
    events = []
    result = run(tmp_path, progress=events.append)
    source, out = video.probe(CLIP), video.probe(result.output)
    assert (out.frames, out.fps, out.audio_codec) == (source.frames, source.fps, "aac") == (12, Fraction(25), "aac")
    assert (out.width, out.height) == (32, 18)
    assert result.chains == 3 and result.rendered == 12 + 2 * 2  # two seams, two blended frames each
    assert {e.stage for e in events} == {"decode", "render", "encode", "report"}
    assert result.evaluation.frames == 12 and result.evaluation.warping_error > 0
    assert (result.job_dir / "report" / "side_by_side.mp4").exists()
    status = job_status(result.job_dir)
    assert status["renders_done"] == status["renders_total"] == 16 and status["finished"] and not status["running"]


def test_rerun_resumes_and_changed_settings_are_refused(tmp_path):
    first = run(tmp_path)
    before = frames_of(first.job_dir)
    again = run(tmp_path)
    assert again.rendered == 0 and frames_of(again.job_dir) == before
    with pytest.raises(JobError, match="iters: 6 → 7"):
        run(tmp_path, dataclasses.replace(TINY, style=dataclasses.replace(TINY.style, iters=7)))
    restarted = run(tmp_path, dataclasses.replace(TINY, style=dataclasses.replace(TINY.style, iters=7)), restart=True)
    assert restarted.rendered == 16


def test_independent_frames_use_content_init(tmp_path):
    result = run(tmp_path, dataclasses.replace(TINY, init="content"))
    assert result.rendered == 16 and video.probe(result.output).frames == 12


def test_a_frame_that_keeps_failing_names_itself(tmp_path):
    bad = dataclasses.replace(TINY, style=dataclasses.replace(TINY.style, style_weight=float("inf"), optimizer="adam"))
    with pytest.raises(FrameError, match=r"frame 0 \(chain 0\) failed 3 times"):
        run(tmp_path, bad)
    assert not (tmp_path / "out.mp4").exists()


def test_bad_output_and_style_fail_before_any_work(tmp_path):
    with pytest.raises(InputError, match="folder .* does not exist"):
        stylize_video(CLIP, [STYLE], tmp_path / "no" / "out.mp4", TINY, weights="random")
    with pytest.raises(InputError, match="cannot read image"):
        stylize_video(CLIP, [CLIP], tmp_path / "out.mp4", TINY, weights="random")
    assert list(tmp_path.iterdir()) == []


def _cli(tmp_path, name):
    return [sys.executable, "-m", "ray_style.cli", "video", str(CLIP), str(STYLE), "-o", str(tmp_path / f"{name}.mp4"),
            "--size", "32", "--iters", "30", "--content-weight", "1", "--style-weight", "1e3", "--segment-length",
            "6", "--overlap", "2", "--weights", "random", "--executor", "local", "--threads", "2", "-q"]


@pytest.mark.slow
def test_sigkill_mid_job_then_resume_gives_identical_frames(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    subprocess.run(_cli(tmp_path, "whole"), check=True, env=env, timeout=300)
    victim = subprocess.Popen(_cli(tmp_path, "killed"), env=env)
    chains = tmp_path / "killed.job" / "chains"
    deadline = time.time() + 120
    while time.time() < deadline and len(list(chains.rglob("*.png"))) < 4:
        time.sleep(0.05)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    partial = len(list(chains.rglob("*.png")))
    assert 4 <= partial < 14, "the kill must land mid-job"
    assert not (tmp_path / "killed.mp4").exists()
    subprocess.run(_cli(tmp_path, "killed"), check=True, env=env, timeout=300)
    assert frames_of(tmp_path / "killed.job") == frames_of(tmp_path / "whole.job")
    assert len(frames_of(tmp_path / "whole.job")) == 14  # 12 frames, one seam of 2
    whole = video.probe(tmp_path / "whole.mp4")
    assert whole.frames == video.probe(tmp_path / "killed.mp4").frames == 12


def test_flow_init_caches_flows_and_resumes(tmp_path):
    settings = dataclasses.replace(TINY, init="flow")
    events = []
    result = run(tmp_path, settings, progress=events.append)
    assert video.probe(result.output).frames == 12 and "flow" in {e.stage for e in events}
    flows = sorted(p.name for p in (result.job_dir / "flow").iterdir())
    assert flows == [f"{f:06d}.npz" for f in range(1, 12)]  # each frame a chain seeds into (shared by chains)
    manifest = (result.job_dir / "manifest.json").read_text()
    assert '"temporal_weight": 100.0' in manifest  # the random weights' default, resolved and recorded
    assert run(tmp_path, settings).rendered == 0


def test_batched_frames_per_worker_render_every_frame_once(tmp_path, monkeypatch):
    from ray_style import optimize

    batch_sizes, real = [], optimize.stylize_batch

    def spy(model, settings, init, *args, **kwargs):
        batch_sizes.append(init.shape[0])
        return real(model, settings, init, *args, **kwargs)

    monkeypatch.setattr(optimize, "stylize_batch", spy)
    result = run(tmp_path, frames_per_worker=3)
    assert result.rendered == 16 and video.probe(result.output).frames == 12
    assert max(batch_sizes) == 3  # the three chains' seeded frames went together
    assert '"frames_per_worker": 3' in (result.job_dir / "manifest.json").read_text()
    reference = run(tmp_path, name="single")
    # Same frames, optimized in batches of the three chains' seeded frames: close, not bitwise.
    import numpy as np
    from PIL import Image

    for path, data in frames_of(reference.job_dir).items():
        a = np.asarray(Image.open(reference.job_dir / path), dtype=int)
        b = np.asarray(Image.open(result.job_dir / path), dtype=int)
        assert np.abs(a - b).mean() < 8, path
    with pytest.raises(InputError, match="--frames-per-worker 0"):
        run(tmp_path, name="bad", frames_per_worker=0)
