"""`RolloutGroup`: N rollout-worker actors driven as one, the rollout side's twin of trainer's LearnerGroup.

    group = RolloutGroup.create(n, policy_path, strategy="PACK", text_config=..., ...)
    group.load_weights(version, payload_ref)       # object store publication (rl.weights does this)
    records = group.generate(prompts, G, seed)     # list[RolloutRecord], sorted by (group, group_index)

The group owns its placement group (one bundle per worker) and hides failures from the caller:

  * sharding: the batch is cut into N shards (`num_shards`, default one per worker), shard k = prompts[k::N]
    sampled with seed + 7919 k. A shard depends on k only, never on which worker ran it, so a shard moved
    to another worker gives the same records (given the same weights), and so does a fleet of another size
    with the same number of shards.
  * a worker that fails a call (its actor died, its node is gone) or answers with stale weights (it was
    restarted by Ray while idle and came back with the initial weights) is marked lost and counted in
    `restarts`; its shard is re-issued at once on a live worker. No group is lost or counted twice: a
    shard's records are kept only from the one call that succeeded.
  * a worker past its deadline (policy/deadlines.py: learned from the run's own timings) is frozen: it
    is killed (Ray restarts it) and handled as a lost worker.
  * elastic (`max_workers` > N; rollout/elastic.py): at the start of every call the group asks Ray for the
    missing workers without waiting; one that has started (a node with room joined) gets the current
    weights and then shards; one whose actor died (its node left) is retired, its shard re-run elsewhere.
  * a lost worker rejoins at the start of a later call once Ray has restarted it, after being given the
    weights (`weight_source(version)`: the group's version while it is still published, else the newest;
    a record newer than the group's version is kept, an older one refused). A worker Ray gave up on is
    replaced by a new actor in the same bundle. Every wait is bounded: when no worker is live, the group
    waits up to `restart_wait_s` for one, then raises.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from policy.actor_group import ACTOR_MAX_RESTARTS, PLACEMENT_TIMEOUT_S, ActorGroup
from policy.deadlines import Watchdog
from policy.placement import bundles
from rollout.elastic import EXTRA_RESTARTS, ElasticFleet
from rollout.record import Prompt, RolloutRecord
from rollout.worker import start_rollout_worker

SEED_STRIDE = 7919  # shard k samples with seed + SEED_STRIDE * k


class RolloutGroup:
    def __init__(self, workers: ActorGroup, watchdog: Watchdog | None = None, restart_wait_s: float = 300.0,
                 num_shards: int | None = None) -> None:
        self.workers = workers  # one RolloutWorker actor per bundle (policy/actor_group.py)
        self.num_shards = num_shards  # None: one shard per worker
        self.watchdog = watchdog or Watchdog()  # every wait on a worker has a deadline (policy/deadlines.py)
        self.restart_wait_s = restart_wait_s
        self.version = 0  # the policy version every live worker holds
        # (version wanted) -> (version, payload ref): that version's weights if still published, else the newest
        self.weight_source: Callable[[int], tuple[int, Any]] | None = None
        self._lost: dict[int, Any] = {}  # worker index -> ping ref (answers once Ray has restarted it)
        self.last_timings: dict[str, float] = {}  # model compute of the last generate, per phase
        self.fleet: ElasticFleet | None = None  # workers beyond the bundles' (rollout.max_workers), if any
        self._base = len(workers)  # workers 0..N-1 own a bundle; the ones after are elastic
        self._retired: set[int] = set()  # elastic workers whose actor died (their slot is reused)

    @classmethod
    def create(cls, num_workers: int, policy_path: str, num_gpus_per_worker: float = 0.0,
               num_cpus_per_worker: float = 1.0, strategy: str = "PACK", bundle_resources: dict | None = None,
               placement_timeout_s: float = PLACEMENT_TIMEOUT_S, max_restarts: int = ACTOR_MAX_RESTARTS,
               watchdog: Watchdog | None = None, num_shards: int | None = None, max_workers: int | None = None,
               **worker_kwargs) -> RolloutGroup:
        """Reserve the placement group (fails fast if the cluster cannot hold it), start the workers,
        and wait until every one has loaded its model. max_workers > num_workers: elastic extras."""
        import ray

        def start(index: int, placement: dict):
            return start_rollout_worker(index, policy_path, num_gpus_per_worker=num_gpus_per_worker,
                                        num_cpus_per_worker=num_cpus_per_worker, max_restarts=max_restarts,
                                        placement=placement, **worker_kwargs)

        workers = ActorGroup("rollout", start, bundles(num_workers, num_cpus_per_worker, num_gpus_per_worker,
                                                         bundle_resources), strategy, placement_timeout_s)
        group = cls(workers, watchdog, num_shards=num_shards)
        ray.get([w.ping.remote() for w in group.workers])
        if max_workers is not None and max_workers > num_workers:
            one = bundles(1, num_cpus_per_worker, num_gpus_per_worker, bundle_resources)[0]
            group.fleet = ElasticFleet(lambda options: start_rollout_worker(
                -1, policy_path, num_gpus_per_worker=num_gpus_per_worker, num_cpus_per_worker=num_cpus_per_worker,
                max_restarts=EXTRA_RESTARTS, placement=options, **worker_kwargs), max_workers - num_workers, one)
        return group

    @property
    def restarts(self) -> int:
        """Workers lost and brought back (or replaced), over the group's life."""
        return self.workers.restarts

    @property
    def size(self) -> int:
        return len(self.workers)

    def live(self) -> list[int]:
        return [i for i in range(self.size) if i not in self._lost and i not in self._retired]

    @property
    def active(self) -> int:
        """Workers in the fleet (live or coming back), not counting retired elastic ones."""
        return self.size - len(self._retired)

    def fleet_metrics(self) -> dict:
        """fleet/* of an elastic fleet (nothing for a fixed one)."""
        if self.fleet is None:
            return {}
        return {"fleet/workers": len(self.live()), "fleet/joined": self.fleet.joined,
                "fleet/left": self.fleet.left, "fleet/requested": self.fleet.pending}

    def _grow(self) -> None:
        """Elastic: ask for missing workers (never waits); an arrived one gets the current weights first."""
        if self.fleet is None:
            return
        self.fleet.request(self.active - self._base)
        for actor in self.fleet.arrived():
            if self._retired:
                i = min(self._retired)
                self._retired.discard(i)
                self.workers.actors[i] = actor
            else:
                i = len(self.workers.actors)
                self.workers.actors.append(actor)
            self._give_current_weights(i)  # on failure it is lost (then retired) before any shard

    # ---- weights ------------------------------------------------------------------------------------
    def load_weights(self, version: int, payload) -> None:
        """Every live worker loads the published payload (an ObjectRef). A worker that fails is marked
        lost; it gets the weights from `weight_source` when it comes back."""
        import ray

        pending = {}
        for i in self.live():
            ref = self.workers[i].load_weights.remote(version, payload)
            self.watchdog.start(ref, "load_weights", f"rollout worker {i}")
            pending[ref] = i
        while pending:
            ready, overdue = self.watchdog.poll(list(pending))
            for ref in overdue:  # frozen: the same path as a dead worker
                self._freeze(pending.pop(ref))
            for ref in ready:
                i = pending.pop(ref)
                try:
                    ray.get(ref)
                    self.watchdog.done(ref)
                except ray.exceptions.RayActorError:
                    self.watchdog.forget(ref)
                    self._mark_lost(i)
        self.version = int(version)

    def _freeze(self, i: int) -> None:
        """A worker past its deadline: kill it (Ray restarts it in its bundle) and handle it as lost."""
        import ray

        try:
            ray.kill(self.workers[i], no_restart=False)
        except Exception:  # noqa: BLE001 - already gone
            pass
        self._mark_lost(i)

    def _mark_lost(self, i: int) -> None:
        if i in self._lost:
            return
        self.workers.note_restart()
        self._lost[i] = self.workers[i].ping.remote()  # queued by Ray until the actor is back

    def _heal(self, block: bool) -> None:
        """Bring back lost workers whose actors answer again; replace ones Ray gave up on. With
        block=True wait (bounded) until at least one worker is live."""
        import ray

        deadline = time.monotonic() + self.restart_wait_s
        while self._lost:
            ready, _ = ray.wait(list(self._lost.values()), num_returns=len(self._lost), timeout=0)
            for i, ref in [(i, r) for i, r in self._lost.items() if r in ready]:
                try:
                    ray.get(ref)
                except ray.exceptions.RayActorError:  # dead for good
                    if i >= self._base:  # an elastic worker: its node left; retired (requested again)
                        del self._lost[i]
                        self._retired.add(i)
                        self.fleet.left += 1
                        continue
                    self._lost[i] = self.workers.replace(i).ping.remote()  # a new actor in the same bundle
                    continue
                if self._give_current_weights(i):
                    del self._lost[i]
            if not block or self.live():
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"no rollout worker came back within {self.restart_wait_s:.0f} s "
                                   f"({len(self._lost)} lost of {self.size})")
            time.sleep(0.2)

    def _give_current_weights(self, i: int) -> bool:
        import ray

        if self.version == 0 or self.weight_source is None:
            return True  # the initial weights are what a restarted actor loads anyway
        # the group's version while it is still published; else (asynchronous runs, the learner has moved on
        # and the transport kept no payload of it) the newest weights: records newer than the group's version
        # are fresher for the learner, never refused (only older ones are: a worker that lost its weights)
        version, payload = self.weight_source(self.version)
        try:
            ray.get(self.workers[i].load_weights.remote(version, payload), timeout=self.watchdog.deadline("load_weights"))
        except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
            self._lost[i] = self.workers[i].ping.remote()
            return False
        return True

    # ---- generation -----------------------------------------------------------------------------------
    def generate(self, prompts: Sequence[Prompt], group_size: int, seed: int,
                 text_sampler: dict[str, Any] | None = None,
                 on_shard: Callable[[list[RolloutRecord]], None] | None = None) -> list[RolloutRecord]:
        """G rollouts per prompt. The same prompt may appear twice in a batch (small datasets wrap around):
        each occurrence is its own group, numbered by its position in `prompts`. on_shard(records): called
        with each shard's records as they are accepted (the driver starts scoring them at once)."""
        import ray

        self._heal(block=not self.live())
        self._grow()
        shards = shard_prompts(prompts, self.num_shards or self.active)
        results: dict[int, list[RolloutRecord]] = {}
        pending: dict[Any, tuple[int, int]] = {}  # ref -> (shard, worker)
        failures = dict.fromkeys(shards, 0)

        def submit(k: int) -> None:
            live = self.live()
            if not live:
                self._heal(block=True)
                live = self.live()
            w = k if k in live else live[(k + failures[k]) % len(live)]
            shard, groups = shards[k]
            ref = self.workers[w].generate.remote(shard, group_size, shard_seed(seed, k), text_sampler, groups)
            kind = generate_call_kind(len(shard), group_size, text_sampler)
            self.watchdog.start(ref, kind, f"rollout worker {w}")
            pending[ref] = (k, w)

        def failed(k: int, w: int) -> None:
            failures[k] += 1
            if failures[k] > self.size + 2:
                raise RuntimeError(f"rollout shard {k} failed {failures[k]} times; giving up") from None
            self._heal(block=False)
            submit(k)

        for k in shards:
            submit(k)
        while pending:
            ready, overdue = self.watchdog.poll(list(pending))
            for ref in overdue:  # frozen: killed, and its shard re-run like a dead worker's
                self.watchdog.forget(ref)
                k, w = pending.pop(ref)
                self._freeze(w)
                failed(k, w)
            for ref in ready:
                k, w = pending.pop(ref)
                try:
                    records = ray.get(ref)
                    if records and records[0].policy_version < self.version:
                        raise StaleWeights(w)
                    self.watchdog.done(ref)
                    results[k] = records
                    if on_shard is not None:
                        on_shard(records)
                except (ray.exceptions.RayActorError, StaleWeights):
                    self.watchdog.forget(ref)
                    self._mark_lost(w)
                    failed(k, w)
        records, self.last_timings = merge_shards(results)
        return records

    # ---- broadcast transport ----------------------------------------------------------------------------
    def join_weight_group(self, host: str, port: int, world_size: int, backend: str) -> list:
        """Every live worker joins the broadcast group as rank 1..; returns the refs to wait on."""
        return [self.workers[i].join_weight_group.remote(host, port, rank + 1, world_size, backend)
                for rank, i in enumerate(self.live())]

    def receive_weights(self, members: list[int]) -> list:
        return [self.workers[i].receive_weights.remote() for i in members]

    def shutdown(self) -> None:
        if self.fleet is not None:
            self.fleet.shutdown()
        self.workers.shutdown()


