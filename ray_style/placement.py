"""What to ask a Ray cluster for: the offer (its nodes now, and the node types an autoscaler
can add) and the request planned from it (how many frame workers, with how many CPUs and
GPUs each). Ray-free, so it is tested without a cluster; :mod:`ray_style.workers` reads the
offer from Ray and places the request.

The rules: GPU workers when GPUs are there or can come (or the user asks for them), never
more CPUs per worker than the largest node (live or launchable) has, and never more workers
than the job has chains to give them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import ClusterError
from .settings import ExecutorOptions


@dataclass(frozen=True)
class NodeType:
    name: str
    resources: dict  # per node: CPU, GPU, …
    max_workers: int  # how many the autoscaler may run


@dataclass(frozen=True)
class Offer:
    """The cluster's nodes now and, where an autoscaler tells us, the node types it can add."""

    nodes: tuple[dict, ...]  # resources of each live node
    node_types: tuple[NodeType, ...] | None  # None: no autoscaler, or one we cannot read

    @property
    def gpus_now(self) -> float:
        return sum(n.get("GPU", 0) for n in self.nodes)

    @property
    def cpus_now(self) -> float:
        return sum(n.get("CPU", 0) for n in self.nodes)

    def most(self, resource: str) -> float:
        """The most of ``resource`` on any one node, live or launchable."""
        values = [n.get(resource, 0) for n in self.nodes]
        values += [t.resources.get(resource, 0) for t in self.node_types or () if t.max_workers > 0]
        return max(values, default=0)

    def can_add(self, resource: str) -> float:
        """How much of ``resource`` the autoscaler's node types can bring at most."""
        return sum(t.resources.get(resource, 0) * t.max_workers for t in self.node_types or ())

    def describe(self) -> str:
        counts: dict[str, int] = {}
        for node in self.nodes:
            key = _resources_text(node)
            counts[key] = counts.get(key, 0) + 1
        live = ", ".join(f"{n} × {key}" for key, n in counts.items()) or "no nodes"
        if self.node_types is None:
            return f"{live}; no autoscaler node types known"
        types = ", ".join(f"{t.name} {_resources_text(t.resources)} up to {t.max_workers}" for t in self.node_types)
        return f"{live}; autoscaler can add: {types or 'nothing'}"


def _resources_text(resources: dict) -> str:
    shown = {k: (int(v) if float(v).is_integer() else v) for k, v in resources.items() if k in ("CPU", "GPU")}
    return "{" + ", ".join(f"{k}: {v}" for k, v in sorted(shown.items())) + "}"


@dataclass(frozen=True)
class Request:
    """What each actor asks for, and how many actors."""

    count: int
    num_cpus: float
    num_gpus: float
    threads: int
    device: str

    def describe(self) -> str:
        gpus = f", GPU: {self.num_gpus:g}" if self.num_gpus else ""
        return f"{self.count} worker(s) of {{CPU: {self.num_cpus:g}{gpus}}}"


def plan_request(options: ExecutorOptions, offer: Offer, parallel: int | None) -> Request:
    """How many actors to ask for, and with what, so that no request is infeasible."""
    wants = math.inf if parallel is None else max(1, math.ceil(parallel / options.frames_per_worker))
    gpu_capacity = max(offer.gpus_now, offer.can_add("GPU"))
    per = options.gpus_per_worker
    if options.device == "cpu":
        per = 0.0
    elif per is None:
        per = 1.0 if gpu_capacity > 0 or options.device.startswith("cuda") else 0.0
    if per > 0:
        most = offer.most("GPU")
        if most and per > most:
            raise ClusterError(f"--gpus-per-worker {per:g}: no node has more than {most:g} GPUs "
                               f"(cluster: {offer.describe()})")
        count = options.max_workers or max(1, math.floor(gpu_capacity / per + 1e-9))
        # One CPU per actor, less when several actors share a node's GPUs and CPUs.
        gpu_nodes = [n for n in offer.nodes if n.get("GPU")] + [t.resources for t in offer.node_types or ()
                                                              if t.resources.get("GPU")]
        per_node = [n.get("CPU", 1) / max(1, n["GPU"] / per) for n in gpu_nodes]
        num_cpus = min([1.0, *per_node]) if per_node else 1.0
        return Request(int(min(count, wants)), round(num_cpus, 4), per, options.threads or 1, options.device)
    largest = max(1, int(offer.most("CPU")))
    cpu_capacity = max(offer.cpus_now, offer.can_add("CPU"), 1)
    count = int(min(options.max_workers or cpu_capacity, wants))
    threads = min(options.threads or max(1, int(cpu_capacity // count)), largest)
    return Request(count, threads, 0.0, threads, "cpu" if options.device == "auto" else options.device)


__all__ = ["Offer", "NodeType", "Request", "plan_request"]
