"""RolloutWorker on a tiny random policy: records, weights, and one real Ray actor."""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
import pytest
import torch

from policy.tiny import build_tiny_policy
from rollout.image_sampler import ImageSamplerConfig
from rollout.record import Prompt
from rollout.text_sampler import TextSamplerConfig
from rollout.worker import RolloutWorker, start_rollout_worker

TEXT = TextSamplerConfig(gen_length=16, steps=8, block_length=8, temperature=1.0)
IMAGE = ImageSamplerConfig(steps=3, guidance_scale=2.0)
WORKER_KW = dict(num_image_tokens=16, max_text_len=24)
PROMPTS = [
    Prompt("q1", "math", "what is 2+2?", "4", think=True),
    Prompt("q2", "math", "hi", None),
    Prompt("img", "t2i", "a red cat", None),
]
FIELDS = {"prompt_id", "group_index", "task", "prompt_ids", "prompt_mask", "response_ids", "response_text",
          "image_codes", "image_png", "unmask_step", "confidence", "early_filled", "sampler", "seed",
          "policy_version", "timings", "num_forwards", "suffix_ids", "image"}


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory):
    return build_tiny_policy(tmp_path_factory.mktemp("tiny"), codebook_size=16, seed=0)


@pytest.fixture(scope="module")
def worker(policy_dir):
    return RolloutWorker(policy_dir, TEXT, IMAGE, **WORKER_KW)


def test_generate_records(worker):
    layout, G = worker.layout, 3
    records = worker.generate(PROMPTS, group_size=G, seed=0)
    assert len(records) == len(PROMPTS) * G
    assert [(r.prompt_id, r.group_index) for r in records] == [
        (p.prompt_id, g) for p in PROMPTS for g in range(G)]
    # each record says which prompt it answers: its position in the batch (the group), question and gold
    assert [(r.group, r.question, r.gold) for r in records] == [
        (j, p.question, p.answer) for j, p in enumerate(PROMPTS) for _ in range(G)]
    shifted = worker.generate(PROMPTS[:1], group_size=1, seed=0, groups=[5])
    assert shifted[0].group == 5
    for r in records:
        assert FIELDS <= set(asdict(r))
        assert r.seed == 0 and r.policy_version == 0 and r.timings["gen_s"] > 0
        assert r.worker == ""  # a worker constructed without a name (start_rollout_worker names its actors)
        assert len(r.unmask_step) == len(r.confidence) == len(r.response_ids)
        assert layout.mask_id not in r.response_ids
        if r.task == "t2i":
            assert r.response_text == "" and len(r.image_codes) == 16
            assert all(0 <= c < layout.codebook_size for c in r.image_codes)
            assert r.response_ids == [c + layout.image_offset for c in r.image_codes]
            assert r.image_png[:8] == b"\x89PNG\r\n\x1a\n"
            assert r.prompt_ids[-1] == layout.soi_id and r.prompt_mask[0] == 0
            assert r.sampler["kind"] == "image" and r.num_forwards == 3
        else:
            assert r.image_codes is None and r.image_png is None
            assert len(r.response_ids) == TEXT.gen_length  # the full sampled sequence is kept
            assert r.prompt_ids[0] == layout.bos_id and r.prompt_ids[-1] != layout.pad_id
            ids = r.response_ids
            cut = ids.index(layout.eos_id) if layout.eos_id in ids else len(ids)
            assert r.response_text == worker.tokenizer.decode(ids[:cut], skip_special_tokens=True)
            assert r.sampler["kind"] == "text" and r.sampler["temperature"] == 1.0
    think = next(r for r in records if r.prompt_id == "q1")
    plain = next(r for r in records if r.prompt_id == "q2")
    assert len(think.prompt_ids) > len(plain.prompt_ids) + 50  # the think instruction is there
    group = [r.response_ids for r in records if r.prompt_id == "q1"]
    assert group[0] != group[1]  # G different samples at temperature 1


def test_generate_seeded(worker):
    a = worker.generate(PROMPTS[1:], group_size=2, seed=5)
    b = worker.generate(PROMPTS[1:], group_size=2, seed=5)
    c = worker.generate(PROMPTS[1:], group_size=2, seed=6)
    assert [r.response_ids for r in a] == [r.response_ids for r in b]
    assert [r.response_ids for r in a] != [r.response_ids for r in c]


def test_load_weights(policy_dir):
    worker = RolloutWorker(policy_dir, TextSamplerConfig(gen_length=16, steps=16, block_length=8), IMAGE,
                           **WORKER_KW)
    before = worker.generate(PROMPTS[:1], 1, seed=0)[0]
    state = {k: v.detach().cpu().numpy().copy() for k, v in worker.model.state_dict().items()}
    rng = np.random.default_rng(0)
    new = {k: (v + rng.normal(0, 0.5, v.shape)).astype(np.float32) for k, v in state.items()}
    assert worker.load_weights(7, new) == 7 and worker.policy_version() == 7
    after = worker.generate(PROMPTS[:1], 1, seed=0)[0]
    assert after.policy_version == 7
    assert after.response_ids != before.response_ids or after.confidence != before.confidence
    name = "model.transformer.wte.weight"
    torch.testing.assert_close(worker.model.state_dict()[name], torch.from_numpy(new[name]))

    bad = dict(new)
    bad[name] = np.zeros((3, 3), np.float32)
    with pytest.raises(ValueError, match="wrong shape.*wte"):
        worker.load_weights(8, bad)
    missing = {k: v for k, v in new.items() if k != name}
    with pytest.raises(ValueError, match="missing.*wte"):
        worker.load_weights(8, missing)
    assert worker.policy_version() == 7  # a rejected payload changes nothing
    torch.testing.assert_close(worker.model.state_dict()[name], torch.from_numpy(new[name]))


def test_ray_actor(policy_dir, monkeypatch):
    monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        actor = start_rollout_worker(0, policy_dir, TEXT, IMAGE, num_gpus_per_worker=0, **WORKER_KW)
        assert ray.get(actor.ping.remote()) == "pong"
        records = ray.get(actor.generate.remote(PROMPTS[1:], 2, 3), timeout=120)
        assert len(records) == 4 and records[-1].image_png is not None
        assert {r.worker for r in records} == {"rollout-0"}  # the dashboard's worker filter reads this
        local = RolloutWorker(policy_dir, TEXT, IMAGE, **WORKER_KW).generate(PROMPTS[1:], 2, 3)
        assert [r.response_ids for r in records] == [r.response_ids for r in local]
    finally:
        ray.shutdown()
