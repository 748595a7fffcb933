"""Run configuration and prompt data: validation before any actor starts, resumable cursor, CLI codes."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rl.advantages import group_normalise
from rl.cli import main as cli_main
from rl.config import ConfigError, load_config
from rl.data import DataError, PromptDataset, load_prompt_files
from rl.tasks import TEXT_TASKS
from rl.tasks.repeat import copy_prompts


def test_default_config_is_the_tiny_run():
    cfg = load_config()
    assert cfg.data.task == "toy_copy" and cfg.model.tiny is not None and cfg.ray.address is None


def test_overrides_apply_and_nested_keys_work():
    cfg = load_config(None, ["learner.lr=1e-6", "rollout.num_workers=3", "rollout.text.temperature=0.5"])
    assert cfg.learner.lr == 1e-6 and cfg.rollout.num_workers == 3 and cfg.rollout.text.temperature == 0.5


@pytest.mark.parametrize(
    "override, key, why",
    [
        ("learner.lr=abc", "learner.lr", "valid number"),
        ("learner.lr=-1", "learner.lr", "greater than 0"),
        ("learner.lr_rate=1", "learner.lr_rate", "Extra inputs"),
        ("rollout.group_size=1", "rollout.group_size", "greater than or equal to 2"),
        ("rollout.text.gen_length=7", "block_length", "multiple"),
        ("rollout.text.steps=16", "rollout.text", "exceeds block_length"),
        ("unigrpo.mask_schedule=fancy", "unigrpo.mask_schedule", "stratified"),
        ("data.task=math", "data.files", "empty"),
        ("run.name=../etc", "run.name", "plain directory name"),
        ("rewards.functions=[{name: mine, path: nocolon}]", "rewards.functions.0.path", "module:attribute"),
    ],
)
def test_bad_config_names_key_and_reason(override, key, why):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert key in str(err.value) and why in str(err.value)


def test_bad_yaml_and_bad_override_syntax(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("learner: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="key=value"):
        load_config(None, ["learner.lr"])
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")


def test_bad_data_rows_name_file_and_row(tmp_path):
    good = tmp_path / "ok.jsonl"
    good.write_text('{"question": "1+1?", "answer": 2}\n{"question": "2+2?", "answer": "4"}\n')
    rows = load_prompt_files([str(good)], "math", require_answer=True)
    assert [r.answer for r in rows] == ["2", "4"]

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "1+1?", "answer": "2"}\n{"question": "", "answer": "4"}\n')
    with pytest.raises(DataError, match=r"bad.jsonl: row 2: field 'question'"):
        load_prompt_files([str(bad)], "math", require_answer=True)
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"question": "1+1?", "answer": "2"}\n{not json\n')
    with pytest.raises(DataError, match=r"broken.jsonl:2: not valid JSON"):
        load_prompt_files([str(broken)], "math", require_answer=True)

    table = pa.table({"question": ["a?", "b?", "c?"], "answer": ["1", None, "3"]})
    pq.write_table(table, tmp_path / "p.parquet")
    with pytest.raises(DataError, match=r"p.parquet: row 2: field 'answer'"):
        load_prompt_files([str(tmp_path / "p.parquet")], "math", require_answer=True)


def test_cli_rejects_bad_config_and_data_before_starting_anything(tmp_path, capsys):
    assert cli_main(["train", "learner.lr=oops"]) == 2
    assert "learner.lr" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "x", "answer": ""}\n')
    code = cli_main(["train", "data.task=math", f"data.files=[{bad}]", f"run.dir={tmp_path}"])
    assert code == 2 and "row 1" in capsys.readouterr().err
    assert not (tmp_path / "tiny").exists()  # nothing was started or written
    assert cli_main(["frobnicate"]) == 2


def test_train_help_lists_sections(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["train", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for section in ("model", "data", "rollout", "rewards", "unigrpo", "learner", "ray", "run"):
        assert f"  {section} " in out


def test_data_task_names_the_registrys_text_tasks():
    from typing import get_args

    from rl.config import DataSection

    assert get_args(DataSection.model_fields["task"].annotation) == TEXT_TASKS


def test_cursor_resumes_the_same_order():
    prompts = copy_prompts(10, 3, "math")
    a = PromptDataset(prompts, shuffle=True, seed=5)
    first = [p.prompt_id for p in a.next_batch(7)]
    state = json.loads(json.dumps(a.state_dict()))
    rest = [p.prompt_id for p in a.next_batch(9)]  # crosses into epoch 1
    b = PromptDataset(prompts, shuffle=True, seed=5)
    b.load_state_dict(state)
    assert [p.prompt_id for p in b.next_batch(9)] == rest
    assert sorted(first + rest[:3]) == sorted(p.prompt_id for p in prompts)  # epoch 0 covers every row once


def test_group_normalise():
    rewards = np.array([1.0, 0.0, 1.0, 0.0, 2.0, 2.0])
    groups = np.array([0, 0, 0, 0, 1, 1])
    adv = group_normalise(rewards, groups)
    np.testing.assert_allclose(adv.values[:4], [1, -1, 1, -1], atol=1e-5)
    assert adv.values[4:].tolist() == [0, 0] and adv.zero_variance_groups == 1 and adv.keep.all()
    dropped = group_normalise(rewards, groups, drop_zero_variance=True)
    assert dropped.keep.tolist() == [True] * 4 + [False] * 2


def test_a_model_reward_needs_its_model_before_anything_starts(tmp_path):
    """The built-in model rewards (rewards/registry.py BUILTIN_KINDS: clip) are checked by kind, not name."""
    functions = "rewards.functions=[{name: clip, tasks: [t2i]}]"
    with pytest.raises(ConfigError, match="rewards.clip_model_path is not set; the clip reward"):
        load_config(None, [functions])
    with pytest.raises(ConfigError, match="is not a CLIP model directory"):
        load_config(None, [functions, f"rewards.clip_model_path={tmp_path}"])
    with pytest.raises(ConfigError, match="num_model_workers must be >= 1 to run the clip reward"):
        load_config(None, [functions, "rewards.tiny_clip=true", "rewards.num_model_workers=0"])
    assert load_config(None, [functions, "rewards.tiny_clip=true", "rewards.num_model_workers=1"]).rewards.tiny_clip
