"""Ray placement for every actor group: one bundle per actor, reserved together, or a clear error.

Rollout workers, reward actors and learner ranks each own one placement group (see
docs/architecture.md, "Actor layout"). It lives at the bottom layer because all three groups use it.

    pg = reserve("learner", [{"CPU": 1, "GPU": 1}] * 8, strategy="PACK", timeout_s=120)
    actor = Cls.options(**in_bundle(pg, rank)).remote(...)

A group that cannot get its resources fails at once (when the cluster could never hold it) or after
`timeout_s` (when it could, but the resources are taken), naming what it asked for and what the
cluster has, node by node.
"""

from __future__ import annotations

import os
import uuid
from collections import Counter

STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")


class PlacementError(RuntimeError):
    """A group's placement group cannot be reserved on this cluster."""


def ensure_local_ray_env() -> None:
    """Keep a local cluster on loopback and without auth tokens (docs/architecture.md, "Local runs")."""
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # Phases of a step run one after another in different actors: OpenMP threads that spin-wait after
    # a parallel region steal the cores the next phase needs (measured: ~25% slower steps on 2 cores).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def bundles(n: int, num_cpus: float, num_gpus: float = 0.0, extra: dict[str, float] | None = None) -> list[dict]:
    one = {"CPU": num_cpus, **({"GPU": num_gpus} if num_gpus else {}), **(extra or {})}
    return [dict(one) for _ in range(n)]


def _nodes() -> list[dict[str, float]]:
    import ray

    return [{k: v for k, v in n["Resources"].items() if not k.startswith("node:")}
            for n in ray.nodes() if n.get("Alive")]


def _describe(asked: list[dict], strategy: str) -> str:
    counts = Counter(tuple(sorted(b.items())) for b in asked)
    return " + ".join(f"{n} x {dict(b)}" for b, n in counts.items()) + f" ({strategy})"


def _fits(asked: list[dict], nodes: list[dict], strategy: str) -> bool:
    """Could this cluster, empty, hold the bundles? (Exact for STRICT_*, a total check for the rest.)"""
    if strategy == "STRICT_SPREAD":
        # each bundle on its own node: greedy on nodes sorted by capacity is enough for equal bundles
        free = list(nodes)
        for b in asked:
            node = next((n for n in free if all(n.get(k, 0) >= v for k, v in b.items())), None)
            if node is None:
                return False
            free.remove(node)
        return True
    if strategy == "STRICT_PACK":
        total = Counter()
        for b in asked:
            total.update(b)
        return any(all(n.get(k, 0) >= v for k, v in total.items()) for n in nodes)
    for b in asked:  # every bundle must fit some node, and the totals the cluster
        if not any(all(n.get(k, 0) >= v for k, v in b.items()) for n in nodes):
            return False
    total = Counter()
    for b in asked:
        total.update(b)
    cluster = Counter()
    for n in nodes:
        cluster.update(n)
    return all(cluster.get(k, 0) >= v for k, v in total.items())


def reserve(name: str, asked: list[dict], strategy: str = "PACK", timeout_s: float = 120.0):
    """Reserve one placement group; PlacementError names the group, what it asked and what there is."""
    import ray
    from ray.util.placement_group import placement_group, remove_placement_group

    if strategy not in STRATEGIES:
        raise PlacementError(f"{name}: placement strategy {strategy!r} is not one of {STRATEGIES}")
    nodes = _nodes()

    def error(why: str) -> PlacementError:
        per_node = "; ".join(f"node {i}: {n}" for i, n in enumerate(nodes))
        return PlacementError(
            f"{name}: cannot reserve {_describe(asked, strategy)}: {why}. The cluster has "
            f"{dict(ray.cluster_resources())} in all, {dict(ray.available_resources())} free ({per_node})")

    if not _fits(asked, nodes, strategy):
        raise error("the cluster could never hold it")
    pg = placement_group(asked, strategy=strategy, name=f"unigrpo-{name}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        ray.get(pg.ready(), timeout=timeout_s)
    except ray.exceptions.GetTimeoutError:
        remove_placement_group(pg)
        raise error(f"not free within {timeout_s:.0f} s (other groups or jobs hold the resources)") from None
    return pg


def in_bundle(pg, index: int) -> dict:
    """Actor options that pin an actor to bundle `index` of `pg` (no options without a group)."""
    if pg is None:
        return {}
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    return {"scheduling_strategy": PlacementGroupSchedulingStrategy(
        placement_group=pg, placement_group_bundle_index=index)}


def kill_all(actors) -> None:
    """ray.kill every actor, ignoring ones already gone."""
    import ray

    for a in actors:
        try:
            ray.kill(a)
        except Exception:  # noqa: BLE001 - best effort (the actor or the cluster may be gone)
            pass


def release(pg) -> None:
    if pg is None:
        return
    from ray.util.placement_group import remove_placement_group

    try:
        remove_placement_group(pg)
    except Exception:  # noqa: BLE001 - best effort on the way out (the cluster may be gone)
        pass


def patient_node_registration(wait_s: float = 300.0) -> None:
    """For simulated clusters (ray.cluster_utils.Cluster: tests, benchmarks/scale.py). Ray 2.60 gives a new
    raylet 30 s to register with the GCS, a constant in ray/_private/node.py (no setting reaches it:
    RAY_raylet_start_wait_time_s does not). Several raylets starting on a loaded 2-core machine can take
    longer; make this process's registration check wait up to `wait_s` instead."""
    import time

    import ray._private.services as services

    real = services.get_node
    if getattr(real, "patient", False):
        return

    def get_node(*args, **kwargs):
        deadline = time.monotonic() + wait_s
        while True:
            try:
                return real(*args, **kwargs)
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1.0)

    get_node.patient = True
    services.get_node = get_node
