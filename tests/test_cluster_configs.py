"""The cluster files parse, have the fields their tools require, and keep authentication on."""
from pathlib import Path

import yaml

CLUSTER = Path(__file__).resolve().parent.parent / "cluster"


def containers(pod_template):
    return pod_template["spec"]["containers"]


def check_ray_cluster_spec(spec):
    assert spec["rayVersion"] == "2.60.0"
    # KubeRay gives the token to its autoscaler sidecar, the RayJob submitter and its own status
    # client only through authOptions; a token set by hand on the Ray containers reaches none.
    assert spec["authOptions"] == {"mode": "token", "secretName": "ray-style-auth"}
    head = spec["headGroupSpec"]
    assert head["serviceType"] == "ClusterIP"  # never a public LoadBalancer
    groups = spec["workerGroupSpecs"]
    gpu = [g for g in groups if any("nvidia.com/gpu" in c["resources"]["limits"] for c in containers(g["template"]))]
    assert gpu and all(g["minReplicas"] == 0 and g["maxReplicas"] >= 1 for g in gpu)
    for template in [head["template"]] + [g["template"] for g in groups]:
        assert template["spec"]["serviceAccountName"] == "ray-style"  # the bucket, by the pod's own identity
        for container in containers(template):
            assert container["image"] and not any(e["name"].startswith("AWS_") for e in container.get("env", []))
    assert "volumes" not in head["template"]["spec"]  # the head keeps no job: no large volume


def test_kuberay_raycluster():
    docs = list(yaml.safe_load_all((CLUSTER / "kuberay-raycluster.yaml").read_text()))
    cluster = next(d for d in docs if d["kind"] == "RayCluster")
    assert cluster["apiVersion"] == "ray.io/v1" and cluster["metadata"]["name"]
    assert cluster["spec"]["enableInTreeAutoscaling"] is True
    check_ray_cluster_spec(cluster["spec"])
    account = next(d for d in docs if d["kind"] == "ServiceAccount")
    assert account["metadata"]["name"] == "ray-style" and "eks.amazonaws.com/role-arn" in account["metadata"]["annotations"]


def test_kuberay_rayjob():
    job = yaml.safe_load((CLUSTER / "kuberay-rayjob.yaml").read_text())
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    entrypoint = job["spec"]["entrypoint"]
    assert entrypoint.startswith("ray-style video s3://") and "--job-dir s3://" in entrypoint and "-o s3://" in entrypoint
    assert job["spec"]["shutdownAfterJobFinishes"] is True
    check_ray_cluster_spec(job["spec"]["rayClusterSpec"])
    # The entrypoint's options parse, and ask for GPU workers the autoscaler adds from zero.
    from ray_style.cli import build_parser

    args = build_parser().parse_args(job["spec"]["entrypoint"].split()[1:])
    group = job["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]
    assert args.gpus_per_worker == 1 and args.max_workers == group["maxReplicas"]


def test_autoscaler_yaml():
    config = yaml.safe_load((CLUSTER / "autoscaler-aws.yaml").read_text())
    for key in ("cluster_name", "max_workers", "provider", "auth", "available_node_types", "head_node_type",
                "setup_commands", "head_start_ray_commands", "worker_start_ray_commands"):
        assert key in config, key
    types = config["available_node_types"]
    assert config["head_node_type"] in types
    gpu = types["gpu_worker"]
    assert gpu["min_workers"] == 0 and gpu["max_workers"] >= 1 and "node_config" in gpu
    assert gpu["resources"]["GPU"] >= 1  # stated, so a driver sees GPUs can come before any node exists
    head_start = " ".join(config["head_start_ray_commands"])
    assert "RAY_AUTH_MODE=token" in head_start and "--dashboard-host=127.0.0.1" in head_start
    assert "RAY_AUTH_MODE=token" in " ".join(config["worker_start_ray_commands"])
    assert any("ray_style[offline]" in c for c in config["setup_commands"])
    for kind in types.values():  # every node reaches the jobs' bucket through its instance profile
        assert kind["node_config"]["IamInstanceProfile"]["Name"]


def test_image_installs_the_package():
    dockerfile = (CLUSTER / "Dockerfile").read_text()
    assert dockerfile.startswith("#") and "FROM rayproject/ray:2.60.0" in dockerfile
    assert '[offline]"' in dockerfile and "ray-style --version" in dockerfile
    ignored = (CLUSTER.parent / ".dockerignore").read_text().split()
    assert {".git", ".venv", "**/*.job"} <= set(ignored)  # no history, no multi-GB venv, no jobs in the image
