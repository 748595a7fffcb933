"""Rollout workers load weights without a host copy: the model is built on the meta device and the
safetensors files are read straight onto the worker's device (policy/loading.py)."""

from policy.tiny import build_tiny_policy


def test_rollout_load_builds_on_meta_and_reads_straight_to_the_device(tmp_path):
    import torch

    from policy.loading import load_model_to_device
    from policy.model import MMadaModelLM

    path = build_tiny_policy(tmp_path / "p", codebook_size=16, seed=3)
    direct = load_model_to_device(path, torch.bfloat16, "cpu")
    reference = MMadaModelLM.from_pretrained(path, dtype=torch.bfloat16)
    got, want = direct.state_dict(), reference.state_dict()
    assert set(got) == set(want) and all(t.dtype == torch.bfloat16 for t in got.values())
    assert all(torch.equal(got[k], want[k]) for k in want)
