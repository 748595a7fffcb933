"""A learner rank that also answers what tests/test_lora.py asks of it (importable by Ray workers)."""

import ray
import torch

from policy.model import MMadaModelLM
from trainer.learner import Learner


class ProbeLearner(Learner):
    def reference_and_base(self, ids, masked, is_image) -> dict:
        """log pi_ref (the rank's reference), log pi of the initial policy loaded separately, and log pi_theta,
        on the same masked tokens; with what the optimizer holds and whether pi_ref is the training module."""
        ids, masked, is_image = (torch.from_numpy(a) for a in (ids, masked, is_image))
        base = MMadaModelLM.from_pretrained(self.policy_path, dtype=torch.float32).eval()
        self.engine.eval()
        with torch.no_grad():
            out = {name: self._logprobs(model, ids, None, masked, is_image)[0].numpy()
                   for name, model in (("ref", self.ref), ("base", base), ("policy", self.engine))}
        self.engine.train()
        opt = self.engine.optimizer  # ZeRO-1/2 keep the module's own parameters in bit16_groups
        groups = getattr(opt, "bit16_groups", None) or [g["params"] for g in opt.param_groups]
        optimized = {id(p) for g in groups for p in g}
        named = dict(self.engine.module.named_parameters())
        out["optimized"] = sorted(n for n, p in named.items() if id(p) in optimized)
        out["trainable"] = sorted(n for n, p in named.items() if p.requires_grad)
        out["ref_is_policy_module"] = getattr(self.ref, "_peft_model", None) is self.engine.module
        return out


ProbeLearnerActor = ray.remote(ProbeLearner)
