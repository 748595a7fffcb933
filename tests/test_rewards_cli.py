"""`unigrpo rewards check`: one output line per input line, in order, surviving any content."""

import json
import subprocess
import sys
from pathlib import Path

from rewards.cli import check_main

ROOT = Path(__file__).resolve().parents[1]


def test_check_survives_bad_lines_and_keeps_order(tmp_path, capsys):
    lines = [
        json.dumps({"task": "math", "prompt": "p", "response": "<think>x</think> \\boxed{12}", "gold": "12"}),
        "{not json",
        json.dumps([1, 2]),
        json.dumps({"task": "math", "response": "\\boxed{9^{9^{9}}}", "gold": "1"}),
        json.dumps({"task": "math", "response": {"odd": "type"}, "gold": 3, "image": "/nonexistent.png"}),
        json.dumps({"task": "math", "response": "#### 1,234", "gold": "1234"}),
    ]
    inp = tmp_path / "rollouts.jsonl"
    inp.write_text("\n".join(lines) + "\n")
    out = tmp_path / "scored.jsonl"
    assert check_main(["--input", str(inp), "--output", str(out)]) == 0
    recs = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["line"] for r in recs] == [1, 2, 3, 4, 5, 6]
    assert recs[0]["components"]["math"]["value"] == 1.0 and recs[0]["total"] == 2.5
    assert "error" in recs[1] and "error" in recs[2]
    assert recs[3]["components"]["math"]["status"] == "unparsable"
    assert recs[4]["components"]["math"]["value"] == 0.0
    assert recs[5]["components"]["math"]["value"] == 1.0
    err = capsys.readouterr().err
    assert "scored 4 samples (2 invalid lines)" in err and "math" in err


def test_check_config_and_errors(tmp_path, capsys):
    cfg = tmp_path / "r.yaml"
    cfg.write_text("rewards:\n  - name: format\n    weight: 0.5\n    kwargs: {mode: partial}\n")
    inp = tmp_path / "in.jsonl"
    inp.write_text(json.dumps({"task": "t", "response": "<think>a</think>", "gold": None}) + "\n")
    out = tmp_path / "o.jsonl"
    assert check_main(["--input", str(inp), "--config", str(cfg), "--output", str(out)]) == 0
    rec = json.loads(out.read_text())
    assert rec["components"]["format"]["value"] == 0.75 and set(rec["components"]) == {"format"}
    bad = tmp_path / "bad.yaml"
    bad.write_text("rewards:\n  - name: math\n    weight: abc\n")
    assert check_main(["--input", str(inp), "--config", str(bad)]) == 2
    assert "rewards[0].weight" in capsys.readouterr().err


def test_module_entry_point(tmp_path):
    inp = tmp_path / "in.jsonl"
    inp.write_text(json.dumps({"task": "math", "response": "The answer is 7.", "gold": "7"}) + "\n")
    p = subprocess.run([sys.executable, "-m", "rewards.cli", "--input", str(inp), "--rewards", "math"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120,
                       env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["components"]["math"]["value"] == 1.0
