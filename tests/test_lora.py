"""LoRA (learner.lora, policy/lora.py): adapters only in the optimizer, on the wire and in checkpoints; the
reference policy is the base with the adapters off; workers and the export hold the same merged weights."""

import json
import threading

import numpy as np
import pytest
import ray
import torch

from policy import lora
from policy.loading import load_policy
from policy.tiny import build_tiny_policy
from policy.weight_sync import BroadcastReceiver, init_weight_group, send_weights
from rollout.worker import RolloutWorker
from tests.plugins.lora_probe import ProbeLearnerActor
from trainer.batch import TrainBatch
from trainer.learner import free_port
from trainer.learner_group import LearnerConfig, LearnerGroup, UniGRPOConfig
from trainer.unigrpo import masks_for_update

SETTINGS = lora.LoraSettings(rank=4, alpha=8.0)


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory):
    return build_tiny_policy(tmp_path_factory.mktemp("policy"), seed=0, d_model=32, n_heads=4)


def batch_and_masks(n=6, prompt=6, response=10, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, 90, size=(n, prompt + response))
    resp = np.zeros(ids.shape, bool)
    resp[:, prompt:] = True
    _, masked = masks_for_update(resp, UniGRPOConfig(mu=1, seed=seed), 0)
    return TrainBatch(ids, resp, rng.normal(size=n)), masked[0]


