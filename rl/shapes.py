"""Synthetic shapes: the multimodal demo's images, questions and captions, rendered with Pillow.

A scene is one coloured square filling a quadrant of a black canvas. From it come

    mmu  an image and a question:  "Colour of the square?"  -> "2"  (1 red, 2 green, 3 blue, 4 yellow)
    t2i  a caption:                "a green square in the top left"
         gold (for the pixel-checking reward): {"rgb": [0, 255, 0], "box": [0, 0, 0.5, 0.5],
                                                "background": [0, 0, 0]}

Colours are palette colours of `policy.palette_tokenizer`, and a quadrant is a whole number of
palette patches, so the palette tokenizer encodes every scene exactly. Answers are digits so that an
untrained tiny policy hits the right one now and then (a colour word would be out of its reach).
`write_shapes_files` writes the same rows as JSONL (MMU image as a PNG path) and Parquet (image bytes),
the two layouts users give `rl/data.py`.
"""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

from PIL import Image, ImageDraw

from policy.palette_tokenizer import NAMED_COLOURS

COLOURS = ("red", "green", "blue", "yellow")
BACKGROUND = "black"
QUADRANTS = {  # name -> box as fractions of the canvas (x0, y0, x1, y1)
    "top left": (0.0, 0.0, 0.5, 0.5),
    "top right": (0.5, 0.0, 1.0, 0.5),
    "bottom left": (0.0, 0.5, 0.5, 1.0),
    "bottom right": (0.5, 0.5, 1.0, 1.0),
}
MMU_QUESTION = "Colour of the square?"  # answered by its number: 1 red, 2 green, 3 blue, 4 yellow


def render_scene(colour: str, quadrant: str, size: int = 64) -> bytes:
    """A `size` x `size` PNG: black canvas, one square of `colour` filling `quadrant`."""
    img = Image.new("RGB", (size, size), NAMED_COLOURS[BACKGROUND])
    x0, y0, x1, y1 = (round(v * size) for v in QUADRANTS[quadrant])
    ImageDraw.Draw(img).rectangle((x0, y0, x1 - 1, y1 - 1), fill=NAMED_COLOURS[colour])
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def caption(colour: str, quadrant: str) -> str:
    return f"a {colour} square in the {quadrant}"


def region_gold(colour: str, quadrant: str) -> str:
    """What the pixel-checking reward compares a generated image with (JSON text)."""
    return json.dumps({"rgb": list(NAMED_COLOURS[colour]), "box": list(QUADRANTS[quadrant]),
                       "background": list(NAMED_COLOURS[BACKGROUND])})


def scenes(n: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    return [(rng.choice(COLOURS), rng.choice(list(QUADRANTS))) for _ in range(n)]


def mmu_rows(n: int, seed: int = 0, size: int = 64) -> list[dict]:
    """Rows in the file layout: id, image (PNG bytes), question, answer."""
    return [{"id": f"shapes-mmu-{i}", "image": render_scene(c, q, size), "question": MMU_QUESTION,
             "answer": str(COLOURS.index(c) + 1)} for i, (c, q) in enumerate(scenes(n, seed))]


def t2i_rows(n: int, seed: int = 0) -> list[dict]:
    """Rows in the file layout: id, caption, answer (the reward's gold)."""
    return [{"id": f"shapes-t2i-{i}", "caption": caption(c, q), "answer": region_gold(c, q)}
            for i, (c, q) in enumerate(scenes(n, seed + 1))]


def write_shapes_files(directory: str | Path, n: int = 32, seed: int = 0) -> dict[str, Path]:
    """mmu.jsonl (+ images/*.png, paths relative to the file), mmu.parquet (bytes), t2i.jsonl."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    directory = Path(directory)
    (directory / "images").mkdir(parents=True, exist_ok=True)
    rows = mmu_rows(n, seed)
    with (directory / "mmu.jsonl").open("w") as fh:
        for r in rows:
            rel = f"images/{r['id']}.png"
            (directory / rel).write_bytes(r["image"])
            fh.write(json.dumps({**r, "image": rel}) + "\n")
    pq.write_table(pa.Table.from_pylist(rows), directory / "mmu.parquet")
    with (directory / "t2i.jsonl").open("w") as fh:
        for r in t2i_rows(n, seed):
            fh.write(json.dumps(r) + "\n")
    return {"mmu_jsonl": directory / "mmu.jsonl", "mmu_parquet": directory / "mmu.parquet",
            "t2i_jsonl": directory / "t2i.jsonl"}
