"""The same job on Ray: a local pool of actors, one of them killed mid-frame."""
import json
import os
import signal

import pytest
import ray

from ray_style import video
from ray_style.runner import stylize_video
from ray_style.settings import ExecutorOptions
from tests.conftest import kill_when_sent, ready_pool, redone_frames, worker_pid
from tests.test_runner import CLIP, STYLE, TINY, frames_of

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.fixture(scope="module")
def local_ray():
    if ray.is_initialized():
        ray.shutdown()
    ray.init(address="local", num_cpus=2, object_store_memory=200 * 1024**2, include_dashboard=False,
             log_to_driver=False)
    yield
    ray.shutdown()


def options(frames_per_worker=1, max_workers=2):
    return ExecutorOptions(max_workers=max_workers, threads=1, frames_per_worker=frames_per_worker)


def ray_run(tmp_path, name, frames_per_worker=1, max_workers=2, executor=None):
    return stylize_video(CLIP, [STYLE], tmp_path / f"{name}.mp4", TINY, weights="random", report=False,
                         executor=executor or options(frames_per_worker, max_workers))


def records(job_dir):
    return [json.loads(line) for line in (job_dir / "frames.jsonl").read_text().splitlines()]


def test_ray_pool_renders_every_frame_once(tmp_path, local_ray):
    pool = ready_pool(options(), 2)  # both placed before the first frame: both get frames
    try:
        result = ray_run(tmp_path, "a", executor=pool)
    finally:
        pool.close()
    assert result.workers == 2 and result.redone == 0
    assert video.probe(result.output).frames == 12
    assert len(records(result.job_dir)) == 16  # every (chain, frame) once: 12 frames + 2 seams x 2
    assert len({r["worker"] for r in records(result.job_dir)}) == 2  # both actors worked


def test_killed_actor_frame_is_redone_and_output_unchanged(tmp_path, local_ray, monkeypatch):
    reference = ray_run(tmp_path, "reference")
    killed = kill_when_sent(monkeypatch, lambda name: os.kill(worker_pid(name), signal.SIGKILL))
    result = ray_run(tmp_path, "killed")
    assert killed and result.redone >= 1
    lost = redone_frames(result.job_dir)
    assert lost and all(any(r["chain"] == c and r["frame"] == f for r in records(result.job_dir)) for c, f in lost)
    assert frames_of(result.job_dir) == frames_of(reference.job_dir)
    assert result.output.read_bytes() == reference.output.read_bytes()  # its spans' parts: the same bytes


def test_frames_of_different_chains_share_a_worker_call(tmp_path, local_ray, monkeypatch):
    """One worker taking two frames per call, three chains: whenever it is idle, two chains have a
    frame waiting, so calls carry two frames whatever the timing (two workers would spread the
    frames first and batch only when one of them happened to be busy)."""
    from ray_style import workers

    real, calls = workers.RayExecutor._send, []

    def counted(self):
        before = set(self.state.in_flight)
        real(self)
        calls.extend(len(self.state.in_flight[ref].jobs) for ref in set(self.state.in_flight) - before)

    monkeypatch.setattr(workers.RayExecutor, "_send", counted)
    result = ray_run(tmp_path, "batched", frames_per_worker=2, max_workers=1)
    assert video.probe(result.output).frames == 12
    assert len(records(result.job_dir)) == result.rendered == sum(calls)
    assert max(calls) == 2, calls  # the calls as they were sent, not guessed from the records


def test_an_error_raised_while_fetching_a_result_fails_only_that_frame(tmp_path, local_ray, monkeypatch):
    """Seen in CI: CPython 3.11 raised SystemError while Ray built a call's error on the driver.
    Whatever a fetch raises, the frame counts as failed once and is rendered again."""
    from ray_style import workers
    from ray_style.job import read_events

    real, raised = workers.ray.get, []

    def flaky_get(refs, *args, **kwargs):
        value = real(refs, *args, **kwargs)
        if isinstance(value, list) and not raised:  # a render call's results, not a ready ping
            raised.append(1)
            raise SystemError("AST constructor recursion depth mismatch (before=39, after=36)")
        return value

    monkeypatch.setattr(workers.ray, "get", flaky_get)
    result = ray_run(tmp_path, "flaky")
    assert raised and video.probe(result.output).frames == 12
    failed = [e for e in read_events(result.job_dir) if e.get("kind") == "failed"]
    assert len(failed) == 1 and "AST constructor" in failed[0]["detail"]


