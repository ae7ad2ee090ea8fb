"""Where a job's bytes live: a local folder and a real S3 server (SeaweedFS), the same contract."""
import json
import os
import time

import pytest

from ray_style import store, video
from ray_style.errors import InputError, JobError


@pytest.fixture(params=["local", "s3"])
def backend(request, tmp_path):
    """A job's store on each backend (the S3 one in its own bucket)."""
    if request.param == "local":
        return store.open_store(tmp_path / "job")
    bucket = request.getfixturevalue("s3")
    return store.open_store(f"{bucket}/jobs/one.job")


def test_the_same_contract_on_both_backends(backend):
    backend.write("chains/0000/000001.png", b"frame one")
    backend.write("chains/0001/000002.png", b"frame two!")
    assert backend.read("chains/0000/000001.png") == b"frame one"
    assert backend.sizes("chains") == {"chains/0000/000001.png": 9, "chains/0001/000002.png": 10}
    assert backend.sizes("nothing") == {}
    with pytest.raises(FileNotFoundError):
        backend.read("chains/0009/000009.png")
    assert backend.create("once.json", b"1") and not backend.create("once.json", b"2")
    assert backend.read("once.json") == b"1"
    for number in range(3):
        backend.append("frames", {"n": number})
    assert [r["n"] for r in backend.records("frames")] == [0, 1, 2]  # in the order they were written
    tail = backend.tail("frames")
    assert [r["n"] for r in tail.read()[0]] == [0, 1, 2]
    backend.append("frames", {"n": 3})
    assert [r["n"] for r in tail.read()[0]] == [3]  # only what is new
    backend.delete("once.json")
    assert not backend.exists("once.json")
    backend.delete_prefix("chains")
    assert backend.sizes("chains") == {}


def test_the_drivers_own_page_reads_its_records_from_memory(s3):
    """A tail of a bucket's log lists and fetches it once; after that, the records this process
    appends come from memory (a listing grows with the film), those of before from the bucket."""
    job = store.open_store(f"{s3}/tailed.job")
    job.append("frames", {"n": 0})  # written before the tail, by this or an earlier driver
    tail = job.tail("frames")
    job.append("frames", {"n": 1})  # between the tail's start and its first read
    assert [r["n"] for r in tail.read()[0]] == [0, 1]

    def no_listing(*args, **kwargs):
        raise AssertionError("the log was read from the bucket again")

    with pytest.MonkeyPatch.context() as patch:  # appends still go to the bucket (pipe_file)
        for name in ("ls", "find", "cat", "cat_file"):
            patch.setattr(job.fs, name, no_listing)
        job.append("frames", {"n": 2})
        job.append("frames", {"n": 3})
        assert [r["n"] for r in tail.read()[0]] == [2, 3] and tail.read()[0] == []
    assert [r["n"] for r in job.records("frames")] == [0, 1, 2, 3]  # all of them are in the bucket


def test_a_job_is_held_by_one_driver(backend):
    first = backend.hold("driver one")
    with pytest.raises(JobError, match="in use by another"):
        backend.hold("driver two")
    first.release()
    backend.hold("driver two").release()


def test_an_expired_lease_is_taken_over_and_its_holder_stops_writing(s3):
    job = store.open_store(f"{s3}/leased.job")
    first = store.Lease(job, "driver one", seconds=1.5)
    first._stop.set()  # the driver dies: nothing renews its lease
    with pytest.raises(JobError, match=r"in use by another driver \(driver one on .*lease runs"):
        store.Lease(job, "driver two", seconds=1.5)
    time.sleep(1.6)
    second = store.Lease(job, "driver two", seconds=30)
    assert second.notes and "took over the job from driver one" in second.notes[0]
    # Were the first driver only stalled, its next renewal finds the lease taken, and it stops.
    assert not job.replace_if(store.Lease.KEY, first._body(), first.etag)
    second.release()
    assert not job.exists(store.Lease.KEY)


def test_locations_keep_urls_whole(tmp_path, monkeypatch):
    place = store.location("s3://bucket/films/film.mp4")
    assert place.remote and place.name == "film.mp4" and place.suffix == ".mp4"
    assert place.sibling("film.job").text == "s3://bucket/films/film.job"
    monkeypatch.chdir(tmp_path)
    assert store.resolved("clips/a.mp4").text == str(tmp_path / "clips" / "a.mp4")
    assert store.resolved("s3://b/k").text == "s3://b/k"
    with pytest.raises(InputError, match="a job cannot live on a web server"):
        store.open_store("https://example.com/job")


