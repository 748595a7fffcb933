"""The docs keep up with the code: every module is in docs/architecture.md's map, and every repository
path the README and docs/ cite exists."""

from __future__ import annotations

import re
from fnmatch import fnmatch
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("policy", "rollout", "rewards", "trainer", "rl")
# sub-packages the map names as a whole (each documents its modules in its own docs page or __init__)
WHOLE = ("rl/dashboard", "rl/tasks", "rewards/examples")


def test_every_module_is_on_the_architecture_map():
    text = (ROOT / "docs" / "architecture.md").read_text()
    cited = set(re.findall(r"`([\w*]+\.py)`", text))
    missing = []
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            rel = path.relative_to(ROOT).as_posix()
            if path.name.startswith("_") or rel.startswith(WHOLE):
                continue
            if not any(fnmatch(path.name, pattern) for pattern in cited):
                missing.append(rel)
    for sub in WHOLE:
        if f"`{sub.split('/', 1)[1]}/`" not in text:
            missing.append(sub + "/")
    assert not missing, f"docs/architecture.md does not place: {missing}"


def test_cited_paths_exist():
    pattern = re.compile(r"\b((?:policy|rollout|rewards|trainer|rl|benchmarks|configs|docs|tests)/[\w/.-]*\w)")
    missing = []
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for path in set(pattern.findall(doc.read_text())):
            if "*" not in path and not (ROOT / path).exists():
                missing.append(f"{doc.name}: {path}")
    assert not missing, "\n".join(sorted(missing))
