"""RewardPool: scores batches with rule-reward actors (CPU, sandboxed) and model-reward actors (CLIP),
scaled independently. Assumes ``ray.init`` was called by the caller.

Failure handling, so that a reward can never stall or kill training:
  * per call: the sandbox deadline inside the rule actors (timeout status, worker replaced);
  * per actor call: a watchdog deadline; a stuck model actor is killed and restarted (max_restarts);
  * a dead actor (RayActorError): Ray restarts it; the pool waits (bounded) until the restarted actor
    answers ``ready`` and resubmits its chunk, up to ``MAX_RETRIES`` times. The results that count are
    the ones returned, so nothing is lost or counted twice. A chunk that still fails is marked "error"
    for those samples only.
Plugins are imported (and checked) in a Ray task before any actor starts: a plugin that cannot be
imported is a RewardImportError from the constructor, not a crash of the caller's process.
"""

from __future__ import annotations

import math
import time

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayError

from policy.actor_group import ACTOR_MAX_RESTARTS, PLACEMENT_TIMEOUT_S, ActorGroup
from policy.deadlines import Watchdog
from policy.placement import bundles
from rewards.actors import ModelRewardActor, RuleRewardActor
from rewards.api import RewardInput, RewardResult, RewardSpec, ScoredSample
from rewards.engine import ResultCache, Stats, add_seconds, finish_batch, start_batch
from rewards.registry import probe_kinds

ACTOR_SLACK_S = 60.0  # on top of the per-call timeouts: scheduling, restarts, model warm-up
RESTART_WAIT_S = 120.0  # how long a restarting actor may take to answer again (it rebuilds its pool)
MAX_RETRIES = 2  # resubmissions of one chunk after its actor died


@ray.remote(num_cpus=0)
def _probe_kinds(specs: list[dict]) -> dict[str, str]:
    """In a Ray worker: the same environment (runtime_env, PYTHONPATH) as the reward actors."""
    return probe_kinds([RewardSpec(**d) for d in specs])


def wait_ready(actor, timeout_s: float = RESTART_WAIT_S) -> bool:
    """Poll ``actor.ready`` until it answers (True) or ``timeout_s`` passes (False). A restarting
    actor raises ActorUnavailableError / RayActorError meanwhile; those are expected here."""
    deadline = time.monotonic() + timeout_s
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        try:
            ray.get(actor.ready.remote(), timeout=min(left, 10.0))
            return True
        except (GetTimeoutError, RayError):
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))


