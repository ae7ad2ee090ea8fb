"""The video job end to end, without Ray (the same driver loop as with it)."""
import dataclasses
import os
import signal
import subprocess
import sys
import threading
from fractions import Fraction

import numpy as np
import pytest

from ray_style import video
from ray_style.errors import FrameError, InputError, JobError
from ray_style.job import job_status
from ray_style.settings import ExecutorOptions, StyleSettings, VideoSettings
from ray_style.runner import stylize_video
from tests.conftest import DATA, SAMPLES

# The first two VGG blocks only: the model is cut after its deepest layer in use, so a test's
# evaluation costs a third of the paper's five-layer one; what these tests check (the job's
# bookkeeping, resumes, bytes) does not depend on depth. The paper's layers: test_optimize.py.
TINY = VideoSettings(style=StyleSettings(size=32, iters=6, content_weight=1.0, style_weight=1e3,
                                         content_layers=("relu2_1",), style_layers=("relu1_1", "relu2_1")),
                     segment_length=5, overlap=2, passes=0)  # seams as they are: counts stay simple to state
CLIP = DATA / "bunny_12f.mp4"
STYLE = SAMPLES / "starry_night.jpg"


LOCAL = ExecutorOptions(kind="local", threads=2)


def run(tmp_path, settings=TINY, name="out", frames_per_worker=1, **kwargs):
    options = dataclasses.replace(LOCAL, frames_per_worker=frames_per_worker)
    return stylize_video(CLIP, [STYLE], tmp_path / f"{name}.mp4", settings, weights="random", executor=options,
                         **kwargs)


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


def test_seams_are_refined_unless_the_user_opts_out(tmp_path):
    """By default (--init flow) the frames around each seam inside a shot are optimized again
    across it (--passes 1's windows); --passes 0 leaves the seams as the chains made them."""
    import json

    default = dataclasses.replace(TINY, passes=None)
    result = run(tmp_path, default, name="refined", report=False)
    records = [json.loads(line) for line in (result.job_dir / "frames.jsonl").read_text().splitlines()]
    refined = sorted({r["frame"] for r in records if r["chain"] >= 10000})
    assert refined and result.rendered == 16 + len([r for r in records if r["chain"] >= 10000])
    assert json.loads((result.job_dir / "manifest.json").read_text())["settings"]["passes"] == 1
    page = (result.job_dir / "report" / "index.html").read_text()
    assert 'id="refining">' in page and "the 2 seams between chains inside shots" in page
    plain = run(tmp_path, TINY, name="plain", report=False)
    assert plain.rendered == 16
    assert VideoSettings(init="prev").refine_passes == 0 and VideoSettings().refine_passes == 1


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
    bad = dataclasses.replace(TINY, style=dataclasses.replace(TINY.style, style_weight=1e40, optimizer="adam"))
    with pytest.raises(FrameError, match=r"frame 0 \(chain 0\) failed 3 times"):
        run(tmp_path, bad)
    # The encode that ran beside the render gave up with it: no output, no temp file, no thread.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.job"]
    assert not any(t.name == "encode-beside-render" for t in threading.enumerate())


def test_the_output_is_encoded_beside_the_render(tmp_path, monkeypatch):
    """Output frames go to the encoder as soon as they are final, while later frames still render:
    the job's last render waits (for a minute at most) until the encoder has taken frame 0, which
    only an encoder running beside the render can do. The file is the one an encode after the
    render writes (a resumed, finished job does that)."""
    from ray_style.job import Job

    real_encode, real_vouch = video.encode, Job.vouch
    took_first, taken, waited = threading.Event(), [], []

    def watched_encode(frames, *args, **kwargs):
        def watched():
            for number, frame in enumerate(frames):
                taken.append(number)
                took_first.set()
                yield frame
        return real_encode(watched(), *args, **kwargs)

    def last_render_waits(self, chain, frame, data, record):
        if len(self.done) == 15:  # 16 renders: 12 frames and 2 seams of 2
            waited.append(took_first.wait(timeout=60))
        return real_vouch(self, chain, frame, data, record)

    monkeypatch.setattr(video, "encode", watched_encode)
    monkeypatch.setattr(Job, "vouch", last_render_waits)
    first = run(tmp_path, report=False)
    assert waited == [True], "the encoder took no frame while the render was still going"
    assert taken == list(range(12))
    again = run(tmp_path, name="again", job_dir=first.job_dir, report=False)
    assert again.rendered == 0 and again.output.read_bytes() == first.output.read_bytes()