def test_a_worker_with_two_calls_in_flight_prepares_one_while_the_other_optimizes(tmp_path, local_ray, monkeypatch):
    """A GPU worker's two calls (forced here on a CPU worker): one worker, three chains; a second
    call is sent while the first renders, the optimizations still run one at a time on one
    thread (the frames equal a run with one call at a time, bit for bit), and the job reports
    the share of the worker's working time spent optimizing."""
    from ray_style import workers
    from ray_style.job import read_events

    single = ray_run(tmp_path, "single", max_workers=1)
    real_send, most = workers.RayExecutor._send, []

    def send(self):
        self.calls = 2
        for worker in list(self.state.idle):  # placed before the switch: give it its second slot
            if self.state.idle.count(worker) + sum(c.worker is worker for c in self.state.in_flight.values()) < 2:
                self.state.idle.append(worker)
        real_send(self)
        per_worker = {}
        for call in self.state.in_flight.values():
            per_worker[id(call.worker)] = per_worker.get(id(call.worker), 0) + 1
        most.append(max(per_worker.values(), default=0))

    monkeypatch.setattr(workers.RayExecutor, "_send", send)
    double = ray_run(tmp_path, "double", max_workers=1)
    assert max(most) == 2, "no worker ever had two calls in flight"
    assert frames_of(double.job_dir) == frames_of(single.job_dir)
    assert double.workers == 1 and video.probe(double.output).frames == 12
    for result in (single, double):
        assert 0.2 < result.optimizing <= 1.0
        shares = [e["detail"] for e in read_events(result.job_dir) if e["kind"] == "workers"]
        assert len(shares) == 1 and shares[0].startswith(f"{result.rendered} frames;")


def test_the_first_chains_render_while_the_film_decodes(tmp_path, local_ray, monkeypatch):
    """No whole-film barrier: bikes_cut.mp4 (20 frames, a cut at frame 10) where frames 16-19
    decode only after a frame is stored (their segment's task cannot see the input; the driver,
    which decodes it instead, waits for the first stored frame). The chains of the first shot,
    settled once frames 0-15 are decoded, render meanwhile; the frames and the output are those
    of a job that waits for the whole decode. Interrupted while decoding, a re-run resumes the
    frames already stored."""
    import dataclasses
    import threading

    from ray_style import runner, sources
    from ray_style.job import read_events
    from tests.conftest import DATA

    clip = DATA / "bikes_cut.mp4"
    real_segments, real_here = sources.segments, sources.decode_here
    stored = threading.Event()

    def two_segments(info, *args, **kwargs):
        first = real_segments(info, *args, **kwargs)[0]
        return [dataclasses.replace(first, start=0, end=16, files=sources._files(info, 0, 16)),
                dataclasses.replace(first, start=16, end=20, files=(("/no/such/input.mp4", 1),))]

    def after_a_frame(segment):
        assert stored.wait(120), "no frame was stored while the film decoded"
        return real_here(segment)

    def progress(p):
        if p.stage == "render" and p.done:
            stored.set()

    def run(name, interrupt=False):
        stored.clear()

        def told(p):
            progress(p)
            if interrupt and stored.is_set():
                raise KeyboardInterrupt

        return stylize_video(clip, [STYLE], tmp_path / f"{name}.mp4", TINY, weights="random", report=False,
                             executor=options(), progress=told)

    monkeypatch.setattr(sources, "segments", two_segments)
    monkeypatch.setattr(sources, "decode_here", after_a_frame)
    early = run("early")
    events = read_events(early.job_dir)
    assert [e for e in events if e["kind"] == "render"]  # it rendered while decoding
    assert [e for e in events if e["kind"] == "decode"]  # frames 16-19 decoded by the driver
    index_written = (early.job_dir / "source" / "index.json").stat().st_mtime
    first_stored = min(r["time"] for r in records(early.job_dir))
    assert first_stored < index_written  # a frame was stored before the decode was over
    assert video.probe(early.output).frames == 20 and early.resumed == 0
    assert early.rendered == len(records(early.job_dir))

    with pytest.raises(KeyboardInterrupt):
        run("resumed", interrupt=True)
    assert not (tmp_path / "resumed.job" / "source" / "index.json").exists()  # stopped while decoding
    kept = len(records(tmp_path / "resumed.job"))
    assert kept >= 1
    resumed = run("resumed")
    assert resumed.resumed == kept and resumed.rendered == len(records(resumed.job_dir)) - kept

    monkeypatch.setattr(runner, "early_length", lambda *args: None)  # the render waits for the decode
    monkeypatch.setattr(sources, "decode_here", real_here)
    barrier = run("barrier")
    assert not [e for e in read_events(barrier.job_dir) if e["kind"] == "render"]
    assert frames_of(early.job_dir) == frames_of(barrier.job_dir) == frames_of(resumed.job_dir)
    assert early.output.read_bytes() == barrier.output.read_bytes() == resumed.output.read_bytes()


