"""A short chaos run: worker processes killed at random moments lose no frame."""
import pytest
import ray

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_random_worker_kills_lose_nothing(tmp_path):
    from benchmarks.chaos import chaos

    if ray.is_initialized():
        ray.shutdown()
    ray.init(address="local", num_cpus=2, object_store_memory=200 * 1024**2, include_dashboard=False,
             log_to_driver=False)
    try:
        report = chaos(tmp_path, rounds=3, seed=1, max_pause=0.8)
    finally:
        ray.shutdown()
    assert report["kills"] >= 1, report
    assert report["frames_lost"] == 0 and report["videos_identical"], report
    assert report["frames_redone"] >= 1 and report["rendered_twice"] == 0, report
