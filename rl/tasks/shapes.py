"""Synthetic shapes: the multimodal demo's images, questions and captions, rendered with Pillow.

A scene is one coloured square filling a quadrant of a black canvas. From it come

    mmu  an image and a question:  "Colour of the square?"  -> "2"  (1 red, 2 green, 3 blue, 4 yellow)
    t2i  a caption:                "a green square in the top left"
         gold (for the pixel-checking reward): {"rgb": [0, 255, 0], "box": [0, 0, 0.5, 0.5],
                                                "background": [0, 0, 0]}

Warm start (`t2i_warm_start_rows`), the SFT the t2i task starts from: the two parts of a caption, never
together, so that "a red square in the top left" stays a combination the policy has not seen:

    "a red image"                     -> a canvas all red                  what a colour word looks like
    "a white square in the top left"  -> that square, in white, on black    where a position word puts it

White is no task colour, so the position captions teach no answer; RL has to put the caption's colour
where its position says (and the `region_colour` reward's IoU pays nothing for the white square).

Colours are palette colours of `policy.palette_tokenizer`, and a quadrant is a whole number of
palette patches, so the palette tokenizer encodes every scene exactly. Answers are digits: a colour
word is several tokens of the tiny policy's character tokenizer, a digit one.
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


def render_canvas(colour: str, size: int = 64) -> bytes:
    """A `size` x `size` PNG all of one colour."""
    buf = io.BytesIO()
    Image.new("RGB", (size, size), NAMED_COLOURS[colour]).save(buf, format="PNG")
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


WARM_START_COLOUR = "white"  # the position captions' colour: in the palette, never asked for by the task


def t2i_warm_start_rows(size: int) -> list[tuple[str, bytes]]:
    """(caption, PNG) pairs of the t2i warm start (see the module docstring): a canvas per task colour and
    a white square per quadrant."""
    return ([(f"a {c} image", render_canvas(c, size)) for c in COLOURS]
            + [(caption(WARM_START_COLOUR, q), render_scene(WARM_START_COLOUR, q, size)) for q in QUADRANTS])


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
