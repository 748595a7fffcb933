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
    cfg = load_config(None, ["data.task=math", f"data.files=[{data['good']}]", f"run.dir={tmp_path / 'runs'}"])
    preflight(cfg, cfg.run_dir)
    assert not cfg.run_dir.exists()


def test_resume_without_a_checkpoint_that_verifies_is_exit_2(tmp_path, capsys):
    from rl.config import save_resolved

    run_dir = tmp_path / "runs" / "x"
    save_resolved(load_config(None, [f"run.dir={tmp_path / 'runs'}", "run.name=x"]), run_dir)
    (run_dir / "checkpoints" / "step_3").mkdir(parents=True)  # killed before its manifest was written
    (run_dir / "checkpoints" / "latest").write_text("step_3")
    assert cli_main(["train", "--resume", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert "no checkpoint there that verifies" in err and "step_3 is not usable (no manifest" in err
