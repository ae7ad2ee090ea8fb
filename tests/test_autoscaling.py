"""Clusters as users deploy them: 1-CPU nodes, GPU nodes that an autoscaler adds from zero
(Ray's fake_multinode provider: each "node" is a real raylet on this machine with a fake GPU
resource), nodes that disappear mid-job. Everything started here is ended here, by PID."""
import dataclasses
import json
import os
import socket
import tempfile
import time
from pathlib import Path

import psutil
import pytest
import ray
import yaml

from ray_style import video
from ray_style.errors import ClusterError
from ray_style.job import read_events
from ray_style.runner import stylize_video
from ray_style.settings import ExecutorOptions, StyleSettings
from tests.conftest import kill_when_sent, redone_frames, worker_pid
from tests.test_runner import CLIP, STYLE, TINY, frames_of

pytestmark = [pytest.mark.ray, pytest.mark.slow]

# Three chains of 4 frames (plus lead-ins), with the paper's five VGG blocks: frames long
# enough that the job outlasts the autoscaler's start of a second node.
JOB = dataclasses.replace(TINY, segment_length=4, overlap=1,
                          style=dataclasses.replace(TINY.style, content_layers=StyleSettings().content_layers,
                                                    style_layers=StyleSettings().style_layers))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def end_processes_of(port: int) -> None:
    """Kill what this test's cluster started: every process that names its GCS port, and their
    children (raylets, workers, agents of the fake nodes), by PID."""
    marks = (f":{port}", f"={port}")
    ours = [p for p in psutil.process_iter(["cmdline"])
            if any(part.endswith(marks) or f":{port} " in part for part in p.info["cmdline"] or [])]
    family = {p.pid: p for p in ours}
    for process in ours:
        try:
            family.update({c.pid: c for c in process.children(recursive=True)})
        except psutil.NoSuchProcess:
            pass
    for process in family.values():
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(list(family.values()), timeout=10)


@pytest.fixture()
def autoscaling_cluster(monkeypatch, tmp_path):
    """A head with 0 CPUs and an autoscaler whose only worker type is {CPU: 1, GPU: 1}, min 0, max 3."""
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    port = free_port()
    config = {
        "cluster_name": "ray-style-test", "max_workers": 3, "idle_timeout_minutes": 5, "upscaling_speed": 10,
        # Fake nodes are raylets started by the provider itself: nothing to set up over SSH.
        "provider": {"type": "fake_multinode", "gcs_address": f"127.0.0.1:{port}", "disable_node_updaters": True,
                     "disable_launch_config_check": True},
        "auth": {"ssh_user": "nobody"},
        "available_node_types": {
            "ray.head.default": {"resources": {"CPU": 0}, "node_config": {}, "max_workers": 0},
            "gpu_node": {"resources": {"CPU": 1, "GPU": 1, "object_store_memory": 80 * 1024**2},
                         "node_config": {}, "min_workers": 0, "max_workers": 3},
        },
        "head_node_type": "ray.head.default",
        **{key: [] for key in ("initialization_commands", "setup_commands", "head_setup_commands",
                               "worker_setup_commands", "head_start_ray_commands", "worker_start_ray_commands",
                               "cluster_synced_files")},
        "file_mounts": {}, "file_mounts_sync_continuously": False,
    }
    path = tmp_path / "autoscaler.yaml"
    path.write_text(yaml.safe_dump(config))
    for key, value in {"RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1",
                       "RAY_AUTH_MODE": "disabled"}.items():
        monkeypatch.setenv(key, value)
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "gcs_server_port": port, "autoscaling_config": str(path),
        "object_store_memory": 80 * 1024**2, "include_dashboard": False})
    try:
        yield cluster
    finally:
        if ray.is_initialized():
            ray.shutdown()
        end_processes_of(port)
        cluster.shutdown()
        end_processes_of(port)


def records(job_dir):
    return [json.loads(line) for line in (job_dir / "frames.jsonl").read_text().splitlines()]