def test_an_object_is_read_where_it_is(s3):
    fs = store.filesystem(s3)
    fs.pipe_file(f"{s3}/art/style.jpg", b"not really a jpeg")
    assert store.read_bytes(f"{s3}/art/style.jpg") == b"not really a jpeg"
    identity = store.identity(f"{s3}/art/style.jpg")
    assert identity["size"] == 17 and identity["etag"]
    url = store.ffmpeg_input(f"{s3}/art/style.jpg")
    assert url.startswith("http://127.0.0.1:") and "Signature=" in url  # presigned: ffmpeg reads ranges
    with pytest.raises(FileNotFoundError):
        store.ffmpeg_input(f"{s3}/art/missing.mp4")


def test_store_faults_are_one_line(s3, monkeypatch, seaweed):
    from tests.s3 import READER_KEY, READER_SECRET

    with pytest.raises(InputError, match="cannot write output s3://no-such-bucket-here/out.mp4: no such bucket"):
        store.check_writable("s3://no-such-bucket-here/out.mp4")
    store.check_writable(f"{s3}/out.mp4")
    store.filesystem(s3).pipe_file(f"{s3}/in.txt", b"x")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", READER_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", READER_SECRET)
    assert store.read_bytes(f"{s3}/in.txt") == b"x"  # may read…
    with pytest.raises(InputError, match=f"cannot write output {s3}/out.mp4: access denied"):
        store.check_writable(f"{s3}/out.mp4")  # …not write
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    with pytest.raises(InputError, match=f"cannot write output {s3}/out.mp4: the secret key does not match"):
        store.check_writable(f"{s3}/out.mp4")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "nobody")
    with pytest.raises(InputError, match="cannot read .*: (the access key is not known|access denied)"):
        store.read_bytes(f"{s3}/in.txt")


# ---------------------------------------------------------------- a whole job in a bucket
import signal  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

from tests.test_runner import CLIP, LOCAL, STYLE, TINY, frames_of  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def _upload_inputs(s3):
    fs = store.filesystem(s3)
    fs.put_file(str(CLIP), f"{s3}/in/clip.mp4")
    fs.put_file(str(STYLE), f"{s3}/art/style.jpg")
    return f"{s3}/in/clip.mp4", f"{s3}/art/style.jpg"


def _stored_frames(job_dir) -> dict:
    job = store.open_store(job_dir)
    return {Path(key): job.read(key) for key in sorted(job.sizes("chains"))}


@pytest.fixture(scope="module")
def local_reference(tmp_path_factory):
    """The job run with local paths: what every bucket run must equal, byte for byte."""
    from ray_style.runner import stylize_video

    folder = tmp_path_factory.mktemp("local")
    result = stylize_video(CLIP, [STYLE], folder / "out.mp4", TINY, weights="random", executor=LOCAL, report=False)
    return frames_of(result.job_dir), result.output.read_bytes()


@pytest.mark.slow
def test_a_job_with_everything_in_a_bucket_equals_a_local_one(s3, local_reference):
    from ray_style.runner import stylize_video

    clip, style = _upload_inputs(s3)
    result = stylize_video(clip, [style], f"{s3}/out/clip.mp4", TINY, weights="random", executor=LOCAL)
    assert result.job_dir == f"{s3}/out/clip.job" and result.output == f"{s3}/out/clip.mp4"
    frames, video_bytes = local_reference
    assert _stored_frames(result.job_dir) == frames
    assert store.read_bytes(result.output) == video_bytes
    job = store.open_store(result.job_dir)
    assert {"report/index.html", "report/evaluation.json", "report/contact_sheet.png"} <= set(job.sizes("report"))
    assert len(job.records("frames")) == 16 and not job.exists("lease.json")  # released at the end
    assert len(job.sizes("thumbs")) == 32  # the page's thumbnails, made by the workers (source and stylized)
    manifest = json.loads(job.read("manifest.json"))
    assert manifest["input"]["etag"] and "sha256" not in manifest["input"]  # the master was not downloaded


def _cli(clip, style, output, *extra):
    return ["video", clip, style, "-o", output, "--size", "32", "--iters", "6", "--content-weight", "1",
            "--style-weight", "1e3", "--content-layers", "relu2_1", "--style-layers", "relu1_1,relu2_1",
            "--segment-length", "5", "--overlap", "2", "--weights", "random", "--executor", "local", "--threads", "2",
            "--passes", "0", "--no-report", "-q", *extra]  # TINY's settings


