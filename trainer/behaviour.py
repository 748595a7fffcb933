"""The behaviour policy of stale rollouts: the weights of the last K policy versions, kept on each rank.

With asynchronous rollouts (`rollout.max_staleness: K`, docs/async.md) a record may have been sampled by a
policy up to K updates older than the learner. UniGRPO's ratio must then use that policy:

    r_t = pi_theta(o_t | q, mask) / pi_{v(o)}(o_t | q, mask)       v(o) = the record's policy_version

not pi_theta_old = the learner's weights at the start of the update (which is pi_{v(o)} only when the record
is fresh). For masked diffusion the behaviour likelihood is not a by-product of sampling (the sampler's
confidences are of its own unmasking order, not of the update's random masks), so it is recomputed on the
update's masks: each rank keeps a copy of its parameters as they were before each of its last K updates,
and scores stale rows with the copy of their version (the parameters are swapped in, the forward runs on
the same module, the current parameters are put back bit for bit). Fresh rows take the usual path, so
K = 0 (no copies) is the synchronous objective exactly.

Memory: K copies of the rank's trainable parameters (with LoRA, the adapters only) (ZeRO-0/1/2 ranks hold the full parameters; ZeRO-3 is refused
by the config check). Compute: one extra no-grad forward per stale version present per micro-batch and
inner iteration, the pi_old pass the synchronous step does anyway for fresh rows.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch


class BehaviourWeights:
    def __init__(self, keep: int) -> None:
        self.keep = keep  # K: how many versions back a row may be
        self._copies: dict[int, list[torch.Tensor]] = {}

    def snapshot(self, module: torch.nn.Module, version: int) -> None:
        """Keep the parameters of `version` (call before the update that moves past it); drop older than K."""
        if self.keep <= 0:
            return
        self._copies[version] = [p.detach().clone() for p in trainable(module)]
        for old in [v for v in self._copies if v < version - self.keep]:  # rows of version - K still come
            del self._copies[old]

    def versions(self) -> list[int]:
        return sorted(self._copies)

    @contextmanager
    def weights_of(self, module: torch.nn.Module, version: int):
        """The module computes with `version`'s parameters inside the block, its own after it."""
        if version not in self._copies:
            raise RuntimeError(f"no copy of policy version {version} on this rank (kept: {self.versions()}); "
                               f"rows older than rollout.max_staleness={self.keep} must be dropped before the update")
        params = trainable(module)
        current = [p.detach().clone() for p in params]
        with torch.no_grad():
            for p, w in zip(params, self._copies[version]):
                p.copy_(w)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, w in zip(params, current):
                    p.copy_(w)

    def clear(self) -> None:
        self._copies.clear()


def trainable(module: torch.nn.Module) -> list[torch.Tensor]:
    """The parameters an update changes: all of them, or with LoRA the adapters only (the frozen base is the
    same in every version, so a copy of it would only cost memory)."""
    return [p for p in module.parameters() if p.requires_grad]
