"""The multimodal loop end to end on CPU (configs/tiny_multimodal.yaml, shortened): text, mmu and t2i
groups through real Ray rollout, rule-reward and CLIP model-reward actors and a DeepSpeed learner."""

import json

import numpy as np
import pytest

from rl.config import load_config
from rl.driver import Driver
from tests.test_rl_e2e import ROOT, comparable, metrics

CONFIG = ROOT / "configs" / "tiny_multimodal.yaml"
FAST = ["data.prompts_per_step=3", "rollout.group_size=4", "run.plot=false", "run.max_wall_s=null",
        "run.checkpoint_every=1", "model.warm_start.steps=5",
        "rollout.image.guidance_scale=3.5"]  # the demo samples without CFG; the loop must run with it too


def run(tmp_path, name, steps, resume=False):
    cfg = load_config(CONFIG, FAST + [f"run.dir={tmp_path}", f"run.name={name}", f"run.steps={steps}"])
    driver = Driver(cfg, resume=resume, console=False)
    try:
        driver.setup()
        driver.train()
    finally:
        driver.shutdown()
    return driver


@pytest.mark.slow
@pytest.mark.usefixtures("ray_cluster")
@pytest.mark.timeout(1800)  # three driver runs; minutes on 2 idle cores, far more on a shared machine
def test_every_task_through_the_loop_and_resume_is_exact(tmp_path):
    whole = run(tmp_path, "whole", steps=3)
    rows = metrics(tmp_path / "whole")
    layout = None
    for r in rows:
        for kind in ("text", "mmu", "t2i"):
            assert r[f"task/{kind}/rollouts"] == 4  # one group of G = 4 per task per step
            assert f"reward/task/{kind}/mean" in r
            assert r[f"learner/task/{kind}/masked_tokens"] > 0  # every task's rows entered the loss
        assert r["reward/clip/mean"] > 0 and r["reward/clip/unparsable"] == 0  # CLIP actor saw pixels
        assert r["reward/region/error"] == 0 and r["time/clip_compute_s"] > 0
    from policy.loading import load_tokenizer_and_layout

    _, layout = load_tokenizer_and_layout(tmp_path / "whole" / "policy_init")
    records = whole.store.read_step(3)
    by_kind = {k: [r for r in records if (r["task"] if r["task"] in ("mmu", "t2i") else "text") == k]
               for k in ("text", "mmu", "t2i")}
    for r in by_kind["t2i"]:
        assert len(r["response_ids"]) == len(r["image_codes"]) == 16 and r["suffix_ids"] == [layout.eoi_id]
        assert r["response_ids"] == [c + layout.image_offset for c in r["image_codes"]]
        assert r["image_png"][:8] == b"\x89PNG\r\n\x1a\n" and "image" not in r  # pixels stay out of the store
        assert r["prompt_ids"][-1] == layout.soi_id and 0 in r["prompt_mask"]
    for r in by_kind["mmu"]:
        assert r["prompt_ids"][:2] == [layout.mmu_id, layout.soi_id] and len(r["image_codes"]) == 16
        assert r["prompt_ids"][2:18] == [c + layout.image_offset for c in r["image_codes"]]
        assert len(r["response_ids"]) == 4
    for r in by_kind["text"]:
        assert r["prompt_ids"][0] == layout.bos_id and r["image_codes"] is None and len(r["response_ids"]) == 4
    assert len({r["group"] for r in records}) == 3  # groups never mix tasks
    for g in {r["group"] for r in records}:
        assert len({r["task"] for r in records if r["group"] == g}) == 1
    summary = json.loads((tmp_path / "whole" / "summary.json").read_text())
    assert {f"reward_{w}10/{k}" for w in ("first", "last") for k in ("text", "mmu", "t2i")} <= set(summary)

    # resume: 2 steps, stop, 1 more step == 3 uninterrupted steps, for every task
    run(tmp_path, "split", steps=2)
    driver = run(tmp_path, "split", steps=3, resume=True)
    split = metrics(tmp_path / "split")
    assert [r["step"] for r in split] == [1, 2, 3]
    assert comparable(split[2]) == comparable(rows[2])
    again = driver.store.read_step(3)
    assert [r["response_ids"] for r in again] == [r["response_ids"] for r in records]
    assert np.allclose([r["advantage"] for r in again], [r["advantage"] for r in records])