# ---- the shard plan, shared by every rollout group (rl/colocated.py: the learner ranks' shards) -----------
def shard_prompts(prompts: Sequence[Prompt], num_shards: int) -> dict[int, tuple[list[Prompt], list[int]]]:
    """Shard k: the prompts at positions k, k + N, ... and those positions (their records' groups). Empty
    shards are left out. A shard depends on k only, so whoever runs it gives the same records."""
    positions = {k: list(range(len(prompts)))[k::num_shards] for k in range(num_shards)}
    return {k: ([prompts[j] for j in where], where) for k, where in positions.items() if where}


def shard_seed(seed: int, k: int) -> int:
    return seed + SEED_STRIDE * k


def generate_call_kind(num_prompts: int, group_size: int, text_sampler: dict | None) -> str:
    """The watchdog's call kind: one per shape (a held-out evaluation's batch is not a training step's)."""
    return f"generate {num_prompts}x{group_size}" + (" eval" if text_sampler else "")


def merge_shards(results: dict[int, list[RolloutRecord]]) -> tuple[list[RolloutRecord], dict[str, float]]:
    """The shards' records in (group, group_index) order, and the model compute of the slowest shard per
    phase (each record carries its batch's time; shards run in parallel)."""
    def per_shard(key: str, kind: str | None = None) -> float:
        return max(sum(r.timings.get(key, 0.0) / r.timings["batch_size"] for r in recs
                       if kind is None or r.sampler.get("kind") == kind) for recs in results.values())

    timings = {"gen_s": per_shard("gen_s"), "image_gen_s": per_shard("gen_s", "image"),
               "decode_s": per_shard("decode_s", "image")}
    out = sorted((r for k in sorted(results) for r in results[k]), key=lambda r: (r.group, r.group_index))
    return out, timings


class StaleWeights(Exception):
    """A worker answered with weights older than the group's version (Ray restarted it while idle)."""