def node_of(record) -> str:
    return record["worker"].split("/")[1].split(":")[0]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The job rendered locally, without Ray: what every cluster run here must equal."""
    folder = tmp_path_factory.mktemp("local")
    return stylize_video(CLIP, [STYLE], folder / "local.mp4", JOB, weights="random",
                         executor=ExecutorOptions(kind="local", threads=1), report=False)


def test_gpu_nodes_are_requested_from_zero_and_a_lost_node_costs_only_its_frames(tmp_path, autoscaling_cluster,
                                                                                   monkeypatch, reference):
    # A fake GPU node's torch sees no CUDA: these runs let its workers render on the CPU.
    options = ExecutorOptions(address=autoscaling_cluster.address, placement_timeout=240, allow_cpu_fallback=True)
    notes = []
    started = time.monotonic()
    first_frame = []

    def progress(p):
        if p.note:
            notes.append(p.note)
        if p.stage == "render" and p.done and not first_frame:
            first_frame.append(time.monotonic() - started)

    grown = stylize_video(CLIP, [STYLE], tmp_path / "grown.mp4", JOB, weights="random", executor=options,
                          progress=progress, report=False)
    nodes = {node_of(r) for r in records(grown.job_dir)}
    assert len(nodes) >= 2, nodes  # the pool grew as the autoscaler added GPU nodes
    assert all(r["device"] == "cpu" and "no CUDA device" in r["warning"] for r in records(grown.job_dir))
    assert any("no CUDA device" in note for note in notes)  # said on the progress line too
    assert frames_of(grown.job_dir) == frames_of(reference.job_dir)  # identical to a local run
    launched = [n for n in ray.nodes() if n["Alive"] and n["Resources"].get("GPU")]
    print(f"autoscaled: {len(launched)} GPU nodes launched; first frame after {first_frame[0]:.1f} s; frames per "
          f"node { {n: sum(node_of(r) == n for r in records(grown.job_dir)) for n in nodes} }")

    # Now lose a node mid-job: its raylet and every process it started are killed the moment one
    # of its workers is handed a frame (after two calls have gone out), so that frame is
    # certainly lost (the worker dies with it) and redone elsewhere.
    def lose_node(name: str) -> None:
        raylet = psutil.Process(worker_pid(name)).parent()
        for process in [*raylet.children(recursive=True), raylet]:
            process.kill()

    killed = kill_when_sent(monkeypatch, lose_node)
    lost = stylize_video(CLIP, [STYLE], tmp_path / "lost.mp4", JOB, weights="random", executor=options,
                         report=False)
    assert killed, "no node was lost"
    assert lost.redone >= 1
    redone = redone_frames(lost.job_dir)
    assert redone, "the lost node's frame was not redone"
    rendered = [(r["chain"], r["frame"]) for r in records(lost.job_dir)]
    assert set(redone) <= set(rendered)  # each frame the node had in flight was rendered again, elsewhere
    assert len(rendered) == len(set(rendered)) == len(frames_of(reference.job_dir))  # every frame exactly once
    assert frames_of(lost.job_dir) == frames_of(reference.job_dir)
    assert video.probe(lost.output).frames == 12
    # The lost worker cost one replacement, and the tail gave idle workers back (their nodes
    # can then be removed by the autoscaler): asserted from the job's events, not assumed.
    events = [e for run in (grown, lost) for e in read_events(run.job_dir)]
    assert any(e["kind"] == "lost" and "replacement" in e["detail"] for e in events)
    assert any(e["kind"] == "released" for e in events)

    # GPU or nothing, the default: the same job without --allow-cpu-fallback stops at its first
    # worker, with one line naming it, its torch build and its driver, and writes no output.
    with pytest.raises(ClusterError) as refused:
        stylize_video(CLIP, [STYLE], tmp_path / "refused.mp4", JOB, weights="random", report=False,
                      executor=dataclasses.replace(options, allow_cpu_fallback=False))
    message = str(refused.value)
    assert "\n" not in message and "sees no CUDA device" in message and "--allow-cpu-fallback" in message
    assert "CUDA build" in message and "driver" in message and not (tmp_path / "refused.mp4").exists()


def head_and_a_node(head_cpus: int):
    """A head with ``head_cpus`` CPUs and one 1-CPU node (no autoscaler), ended with the test."""
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": head_cpus,
                                                           "object_store_memory": 80 * 1024**2,
                                                           "include_dashboard": False})
    cluster.add_node(num_cpus=1, object_store_memory=80 * 1024**2)
    cluster.wait_for_nodes()
    yield cluster
    if ray.is_initialized():
        ray.shutdown()
    cluster.shutdown()


@pytest.fixture()
def one_cpu_node():
    """A head with no CPUs and one 1-CPU node: no autoscaler, nodes come and go by hand."""
    yield from head_and_a_node(0)


def test_nodes_started_by_hand_mid_job_get_frames(tmp_path, one_cpu_node, monkeypatch, reference):
    """No autoscaler config, no --max-workers: the pool sized for one node asks for more while
    chains wait, a node started by hand takes a worker, and after that node is killed and
    another started, the new one takes the replacement. The first node's worker is paused
    (SIGSTOP, by PID) while nodes come and go, so that the others' part does not depend on how
    fast this machine renders; it is resumed once the last node has stored a frame."""
    import signal
    import threading

    cluster = one_cpu_node
    job_dir = tmp_path / "hand.job"
    added, paused = [], []
    timer = threading.Timer(120, lambda: paused and os.kill(paused[0], signal.SIGCONT))
    timer.daemon = True

    def stored_on(node) -> int:
        path = job_dir / "frames.jsonl"
        rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
        return sum(node_of(r) == node.node_id[-8:] for r in rows)

    def progress(p):
        if p.stage != "render" or not p.done:
            return
        if not added:  # the first frame is stored: pause its worker, start a node by hand
            first = records(job_dir)[0]["worker"]
            paused.append(worker_pid(first))
            os.kill(paused[0], signal.SIGSTOP)
            # Should no other node ever take frames, the test fails on its asserts, not by hanging.
            timer.start()
            added.append(cluster.add_node(num_cpus=1, object_store_memory=80 * 1024**2))
        elif len(added) == 2 and paused and stored_on(added[1]):
            os.kill(paused.pop(), signal.SIGCONT)

    def lose_and_start_another(name: str) -> None:
        cluster.remove_node(added[0], allow_graceful=False)
        added.append(cluster.add_node(num_cpus=1, object_store_memory=80 * 1024**2))

    killed = kill_when_sent(monkeypatch, lose_and_start_another, after=0,
                            target=lambda name: bool(added) and added[0].node_id[-8:] in name and
                            stored_on(added[0]) > 0)
    try:
        result = stylize_video(CLIP, [STYLE], tmp_path / "hand.mp4", JOB, weights="random", report=False,
                               job_dir=job_dir, progress=progress,
                               executor=ExecutorOptions(address=cluster.address, placement_timeout=120))
    finally:
        timer.cancel()
        if paused:
            os.kill(paused[0], signal.SIGCONT)
    assert killed, "the node started by hand was never handed a second frame"
    assert len(added) == 2 and stored_on(added[1]) > 0, "the node started after the loss got no frames"
    assert redone_frames(job_dir)  # the frame in flight on the lost node was rendered again
    rendered = [(r["chain"], r["frame"]) for r in records(job_dir)]
    assert len(rendered) == len(set(rendered)) == len(frames_of(reference.job_dir))
    assert frames_of(job_dir) == frames_of(reference.job_dir)  # identical to a local run
    assert video.probe(result.output).frames == 12
    assert result.workers == 2  # the peak: the first node's worker and one on a node started by hand


@pytest.fixture()
def two_one_cpu_nodes():
    yield from head_and_a_node(1)


def test_two_one_cpu_nodes_get_one_feasible_worker_each(tmp_path, two_one_cpu_nodes):
    # One 12-frame chain by default; it used to ask for one 2-CPU actor no node has, and hang.
    settings = dataclasses.replace(TINY, segment_length=48, style=JOB.style)  # five blocks: both nodes get frames
    result = stylize_video(CLIP, [STYLE], tmp_path / "out.mp4", settings, weights="random", report=False,
                           executor=ExecutorOptions(address=two_one_cpu_nodes.address, placement_timeout=60))
    assert result.chains == 2  # cut for the two workers
    assert len({node_of(r) for r in records(result.job_dir)}) == 2
    assert video.probe(result.output).frames == 12


def test_an_unplaceable_pool_stops_with_one_line(tmp_path, two_one_cpu_nodes):
    from ray_style.errors import ClusterError

    options = ExecutorOptions(address=two_one_cpu_nodes.address, gpus_per_worker=1, placement_timeout=5)
    with pytest.raises(ClusterError, match=r"no worker could be placed in \d+ s.*GPU: 1.*offers 2 × \{CPU: 1\}"):
        stylize_video(CLIP, [STYLE], tmp_path / "out.mp4", TINY, weights="random", executor=options, report=False)


def test_an_unreachable_address_fails_fast(tmp_path):
    from ray_style.cli import main

    if ray.is_initialized():
        ray.shutdown()
    started = time.monotonic()
    code = main(["video", str(CLIP), str(STYLE), "-o", str(tmp_path / "o.mp4"), "--address", "127.0.0.1:1",
                 "--weights", "random", "--size", "32", "-q"])
    assert code == 7 and time.monotonic() - started < 30


def test_the_embedded_runtime_ignores_another_ray_on_this_machine(tmp_path):
    """A stranger's Ray runs on this machine (`ray start --head`, which also tells later drivers
    where it is); ours must start its own, not join it."""
    import subprocess
    import sys

    if ray.is_initialized():
        ray.shutdown()
    port = free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    ray_cli = os.path.join(os.path.dirname(sys.executable), "ray")
    # `ray start` tells later drivers on this machine where it is; put back what was there.
    pointer = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"
    before = pointer.read_bytes() if pointer.exists() else None
    subprocess.run([ray_cli, "start", "--head", f"--port={port}", "--num-cpus=1", "--include-dashboard=false",
                    "--object-store-memory=80000000", "--disable-usage-stats"], env=env, check=True,
                   capture_output=True, timeout=120)
    try:
        result = stylize_video(CLIP, [STYLE], tmp_path / "out.mp4", TINY, weights="random", report=False,
                               executor=ExecutorOptions(max_workers=1, threads=1))
        assert video.probe(result.output).frames == 12
        assert not ray.is_initialized()  # the embedded runtime was ours, and it is gone
    finally:
        end_processes_of(port)
        if before is None:
            pointer.unlink(missing_ok=True)
        else:
            pointer.write_bytes(before)
