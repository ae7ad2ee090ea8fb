"""What the pool asks a cluster for (placement.plan_request): pure, no Ray needed."""
import sys

import pytest

from ray_style import placement
from ray_style.errors import ClusterError
from ray_style.placement import NodeType, Offer, plan_request
from ray_style.settings import ExecutorOptions

KUBERAY_LIKE = Offer(nodes=({"CPU": 0},), node_types=(NodeType("gpu", {"CPU": 4, "GPU": 1}, 8),))


def test_gpu_workers_are_asked_for_when_an_autoscaler_can_add_gpus():
    request = plan_request(ExecutorOptions(), KUBERAY_LIKE, parallel=None)
    assert (request.count, request.num_gpus, request.num_cpus) == (8, 1.0, 1.0)
    assert plan_request(ExecutorOptions(), KUBERAY_LIKE, parallel=3).count == 3  # no more than the job can use
    assert plan_request(ExecutorOptions(max_workers=2), KUBERAY_LIKE, parallel=None).count == 2


def test_fractional_gpus_share_a_node_without_asking_for_more_cpus_than_it_has():
    small = Offer(nodes=(), node_types=(NodeType("gpu", {"CPU": 1, "GPU": 1}, 3),))
    request = plan_request(ExecutorOptions(gpus_per_worker=0.5), small, parallel=None)
    assert (request.count, request.num_gpus, request.num_cpus) == (6, 0.5, 0.5)
    with pytest.raises(ClusterError, match="no node has more than 1 GPUs"):
        plan_request(ExecutorOptions(gpus_per_worker=2), small, parallel=None)


def test_cpu_workers_never_ask_for_more_cpus_than_the_largest_node():
    two_small = Offer(nodes=({"CPU": 1}, {"CPU": 1}), node_types=None)
    request = plan_request(ExecutorOptions(), two_small, parallel=1)  # one chain: it used to ask for 2 CPUs
    assert (request.count, request.num_cpus, request.num_gpus) == (1, 1, 0.0)
    assert plan_request(ExecutorOptions(threads=8), two_small, parallel=None).num_cpus == 1
    laptop = Offer(nodes=({"CPU": 8},), node_types=None)
    assert plan_request(ExecutorOptions(), laptop, parallel=2) == placement.Request(2, 4, 0.0, 4, "cpu")


def test_the_user_can_ask_for_gpus_nobody_advertises_or_insist_on_cpus():
    unknown = Offer(nodes=({"CPU": 0},), node_types=None)  # e.g. KubeRay's autoscaler in its own container
    assert plan_request(ExecutorOptions(gpus_per_worker=1), unknown, parallel=None).num_gpus == 1
    gpus = Offer(nodes=({"CPU": 8, "GPU": 2},), node_types=None)
    assert plan_request(ExecutorOptions(device="cpu"), gpus, parallel=None).num_gpus == 0
    assert plan_request(ExecutorOptions(gpus_per_worker=0), gpus, parallel=None).num_gpus == 0


def test_the_offer_is_described_for_error_messages():
    text = Offer(nodes=({"CPU": 1}, {"CPU": 1}), node_types=(NodeType("gpu", {"CPU": 4, "GPU": 1}, 8),)).describe()
    assert text == "2 × {CPU: 1}; autoscaler can add: gpu {CPU: 4, GPU: 1} up to 8"


def test_placement_is_planned_without_ray():
    import subprocess

    code = "import sys, ray_style.placement; print('ray' in sys.modules, 'torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["False", "False"]
