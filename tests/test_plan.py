"""rl/memory.py and rl/plan.py: per-GPU memory against DeepSpeed's estimators and a real model, the fit check
before any actor starts, `unigrpo plan`, the colocated configs, and docs/memory.md's table."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from rl.config import ConfigError, load_config
from rl.memory import GIB, ModelShape, estimate, model_shape, model_states, table_markdown
from rl.plan import H200, per_rollout, plan
from rl.preflight import check_gpu_memory

ROOT = Path(__file__).resolve().parent.parent
MATH_8B = ROOT / "configs" / "mmada_8b_math.yaml"


def test_shapes_count_the_real_models_parameters(tmp_path):
    """Counted on the meta device from the config: the same number as the built policy's tensors."""
    from policy.loading import load_policy
    from rl import builders

    cfg = load_config(None, [f"run.dir={tmp_path}"])
    real = load_policy(builders.build_policy(cfg, tmp_path)).model
    shape = model_shape(cfg)
    assert shape.params == sum(p.numel() for p in real.parameters())
    assert shape.largest_tensor == max(p.numel() for p in real.parameters())
    assert abs(model_shape(load_config(MATH_8B, [], planning=True)).params - 8.08e9) < 0.01e9  # MMaDA-8B


@pytest.mark.parametrize("gpus", [1, 8, 64])
def test_model_states_equal_deepspeeds_estimators(gpus):
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs
    from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

    shape = ModelShape(params=8_082_690_048, largest_tensor=551_550_976, n_layers=32, d_model=4096, vocab=134656)
    p, big = shape.params, shape.largest_tensor
    _, ds2 = estimate_zero2_model_states_mem_needs(p, num_gpus_per_node=gpus, cpu_offload=False)
    _, ds3, _ = estimate_zero3_model_states_mem_needs(p, big, num_gpus_per_node=gpus, cpu_offload=False,
                                                      cpu_offload_params=False)
    for stage, ds in ((2, ds2), (3, ds3)):
        ours = sum(model_states(shape, stage, gpus, ds_offload=False).values())
        assert abs(ours - ds) <= 0.001 * ds, (stage, ours, ds)


def test_more_gpus_less_memory_and_offload_helps_generation():
    cfg = load_config(MATH_8B, [], planning=True)
    shape = model_shape(cfg)
    peaks = [estimate(cfg, shape, n, mode="colocated", stage=3).peak()[2] for n in (8, 16, 64)]
    assert peaks == sorted(peaks, reverse=True)
    plain = estimate(cfg, shape, 8, mode="colocated", stage=2)
    offload = estimate(cfg, shape, 8, mode="colocated", stage=2, offload_optimizer=True)
    gen = plain.phases["learner"]["generate"].total - offload.phases["learner"]["generate"].total
    assert gen == offload.host_optimizer_bytes > 0  # what leaves the GPU waits in host memory
    assert plain.phases["learner"]["update"].total == offload.phases["learner"]["update"].total


def test_a_gpu_config_that_cannot_fit_is_refused_with_the_numbers():
    tight = load_config(MATH_8B, ["placement.mode=colocated", "learner.num_ranks=1",
                                  "learner.deepspeed_config=configs/deepspeed/zero2.json"], planning=True)
    with pytest.raises(ConfigError) as err:
        check_gpu_memory(tight)
    text = str(err.value)
    assert text.startswith("placement.gpu_memory_gb:") and "GiB on a learner GPU" in text and "80 GiB available" in text
    assert "learner.num_ranks=" in text  # a fix is named
    check_gpu_memory(load_config(MATH_8B, ["placement.mode=colocated", "learner.num_ranks=8"], planning=True))