def test_the_source_is_decoded_by_ray_tasks_in_segments(tmp_path, local_ray, monkeypatch):
    """bikes_cut.mp4 (a cut at frame 10) in segments of 10 frames, so the cut falls between two
    segments: CPU tasks decode them into the job (the driver decodes none), and the job's
    source frames and cuts are those of one decode of the whole video. A segment whose task
    does not reach the job's store is decoded by the driver instead, with the same bytes."""
    import dataclasses

    from ray_style import codec, plan, sources
    from ray_style.job import read_events
    from tests.conftest import DATA

    clip = DATA / "bikes_cut.mp4"
    info = video.probe(clip)
    frames = list(video.decode(info, *video.frame_size(info, TINY.style.size)))
    expected = [codec.digest(codec.png_bytes(frame)) for frame in frames]
    cuts = plan.detect_cuts([plan.frame_signature(frame) for frame in frames], TINY.cut_ratio)
    assert cuts == [10]
    monkeypatch.setattr(sources, "SEGMENT", 10)

    def index_of(job_dir):
        return json.loads((job_dir / "source" / "index.json").read_text())

    def refused(segment):
        raise AssertionError("the driver decoded a segment")

    monkeypatch.setattr(sources, "decode_here", refused)
    result = stylize_video(clip, [STYLE], tmp_path / "tasks.mp4", TINY, weights="random", report=False,
                           executor=options())
    assert index_of(result.job_dir)["sha256"] == expected and index_of(result.job_dir)["cuts"] == cuts
    assert not [e for e in read_events(result.job_dir) if e["kind"] == "decode"]
    assert video.probe(result.output).frames == 20
    monkeypatch.undo()

    monkeypatch.setattr(sources, "SEGMENT", 10)
    real = sources.segments

    def one_unreachable(*args, **kwargs):
        made = real(*args, **kwargs)
        return [made[0], dataclasses.replace(made[1], token=(made[1].token[0], "another store's token"))]

    monkeypatch.setattr(sources, "segments", one_unreachable)
    again = stylize_video(clip, [STYLE], tmp_path / "mixed.mp4", TINY, weights="random", report=False,
                          executor=options())
    assert index_of(again.job_dir)["sha256"] == expected and index_of(again.job_dir)["cuts"] == cuts
    said = [e["detail"] for e in read_events(again.job_dir) if e["kind"] == "decode"]
    assert len(said) == 1 and "frames 10-19" in said[0] and "decoding here" in said[0]
    assert frames_of(again.job_dir) == frames_of(result.job_dir)


