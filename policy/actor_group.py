"""`ActorGroup`: N Ray actors of one kind, one placement-group bundle each: the shape every group shares.

The rollout group (rollout/group.py), the reward pool (rewards/pool.py) and the learner group
(trainer/learner.py) each hold one ActorGroup and add only what their job needs (sharding and weights,
scoring, DeepSpeed ranks). The distributed shape is the same for the three:

    actors = ActorGroup("rollout", start, bundles(n, num_cpus=1), strategy="PACK")
    actors[i]              the handle of actor i (bundle i)
    actors.replace(i)      a new actor in bundle i, after Ray gave up restarting the old one
    actors.restart_all()   every actor anew in its bundle (a learner group after a lost rank)
    actors.note_restart()  count an actor lost and brought back; `actors.restarts` is the total
    actors.shutdown()      kill every actor, release the placement group

`start(index, placement)` starts actor `index`; `placement` is the options that pin it to its bundle
(`.options(**placement)`). Construction reserves the placement group first and fails at once, naming
the group, what it asked and what the cluster has, when the cluster cannot hold it (policy/placement.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from policy.placement import in_bundle, kill_all, release, reserve

# The two defaults every group shares (each lives here only):
ACTOR_MAX_RESTARTS = 4  # how often Ray restarts one crashed actor in place before the group replaces it
PLACEMENT_TIMEOUT_S = 120.0  # how long a group waits for its placement group before failing


class ActorGroup:
    def __init__(self, name: str, start: Callable[[int, dict], Any], asked: list[dict],
                 strategy: str | None = "PACK", placement_timeout_s: float = PLACEMENT_TIMEOUT_S) -> None:
        """Reserve one bundle per entry of `asked` (no placement group when strategy is None), then start
        one actor per bundle."""
        self.name = name
        self._start = start
        self.placement_group = reserve(name, asked, strategy, placement_timeout_s) if strategy and asked else None
        self.actors: list = [self._start_one(i) for i in range(len(asked))]
        self.restarts = 0  # actors lost and brought back (restarted by Ray, or replaced), over the group's life

    def _start_one(self, index: int):
        return self._start(index, in_bundle(self.placement_group, index))

    def __len__(self) -> int:
        return len(self.actors)

    def __getitem__(self, index: int):
        return self.actors[index]

    def __iter__(self):
        return iter(self.actors)

    def note_restart(self) -> None:
        self.restarts += 1

    def replace(self, index: int):
        """Kill actor `index` for good and start a new one in its bundle; returns the new handle."""
        kill_all([self.actors[index]])
        self.actors[index] = self._start_one(index)
        return self.actors[index]

    def restart_all(self) -> list:
        """Every actor anew in its bundle (the survivors of a broken collective cannot be reused)."""
        kill_all(self.actors)
        self.actors = [self._start_one(i) for i in range(len(self.actors))]
        return self.actors

    def shutdown(self) -> None:
        kill_all(self.actors)
        self.actors = []
        release(self.placement_group)
        self.placement_group = None
