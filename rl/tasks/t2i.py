"""The t2i task (`data.t2i`): a caption, answered with an image (and an optional gold for image rewards).

    data.t2i: {files: [t2i.jsonl], question_field: caption}
    data.t2i: {source: shapes, shapes_size: 256}                 the built-in scenes (rl/tasks/shapes.py)

Only the built-in scenes have a warm-start set: colour words and position words apart, never the task's
captions (rl/tasks/shapes.py `t2i_warm_start_rows`).
"""

from __future__ import annotations

from collections.abc import Callable

from rl.data import ImageEncoder, load_prompt_files
from rl.tasks import shapes
from rl.tasks.base import Task
from rollout.record import Prompt


class T2i(Task):
    name = "t2i"
    kind = "t2i"
    reward_task = "t2i"
    requires_answer = False  # the gold is for image rewards that check pixels; CLIP needs none

    def read_files(self, files: list[str], source, images: ImageEncoder | None = None) -> list[Prompt]:
        return load_prompt_files(files, self.reward_task, source.question_field or "caption", source.answer_field,
                                 source.image_field, images, require_answer=self.requires_answer)

    def prompts(self, source, seed: int, images: ImageEncoder | None = None) -> list[Prompt]:
        if source.source != "shapes":
            return self.read_files(source.files, source, images)
        return [Prompt(r["id"], self.reward_task, r["caption"], r["answer"])
                for r in shapes.t2i_rows(source.shapes_size, seed)]

    def warm_start_problem(self, source) -> str | None:
        if source is None or source.source != "shapes":
            return "t2i has a warm-start set only for the built-in shapes (data.t2i.source: shapes)"
        return None

    def warm_start_set(self, prompts: list[Prompt], seed: int, encoder: Callable[[], ImageEncoder]) -> list:
        """(caption, image codes): a canvas per task colour and a white square per quadrant; no prompt."""
        images = encoder()
        return [(caption, images.encode(png, "warm start"))
                for caption, png in shapes.t2i_warm_start_rows(images.resolution)]
