"""The vocabulary layout of a unified masked-diffusion model, in one object.

MMaDA-8B extends the LLaDA-8B text vocabulary (len(tokenizer) = 126349) with 8192 MAGVIT-v2 image codes
placed right after it (token id = 126349 + code) and re-uses LLaDA's reserved ids for the task tokens
(<|soi|>, <|t2i|>, ...). Every id the samplers, prompt builders and the learner need comes from a
`VocabLayout`; nothing else in the code base hard-codes an id. Tiny test models are instances of the
same object with smaller numbers.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

# Special-token strings used to cross-check a layout against a tokenizer. The task tokens of MMaDA-8B
# live on LLaDA's reserved ids (no string of their own in the LLaDA tokenizer), so only the tokens below
# are checked by name when a tokenizer is loaded; a tokenizer that *does* carry the task-token strings
# (tiny test tokenizers do) is checked for those too.
TEXT_SPECIAL_TOKENS = {
    "bos_id": "<|startoftext|>",
    "eos_id": "<|endoftext|>",
    "mask_id": "<|mdm_mask|>",
    "start_header_id": "<|start_header_id|>",
    "end_header_id": "<|end_header_id|>",
    "eot_id": "<|eot_id|>",
}
TASK_TOKENS = {
    "soi_id": "<|soi|>",
    "eoi_id": "<|eoi|>",
    "sov_id": "<|sov|>",
    "eov_id": "<|eov|>",
    "t2i_id": "<|t2i|>",
    "mmu_id": "<|mmu|>",
    "t2v_id": "<|t2v|>",
    "v2v_id": "<|v2v|>",
    "lvg_id": "<|lvg|>",
    "ipad_id": "[iPAD]",
    "r2i_id": "<|r2i|>",
}


class VocabLayoutError(ValueError):
    """A vocabulary layout that contradicts itself, the model config or the tokenizer."""


@dataclass(frozen=True)
class VocabLayout:
    """Where every kind of token lives in the model's vocabulary. Defaults are MMaDA-8B's."""

    text_vocab_size: int = 126349  # len(text tokenizer); ids [0, text_vocab_size) are text
    vocab_size: int = 134656  # rows of the embedding / LM head (may include unused rows)
    image_offset: int = 126349  # image code c has token id image_offset + c
    codebook_size: int = 8192  # MAGVIT-v2 LFQ with 13 bits
    mask_id: int = 126336
    bos_id: int = 126080
    eos_id: int = 126081
    pad_id: int = 126081  # LLaDA pads with EOS and trains on it
    start_header_id: int = 126346
    end_header_id: int = 126347
    eot_id: int = 126348
    soi_id: int = 126084
    eoi_id: int = 126085
    sov_id: int = 126086
    eov_id: int = 126087
    t2i_id: int = 126088
    mmu_id: int = 126089
    t2v_id: int = 126090
    v2v_id: int = 126091
    lvg_id: int = 126092
    ipad_id: int = 126093
    r2i_id: int = 126094

    def __post_init__(self) -> None:
        self.validate()

    # ---- construction -------------------------------------------------------------------------
    @classmethod
    def mmada_8b(cls) -> VocabLayout:
        return cls()

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> VocabLayout:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise VocabLayoutError(f"vocab_layout: unknown key(s) {unknown}; expected a subset of {sorted(known)}")
        return cls(**{k: int(v) for k, v in values.items()})

    @classmethod
    def from_model_config(cls, config: Any) -> VocabLayout:
        """The layout a model config describes: an explicit `vocab_layout` dict (written by unigrpo for
        tiny and custom models) or MMaDA-8B's documented defaults checked against the config's keys."""
        explicit = getattr(config, "vocab_layout", None)
        if explicit:
            layout = cls.from_dict(dict(explicit))
        else:
            layout = cls(
                vocab_size=int(getattr(config, "vocab_size", cls.vocab_size)),
                mask_id=int(getattr(config, "mask_token_id", None) or cls.mask_id),
                codebook_size=int(getattr(config, "codebook_size", None) or cls.codebook_size),
            )
        vocab = getattr(config, "vocab_size", None)
        if vocab is not None and int(vocab) != layout.vocab_size:
            raise VocabLayoutError(
                f"vocab_layout.vocab_size={layout.vocab_size} contradicts config vocab_size={vocab}"
            )
        return layout

    @classmethod
    def from_tokenizer(cls, tokenizer: Any, codebook_size: int, vocab_size: int | None = None) -> VocabLayout:
        """Build a layout for a tokenizer that carries every special/task token as a string (tiny
        tokenizers do). Image codes go right after the text vocabulary."""
        ids: dict[str, int] = {}
        for field, token in {**TEXT_SPECIAL_TOKENS, **TASK_TOKENS}.items():
            tid = tokenizer.convert_tokens_to_ids(token)
            if tid is None or tid == tokenizer.unk_token_id:
                raise VocabLayoutError(f"tokenizer has no token {token!r} (needed for {field})")
            ids[field] = int(tid)
        text = len(tokenizer)
        return cls(
            text_vocab_size=text,
            image_offset=text,
            codebook_size=codebook_size,
            vocab_size=vocab_size if vocab_size is not None else text + codebook_size,
            pad_id=ids["eos_id"],
            **ids,
        )

    def to_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)

    # ---- checks -------------------------------------------------------------------------------
    def validate(self) -> None:
        if self.image_offset < self.text_vocab_size:
            raise VocabLayoutError(
                f"image_offset={self.image_offset} overlaps the text vocabulary (size {self.text_vocab_size})"
            )
        if self.image_offset + self.codebook_size > self.vocab_size:
            raise VocabLayoutError(
                f"image codes [{self.image_offset}, {self.image_offset + self.codebook_size}) exceed "
                f"vocab_size={self.vocab_size}"
            )
        for f in dataclasses.fields(self):
            if f.name.endswith("_id"):
                value = getattr(self, f.name)
                if not 0 <= value < self.text_vocab_size:
                    raise VocabLayoutError(
                        f"{f.name}={value} is outside the text vocabulary [0, {self.text_vocab_size})"
                    )

    def check_tokenizer(self, tokenizer: Any) -> None:
        """Cross-check this layout against a loaded tokenizer; raise with the first disagreement."""
        if len(tokenizer) != self.text_vocab_size:
            raise VocabLayoutError(
                f"len(tokenizer)={len(tokenizer)} but the layout says text_vocab_size={self.text_vocab_size}"
            )
        for field, token in TEXT_SPECIAL_TOKENS.items():
            tid = tokenizer.convert_tokens_to_ids(token)
            if tid != getattr(self, field):
                raise VocabLayoutError(f"tokenizer maps {token!r} to {tid}, layout {field}={getattr(self, field)}")
        for field, token in TASK_TOKENS.items():
            tid = tokenizer.convert_tokens_to_ids(token)
            if tid is not None and tid != tokenizer.unk_token_id and tid != getattr(self, field):
                raise VocabLayoutError(f"tokenizer maps {token!r} to {tid}, layout {field}={getattr(self, field)}")

    # ---- image codes --------------------------------------------------------------------------
    @property
    def image_slice(self) -> slice:
        """Columns of the LM head that hold the image codebook."""
        return slice(self.image_offset, self.image_offset + self.codebook_size)

    def code_to_token(self, codes):  # works on ints, numpy arrays and tensors
        return codes + self.image_offset

    def token_to_code(self, token_ids):
        return token_ids - self.image_offset
