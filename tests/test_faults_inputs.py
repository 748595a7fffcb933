"""Fault injection, inputs: hostile configs and data files are a clear error before anything starts.

Every case goes through `unigrpo train` (in-process): exit code 2, the message names the field or the
file and row, and no run directory is left behind."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rl.cli import main as cli_main
from rl.config import ConfigError, load_config


@pytest.mark.parametrize("override, key", [
    ("learner.lr=inf", "learner.lr"),
    ("learner.lr=nan", "learner.lr"),
    ("rollout.text.temperature=-inf", "rollout.text.temperature"),
    ("run.max_wall_s=.inf", "run.max_wall_s"),
    ("rollout.num_workers=true", "rollout.num_workers"),
    ("data.prompts_per_step=true", "data.prompts_per_step"),
    ("learner.grad_clip=true", "learner.grad_clip"),
    ("rewards.functions=[{name: math, kwargs: {scale: .nan}}]", "rewards.functions.0.kwargs"),
    ("rewards.functions=[{name: math, max_abs: .inf}]", "rewards.functions.0.max_abs"),
    ("model.path=''", "model.path"),
])
def test_non_finite_boolean_and_empty_values_are_rejected(override, key):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert key in str(err.value)


def _train(tmp_path, *overrides):
    return cli_main(["train", f"run.dir={tmp_path / 'runs'}", "run.name=x", *overrides])


def _policy_dirs(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "config.json").write_text("{not json")
    other = tmp_path / "other_model"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 8}))
    return {"empty": empty, "garbage": garbage, "other": other}


def _data_files(tmp_path):
    files = {}
    files["zero"] = tmp_path / "zero.parquet"
    files["zero"].write_bytes(b"")
    files["garbage"] = tmp_path / "garbage.parquet"
    files["garbage"].write_bytes(b"PAR1 this is not parquet at all")
    files["utf8"] = tmp_path / "bad_utf8.jsonl"
    files["utf8"].write_bytes(b'{"question": "ok", "answer": "1"}\n{"question": "\xff\xfe", "answer": "2"}\n')
    files["surrogate"] = tmp_path / "surrogate.jsonl"
    files["surrogate"].write_text('{"question": "lone \\ud800 here", "answer": "1"}\n')
    files["nan"] = tmp_path / "nan.jsonl"
    files["nan"].write_text('{"question": "q", "answer": NaN}\n')
    files["good"] = tmp_path / "good.parquet"
    pq.write_table(pa.table({"question": ["1+1?"], "answer": ["2"]}), files["good"])
    return files


@pytest.mark.parametrize("case, message", [
    ("model_empty", "model.path: {empty} is not a policy directory (no config.json)"),
    ("model_garbage", "is not readable JSON"),
    ("model_other", "does not describe a policy"),
    ("model_missing", "model.path: {tmp}/nowhere is not a directory"),
    ("deepspeed_missing", "learner.deepspeed_config"),
    ("data_zero", "zero.parquet: not a readable Parquet file"),
    ("data_garbage", "garbage.parquet: not a readable Parquet file"),
    ("data_utf8", "bad_utf8.jsonl:2: not valid UTF-8"),
    ("data_surrogate", "surrogate.jsonl: row 1: field 'question' holds a lone surrogate"),
    ("data_nan", "nan.jsonl:1: not valid JSON (NaN is not a number JSON allows"),
    ("clip_missing", "rewards.clip_model_path"),
    ("run_dir_under_file", "run.dir: cannot create run directory"),
    ("run_dir_unwritable", "run.dir: cannot write run directory"),
])
def test_bad_files_fail_before_anything_starts(tmp_path, capsys, case, message):
    models, data = _policy_dirs(tmp_path), _data_files(tmp_path)
    a_file = tmp_path / "plain.txt"
    a_file.write_text("x")
    overrides = {
        "model_empty": [f"model.path={models['empty']}"],
        "model_garbage": [f"model.path={models['garbage']}"],
        "model_other": [f"model.path={models['other']}"],
        "model_missing": [f"model.path={tmp_path / 'nowhere'}"],
        "deepspeed_missing": [f"learner.deepspeed_config={tmp_path / 'zero9.json'}"],
        "clip_missing": [f"rewards.clip_model_path={tmp_path / 'no_clip'}"],
        "run_dir_under_file": [f"run.dir={a_file / 'runs'}"],
        "run_dir_unwritable": ["run.dir=/proc/unigrpo-runs"],  # not writable, even for root
    }.get(case) or ["data.task=math", f"data.files=[{data[case.split('_', 1)[1]]}]"]
    code = _train(tmp_path, *overrides)
    err = capsys.readouterr().err
    assert code == 2, err
    assert message.format(empty=models["empty"], tmp=tmp_path) in err
    assert not (tmp_path / "runs").exists()


def test_good_parquet_passes_preflight(tmp_path):
    from rl.preflight import preflight

    data = _data_files(tmp_path)
    cfg = load_config(None, ["data.task=math", f"data.files=[{data['good']}]", "data.prompts_per_step=1",
                             f"run.dir={tmp_path / 'runs'}"])
    preflight(cfg, cfg.run_dir)
    assert not cfg.run_dir.exists()


def test_resume_without_a_checkpoint_that_verifies_is_exit_2(tmp_path, capsys):
    from rl.config import save_resolved

    run_dir = tmp_path / "runs" / "x"
    save_resolved(load_config(None, [f"run.dir={tmp_path / 'runs'}", "run.name=x"]), run_dir)
    (run_dir / "checkpoints" / "step_3").mkdir(parents=True)  # killed before its manifest was written
    (run_dir / "checkpoints" / "latest").write_text("step_3")
    (run_dir / "checkpoints" / "step_2" / "engine").mkdir(parents=True)
    (run_dir / "checkpoints" / "step_2" / "MANIFEST.json").write_text('{"step": 2, "files": {"engine/w.pt": 8}}')
    assert cli_main(["train", "--resume", str(run_dir)]) == 2
    err = capsys.readouterr().err
    # each candidate and why it was rejected, in the one line (no warnings printed above it)
    assert len(err.strip().splitlines()) == 1, err
    assert (f"--resume {run_dir}: no checkpoint there that verifies (in {run_dir / 'checkpoints'}: step_3 "
            "(named by latest): no manifest (written partly, or not by this version); step_2: engine/w.pt is "
            "missing)") in err
    import shutil

    shutil.rmtree(run_dir / "checkpoints")  # stopped before its first checkpoint
    assert cli_main(["train", "--resume", str(run_dir)]) == 2
    assert (f"no checkpoint there that verifies ({run_dir / 'checkpoints'} does not exist (the run stopped "
            "before its first checkpoint))") in capsys.readouterr().err


# ---- weights against config.json, read from the safetensors headers (issue #23 §1) ----------------------
@pytest.fixture(scope="module")
def tiny_policy(tmp_path_factory):
    from policy.tiny import build_tiny_policy

    return build_tiny_policy(tmp_path_factory.mktemp("policy") / "tiny")


def _edit_config(path, edit):
    cfg = json.loads((path / "config.json").read_text())
    edit(cfg)
    (path / "config.json").write_text(json.dumps(cfg))


def _shard(path):
    """The tiny policy as two shards and an index, as a sharded download has them."""
    from safetensors.numpy import load_file, save_file

    single = path / "model.safetensors"
    tensors = load_file(single)
    names = sorted(tensors)
    weight_map = {}
    for i, part in enumerate((names[: len(names) // 2], names[len(names) // 2:]), start=1):
        shard = f"model-0000{i}-of-00002.safetensors"
        save_file({n: tensors[n] for n in part}, path / shard, metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(part, shard))
    single.unlink()
    (path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


def _truncate(file, by=4096):
    file.write_bytes(file.read_bytes()[:-by])


POLICY_FAULTS = {
    "truncated": (lambda p: _truncate(p / "model.safetensors"),
                  "model.safetensors is truncated: its header describes 507.8 KB of tensor data, the file holds 503.8 KB"),
    "header_cut": (lambda p: (p / "model.safetensors").write_bytes((p / "model.safetensors").read_bytes()[:1000]),
                   "model.safetensors: its header claims 2.2 KB but the file has 1000 B"),
    "not_safetensors": (lambda p: (p / "model.safetensors").write_bytes(b"\x00" * 64),
                        "model.safetensors: its header is not valid JSON (corrupt)"),
    "vocab_size": (lambda p: _edit_config(p, lambda c: c.update(vocab_size=200)),
                   "config.json says vocab_size=200 but the weights' model.transformer.wte.weight has 181 rows"),
    "embedding_size": (lambda p: _edit_config(p, lambda c: c.update(embedding_size=256)),
                       "config.json says embedding_size=256 but the weights' model.transformer.wte.weight has 181 rows"),
    "layout_vocab_size": (lambda p: _edit_config(p, lambda c: c["vocab_layout"].update(vocab_size=200)),
                          "config.json says vocab_layout.vocab_size=200 but vocab_size=181"),
    "n_layers": (lambda p: _edit_config(p, lambda c: c.update(n_layers=3)),
                 "lack 9 tensor(s) the model described by config.json needs (model.transformer.blocks.2."),
    "d_model": (lambda p: _edit_config(p, lambda c: c.update(d_model=32)),
                "config.json implies model.transformer.wte.weight is [181, 32] but model.safetensors holds [181, 64]"),
    "shard_truncated": (lambda p: (_shard(p), _truncate(p / "model-00002-of-00002.safetensors")),
                        "model-00002-of-00002.safetensors is truncated"),
    "shard_missing": (lambda p: (_shard(p), (p / "model-00001-of-00002.safetensors").unlink()),
                      "names shard(s) that are not there: model-00001-of-00002.safetensors"),
    "bin_only": (lambda p: (p / "model.safetensors").rename(p / "pytorch_model.bin"),
                 "has no model.safetensors (nor model.safetensors.index.json); the rollout workers read safetensors"),
}


@pytest.mark.parametrize("case", sorted(POLICY_FAULTS))
def test_weights_that_contradict_config_json_fail_before_ray_starts(tiny_policy, tmp_path, capsys, case):
    import shutil
    import sys

    policy = tmp_path / "policy"
    shutil.copytree(tiny_policy, policy)
    damage, message = POLICY_FAULTS[case]
    damage(policy)
    assert _train(tmp_path, f"model.path={policy}") == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1 and err.startswith(f"unigrpo: model.path: {policy}")
    assert not (tmp_path / "runs").exists()
    assert "ray" not in sys.modules or not sys.modules["ray"].is_initialized()


def test_whole_and_sharded_policies_pass_preflight(tiny_policy, tmp_path):
    import shutil

    from rl.preflight import preflight

    for name, prepare in (("whole", lambda p: None), ("sharded", _shard)):
        policy = tmp_path / name
        shutil.copytree(tiny_policy, policy)
        prepare(policy)
        cfg = load_config(None, [f"model.path={policy}", f"run.dir={tmp_path / 'runs'}"])
        preflight(cfg, cfg.run_dir)
    assert not (tmp_path / "runs").exists()


def test_the_embedding_names_preflight_reads_are_the_models(tiny_policy):
    from policy.loading import load_policy
    from rl.preflight import EMBEDDING_TENSORS

    model = load_policy(tiny_policy).model
    names = {id(p): n for n, p in model.named_parameters()}
    assert (names[id(model.get_input_embeddings().weight)], names[id(model.get_output_embeddings().weight)]) \
        == EMBEDDING_TENSORS


# ---- rewards and data that a run could not use (issue #23 §1) --------------------------------------------
def test_two_rewards_with_one_name_are_a_config_error(tmp_path, capsys):
    assert _train(tmp_path, "rewards.functions=[{name: math}, {name: format}, {name: math}]") == 2
    err = capsys.readouterr().err
    assert "rewards.functions: Value error, rewards.functions[0] and [2] are both named 'math'" in err
    assert "rename one" in err and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("case, overrides, message", [
    ("file", ["data.task=math", "data.files=[{three}]"],
     "data.prompts_per_step=8 but the data set has only 3 prompts (data.files: {three})"),
    ("toy_copy", ["data.toy_size=5"],
     "data.prompts_per_step=8 but the data set has only 5 prompts (the built-in task toy_copy, data.toy_size)"),
    ("toy_arith", ["data.task=toy_arith", "data.prompts_per_step=700", "rewards.functions=[{name: math}]"],
     "data.prompts_per_step=700 but the data set has only 672 prompts (the built-in task toy_arith)"),
    ("mixture", ["model.image_tokenizer=palette", "model.tiny.codebook_size=8", "rollout.image.resolution=32",
                 "data.mixture={text: 0.5, mmu: 0.25, t2i: 0.25}", "data.mmu={source: shapes, shapes_size: 16}",
                 "data.t2i={source: shapes, shapes_size: 1}"],
     "data.prompts_per_step=8 with data.mixture gives t2i 2 prompts per step, but t2i has only 1 "
     "(the built-in shapes, data.t2i.shapes_size)"),
])
def test_more_prompts_per_step_than_the_data_holds_is_refused(tmp_path, capsys, case, overrides, message):
    three = tmp_path / "three.jsonl"
    three.write_text("".join(json.dumps({"question": f"{i}+1?", "answer": str(i + 1)}) + "\n" for i in range(3)))
    overrides = [o.replace("{three}", str(three)) for o in overrides]
    assert _train(tmp_path, *overrides) == 2
    err = capsys.readouterr().err
    assert message.replace("{three}", str(three)) in err and "data.allow_repeats=true" in err, err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "runs").exists()
    from rl.preflight import preflight  # the explicit opt-in lets the same data through

    cfg = load_config(None, [*overrides, "data.allow_repeats=true", f"run.dir={tmp_path / 'runs'}"])
    preflight(cfg, cfg.run_dir)