def test_train_refuses_before_any_actor_starts_and_leaves_no_run_dir(tmp_path):
    """Through the real command: exit 2, the field named, no run directory (a tiny policy 'on GPUs' of 1 MB)."""
    env = {"HF_HUB_OFFLINE": "1", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled",
           "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-m", "rl.cli", "train", "configs/tiny.yaml", f"run.dir={tmp_path}",
                          "learner.num_gpus_per_rank=1", "placement.gpu_memory_gb=0.001"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr[-2000:]
    assert "placement.gpu_memory_gb" in out.stderr and "GiB" in out.stderr
    assert not any(tmp_path.iterdir())


def test_plan_prefers_colocated_at_64_gpus_and_its_arithmetic_is_the_docs():
    cfg = load_config(MATH_8B, ["data.prompts_per_step=128"], planning=True)  # 1,024 rollouts, as docs/scaling.md
    gen, upd, seq = per_rollout(cfg, 8.08e9, H200)
    assert seq == 320 and abs(gen - 256 * 320 / (3 * 7857) / 2.7) < 1e-9  # 1.29 s, docs/scaling.md
    result = plan(cfg, 64)
    col, best = result["colocated"], result["best_disaggregated"]
    assert col["fits"] and best["fits"]
    assert abs(col["generate_s"] - round(1024 * gen / 64, 2)) < 0.01 and col["publish_s"] == 0
    assert col["step_s"] * 3 < result["configured_split"]["step_s"]  # >= 3x the config's 16 + 48 split
    assert col["step_s"] < best["step_s"] and result["advice"].startswith("placement.mode=colocated")


def test_plan_command(tmp_path):
    out = subprocess.run([sys.executable, "-m", "rl.cli", "plan", str(MATH_8B), "--gpus", "8", "--json"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout)
    assert result["gpus"] == 8 and result["colocated"]["learner_gpus"] == 8
    table = subprocess.run([sys.executable, "-m", "rl.cli", "plan", str(MATH_8B), "--gpus", "8"], cwd=ROOT,
                           capture_output=True, text=True, timeout=120).stdout
    assert "colocated" in table and "best disaggregated" in table and table.strip().splitlines()[-1].startswith("use: ")
    bad = subprocess.run([sys.executable, "-m", "rl.cli", "plan", str(MATH_8B), "--gpus", "1"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--gpus" in bad.stderr


COLOCATED_CONFIGS = sorted(p.name for p in (ROOT / "configs").glob("mmada_8b_*colocated*.yaml"))


def test_there_are_colocated_8b_configs():
    assert {"math", "unified"} <= {n.split("_")[2] for n in COLOCATED_CONFIGS} and len(COLOCATED_CONFIGS) >= 4


@pytest.mark.parametrize("name", COLOCATED_CONFIGS)
def test_colocated_configs_fit_and_the_planner_agrees(name):
    cfg = load_config(ROOT / "configs" / name, [], planning=True)
    assert cfg.placement.mode == "colocated" and cfg.learner.num_gpus_per_rank == 1
    check_gpu_memory(cfg)
    gpus = cfg.learner.num_ranks
    result = plan(cfg, gpus)
    assert result["colocated"]["fits"] and result["advice"].startswith("placement.mode=colocated"), result["advice"]


def test_the_memory_table_in_the_docs_is_the_codes():
    doc = (ROOT / "docs" / "memory.md").read_text()
    table = re.search(r"<!-- generated by .*? -->\n(.*?)\n<!-- end of generated table -->", doc, re.S).group(1)
    assert table == table_markdown(load_config(MATH_8B, [], planning=True))
    assert GIB == 2**30


def test_shapes_async_overlaps_and_lora_publishes_megabytes():
    """The planner's comparison: the adapters of rank 64 on every block projection of MMaDA-8B are
    32 x (4 x 64 x 8192 + 3 x 64 x 16384) numbers in bf16 (335.5 MB against 16.2 GB); overlapping generation
    with the update never lengthens a step; publishing less never does either."""
    from rl.plan import compare_shapes

    cfg = load_config(MATH_8B, ["data.prompts_per_step=128"], planning=True)
    shapes = compare_shapes(cfg, 64, lora_rank=64)
    assert shapes["adapter_bytes"] == 2 * 32 * (4 * 64 * 8192 + 3 * 64 * 16384)
    steps = {k: shapes[k]["step_s"] for k in ("sync_full", "async_full", "sync_lora", "async_lora")}
    assert steps["async_full"] <= steps["sync_full"] and steps["async_lora"] <= steps["sync_lora"]
    assert steps["sync_lora"] <= steps["sync_full"] and steps["async_lora"] <= steps["async_full"]
    a = shapes["async_full"]
    # the publish stays between batches (the workers load it before sampling the next one)
    assert a["step_s"] == pytest.approx(a["publish_s"] + max(a["generate_s"], a["update_s"]) + a["driver_s"], abs=0.02)