@pytest.mark.slow
def test_a_killed_head_is_replaced_by_a_driver_elsewhere(tmp_path, s3, seaweed, local_reference):
    """The driver and its machine are gone (SIGKILL, its working directory and TMPDIR deleted):
    a driver started elsewhere, with an empty disk, finishes the job byte-identically. While the
    first one's lease lives, a second driver is refused; once it has expired, it takes over."""
    clip, style = _upload_inputs(s3)
    output = f"{s3}/out/film.mp4"
    # A lease long enough for the second driver to start and meet it, short enough to wait out.
    env = {**os.environ, **seaweed.environment(), "PYTHONPATH": str(ROOT), "RAY_STYLE_LEASE_SECONDS": "15"}
    first_home, second_home = tmp_path / "head-1", tmp_path / "head-2"
    for home in (first_home, second_home):
        (home / "tmp").mkdir(parents=True)
    # The first head stops itself right after its 4th stored frame: the kill lands there.
    victim = subprocess.Popen([sys.executable, "-m", "tests.stopping", "4", *_cli(clip, style, output)],
                              cwd=first_home, env={**env, "TMPDIR": str(first_home / "tmp")})
    _, status = os.waitpid(victim.pid, os.WUNTRACED)
    assert os.WIFSTOPPED(status)
    second = [sys.executable, "-m", "ray_style.cli", *_cli(clip, style, output)]
    second_env = {**env, "TMPDIR": str(second_home / "tmp")}
    refused = subprocess.run(second, cwd=second_home, env=second_env, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 4 and "in use by another driver" in refused.stderr, refused.stderr
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    shutil.rmtree(first_home)  # its disk is gone with it
    job = store.open_store(f"{s3}/out/film.job")
    lease = json.loads(job.read("lease.json"))
    time.sleep(max(0.0, lease["expires"] - time.time()) + 0.2)  # until the dead driver's lease has run out
    done = subprocess.run(second, cwd=second_home, env=second_env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    print(f"second driver, while the lease lived: exit {refused.returncode}: {refused.stderr.strip()}\n"
          f"second driver, after it expired: exit {done.returncode}: {done.stderr.strip()}")  # pytest -s shows it
    frames, video_bytes = local_reference
    assert _stored_frames(f"{s3}/out/film.job") == frames and store.read_bytes(output) == video_bytes
    events = job.records("events")
    taken = [e["detail"] for e in events if "took over the job" in e.get("detail", "")]
    assert taken
    print(f"its event: {taken[0]}")
    resumed = [r for r in job.records("frames")]
    assert len(resumed) == 16  # 4 by the dead head, 12 by the new one: each frame once


@pytest.mark.slow
def test_a_store_that_goes_away_mid_job_is_waited_for(s3, seaweed, local_reference, monkeypatch):
    """The S3 server is killed after the 4th stored frame and comes back a few seconds later:
    the job retries its calls, loses nothing, and ends as an uninterrupted one."""
    import threading

    from ray_style.job import Job
    from ray_style.runner import stylize_video

    clip, style = _upload_inputs(s3)
    real, stored, away = Job.vouch, [], []
    restart = threading.Thread(target=lambda: (time.sleep(2), seaweed.start()), daemon=True)

    def outage_after_four(self, *args, **kwargs):
        record = real(self, *args, **kwargs)
        stored.append(record)
        if len(stored) == 4:
            seaweed.stop()
            away.append(time.monotonic())
            restart.start()
        return record

    monkeypatch.setattr(Job, "vouch", outage_after_four)
    result = stylize_video(clip, [style], f"{s3}/out/clip.mp4", TINY, weights="random", executor=LOCAL, report=False)
    # The job went on only once the server was back (its start may return after the job's
    # retries got through: it waits for more than the S3 port).
    assert away and time.monotonic() - away[0] >= 2 and len(stored) == 16
    restart.join(60)
    frames, video_bytes = local_reference
    assert _stored_frames(result.job_dir) == frames and store.read_bytes(result.output) == video_bytes


@pytest.mark.slow
def test_damaged_objects_of_a_bucket_job_are_made_again(s3, local_reference):
    """test_safety's damage, on a bucket: a frame with bit rot, a deleted frame and a deleted
    source frame are found by their checksums, made again, and the job ends as the local one."""
    from ray_style.job import read_events
    from ray_style.runner import stylize_video

    clip, style = _upload_inputs(s3)
    output = f"{s3}/out/clip.mp4"
    stylize_video(clip, [style], output, TINY, weights="random", executor=LOCAL, report=False)
    job = store.open_store(f"{s3}/out/clip.job")
    data = job.read("chains/0001/000005.png")
    job.write("chains/0001/000005.png", data[:-30] + bytes(b ^ 0xFF for b in data[-30:-12]) + data[-12:])
    job.delete("chains/0000/000002.png")
    job.delete("source/000002.png")
    result = stylize_video(clip, [style], output, TINY, weights="random", executor=LOCAL, report=False)
    frames, video_bytes = local_reference
    assert result.rendered == 2 and _stored_frames(result.job_dir) == frames
    assert store.read_bytes(output) == video_bytes
    repaired = {(e["what"], e["frame"]) for e in read_events(result.job_dir) if e["kind"] == "repaired"}
    assert {("frame", 5), ("frame", 2), ("source", 2)} <= repaired, repaired


@pytest.mark.slow
def test_every_command_takes_urls(s3, tmp_path, capsys):
    """status, evaluate, preview and batch read and write a bucket as they do a folder."""
    from ray_style.cli import main

    clip, style = _upload_inputs(s3)
    fast = ["--weights", "random", "--size", "32", "--iters", "2", "--content-weight", "1", "--style-weight", "1e3",
            "--executor", "local", "-q"]
    assert main(["video", clip, style, "-o", f"{s3}/out/clip.mp4", "--no-report", *fast]) == 0
    assert main(["status", f"{s3}/out/clip.job", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["finished"] and status["renders_done"] == status["renders_total"] > 0
    assert main(["evaluate", f"{s3}/out/clip.mp4", "--source", clip, "--job", f"{s3}/out/clip.job", "--weights",
                 "random", "--json", "--report-dir", f"{s3}/out/report"]) == 0
    assert json.loads(capsys.readouterr().out)["frames"] == 12
    assert "out/report/warping_error.svg" in store.open_store(s3).sizes("out/report")
    assert main(["preview", clip, style, "--frames", "1", "-o", f"{s3}/out/look.png", *fast]) == 0
    assert store.read_bytes(f"{s3}/out/look.png")[:4] == b"\x89PNG"
    spec = f"{s3}/specs/batch.toml"
    store.write_bytes(spec, (f'[defaults]\nweights = "random"\nsize = 32\niters = 2\ncontent_weight = 1.0\n'
                             f'[[job]]\ninput = "../in/clip.mp4"\nstyles = ["{style}"]\noutput = "b.mp4"\n').encode())
    assert main(["batch", spec, "--executor", "local", "-q"]) == 0
    assert store.exists(f"{s3}/specs/b.mp4")
    capsys.readouterr()
    assert main(["status", f"{s3}/out/clip.job", "--serve"]) == 2
    assert "serves a job on this machine's disk" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.ray
def test_workers_on_two_nodes_read_and_write_the_bucket_themselves(s3, tmp_path):
    """Two Ray nodes, the job in a bucket: the workers on both nodes read their inputs from it
    and put their frames there; the driver writes records only and never hands a frame over.
    Same bytes as the job run in this process."""
    import ray
    from ray.cluster_utils import Cluster

    from ray_style.runner import stylize_video
    from ray_style.settings import ExecutorOptions

    clip, style = _upload_inputs(s3)
    one_thread = ExecutorOptions(kind="local", threads=1)  # the workers' thread count: the same bytes
    reference = stylize_video(CLIP, [STYLE], tmp_path / "local.mp4", TINY, weights="random", executor=one_thread,
                              report=False)
    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "object_store_memory": 100 * 1024**2,
                                                           "include_dashboard": False})
    cluster.add_node(num_cpus=1, object_store_memory=100 * 1024**2)  # workers get this process's AWS_* settings
    cluster.wait_for_nodes()
    try:
        from tests.conftest import ready_pool

        pool = ready_pool(ExecutorOptions(address=cluster.address, max_workers=2, threads=1), 2)  # both placed
        try:
            result = stylize_video(clip, [style], f"{s3}/out/clip.mp4", TINY, weights="random", report=False,
                                   executor=pool)
        finally:
            pool.close()
        # The same job delivered by a pool of its own: its output encoded in spans by tasks that
        # read the frames from the bucket and put their parts there; the driver joins them.
        spans = stylize_video(clip, [style], f"{s3}/out/spans.mkv", TINY, weights="random", report=False,
                              executor=ExecutorOptions(address=cluster.address, max_workers=2, threads=1),
                              job_dir=result.job_dir)
    finally:
        if ray.is_initialized():
            ray.shutdown()
        cluster.shutdown()
    job = store.open_store(result.job_dir)
    records = job.records("frames")
    nodes = {r["worker"].split("/")[1].split(":")[0] for r in records}
    assert len(records) == 16 and len(nodes) == 2  # both nodes' workers stored frames
    assert not any("cannot be read here" in e.get("detail", "") for e in job.records("events"))  # never relayed
    assert _stored_frames(result.job_dir) == frames_of(reference.job_dir)
    assert store.read_bytes(result.output) == reference.output.read_bytes()
    assert spans.rendered == 0 and [k for k in job.sizes("encoded") if k.endswith(".nut")]
    joined = tmp_path / "spans.mkv"
    joined.write_bytes(store.read_bytes(spans.output))
    from tests.test_spans import _times

    assert _times(joined, "0:v:0") == pytest.approx(_times(reference.output, "0:v:0"), abs=1e-6)
    assert video.probe(joined).frames == 12 and video.probe(joined).audio_codecs == ("aac",)
