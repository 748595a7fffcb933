"""Prompt datasets: the run's tasks' prompts (rl/tasks), behind resumable cursors.

Three task kinds, each with its own prompt layout (policy/prompts.py):

    text  a question (and gold answer)              -> chat layout, the text sampler
    mmu   an image and a question (and gold answer) -> <|mmu|><|soi|>codes<|eoi|> chat, the text sampler
    t2i   a caption (and an optional gold for image rewards) -> the t2i layout, the image sampler

Where a kind's prompts come from is its task's business (rl/tasks: local Parquet / JSONL files, or built
in). A row becomes a `Prompt` (id, task, question, gold answer, and for mmu the image codes). Bad rows are
rejected while loading, with the file and the row number, so a run never starts on data it would
choke on an hour later. MMU images (a bytes column, PNG/JPEG, or a path relative to the data file)
are decoded and resized with Pillow and encoded with the image tokenizer once, while loading; equal
images are encoded once (`ImageEncoder`, a cache keyed by content hash).

The cursor (epoch, position, shuffle seed) is plain data saved with every checkpoint; the order of
epoch e is a permutation drawn from (seed, e), so a resumed run sees exactly the prompts the
uninterrupted run would have seen. A `MixtureDataset` keeps one cursor per task and fills every
batch with fixed per-task quotas (largest remainder of prompts_per_step x weight), so every step
trains every task and a group never mixes tasks.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from rollout.record import Prompt, task_kind

MAX_QUESTION_CHARS = 100_000
MAX_IMAGE_BYTES = 64 * 2**20
MAX_IMAGE_PIXELS = 8192 * 8192
TASK_KINDS = ("text", "mmu", "t2i")


class DataError(ValueError):
    """A dataset file or row that cannot be used, naming the file and the row."""


@dataclass
class Cursor:
    epoch: int = 0
    position: int = 0
    seed: int = 0


def _rows_from_file(path: Path):
    if path.suffix == ".parquet":
        try:
            table = pq.read_table(path)
        except (pa.ArrowException, OSError) as err:  # zero bytes, garbage, a truncated file
            raise DataError(f"{path}: not a readable Parquet file ({str(err).splitlines()[0][:200]})") from None
        yield from enumerate(table.to_pylist(), start=1)
    elif path.suffix in (".jsonl", ".json"):
        with path.open("rb") as fh:
            for lineno, raw in enumerate(fh, start=1):
                if not raw.strip():
                    continue
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as err:
                    raise DataError(f"{path}:{lineno}: not valid UTF-8 (byte {err.start} of the line)") from None
                try:
                    yield lineno, json.loads(line, parse_constant=_no_constant)
                except json.JSONDecodeError as err:
                    raise DataError(f"{path}:{lineno}: not valid JSON ({err.msg})") from None
                except RecursionError:
                    raise DataError(f"{path}:{lineno}: JSON nested too deeply") from None
    else:
        raise DataError(f"{path}: unsupported file type {path.suffix!r} (expected .parquet or .jsonl)")


class ImageEncoder:
    """Image bytes -> image codes, once per distinct image.

    decode (Pillow) -> resize to resolution x resolution (`mode`: center_crop | squash | none, where
    none requires the image to have exactly that size) -> the image tokenizer's codes. Results are
    cached by the SHA-256 of the encoded file, so an image used by many rows is encoded once."""

    def __init__(self, tokenizer, resolution: int, mode: str = "center_crop") -> None:
        if mode not in ("center_crop", "squash", "none"):
            raise ValueError(f"image resize mode must be center_crop, squash or none, got {mode!r}")
        tokenizer.grid_size(resolution)  # a resolution the tokenizer cannot tile is a config error
        self.tokenizer, self.resolution, self.mode = tokenizer, resolution, mode
        self.cache: dict[str, tuple[int, ...]] = {}
        self.encoded = 0  # tokenizer calls (the cache test counts them)

    def encode(self, data: bytes, where: str) -> tuple[int, ...]:
        key = hashlib.sha256(data).hexdigest()
        if key not in self.cache:
            self.cache[key] = self._encode(data, where)
            self.encoded += 1
        return self.cache[key]

    def _encode(self, data: bytes, where: str) -> tuple[int, ...]:
        import torch
        from PIL import Image

        from policy.image_io import image_to_tensor

        try:
            with Image.open(io.BytesIO(data)) as im:
                w, h = im.size
                if w * h > MAX_IMAGE_PIXELS:
                    raise DataError(f"{where}: image is {w}x{h}, more than {MAX_IMAGE_PIXELS} pixels")
                pil = im.convert("RGB")
        except DataError:
            raise
        except Exception as err:  # noqa: BLE001 - any decoder failure is a bad row
            raise DataError(f"{where}: unreadable image ({type(err).__name__}: {str(err)[:120]})") from None
        r = self.resolution
        if self.mode == "none" and pil.size != (r, r):
            raise DataError(f"{where}: image is {pil.size[0]}x{pil.size[1]}, expected {r}x{r} "
                            f"(data.image_resize=none)")
        pixels = image_to_tensor(pil, r, "squash" if self.mode == "none" else self.mode)
        with torch.no_grad():
            codes = self.tokenizer.encode(pixels[None])[0]
        return tuple(int(c) for c in codes.tolist())


def _image_bytes(value, path: Path, where: str, field: str) -> bytes:
    """A bytes column, or a path relative to the data file."""
    if isinstance(value, bytes | bytearray):
        data = bytes(value)
    elif isinstance(value, str) and value.strip():
        img_path = Path(value) if Path(value).is_absolute() else path.parent / value
        if not img_path.is_file():
            raise DataError(f"{where}: field {field!r}: image file {img_path} does not exist")
        if img_path.stat().st_size > MAX_IMAGE_BYTES:
            raise DataError(f"{where}: field {field!r}: image file {img_path} is larger than {MAX_IMAGE_BYTES} bytes")
        data = img_path.read_bytes()
    else:
        raise DataError(f"{where}: field {field!r} must be image bytes or a path relative to the data file, "
                        f"got {type(value).__name__}")
    if len(data) > MAX_IMAGE_BYTES:
        raise DataError(f"{where}: field {field!r}: image is larger than {MAX_IMAGE_BYTES} bytes")
    return data


def _no_constant(name: str):
    raise json.JSONDecodeError(f"{name} is not a number JSON allows (non-finite)", name, 0)


def _text_ok(value: str) -> bool:
    """False for a string with a lone surrogate ("\\ud800" in JSON): no tokenizer or writer takes it."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def load_prompt_files(
    files: list[str],
    task: str,
    question_field: str = "question",
    answer_field: str = "answer",
    image_field: str = "image",
    images: ImageEncoder | None = None,
    require_answer: bool = False,
) -> list[Prompt]:
    """Rows of Parquet/JSONL files -> Prompts. `task` "mmu" reads and encodes `image_field` (needs
    `images`), "t2i" reads the caption from `question_field`; any other task is text (a text row may name
    its own task). `require_answer`: every row needs a non-empty gold answer (a number becomes text)."""
    kind = task_kind(task)
    if kind == "mmu" and images is None:
        raise DataError("mmu data needs an image tokenizer (model.image_tokenizer)")
    prompts: list[Prompt] = []
    for name in files:
        path = Path(name)
        if not path.is_file():
            raise DataError(f"{path}: data file does not exist")
        for row_no, row in _rows_from_file(path):
            where = f"{path}: row {row_no}"
            if not isinstance(row, dict):
                raise DataError(f"{where}: expected an object with fields, got {type(row).__name__}")
            question = row.get(question_field)
            if not isinstance(question, str) or not question.strip():
                raise DataError(f"{where}: field {question_field!r} must be a non-empty string, got {question!r}")
            if not _text_ok(question):
                raise DataError(f"{where}: field {question_field!r} holds a lone surrogate (not valid Unicode)")
            if len(question) > MAX_QUESTION_CHARS:
                raise DataError(f"{where}: field {question_field!r} is {len(question)} characters long")
            answer = row.get(answer_field)
            if require_answer:
                if isinstance(answer, float) and not np.isfinite(answer):
                    raise DataError(f"{where}: field {answer_field!r} (the gold answer) is not finite: {answer!r}")
                if isinstance(answer, int | float) and not isinstance(answer, bool):
                    answer = str(answer)
                if not isinstance(answer, str) or not answer.strip():
                    raise DataError(f"{where}: field {answer_field!r} (the gold answer) must be a non-empty "
                                    f"string or number, got {answer!r}")
            elif answer is not None and not isinstance(answer, str):
                answer = json.dumps(answer)
            if answer is not None and not _text_ok(answer):
                raise DataError(f"{where}: field {answer_field!r} holds a lone surrogate (not valid Unicode)")
            codes = None
            if kind == "mmu":
                if image_field not in row or row[image_field] is None:
                    raise DataError(f"{where}: field {image_field!r} (the image) is missing")
                codes = images.encode(_image_bytes(row[image_field], path, where, image_field), where)
            row_task = task if kind != "text" else str(row.get("task", task))
            prompts.append(Prompt(prompt_id=str(row.get("id", f"{path.stem}-{row_no}")), task=row_task,
                                  question=question, answer=answer, image_codes=codes))
    if not prompts:
        raise DataError(f"no prompts in {files}")
    return prompts


