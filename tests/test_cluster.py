"""Two Ray nodes on one machine: frames spread over both; a node stopped mid-job loses nothing."""
import dataclasses
import os

import pytest
import ray

from ray_style import video
from ray_style.runner import stylize_video
from ray_style.settings import ExecutorOptions
from tests.conftest import kill_when_sent, ready_pool, redone_frames
from tests.test_runner import CLIP, STYLE, TINY, frames_of

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.fixture()
def two_nodes():
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    # The head has room for a restarted actor after the second node is gone.
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "object_store_memory": 100 * 1024**2,
                                                           "include_dashboard": False})
    node = cluster.add_node(num_cpus=1, resources={"node2": 1}, object_store_memory=100 * 1024**2)
    cluster.wait_for_nodes()
    yield cluster, node
    if ray.is_initialized():
        ray.shutdown()
    cluster.shutdown()


def nodes_in_log(job_dir):
    lines = (job_dir / "frames.jsonl").read_text().splitlines()
    return [line.split('"worker": "')[1].split('"')[0].split("/")[1].split(":")[0] for line in lines]


# Frames long enough (~0.5 s) that the node is stopped in the middle of one, not between two.
SLOWER = dataclasses.replace(TINY, style=dataclasses.replace(TINY.style, iters=40))


def run(tmp_path, name, address, executor=None):
    return stylize_video(CLIP, [STYLE], tmp_path / f"{name}.mp4", SLOWER, weights="random", report=False,
                         executor=executor or ExecutorOptions(address=address, max_workers=2, threads=1))


def test_frames_spread_over_both_nodes_and_survive_losing_one(tmp_path, two_nodes, monkeypatch):
    cluster, second = two_nodes
    pool = ready_pool(ExecutorOptions(address=cluster.address, max_workers=2, threads=1), 2)
    try:
        spread = run(tmp_path, "spread", cluster.address, executor=pool)
    finally:
        pool.close()
    assert len(set(nodes_in_log(spread.job_dir))) == 2  # both nodes rendered frames
    assert video.probe(spread.output).frames == 12

    node_id = second.node_id[-8:]
    # The second node is stopped the moment it is handed a frame after two calls have gone out:
    # that frame is certainly in flight there.
    stopped = kill_when_sent(monkeypatch, lambda name: cluster.remove_node(second, allow_graceful=False),
                             target=lambda name: node_id in name)
    lost = run(tmp_path, "lost", cluster.address)
    assert stopped, "the second node was never handed a frame"
    assert lost.redone >= 1 and redone_frames(lost.job_dir)
    assert frames_of(lost.job_dir) == frames_of(spread.job_dir)  # every frame exactly once, same bytes
    assert len((lost.job_dir / "frames.jsonl").read_text().splitlines()) == 16
    assert video.probe(lost.output).frames == 12
    assert os.path.exists(lost.output)
