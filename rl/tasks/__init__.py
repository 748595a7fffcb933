"""Tasks: what is specific to each task a run can train on, behind one interface (rl/tasks/base.py).

    task = get_task("toy_arith")       # data.task names the text task; data.mmu / data.t2i the image ones
    task.prompts(cfg.data, seed)       # and heldout, eval_prompts, warm_start_set, console_metric, ...

    toy_copy    rl/tasks/repeat.py      "Repeat the number: 7" -> "7"                    built in
    toy_arith   rl/tasks/arith.py       addition word problems, a held-out split          built in (the demo)
    math        rl/tasks/text_files.py  questions and gold answers from data.files
    custom      rl/tasks/text_files.py  data.files, answers optional, a row may name its own task
    mmu         rl/tasks/mmu.py         an image and a question                 files or the built-in shapes
    t2i         rl/tasks/t2i.py         a caption -> an image                    files or the built-in shapes
"""

from __future__ import annotations

from rl.tasks.arith import ToyArith
from rl.tasks.base import Task
from rl.tasks.mmu import Mmu
from rl.tasks.repeat import ToyCopy
from rl.tasks.t2i import T2i
from rl.tasks.text_files import CustomFiles, MathFiles

TASKS: dict[str, Task] = {t.name: t for t in (ToyCopy(), ToyArith(), MathFiles(), CustomFiles(), Mmu(), T2i())}
TEXT_TASKS = tuple(name for name, t in TASKS.items() if t.kind == "text")  # what data.task may name


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r} (known: {', '.join(TASKS)})")
    return TASKS[name]