class PromptDataset:
    """Endless batches of prompts in a seeded per-epoch order, resumable from a `Cursor`."""

    def __init__(self, prompts: list[Prompt], shuffle: bool = True, seed: int = 0) -> None:
        if not prompts:
            raise DataError("the dataset is empty")
        self.prompts = prompts
        self.shuffle = shuffle
        self.cursor = Cursor(seed=seed)
        self._order = self._epoch_order(0)

    def _epoch_order(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(len(self.prompts))
        return np.random.default_rng([self.cursor.seed, epoch]).permutation(len(self.prompts))

    def next_batch(self, size: int) -> list[Prompt]:
        batch = []
        while len(batch) < size:
            if self.cursor.position >= len(self.prompts):
                self.cursor.epoch += 1
                self.cursor.position = 0
                self._order = self._epoch_order(self.cursor.epoch)
            batch.append(self.prompts[self._order[self.cursor.position]])
            self.cursor.position += 1
        return batch

    def prompts_of_kind(self, kind: str) -> list[Prompt]:
        """Its prompts of one task kind, in file order."""
        return [p for p in self.prompts if p.kind == kind]

    def state_dict(self) -> dict:
        return asdict(self.cursor)

    def load_state_dict(self, state: dict) -> None:
        self.cursor = Cursor(**state)
        self._order = self._epoch_order(self.cursor.epoch)


class MixtureDataset:
    """Batches drawn from one PromptDataset per task kind with fixed per-step quotas.

    quota_k = floor(n * w_k) plus one for the largest remainders (ties: TASK_KINDS order), so a batch
    of n prompts always holds the same number of each task; each task keeps its own cursor."""

    def __init__(self, datasets: dict[str, PromptDataset], weights: dict[str, float]) -> None:
        live = {k: float(w) for k, w in weights.items() if w > 0}
        if not live or any(k not in datasets for k in live):
            raise DataError(f"data.mixture {weights}: every task with weight > 0 needs a dataset "
                            f"(have {sorted(datasets)})")
        self.datasets = {k: datasets[k] for k in TASK_KINDS if k in live}
        total = sum(live.values())
        self.weights = {k: live[k] / total for k in self.datasets}

    def quotas(self, n: int) -> dict[str, int]:
        exact = {k: n * w for k, w in self.weights.items()}
        out = {k: int(np.floor(v)) for k, v in exact.items()}
        by_remainder = sorted(exact, key=lambda k: (-(exact[k] - out[k]), TASK_KINDS.index(k)))
        for k in by_remainder[: n - sum(out.values())]:
            out[k] += 1
        return out

    def next_batch(self, size: int) -> list[Prompt]:
        batch: list[Prompt] = []
        for kind, count in self.quotas(size).items():
            if count:
                batch += self.datasets[kind].next_batch(count)
        return batch

    def prompts_of_kind(self, kind: str) -> list[Prompt]:
        """Every prompt of that kind's dataset ([] for a kind the mixture has none of)."""
        return list(self.datasets[kind].prompts) if kind in self.datasets else []

    def state_dict(self) -> dict:
        return {"mixture": {k: d.state_dict() for k, d in self.datasets.items()}}

    def load_state_dict(self, state: dict) -> None:
        for k, d in self.datasets.items():
            d.load_state_dict(state["mixture"][k])


def build_dataset(data_cfg, image_tokenizer=None, resolution: int | None = None) -> PromptDataset | MixtureDataset:
    """The run's dataset from the `data` config section: each kind's prompts from its task (rl/tasks),
    drawn with seed data.seed + the kind's index in TASK_KINDS. MMU data needs the image tokenizer and
    the resolution images are resized to (rollout.image.resolution)."""
    from rl.tasks import get_task  # the tasks build on this module's loaders

    name, source = data_cfg.task_source("text")
    text = get_task(name).prompts(source, data_cfg.seed)
    if data_cfg.think:
        text = [replace(p, think=True) for p in text]
    mixture = getattr(data_cfg, "mixture", None)
    if not mixture:
        return PromptDataset(text, shuffle=data_cfg.shuffle, seed=data_cfg.seed)
    datasets = {"text": PromptDataset(text, shuffle=data_cfg.shuffle, seed=data_cfg.seed)}
    for kind in TASK_KINDS[1:]:
        name, source = data_cfg.task_source(kind)
        if mixture.get(kind, 0) > 0 and source is not None:
            images = None
            if kind == "mmu":  # its prompts carry an input image, encoded while loading
                if image_tokenizer is None or resolution is None:
                    raise DataError("data.mmu needs an image tokenizer (model.image_tokenizer)")
                images = ImageEncoder(image_tokenizer, resolution, data_cfg.image_resize)
            seed = data_cfg.seed + TASK_KINDS.index(kind)
            datasets[kind] = PromptDataset(get_task(name).prompts(source, seed, images), shuffle=data_cfg.shuffle,
                                           seed=seed)
    return MixtureDataset(datasets, dict(mixture))


def build_run_dataset(cfg) -> PromptDataset | MixtureDataset:
    """`build_dataset` with what a run config says about images (tokenizer, resolution)."""
    tokenizer = None
    if cfg.model.image_tokenizer and "mmu" in cfg.data.kinds():
        from policy.palette_tokenizer import load_image_tokenizer

        tokenizer = load_image_tokenizer(cfg.model.image_tokenizer)
    return build_dataset(cfg.data, tokenizer, cfg.rollout.image.resolution)
