"""Prompt layouts of MMaDA: text chat, image understanding (MMU) and text-to-image (T2I).

Token ids are built explicitly (exactly one BOS, the special ids from the `VocabLayout`) rather than by
rendering a template string and re-tokenising it, because whether a tokenizer adds BOS on its own
differs between LLaDA tokenizer versions (reference section 3.4).

    chat: <BOS><|start_header_id|>user<|end_header_id|>\\n{content}<|eot_id|>
          <|start_header_id|>assistant<|end_header_id|>\\n
    mmu:  <|mmu|><|soi|>{image codes + offset}<|eoi|> chat
    t2i:  [iPAD]*k <|t2i|><BOS>{text}<EOS>   (left-padded to max_text_len)  <|soi|>[MASK]*N<|eoi|>
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from policy.vocab import VocabLayout

THINK_INSTRUCTION = (
    "You should first think about the reasoning process in the mind and then provide the user with the "
    "answer. The reasoning process is enclosed within <think> </think> tags, i.e. <think> reasoning process "
    "here </think> answer here\n"
)


def _text(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def chat_prompt_ids(
    tokenizer,
    layout: VocabLayout,
    user: str,
    think: bool = False,
    system: str | None = None,
) -> list[int]:
    """One user turn rendered with the LLaDA chat template, ending with the assistant header."""
    ids = [layout.bos_id]
    turns = ([("system", system)] if system else []) + [("user", (THINK_INSTRUCTION if think else "") + user)]
    for role, content in turns:
        ids += [layout.start_header_id, *_text(tokenizer, role), layout.end_header_id]
        ids += _text(tokenizer, "\n" + content.strip()) + [layout.eot_id]
    ids += [layout.start_header_id, *_text(tokenizer, "assistant"), layout.end_header_id]
    ids += _text(tokenizer, "\n")
    return ids


def mmu_prompt_ids(
    tokenizer,
    layout: VocabLayout,
    image_codes: Sequence[int] | torch.Tensor,
    question: str,
    think: bool = False,
) -> list[int]:
    codes = [int(c) for c in (image_codes.tolist() if isinstance(image_codes, torch.Tensor) else image_codes)]
    if any(not 0 <= c < layout.codebook_size for c in codes):
        raise ValueError(f"image codes must lie in [0, {layout.codebook_size})")
    image = [layout.code_to_token(c) for c in codes]
    return [layout.mmu_id, layout.soi_id, *image, layout.eoi_id, *chat_prompt_ids(tokenizer, layout, question, think)]


# The width of a t2i prompt (<|t2i|><BOS>text<EOS>, left-padded) when a config does not set
# rollout.image.max_text_len; MMaDA-8B's own layout at 512 px is 513 (configs/mmada_8b_unified.yaml).
T2I_MAX_TEXT_LEN = 128


def t2i_prompt_ids(
    tokenizer,
    layout: VocabLayout,
    text: str,
    num_image_tokens: int,
    max_text_len: int,
) -> tuple[list[int], list[int]]:
    """T2I input ids and attention mask (0 on [iPAD]). Text longer than fits is truncated, ending in EOS.

    max_text_len counts <|t2i|><BOS>text<EOS> plus left padding (513 for MMaDA-8B at 512 px)."""
    body = _text(tokenizer, text)[: max_text_len - 3]
    cond = [layout.t2i_id, layout.bos_id, *body, layout.eos_id]
    pad = max_text_len - len(cond)
    ids = [layout.ipad_id] * pad + cond + [layout.soi_id] + [layout.mask_id] * num_image_tokens + [layout.eoi_id]
    mask = [0] * pad + [1] * (len(ids) - pad)
    return ids, mask


def t2i_row_parts(ids: list[int], mask: list[int], num_image_tokens: int) -> tuple[list[int], list[int], list[int]]:
    """A t2i layout (`t2i_prompt_ids`) split the way a rollout record and a training row keep it:
    (prompt ids up to <|soi|>, their attention mask, the suffix after the canvas: [<|eoi|>])."""
    prefix = len(ids) - num_image_tokens - 1
    return ids[:prefix], mask[:prefix], ids[prefix + num_image_tokens:]


def t2i_uncond_prompt_ids(tokenizer, layout: VocabLayout, num_image_tokens: int, max_text_len: int):
    """The unconditional twin used for classifier-free guidance: the same layout with empty text."""
    return t2i_prompt_ids(tokenizer, layout, "", num_image_tokens, max_text_len)


def left_pad(sequences: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch prompts of different lengths; returns ids [B, L] and attention mask [B, L] (0 = pad).

    Text prompts are left-padded so every response starts at the same column, as MMaDA does."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        if len(seq):
            ids[row, width - len(seq):] = torch.tensor(list(seq), dtype=torch.long)
            mask[row, width - len(seq):] = 1
    return ids, mask