def adapted(policy_dir, seed=0):
    """The tiny policy wrapped, with adapters moved off zero (B = 0 at init would make every check trivial)."""
    model = lora.wrap(load_policy(policy_dir).model, SETTINGS, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".lora_B." in name:
                p.copy_(0.05 * torch.randn(p.shape, generator=gen))
    return model


# ---- config ------------------------------------------------------------------------------------------------
def test_config_full_fine_tuning_by_default_and_bad_lora_refused():
    from rl.builders import learner_config
    from rl.config import ConfigError, load_config
    from rl.preflight import check_deepspeed_config

    assert learner_config(load_config(None)).lora is None
    assert learner_config(load_config(None, ["learner.lora={}"])).lora == lora.LoraSettings()
    with pytest.raises(ConfigError, match="learner.lora.target_modules"):
        load_config(None, ["learner.lora={target_modules: [lm_head]}"])
    with pytest.raises(ConfigError, match="learner.lora.rank"):
        load_config(None, ["learner.lora={rank: 0}"])
    zero3 = load_config(None, ["learner.lora={}", "learner.deepspeed_config=configs/deepspeed/zero3.json"])
    with pytest.raises(ConfigError, match="learner.lora with ZeRO-3"):
        check_deepspeed_config(zero3)
    check_deepspeed_config(load_config(None, ["learner.lora={}"]))  # ZeRO-2 (the tiny config's) is fine


# ---- policy/lora.py, no actors ---------------------------------------------------------------------------
def test_wrap_trains_adapters_only_and_names_stay_the_reference_layout(policy_dir):
    plain = load_policy(policy_dir).model
    model = adapted(policy_dir)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    assert not any("transformer.ff_out" in n and "blocks" not in n for n in trainable)  # the LM head is never adapted
    merged = dict(lora.merged_tensors(model))
    assert list(merged) == list(dict(plain.named_parameters()))  # no base_model.model., no lora_ names
    wire = [name for name, _ in lora.adapter_tensors(model)]
    assert len(wire) == 2 * 7 * plain.config.n_layers and all(n.endswith(lora.WIRE_SUFFIXES) for n in wire)


def test_base_view_is_the_frozen_base_exactly(policy_dir):
    model, base = adapted(policy_dir), load_policy(policy_dir).model
    ids = torch.randint(5, 90, (3, 12))
    with torch.no_grad():
        assert torch.equal(lora.base_view(model)(ids).logits, base(ids).logits)
        assert not torch.equal(model(ids).logits, base(ids).logits)  # the adapters do change the policy


def test_applied_adapters_equal_the_merged_model_and_peft_forward(policy_dir):
    model = adapted(policy_dir)
    merged = load_policy(policy_dir).model
    merged.load_state_dict(dict(lora.merged_tensors(model)))
    worker = load_policy(policy_dir).model
    applier = lora.AdapterApplier()
    for _ in range(2):  # a second publication merges into the kept base, not into the first merge
        applier.apply(worker, dict(lora.adapter_tensors(model)), lora.adapter_scale(model))
    ids = torch.randint(5, 90, (3, 12))
    with torch.no_grad():
        assert torch.equal(worker(ids).logits, merged(ids).logits)
        torch.testing.assert_close(worker(ids).logits, model(ids).logits, rtol=0, atol=1e-5)  # = W0 x + s B A x


def test_applier_refuses_adapters_that_do_not_fit(policy_dir):
    model, worker = adapted(policy_dir), load_policy(policy_dir).model
    state = dict(lora.adapter_tensors(model))
    before = {k: v.clone() for k, v in worker.state_dict().items()}
    with pytest.raises(KeyError, match="both lora_A and lora_B"):
        lora.AdapterApplier().apply(worker, {k: v for k, v in state.items() if not k.endswith("lora_B")}, 2.0)
    bad = {k: (v[:, :-1] if k.endswith("lora_A") else v) for k, v in state.items()}
    with pytest.raises(ValueError, match="do not fit"):
        lora.AdapterApplier().apply(worker, bad, 2.0)
    assert all(torch.equal(before[k], v) for k, v in worker.state_dict().items())  # nothing was changed


def test_adapters_over_the_broadcast_protocol(policy_dir):
    model = adapted(policy_dir)
    worker = load_policy(policy_dir).model
    merged = load_policy(policy_dir).model
    merged.load_state_dict(dict(lora.merged_tensors(model)))
    port = free_port()
    entries, tensors = lora.adapter_entries(model), [t for _, t in lora.adapter_tensors(model)]

    def sender():
        group = init_weight_group("127.0.0.1", port, 0, 2)
        send_weights(group, 5, entries, tensors, lora={"scale": lora.adapter_scale(model)})

    thread = threading.Thread(target=sender)
    thread.start()
    version = BroadcastReceiver("127.0.0.1", port, 1, 2).receive(worker, adapters=lora.AdapterApplier())
    thread.join()
    ids = torch.randint(5, 90, (2, 12))
    with torch.no_grad():
        assert version == 5 and torch.equal(worker(ids).logits, merged(ids).logits)


# ---- a real DeepSpeed rank (Ray actor) with learner.lora ----------------------------------------------------
class ProbeGroup(LearnerGroup):
    actor_class = ProbeLearnerActor


@pytest.fixture(scope="module")
def trained(ray_cluster, policy_dir, tmp_path_factory):
    """One ZeRO-2 rank with adapters, two updates (beta > 0: a reference policy is needed)."""
    cfg = LearnerConfig(lr=1e-2, micro_batch_tokens=64, lora=SETTINGS)
    group = ProbeGroup.create(1, str(policy_dir), cfg, UniGRPOConfig(mu=2, beta=0.05, seed=1))
    batch, _ = batch_and_masks()
    stats = [group.update(batch) for _ in range(2)]
    out = tmp_path_factory.mktemp("lora_learner")
    yield {"group": group, "stats": stats, "dir": out}
    group.shutdown()


def test_reference_is_the_base_with_adapters_off(trained):
    batch, masked = batch_and_masks(seed=4)
    probe = ray.get(trained["group"].actors[0].reference_and_base.remote(batch.input_ids, masked, batch.is_image))
    np.testing.assert_array_equal(probe["ref"], probe["base"])  # exactly, on CPU fp32
    assert np.abs(probe["policy"] - probe["base"]).max() > 1e-4  # two updates moved the policy away from it
    assert probe["ref_is_policy_module"]  # no second copy of the model
    assert probe["optimized"] == probe["trainable"] and all(".lora_" in n for n in probe["optimized"])
    assert trained["stats"][1]["kl"] > 0


def test_only_adapters_are_published_and_workers_equal_the_merged_export(trained, policy_dir):
    group = trained["group"]
    payload = ray.get(group.publish_object_store())
    assert payload["lora"] == {"scale": SETTINGS.scale} and all(k.endswith(lora.WIRE_SUFFIXES) for k in payload["state"])
    adapter_bytes = sum(v.nbytes for v in payload["state"].values())
    full_bytes = sum(p.numel() * 4 for p in load_policy(policy_dir).model.parameters())
    assert group.weight_bytes() == adapter_bytes < full_bytes / 5  # what publish/bytes reports per receiver

    exported = load_policy(group.export_policy(trained["dir"] / "export"))
    plain = load_policy(policy_dir).model
    assert list(exported.model.state_dict()) == list(plain.state_dict())  # the reference layout
    worker = RolloutWorker(policy_dir)
    assert worker.load_weights(group.policy_version, payload) == 2
    ids = torch.from_numpy(batch_and_masks(seed=7)[0].input_ids)
    with torch.no_grad():
        assert torch.equal(worker.model(ids).logits, exported.model(ids).logits)
        assert not torch.equal(plain(ids).logits, exported.model(ids).logits)

    # the broadcast transport delivers the same adapters
    other = RolloutWorker(policy_dir)
    host, port, root = group.init_broadcast(2)
    other.join_weight_group(host, port, 1, 2)
    ray.get(root)
    refs = group.broadcast_weights()
    assert other.receive_weights() == group.policy_version
    ray.get(refs)
    with torch.no_grad():
        assert torch.equal(other.model(ids).logits, exported.model(ids).logits)


def test_checkpoint_holds_adapters_and_their_optimizer(trained, policy_dir):
    group = trained["group"]
    ckpt = group.save_checkpoint(trained["dir"] / "ckpt")
    engine_files = {p.name: p.stat().st_size for p in (ckpt / "engine").iterdir()}
    model_states = next(v for k, v in engine_files.items() if k.startswith("mp_rank"))
    assert model_states < (ckpt / "policy" / "model.safetensors").stat().st_size / 3  # no frozen base in it
    assert json.loads((ckpt / lora.ADAPTER_DIR / lora.BASE_FILE).read_text())["base_policy"] == str(policy_dir.resolve())
    before = ray.get(group.publish_object_store())["state"]
    group.update(batch_and_masks()[0])  # move on, then come back
    group.load_checkpoint(ckpt)
    after = ray.get(group.publish_object_store())["state"]
    assert all(np.array_equal(before[k], after[k]) for k in before) and group.policy_version == 2


# ---- the run: resume and export ------------------------------------------------------------------------------
@pytest.mark.slow  # three drivers
def test_lora_run_resumes_exactly_and_exports_a_plain_policy(ray_cluster, tmp_path):
    from rl.cli import main as cli_main
    from tests.test_rl_e2e import comparable, whole_and_resumed

    whole, split = whole_and_resumed(tmp_path, [
        "learner.num_ranks=1", "learner.lora={rank: 4, alpha: 8.0}", "learner.lr=1e-2", "unigrpo.beta=0.05",
        # a reward with variance from step 1, so that the adapters move
        "rewards.functions=[{name: length, path: 'tests.plugins.e2e_rewards:length_bonus'}]"])
    assert [r["step"] for r in split] == [1, 2, 3]
    assert comparable(split[2]) == comparable(whole[2])
    assert whole[2]["learner/kl"] > 0  # beta > 0: the reference (adapters off) differs from the policy

    # export: the adapters of the last checkpoint merged into their base, the reference layout, loadable
    out = tmp_path / "exported"
    assert cli_main(["export", str(tmp_path / "split"), str(out)]) == 0
    exported = load_policy(out)
    in_checkpoint = load_policy(tmp_path / "split" / "checkpoints" / "step_3" / "policy")
    plain = load_policy(tmp_path / "split" / "policy_init")
    assert list(exported.model.state_dict()) == list(plain.model.state_dict())
    # publish/bytes: the adapters (fp32, one receiver), as the shapes say
    assert whole[2]["publish/bytes"] == 4 * lora.adapter_numel(plain.model.config, lora.LoraSettings(rank=4))
    for name, w in exported.model.state_dict().items():
        assert torch.equal(w, in_checkpoint.model.state_dict()[name]), name
    assert any(not torch.equal(w, plain.model.state_dict()[k]) for k, w in exported.model.state_dict().items())
    assert cli_main(["export", str(tmp_path / "split"), str(out)]) == 2  # never over an existing policy