def test_an_encode_beside_the_render_that_fails_is_done_again_after_it(tmp_path, monkeypatch):
    from ray_style.job import read_events

    real_encode, calls = video.encode, []

    def failing_once(*args, **kwargs):
        calls.append(threading.current_thread().name)
        if len(calls) == 1:
            raise OSError("the encoder lost its pipe")
        return real_encode(*args, **kwargs)

    monkeypatch.setattr(video, "encode", failing_once)
    result = run(tmp_path, report=False)
    assert calls == ["encode-beside-render", "MainThread"] and video.probe(result.output).frames == 12
    [event] = [e for e in read_events(result.job_dir) if e.get("kind") == "encode"]
    assert "the encoder lost its pipe" in event["detail"] and "encoding again" in event["detail"]


def test_bad_output_and_style_fail_before_any_work(tmp_path):
    with pytest.raises(InputError, match="folder .* does not exist"):
        stylize_video(CLIP, [STYLE], tmp_path / "no" / "out.mp4", TINY, weights="random")
    with pytest.raises(InputError, match="cannot read image"):
        stylize_video(CLIP, [CLIP], tmp_path / "out.mp4", TINY, weights="random")
    assert list(tmp_path.iterdir()) == []


def _cli(tmp_path, name):
    return ["video", str(CLIP), str(STYLE), "-o", str(tmp_path / f"{name}.mp4"), "--size", "32", "--iters", "8",
            "--content-weight", "1", "--style-weight", "1e3", "--content-layers", "relu2_1", "--style-layers",
            "relu1_1,relu2_1", "--segment-length", "6", "--overlap", "2", "--weights", "random", "--executor", "local",
            "--threads", "2", "-q"]


