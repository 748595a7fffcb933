"""`ElasticFleet`: rollout workers beyond the placement group's, started when the cluster has room for them
and dropped when their node goes (`rollout.max_workers`; docs/elastic.md).

    fleet = ElasticFleet(start, max_extra=max_workers - num_workers, resources={"CPU": 1, "worker_node": 1})
    fleet.request()        ask Ray for the missing workers (never blocks: an actor Ray cannot place yet waits
                           in Ray's queue until a node offering the resources joins the cluster)
    fleet.arrived()        the requested workers that have loaded their model (ping answered), handed over once

The rollout group (rollout/group.py) calls both at the start of every generate: it gives an arrived worker
the current weights before its first shard, and retires a worker whose actor died (an elastic worker is
started without restarts in place (EXTRA_RESTARTS): a lost node takes it away for good; its shard is re-run on a live worker, and
the slot is requested again, so the fleet refills when capacity comes back). The base workers keep their
placement-group bundles and their restart-in-place path; only the extras come and go.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

EXTRA_RESTARTS = 0  # an elastic worker is never restarted in place by Ray: its slot is requested anew


class ElasticFleet:
    def __init__(self, start: Callable[[dict], Any], max_extra: int, resources: dict[str, float]) -> None:
        self._start = start  # start(options) -> a RolloutWorker actor handle (not pinned to any bundle)
        self.max_extra = max_extra
        self.resources = resources  # what one worker asks of a node: CPU, GPU and the bundle's custom resources
        self._requested: dict[Any, Any] = {}  # ping ref -> actor handle, not yet answered
        self.joined = 0  # workers that arrived, over the run
        self.left = 0  # elastic workers retired after their actor died, over the run

    def request(self, active_extra: int) -> None:
        """Ask for every extra worker missing (`active_extra` of the max_extra run now)."""
        options = {k: v for k, v in self.resources.items() if k not in ("CPU", "GPU")}
        for _ in range(self.max_extra - active_extra - len(self._requested)):
            actor = self._start({"resources": options} if options else {})
            self._requested[actor.ping.remote()] = actor

    def arrived(self) -> list:
        """Requested workers whose model is loaded (their ping answered); a failed start is dropped (asked again
        at the next request)."""
        import ray

        if not self._requested:
            return []
        ready, _ = ray.wait(list(self._requested), num_returns=len(self._requested), timeout=0)
        out = []
        for ref in ready:
            actor = self._requested.pop(ref)
            try:
                ray.get(ref)
            except ray.exceptions.RayActorError:
                continue
            out.append(actor)
        self.joined += len(out)
        return out

    @property
    def pending(self) -> int:
        return len(self._requested)

    def shutdown(self) -> None:
        from policy.placement import kill_all

        kill_all(list(self._requested.values()))
        self._requested = {}
