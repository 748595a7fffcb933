"""benchmarks/gpu_e2e.py's memory choice, checked on CPU: configs/deepspeed/zero2_bf16_states.json really
keeps DeepSpeed's master weights and torch AdamW's moments in bf16 (against zero2.json's fp32), and
rl/memory.py counts that optimizer at 8 bytes per parameter, so all 32 MMaDA-8B layers fit one H200.
(The script's --smoke run, the same code path, is in tests/test_benchmarks.py.)"""

import json
import socket
import subprocess
import sys

import pytest

from rl.config import load_config
from rl.memory import GIB, estimate, model_shape

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]
BF16_STATES = "configs/deepspeed/zero2_bf16_states.json"

# one DeepSpeed rank (gloo, world size 1) in a child process: the test process keeps no process group
ENGINE_DTYPES = """
import json, os, sys, torch
from trainer.engine import LearnerConfig, build_train_engine, import_deepspeed, load_deepspeed_config
os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT=sys.argv[2])
import_deepspeed().init_distributed(dist_backend="gloo")
cfg = LearnerConfig(deepspeed_config=sys.argv[1], lr=1e-2)
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.Tanh(), torch.nn.Linear(32, 4))
engine, _ = build_train_engine(model, cfg, load_deepspeed_config(cfg, 1, True))
x = torch.randn(8, 16, dtype=torch.bfloat16)
before = [p.detach().float().clone() for p in engine.module.parameters()]
engine.backward(engine(x).float().pow(2).mean())
engine.step()
opt = engine.optimizer
state = next(iter(opt.optimizer.state.values()))
print(json.dumps({"param": str(next(engine.module.parameters()).dtype),
                  "master": str(opt.single_partition_of_fp32_groups[0].dtype),
                  "exp_avg": str(state["exp_avg"].dtype), "exp_avg_sq": str(state["exp_avg_sq"].dtype),
                  "moved": any(not torch.equal(b, p.detach().float()) for b, p in zip(before, engine.module.parameters()))}))
"""


def engine_dtypes(ds_json: str) -> dict:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = subprocess.run([sys.executable, "-c", ENGINE_DTYPES, ds_json, str(port)], cwd=ROOT, capture_output=True,
                         text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_bf16_states_json_keeps_master_and_adam_moments_in_bf16():
    ours, default = engine_dtypes(BF16_STATES), engine_dtypes("configs/deepspeed/zero2.json")
    assert ours == {"param": "torch.bfloat16", "master": "torch.bfloat16", "exp_avg": "torch.bfloat16",
                    "exp_avg_sq": "torch.bfloat16", "moved": True}
    assert default["master"] == default["exp_avg"] == "torch.float32" and default["moved"]


def test_memory_model_counts_bf16_states_and_full_depth_fits_one_h200():
    def update_parts(ds_json):
        cfg = load_config(ROOT / "configs" / "tiny.yaml", [f"learner.deepspeed_config={ds_json}",
                                                          "model.tiny=null", "placement.mode=colocated",
                                                          "learner.gradient_checkpointing=true"], planning=True)
        shape = model_shape(cfg)  # no model.path, no tiny spec: MMaDA-8B's shapes
        mem = estimate(cfg, shape, 1)
        return shape, mem.phases["learner"]["update"].parts, mem

    shape, ours, mem = update_parts(BF16_STATES)
    _, default, default_mem = update_parts("configs/deepspeed/zero2.json")
    assert shape.params > 8e9
    assert ours["fp32 grads, master, Adam"] == 8 * shape.params
    assert default["fp32 grads, master, Adam"] == 16 * shape.params
    assert mem.fits(0.8 * 139 * GIB) and not default_mem.fits(139 * GIB)
