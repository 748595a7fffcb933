"""Each default lives in one place: a second definition of one of these is a test failure, not a drift.

Each entry names the one module that may define the value and a pattern for a definition anywhere else
in the packages (a literal default in a signature, a dataclass field, a pydantic Field or a JSON file).
Code that needs the value imports the constant (or takes it from the config) instead.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("policy", "rollout", "rewards", "trainer", "rl", "benchmarks")

# name -> (the one home, pattern of a literal definition)
SINGLE_HOMES = {
    "t2i max_text_len": ("policy/prompts.py", r"max_text_len\s*(?::\s*int\s*)?=\s*(?:Field\()?\s*\d"),
    "placement_timeout_s": ("policy/actor_group.py", r"placement_timeout_s\s*(?::\s*float\s*)?=\s*(?:Field\()?\s*\d"),
    "Ray actor max_restarts": ("policy/actor_group.py", r"max_restarts\s*(?::\s*int\s*)?=\s*\d"),
    "warm-start lr": ("rl/config.py", r"\b3(?:\.0)?e-3\b"),
    "warm-start batch_size (SFT)": ("rl/config.py", r"batch_size\s*(?::\s*int\s*)?=\s*(?:Field\()?\s*32\b|, 32, "),
    "LoRA rank / alpha": ("policy/lora.py", r"\b(?:rank|alpha)\s*(?::\s*(?:int|float)\s*)?=\s*(?:Field\()?\s*(?:16|32(?:\.0)?)\b"),
    "reward weight": ("rewards/api.py", r"\bweight\s*(?::\s*float\s*)?=\s*(?:Field\()?\s*(?:0\.5|1\.0|2\.0)\b"),
}


def sources(name: str) -> list[Path]:
    # the SFT batch size is a warm-start setting: other batch sizes (CLIP's, the sampler's) are other values
    packages = ("rl", "trainer", "benchmarks") if "SFT" in name else PACKAGES
    return [p for pkg in packages for p in (ROOT / pkg).rglob("*.py")]


@pytest.mark.parametrize("name", sorted(SINGLE_HOMES))
def test_one_definition(name):
    home, pattern = SINGLE_HOMES[name]
    found = [f"{p.relative_to(ROOT)}:{i}: {line.strip()}" for p in sources(name)
             for i, line in enumerate(p.read_text().splitlines(), 1)
             if re.search(pattern, line) and str(p.relative_to(ROOT)) != home]
    assert not found, f"{name} is defined in {home}; second definitions:\n" + "\n".join(found)


def test_the_constants_are_what_the_config_uses():
    from policy.actor_group import PLACEMENT_TIMEOUT_S
    from policy.prompts import T2I_MAX_TEXT_LEN
    from rl.config import ImageSamplerSection, RaySection

    assert ImageSamplerSection().max_text_len == T2I_MAX_TEXT_LEN
    assert RaySection().placement_timeout_s == PLACEMENT_TIMEOUT_S


def test_reward_weights_default_the_same_in_code_and_config():
    from rewards.api import DEFAULT_WEIGHTS, RewardSpec

    for name, weight in DEFAULT_WEIGHTS.items():
        assert RewardSpec(name).weight == weight == RewardSpec.from_dict({"name": name}).weight
    assert RewardSpec("mine").weight == 1.0 == RewardSpec.from_dict({"name": "mine"}).weight


def test_gradient_clipping_is_learner_grad_clip_only(tmp_path):
    """The DeepSpeed JSONs leave clipping to learner.grad_clip; one that contradicts it is refused."""
    from trainer.engine import LearnerConfig, load_deepspeed_config

    for path in (ROOT / "configs" / "deepspeed").glob("*.json"):
        assert "gradient_clipping" not in json.loads(path.read_text()), path
    assert load_deepspeed_config(LearnerConfig(grad_clip=0.5), 1, False)["gradient_clipping"] == 0.5
    bad = tmp_path / "ds.json"
    bad.write_text(json.dumps({"zero_optimization": {"stage": 2}, "gradient_clipping": 2.0}))
    with pytest.raises(ValueError, match="contradicts learner.grad_clip"):
        load_deepspeed_config(LearnerConfig(deepspeed_config=str(bad), grad_clip=1.0), 1, False)