class RewardPool:
    def __init__(self, specs: list[RewardSpec], num_workers: int = 1, num_model_workers: int = 1,
                 model_device: str = "cpu", clip_model_path: str | None = None, *,
                 procs_per_worker: int = 1, worker_num_cpus: float = 0.5, model_num_cpus: float = 0.5,
                 model_num_gpus: float | None = None, max_restarts: int = ACTOR_MAX_RESTARTS,
                 cache_size: int = 100_000, strategy: str | None = None, bundle_resources: dict | None = None,
                 placement_timeout_s: float = PLACEMENT_TIMEOUT_S, watchdog: Watchdog | None = None):
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise ValueError("RewardPool: reward names must be unique")
        self.specs = list(specs)
        self.watchdog = watchdog or Watchdog()  # every wait on an actor has a deadline (policy/deadlines.py)
        self.kinds = ray.get(_probe_kinds.remote([s.to_dict() for s in specs]))  # RewardImportError
        rule_specs = [s for s in specs if self.kinds[s.name] == "rule"]
        model_specs = [s for s in specs if self.kinds[s.name] == "model"]
        self.procs_per_worker = max(1, procs_per_worker)
        n_rule, n_model = (num_workers if rule_specs else 0), (num_model_workers if model_specs else 0)
        gpus = model_num_gpus if model_num_gpus is not None else (1 if model_device.startswith("cuda") else 0)
        # one placement-group bundle per actor (rule actors first), when a strategy is given
        self._model_args = ([s.to_dict() for s in model_specs], model_device, clip_model_path)

        def start(index: int, placement: dict):
            if index < n_rule:
                return RuleRewardActor.options(num_cpus=worker_num_cpus, max_restarts=max_restarts,
                                               **placement).remote(self.procs_per_worker)
            return ModelRewardActor.options(num_cpus=model_num_cpus, num_gpus=gpus, max_restarts=max_restarts,
                                            **placement).remote(*self._model_args)

        self.actors = ActorGroup("rewards", start, bundles(n_rule, worker_num_cpus, 0, bundle_resources)
                                 + bundles(n_model, model_num_cpus, gpus, bundle_resources), strategy,
                                 placement_timeout_s)
        self.num_rule = n_rule
        self._incarnations: dict[int, str] = {}  # actor index -> the incarnation last seen
        self._busy: dict[int, float] = {}  # actor index -> its busy seconds, as of its last answer
        self.cache = ResultCache(cache_size)
        self._stats = Stats()
        ray.get([a.ready.remote() for a in self.rule_actors + self.model_actors])
        for i, a in enumerate(self.rule_actors + self.model_actors):  # the first incarnation of every actor:
            self._note(i, *ray.get(a.busy_seconds.remote()))           # a restart from now on is counted

    @property
    def rule_actors(self) -> list:
        return self.actors.actors[:self.num_rule]

    @property
    def model_actors(self) -> list:
        return self.actors.actors[self.num_rule:]

    @property
    def restarts(self) -> int:
        """Actors Ray restarted (a new incarnation answered), over the pool's life."""
        return self.actors.restarts

    # -- scoring ---------------------------------------------------------------------------------
    def score(self, batch: list[RewardInput]) -> list[ScoredSample]:
        results, pending = start_batch(self.specs, batch, self.cache, self._stats)
        rule_calls = [(name, i) for name, i in pending if self.kinds[name] == "rule"]
        model_calls: dict[str, list[int]] = {}
        for name, i in pending:
            if self.kinds[name] != "rule":
                model_calls.setdefault(name, []).append(i)
        by_name = {s.name: s for s in self.specs}
        jobs = []  # (kind, actor index, list of (name, i), name for model jobs)
        if rule_calls and self.rule_actors:
            n = len(self.rule_actors)
            for a in range(n):
                part = rule_calls[a::n]
                if part:
                    jobs.append(("rule", a, part, None))
        for name, idx in model_calls.items():
            n = len(self.model_actors)
            size = math.ceil(len(idx) / n)
            for a in range(n):
                part = idx[a * size:(a + 1) * size]
                if part:
                    jobs.append(("model", a, [(name, i) for i in part], name))
        t0 = time.monotonic()
        for (_kind, _a, part, _name), res in zip(jobs, self._run_jobs(jobs, batch, by_name)):
            for (n_, i), r in zip(part, res):
                results[n_][i] = r
        if pending:
            add_seconds(self._stats, list(pending), time.monotonic() - t0)
        return finish_batch(self.specs, batch, results, pending, self.cache, self._stats)

    def _submit(self, job, batch, by_name):
        kind, a, part, name = job
        if kind == "rule":
            calls = [(by_name[n].to_dict(), batch[i], by_name[n].timeout_s) for n, i in part]
            return self.rule_actors[a].run.remote(calls)
        return self.model_actors[a].score.remote(name, [batch[i] for _, i in part])

    def _actor(self, job):
        kind, a, _, _ = job
        return (self.rule_actors if kind == "rule" else self.model_actors)[a]

    def _note(self, index: int, incarnation: str, busy: float) -> None:
        """An actor's (incarnation, busy seconds), as every answer carries them; a new incarnation (Ray
        restarted it: after a crash, or on another node after a node loss) is counted once."""
        if self._incarnations.setdefault(index, incarnation) != incarnation:
            self.actors.note_restart()
            self._incarnations[index] = incarnation
        self._busy[index] = busy

    def _deadline(self, job, by_name) -> float:
        kind, _, part, name = job
        if kind == "rule":
            worst = max(by_name[n].timeout_s for n, _ in part)
            return math.ceil(len(part) / self.procs_per_worker) * worst + ACTOR_SLACK_S
        return by_name[name].timeout_s * max(1, math.ceil(len(part) / 8)) + ACTOR_SLACK_S

    def _run_jobs(self, jobs, batch, by_name) -> list[list[RewardResult]]:
        """Every job's results. Each call has a deadline learned from the run's timings (policy/deadlines.py):
        past it, an actor that still answers a liveness probe is slow and is waited for (up to the sandbox
        bound, `_deadline`); one that does not is frozen: killed, restarted by Ray, and its chunk re-run as
        a dead actor's would be."""
        out: list[list[RewardResult] | None] = [None] * len(jobs)
        attempts = [0] * len(jobs)
        refs = {}  # ref -> (job index, hard deadline: the sandbox bound)

        def submit(j: int) -> None:
            kind, a = jobs[j][0], jobs[j][1]
            ref = self._submit(jobs[j], batch, by_name)
            self.watchdog.start(ref, f"reward {kind}", f"{'reward' if kind == 'rule' else 'model reward'} actor {a}")
            refs[ref] = (j, time.monotonic() + self._deadline(jobs[j], by_name))

        for j in range(len(jobs)):
            submit(j)
        while refs:
            ready, overdue = self.watchdog.poll(list(refs))
            for ref in ready:
                j, _ = refs.pop(ref)
                try:
                    rows, (incarnation, busy) = ray.get(ref)
                    self.watchdog.done(ref)
                    kind, a = jobs[j][0], jobs[j][1]
                    self._note(a if kind == "rule" else len(self.rule_actors) + a, incarnation, busy)
                    out[j] = [RewardResult(v, s, d) for v, s, d in rows]
                except (RayActorError, RayError) as exc:
                    self.watchdog.forget(ref)
                    attempts[j] += 1
                    # the actor is being restarted: wait until it answers, then resubmit this chunk
                    if attempts[j] <= MAX_RETRIES and wait_ready(self._actor(jobs[j])):
                        self._stats.retries += 1
                        submit(j)
                    else:
                        msg = f"reward actor failed {attempts[j]} times: {type(exc).__name__}"
                        out[j] = [RewardResult(0.0, "error", msg)] * len(jobs[j][2])
            for ref in overdue:
                if self._alive(self._actor(jobs[refs[ref][0]])):
                    self.watchdog.extend(ref)  # slow, not frozen
                else:  # frozen: its call now fails and is re-run like a dead actor's (above)
                    self._kill(self._actor(jobs[refs[ref][0]]))
            now = time.monotonic()
            for ref, (j, deadline) in list(refs.items()):
                if now > deadline:  # alive but past the sandbox bound: restart it, keep going
                    refs.pop(ref)
                    self.watchdog.forget(ref)
                    self._kill(self._actor(jobs[j]))
                    out[j] = [RewardResult(0.0, "timeout", "reward actor did not answer; restarted")] * len(jobs[j][2])
        return [o if o is not None else [] for o in out]

    @staticmethod
    def _alive(actor, timeout_s: float = 5.0) -> bool:
        """Does the actor answer `alive` (served by its own thread, even while a call runs)?"""
        try:
            return bool(ray.get(actor.alive.remote(), timeout=timeout_s))
        except (GetTimeoutError, RayError):
            return False

    @staticmethod
    def _kill(actor) -> None:
        """Kill the actor; Ray restarts it (its in-flight calls fail with RayActorError)."""
        try:
            ray.kill(actor, no_restart=False)
        except Exception:  # noqa: BLE001 - already gone
            pass

    # -- bookkeeping -------------------------------------------------------------------------------
    def stats(self) -> dict:
        return self._stats.to_dict()

    def busy_seconds(self, which: str = "all") -> float:
        """Total time the reward actors spent scoring (actor-side), summed over actors, as of their last
        answers (every answer carries it: no extra round trip per step); `which` = "all", "rule" or
        "model" (the CLIP actors). A restarted actor starts again from 0; it is counted in
        `actor_restarts` when it first answers."""
        n_rule, n = len(self.rule_actors), len(self.rule_actors) + len(self.model_actors)
        index = {"all": range(n), "rule": range(n_rule), "model": range(n_rule, n)}[which]
        return sum(self._busy.get(i, 0.0) for i in index)

    def shutdown(self) -> None:
        for a in self.rule_actors:  # the sandbox processes first, then the actors
            try:
                ray.get(a.shutdown.remote(), timeout=10)
            except (GetTimeoutError, RayError):
                pass
        self.actors.shutdown()