def test_the_output_is_encoded_in_spans_by_ray_tasks_and_joined(tmp_path, local_ray, monkeypatch):
    """Spans of 5 frames: CPU tasks encode them from the job's store (the driver encodes none)
    and the driver joins them: the frame count, every frame's time and the audio of a local
    run's single encode, and in FFV1 its pixels exactly. Delivered again (the output removed):
    no render, no part encoded again, the same bytes. A span whose task does not reach the
    store is encoded by the driver, to the same bytes (one thread: x264's output depends on the
    frames alone); a part damaged on disk is encoded again, to the same bytes."""
    import dataclasses

    from ray_style import spans
    from ray_style.job import read_events
    from tests.test_runner import LOCAL
    from tests.test_spans import _times

    monkeypatch.setattr(spans, "SPAN", 5)
    real_here = spans.encode_here

    def refused(span):
        raise AssertionError("the driver encoded a span")

    monkeypatch.setattr(spans, "encode_here", refused)
    first = ray_run(tmp_path, "a")
    parts = sorted((first.job_dir / "encoded").glob("*.nut"))
    assert [p.name[:15] for p in parts] == ["0000000-0000005", "0000005-0000010", "0000010-0000012"]
    assert len(list((first.job_dir / "encoded").glob("*.json"))) == 3
    local = stylize_video(CLIP, [STYLE], tmp_path / "local.mp4", TINY, weights="random", report=False,
                          executor=LOCAL)
    assert frames_of(first.job_dir) == frames_of(local.job_dir)
    one, joined = video.probe(local.output), video.probe(first.output)
    assert (joined.frames, joined.fps, joined.audio_codecs) == (one.frames, one.fps, one.audio_codecs)
    assert _times(first.output, "0:v:0") == _times(local.output, "0:v:0")
    assert _times(first.output, "0:a:0") == pytest.approx(_times(local.output, "0:a:0"), abs=0.002)

    ffv1 = dataclasses.replace(TINY, codec="ffv1")  # the same job, delivered again in FFV1
    lossless = stylize_video(CLIP, [STYLE], tmp_path / "a.mkv", ffv1, weights="random", report=False,
                             executor=options(), job_dir=first.job_dir)
    single = stylize_video(CLIP, [STYLE], tmp_path / "local.mkv", ffv1, weights="random", report=False,
                           executor=LOCAL, job_dir=local.job_dir)
    assert lossless.rendered == 0 and video.probe(lossless.output).frames == 12
    size = (joined.width, joined.height)
    assert all((a == b).all() for a, b in zip(video.decode(video.probe(lossless.output), *size),
                                              video.decode(video.probe(single.output), *size)))
    assert not [e for e in read_events(first.job_dir) if e["kind"] == "encode"]

    output, stamps = first.output.read_bytes(), [p.stat().st_mtime_ns for p in parts]
    stale = first.job_dir / "encoded" / "0000000-0000005-0123456789abcdef01234567"  # of frames since rendered again
    stale.with_suffix(".nut").write_bytes(b"a part of other frames")
    stale.with_suffix(".json").write_text(json.dumps({"frames_of": "frames the job no longer has"}))
    first.output.unlink()
    again = ray_run(tmp_path, "a")
    assert again.rendered == 0 and again.output.read_bytes() == output
    assert [p.stat().st_mtime_ns for p in parts] == stamps  # joined from the parts it had
    assert not stale.with_suffix(".nut").exists() and not stale.with_suffix(".json").exists()
    assert len(list((first.job_dir / "encoded").glob("*.nut"))) == 6  # the FFV1 delivery's parts stay

    monkeypatch.setattr(spans, "encode_here", real_here)
    real_make = spans.make

    def second_unreachable(output, start, end, *args):
        span = real_make(output, start, end, *args)
        return dataclasses.replace(span, token=(span.token[0], "another store's")) if start == 5 else span

    monkeypatch.setattr(spans, "make", second_unreachable)
    (tmp_path / "b").mkdir()
    elsewhere = ray_run(tmp_path / "b", "a")  # the same job in another folder: frames 5-9 encoded here
    said = [e["detail"] for e in read_events(elsewhere.job_dir) if e["kind"] == "encode"]
    assert len(said) == 1 and "frames 5-9" in said[0] and "encoding here" in said[0]
    assert elsewhere.output.read_bytes() == output
    monkeypatch.setattr(spans, "make", real_make)

    data = bytearray(parts[1].read_bytes())
    data[len(data) // 2] ^= 0xFF
    parts[1].write_bytes(bytes(data))
    first.output.unlink()
    repaired = ray_run(tmp_path, "a")
    assert repaired.rendered == 0 and repaired.output.read_bytes() == output
    assert [e["frame"] for e in read_events(first.job_dir) if e["kind"] == "repaired"] == [5]


def test_a_pool_asks_for_a_few_workers_at_a_time_not_one_per_waiting_chain(local_ray, monkeypatch):
    """Thousands of chains waiting on a cluster that places no more: the pool keeps a bounded
    number of actors pending (at least PENDING_AHEAD, at most as many as are placed), and gives
    the pending ones back when the work left needs no more workers."""
    from ray_style import workers

    pool = ready_pool(options(max_workers=None), 2)  # the two CPUs' workers, both placed
    try:
        pool.cap = None
        pool.follow(waiting=4000, active=4000, release=True)
        assert pool.pending_workers == max(workers.PENDING_AHEAD, 2)
        pool.follow(waiting=4000, active=4000, release=True)  # asked again: no more than that
        assert pool.pending_workers == max(workers.PENDING_AHEAD, 2)
        pool.follow(waiting=0, active=2, release=True)  # the tail: the pending ones go first
        assert pool.pending_workers == 0 and pool.workers == 2
        pool.follow(waiting=0, active=1, release=True)  # then an idle worker
        assert pool.workers == 1 and any(n.kind == "released" for n in pool.notes())
    finally:
        pool.close()
