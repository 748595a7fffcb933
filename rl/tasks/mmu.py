"""The mmu task (`data.mmu`): an image and a question about it, answered in text.

    data.mmu: {files: [mmu.parquet], image_field: image}        a bytes column or a path per row
    data.mmu: {source: shapes, shapes_size: 256}                 the built-in scenes (rl/tasks/shapes.py)

Images are encoded once, while loading (rl/data.py `ImageEncoder`). The warm start pairs each image and
question with another row's answer: the answer format, not the mapping.
"""

from __future__ import annotations

from collections.abc import Callable

from rl.data import ImageEncoder, load_prompt_files
from rl.tasks import shapes
from rl.tasks.base import Task, format_pairs
from rollout.record import Prompt


class Mmu(Task):
    name = "mmu"
    kind = "mmu"
    reward_task = "mmu"

    def read_files(self, files: list[str], source, images: ImageEncoder | None = None) -> list[Prompt]:
        return load_prompt_files(files, self.reward_task, source.question_field or "question", source.answer_field,
                                 source.image_field, images, require_answer=self.requires_answer)

    def prompts(self, source, seed: int, images: ImageEncoder | None = None) -> list[Prompt]:
        if source.source != "shapes":
            return self.read_files(source.files, source, images)
        rows = shapes.mmu_rows(source.shapes_size, seed)
        return [Prompt(r["id"], self.reward_task, r["question"], r["answer"],
                       images.encode(r["image"], f"shapes row {i}")) for i, r in enumerate(rows, start=1)]

    def warm_start_set(self, prompts: list[Prompt], seed: int, encoder: Callable[[], ImageEncoder]) -> list:
        """(image codes, question, another row's answer) for every training prompt with an answer."""
        rows = [p for p in prompts if p.answer]
        if not rows:
            raise ValueError("model.warm_start.tasks: mmu needs mmu prompts with answers (data.mmu)")
        shuffled = format_pairs([(p.question, p.answer) for p in rows], seed)
        return [(p.image_codes, q, a) for p, (q, a) in zip(rows, shuffled)]