@pytest.mark.slow
def test_sigkill_mid_job_then_resume_gives_identical_frames(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    subprocess.run([sys.executable, "-m", "ray_style.cli", *_cli(tmp_path, "whole")], check=True, env=env,
                   timeout=300)
    # The victim stops itself right after its 4th stored frame; the kill lands exactly there.
    victim = subprocess.Popen([sys.executable, "-m", "tests.stopping", "4", *_cli(tmp_path, "killed")], env=env)
    _, status = os.waitpid(victim.pid, os.WUNTRACED)
    assert os.WIFSTOPPED(status), "the job ended before its 4th frame"
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    chains = tmp_path / "killed.job" / "chains"
    assert len(list(chains.rglob("*.png"))) == 4
    assert not (tmp_path / "killed.mp4").exists()
    subprocess.run([sys.executable, "-m", "ray_style.cli", *_cli(tmp_path, "killed")], check=True, env=env,
                   timeout=300)
    assert frames_of(tmp_path / "killed.job") == frames_of(tmp_path / "whole.job")
    assert len(frames_of(tmp_path / "whole.job")) == 24  # 12 frames, one seam of 2, its refinement (the default)
    whole = video.probe(tmp_path / "whole.mp4")
    assert whole.frames == video.probe(tmp_path / "killed.mp4").frames == 12


def test_flow_init_keeps_the_flows_workers_computed_for_the_report(tmp_path, monkeypatch):
    from ray_style import evaluate

    settings = dataclasses.replace(TINY, init="flow")
    given = []
    real = evaluate.evaluate

    def spy(output, source, inputs, **kwargs):
        given.append(inputs.flows)
        return real(output, source, inputs, **kwargs)

    monkeypatch.setattr(evaluate, "evaluate", spy)
    result = run(tmp_path, settings)
    assert video.probe(result.output).frames == 12
    flows = sorted(p.name for p in (result.job_dir / "flow").glob("*.npz"))
    # The flow previous → this frame, for each frame a chain seeds into, sent back by the workers.
    assert flows == [f"{t - 1:06d}_{t:06d}.npz" for t in range(1, 12)]
    back, mask = given[0](4)  # what the report got for the pair (4, 5): the cached file
    assert back.shape == (18, 32, 2) and 0 <= mask.min() and mask.max() <= 1
    manifest = (result.job_dir / "manifest.json").read_text()
    assert '"temporal_weight": 100.0' in manifest  # the random weights' default, resolved and recorded
    assert run(tmp_path, settings).rendered == 0


def test_batched_frames_per_worker_render_every_frame_once(tmp_path, monkeypatch):
    from ray_style import optimize

    batch_sizes, real = [], optimize.stylize_batch

    def spy(model, settings, problem, **kwargs):
        batch_sizes.append(problem.init.shape[0])
        return real(model, settings, problem, **kwargs)

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


def test_a_frame_range_renders_what_it_needs_and_the_whole_job_reuses_it(tmp_path):
    settings = dataclasses.replace(TINY, init="flow")
    part = run(tmp_path, settings, frames=(6, 9), report=False)
    info = video.probe(part.output)
    assert part.output.name == "out.frames6-8.mp4" and (info.frames, info.audio_codec) == (3, "aac")
    assert abs(info.fps - 25) < 1e-9 and part.job_dir.name == "out.job"
    # Chains [3, 9) and [7, 12) show frames 6-8; the first from its start, for its seeding.
    assert part.rendered == 6 + 2 and not (tmp_path / "out.mp4").exists()
    whole = run(tmp_path, settings, report=False)
    assert whole.resumed == 8 and whole.rendered == 16 - 8
    reference = run(tmp_path, settings, name="reference", report=False)
    assert frames_of(whole.job_dir) == frames_of(reference.job_dir)  # the range's frames are the job's


def test_long_term_consistency_and_refinement_passes_resume_identically(tmp_path):
    settings = dataclasses.replace(TINY, init="flow", long_term=(2, 4), passes=2)
    first = run(tmp_path, settings, report=False)
    import json

    records = [json.loads(line) for line in (first.job_dir / "frames.jsonl").read_text().splitlines()]
    passes = sorted({r["chain"] // 10000 for r in records})
    assert passes == [0, 1, 2] and video.probe(first.output).frames == 12
    pass_two = [r for r in records if r["chain"] // 10000 == 2]
    assert sorted(r["frame"] for r in pass_two) == list(range(12))  # the whole video, once
    assert run(tmp_path, settings, report=False).rendered == 0
    shutil_copy = tmp_path / "again.job"
    import shutil

    shutil.copytree(first.job_dir, shutil_copy)
    for path in list((shutil_copy / "chains").iterdir())[-2:]:  # lose a pass's frames: they come back the same
        shutil.rmtree(path)
    again = stylize_video(CLIP, [STYLE], tmp_path / "again.mp4", settings, weights="random", executor=LOCAL,
                          report=False)
    assert again.rendered > 0 and frames_of(again.job_dir) == frames_of(first.job_dir)


def test_a_resume_keeps_the_thread_count_its_frames_depend_on(tmp_path):
    run(tmp_path, frames=(0, 4), report=False)  # part of the job, with 2 threads
    other = dataclasses.replace(LOCAL, threads=1)
    with pytest.raises(JobError, match="rendered on cpu in fp32 with 2 torch threads, and this run would render on "
                                       "cpu in fp32 with 1 torch threads"):
        stylize_video(CLIP, [STYLE], tmp_path / "out.mp4", TINY, weights="random", executor=other, report=False)
    unset = dataclasses.replace(LOCAL, threads=None)  # not given: the job's own count is used
    whole = stylize_video(CLIP, [STYLE], tmp_path / "out.mp4", TINY, weights="random", executor=unset, report=False)
    assert whole.resumed > 0 and frames_of(whole.job_dir) == frames_of(run(tmp_path, name="again").job_dir)


def test_a_variable_rate_phone_video_keeps_its_timing(tmp_path):
    clip = DATA / "vfr_12f.mp4"
    result = stylize_video(clip, [STYLE], tmp_path / "out.mp4", TINY, weights="random", executor=LOCAL, report=False)
    source, out = video.probe(clip), video.probe(result.output)
    assert source.timestamps is not None and out.frames == source.frames == 12
    period = 1 / float(source.fps)
    assert all(abs(a - b) < period for a, b in zip(out.timestamps, source.timestamps))


def test_a_truncated_input_is_rendered_with_a_warning(tmp_path):
    result = stylize_video(DATA / "truncated_12f.mp4", [STYLE], tmp_path / "out.mp4", TINY, weights="random",
                           executor=LOCAL, report=False)
    assert any("decoded 5 frames but the container promises 12" in w for w in result.warnings)
    assert video.probe(result.output).frames == 5
    from ray_style.job import read_events

    assert any("container promises 12" in e.get("detail", "") for e in read_events(result.job_dir))


def test_a_users_precomputed_flow_folder_drives_the_job(tmp_path, monkeypatch):
    """--flow-dir: .flo files named as artistic-videos names them, at another resolution."""
    from ray_style import flow

    info = video.probe(CLIP)
    frames = list(video.decode(info, 64, 36))  # twice the job's size: the flows are resampled
    folder = tmp_path / "flows"
    folder.mkdir()
    for t in range(1, 12):
        for a, b in ((t, t - 1), (t - 1, t)):
            flow.write_flo(folder / flow.flow_file_names(a, b)[0], flow.optical_flow(frames[a], frames[b]))
    settings = dataclasses.replace(TINY, init="flow", flow_dir=str(folder))
    computed = []
    real = flow.optical_flow
    monkeypatch.setattr(flow, "optical_flow", lambda *a, **k: computed.append(1) or real(*a, **k))
    result = run(tmp_path, settings, report=False)
    assert video.probe(result.output).frames == 12
    assert not computed  # every flow came from the folder: nothing was computed
    assert len(list((result.job_dir / "flow").glob("*.npz"))) == 11  # t → t-1, read once each, cached
    # Flows replaced by others (recomputed elsewhere): the frames they shaped are not reused.
    flow.write_flo(folder / "backward_6_5.flo", flow.optical_flow(frames[6], frames[4]))
    with pytest.raises(JobError, match=r"other settings \(input.flows: "):
        run(tmp_path, settings, report=False)
    (folder / "backward_6_5.flo").unlink()
    with pytest.raises(InputError, match="lacks 1 of the 11 flow files this job reads, e.g. backward_6_5.flo"):
        run(tmp_path, settings, name="missing", report=False)
    assert not (tmp_path / "missing.job").exists()  # refused before anything was made
    with pytest.raises(InputError, match="lacks 1 of the 22 flow files"):  # the report reads forward flows too
        run(tmp_path, settings, name="missing")


def test_a_damaged_chain_frame_a_refinement_pass_needs_is_rendered_again(tmp_path):
    """A pass's task reads the chains' frames (its start and neighbours): one found damaged
    there belongs to an earlier stage, so the stages render again, to the same bytes."""
    import json
    import shutil

    from ray_style import plan

    settings = dataclasses.replace(TINY, init="flow", passes=1)
    first = run(tmp_path, settings, report=False)
    reference, output = frames_of(first.job_dir), first.output.read_bytes()
    chains = [plan.Chain(i, *span) for i, span in enumerate(json.loads((first.job_dir / "plan.json").read_text())
                                                            ["chains"])]
    sweep = plan.refinement_passes(chains, [], 12, 1)[0][0]
    shutil.rmtree(first.job_dir / "chains" / f"{sweep.index:04d}")  # that sweep renders again…
    for chain, weight in plan.frame_sources(chains, sweep.frames[0]):  # …from chain frames gone bad
        path = first.job_dir / "chains" / f"{chain:04d}" / f"{sweep.frames[0]:06d}.png"
        data = bytearray(path.read_bytes())
        data[-20] ^= 0xFF
        path.write_bytes(bytes(data))
    again = run(tmp_path, settings, report=False)
    assert frames_of(again.job_dir) == reference and again.output.read_bytes() == output
    assert again.rendered > len(sweep.frames)  # the damaged chain frames too
    from ray_style.job import read_events

    repaired = {e.get("chain") for e in read_events(again.job_dir)
                if e.get("what") == "frame" and e.get("frame") == sweep.frames[0] and e.get("chain") < plan.PASS_BASE}
    assert repaired and repaired <= {chain for chain, _ in plan.frame_sources(chains, sweep.frames[0])}


def test_workers_that_cannot_reach_the_job_get_their_frames_from_the_driver(tmp_path, monkeypatch):
    """A worker checks the token the driver wrote in the job's store; one that cannot read it
    (another machine's disk) says so, and from then on tasks carry their bytes. Same frames."""
    from ray_style import render
    from ray_style.job import read_events

    reference = run(tmp_path, name="reference", report=False)
    tried = []

    def unreachable(delivery):
        tried.append(delivery.store)
        raise render.StoreUnreachable(delivery.store, "No such file or directory")

    monkeypatch.setattr(render, "check_reach", unreachable)
    relayed = run(tmp_path, name="relayed", report=False)
    assert len(tried) == 1  # asked once; every later task carried its bytes
    assert frames_of(relayed.job_dir) == frames_of(reference.job_dir)
    assert any("cannot be read here" in e.get("detail", "") for e in read_events(relayed.job_dir))


def test_a_damaged_input_a_worker_finds_is_made_again(tmp_path, monkeypatch):
    """A worker reading its inputs from the store finds the previous frame altered: that frame
    is rendered again first, then this one; the job ends as an uninterrupted one."""
    from ray_style.store import LocalStore

    reference = run(tmp_path, name="reference", report=False)
    real_read, spoiled = LocalStore.read, []

    def bit_rot_once(self, key):  # as the worker reads it (the encoder beside the render reads in its thread)
        data = real_read(self, key)
        if key == "chains/0000/000002.png" and not spoiled and "damaged" in str(self.root) \
                and threading.current_thread() is threading.main_thread():
            spoiled.append(key)
            return data[:-20] + bytes(b ^ 0xFF for b in data[-20:])
        return data

    monkeypatch.setattr(LocalStore, "read", bit_rot_once)
    damaged = run(tmp_path, name="damaged", report=False)
    assert spoiled and frames_of(damaged.job_dir) == frames_of(reference.job_dir)
    assert damaged.rendered == reference.rendered + 1  # frame 2 of chain 0 twice


@pytest.mark.slow
def test_max_memory_renders_frames_in_exact_tiles(tmp_path, monkeypatch):
    """A video job under --max-memory too small for a whole frame: workers optimize in tiles,
    and the frames are the whole-frame ones up to float rounding."""
    from ray_style import codec, tiling

    settings = dataclasses.replace(TINY, style=dataclasses.replace(TINY.style, size=64))
    whole = run(tmp_path, settings, name="whole")
    layers = (*settings.style.content_layers, *settings.style.style_layers)
    width, height = video.frame_size(video.probe(CLIP), 64)
    budget = (tiling.optimizer_bytes(height, width, 1, settings.style.lbfgs_history)
              + tiling.evaluation_bytes(("vgg19", layers), height, width) * 6 // 10)
    tiled_calls = []
    terms = tiling.Tiling.terms
    monkeypatch.setattr(tiling.Tiling, "terms", lambda self, *a: tiled_calls.append(len(self)) or terms(self, *a))
    tiled = run(tmp_path, dataclasses.replace(settings, style=dataclasses.replace(
        settings.style, max_memory=budget / tiling.GIB)), name="tiled")
    assert tiled_calls and min(tiled_calls) >= 2 and tiled.frames == whole.frames == 12
    a, b = frames_of(whole.job_dir), frames_of(tiled.job_dir)
    assert a.keys() == b.keys()
    worst = max(np.abs(codec.decode_png(a[k]).astype(int) - codec.decode_png(b[k])).max() for k in a)
    assert worst <= 2


def test_a_finished_job_is_delivered_again_in_another_codec_without_rendering(tmp_path):
    """--codec decides only the encode: ProRes first, then the same job as lossless FFV1."""
    first = stylize_video(CLIP, [STYLE], tmp_path / "out.mov", dataclasses.replace(TINY, codec="prores"),
                          weights="random", executor=LOCAL)
    assert first.rendered > 0 and "Video: prores (HQ)" in video._header(str(first.output))
    again = stylize_video(CLIP, [STYLE], tmp_path / "out.mkv", dataclasses.replace(TINY, codec="ffv1"),
                          weights="random", executor=LOCAL, job_dir=first.job_dir, report=False)
    assert again.rendered == 0 and again.resumed > 0
    assert video.probe(again.output).frames == 12 and "Video: ffv1" in video._header(str(again.output))
