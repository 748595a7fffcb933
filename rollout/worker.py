"""The rollout worker: a policy plus its samplers, turning prompts into rollout records.

`RolloutWorker` is a plain class (tests and single-process runs use it directly); Ray enters only in
`start_rollout_worker`, which wraps it with `ray.remote` (`rollout.group.RolloutGroup` drives the
actors). It imports nothing from trainer/, rewards/ or rl/.

One `rollout.record.RolloutRecord` per rollout (G per prompt, in prompt order); its fields are
described there, once.

Seeding: one torch.Generator per (call, modality), seeded from `seed`, so the same prompts, group size,
seed and weights give the same records.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from policy.actor_group import ACTOR_MAX_RESTARTS
from policy.loading import Policy, load_policy
from policy.lora import AdapterApplier
from policy.prompts import (
    T2I_MAX_TEXT_LEN,
    chat_prompt_ids,
    left_pad,
    mmu_prompt_ids,
    t2i_prompt_ids,
    t2i_row_parts,
    t2i_uncond_prompt_ids,
)
from policy.weight_sync import numpy_to_tensor
from rollout.image_sampler import ImageSamplerConfig, generate_image
from rollout.record import Prompt, RolloutRecord
from rollout.text_sampler import TextSamplerConfig, generate_text

IMAGE_TASKS = ("t2i",)
# codes [B, N] -> (one uint8 H x W x 3 array or None per row, one PNG per row)
ImageDecoder = Callable[[torch.Tensor], tuple[list[np.ndarray | None], list[bytes]]]


def code_grid_decoder(codebook_size: int) -> ImageDecoder:
    """Without an image tokenizer: no pixels, and a false-colour PNG of the square code grid."""
    from policy.image_io import codes_grid_png

    def decode(codes: torch.Tensor) -> tuple[list[None], list[bytes]]:
        side = math.isqrt(codes.shape[1])
        grid = (side, side) if side * side == codes.shape[1] else (1, codes.shape[1])
        return [None] * len(codes), [codes_grid_png(row, grid, codebook_size) for row in codes.cpu()]

    return decode


def image_tokenizer_decoder(tokenizer) -> ImageDecoder:
    """Decode with an `ImageTokenizer` (MAGVIT-v2, the palette tokenizer): pixels and their PNGs."""
    from policy.image_io import png_bytes, tensor_to_uint8

    def decode(codes: torch.Tensor) -> tuple[list[np.ndarray], list[bytes]]:
        with torch.no_grad():
            images = list(tensor_to_uint8(tokenizer.decode(codes.cpu())))
        return images, [png_bytes(img) for img in images]

    return decode


class RolloutWorker:
    def __init__(
        self,
        policy_path: str | Path,
        text_config: TextSamplerConfig | None = None,
        image_config: ImageSamplerConfig | None = None,
        device: str = "cpu",
        dtype: str = "float32",
        num_image_tokens: int = 1024,
        max_text_len: int = T2I_MAX_TEXT_LEN,
        max_batch_size: int = 64,
        image_decoder: ImageDecoder | None = None,
        image_tokenizer: str | None = None,
        policy: Policy | None = None,
        name: str = "",
    ) -> None:
        """policy: sample with this model (and tokenizer) instead of loading `policy_path` (a colocated
        learner rank passes its own training model: rl/colocated.py). name: written into every record as
        `worker` (the dashboard filters and groups by it)."""
        policy = policy or load_policy(policy_path, dtype=dtype, device=device)
        self.model, self.tokenizer, self.layout = policy.model, policy.tokenizer, policy.layout
        self.text_config = text_config or TextSamplerConfig()
        self.image_config = image_config or ImageSamplerConfig()
        self.text_config.validate()
        self.image_config.validate()
        self.device = torch.device(device)
        self.num_image_tokens, self.max_text_len = num_image_tokens, max_text_len
        self.max_batch_size = max_batch_size
        if image_decoder is None and image_tokenizer is not None:
            from policy.palette_tokenizer import load_image_tokenizer

            image_decoder = image_tokenizer_decoder(load_image_tokenizer(image_tokenizer))
        self.image_decoder = image_decoder or code_grid_decoder(self.layout.codebook_size)
        self.name = name
        self._version = 0
        self._adapters = AdapterApplier()  # LoRA publications: merged into the kept base (policy/lora.py)

    # ---- control ------------------------------------------------------------------------------
    def ping(self) -> str:
        return "pong"

    def policy_version(self) -> int:
        return self._version

    def load_weights(self, version: int, payload: dict) -> int:
        """Replace every weight by a full state dict: name -> array, or the learner's published payload
        {"version", "state": {name: array}, "dtypes"} (bf16 travels as uint16 bits). Names and shapes
        must match exactly; nothing is loaded otherwise. A payload with "lora" holds adapters only: they are
        merged into this worker's base weights (policy/lora.py)."""
        dtypes: dict[str, str] = {}
        if payload.get("lora") is not None:
            dtypes = payload.get("dtypes") or {}
            state = {k: numpy_to_tensor(np.asarray(v), dtypes.get(k)) for k, v in payload["state"].items()}
            self._adapters.apply(self.model, state, float(payload["lora"]["scale"]))
            self._version = int(version)
            return self._version
        if isinstance(payload.get("state"), dict):
            dtypes, payload = payload.get("dtypes") or {}, payload["state"]
        state = self.model.state_dict()
        missing = sorted(set(state) - set(payload))
        unexpected = sorted(set(payload) - set(state))
        wrong = [
            f"{k}: got {tuple(np.shape(payload[k]))}, expected {tuple(state[k].shape)}"
            for k in sorted(set(state) & set(payload))
            if tuple(np.shape(payload[k])) != tuple(state[k].shape)
        ]
        if missing or unexpected or wrong:
            raise ValueError(
                f"load_weights(version={version}): payload does not match the model: "
                f"missing {missing[:5]}{'...' if len(missing) > 5 else ''} ({len(missing)}), "
                f"unexpected {unexpected[:5]} ({len(unexpected)}), wrong shape {wrong[:5]} ({len(wrong)})"
            )
        with torch.no_grad():
            for name, tensor in state.items():
                value = payload[name]
                if not isinstance(value, torch.Tensor):
                    value = numpy_to_tensor(np.asarray(value), dtypes.get(name))
                tensor.copy_(value.to(tensor.dtype))
        self._version = int(version)
        return self._version

    def use_model(self, model: torch.nn.Module, version: int) -> None:
        """Sample with `model`, which holds policy version `version` (a colocated learner rank's own
        weights, rl/colocated.py: nothing is loaded or copied)."""
        self.model, self._version = model, int(version)

    # ---- (b) weights over a torch.distributed broadcast group -------------------------------
    def join_weight_group(self, host: str, port: int, rank: int, world_size: int, backend: str = "gloo") -> bool:
        """Join the group rooted at learner rank 0 (blocks until every member has joined)."""
        from policy.weight_sync import BroadcastReceiver

        self._receiver = BroadcastReceiver(host, port, rank, world_size, backend)
        return True

    def receive_weights(self) -> int:
        """Receive one broadcast of the full weights; returns the policy version it carried."""
        self._version = int(self._receiver.receive(self.model, adapters=self._adapters))
        return self._version

    # ---- generation ---------------------------------------------------------------------------
    def generate(self, prompts: Sequence[Prompt], group_size: int, seed: int,
                 text_sampler: dict[str, Any] | None = None, groups: Sequence[int] | None = None,
                 ) -> list[RolloutRecord]:
        """G rollouts for each prompt; records in prompt order, each carrying its prompt's id, question and
        gold answer, and `group`: groups[i] for the records of prompts[i] (default: i, the position).
        text_sampler: settings that replace the worker's text sampler's for this call (evaluation)."""
        if group_size <= 0:
            raise ValueError(f"group_size must be > 0, got {group_size}")
        text_config = replace(self.text_config, **text_sampler) if text_sampler else self.text_config
        text_config.validate()
        jobs = [(p, g) for p in prompts for g in range(group_size)]
        out: list[RolloutRecord | None] = [None] * len(jobs)
        text_run = partial(self._generate_text, text_config=text_config)
        for kind, run in (("text", text_run), ("image", self._generate_images)):
            index = [i for i, (p, _) in enumerate(jobs) if (p.task in IMAGE_TASKS) == (kind == "image")]
            if not index:
                continue
            gen = torch.Generator(self.device).manual_seed(seed if kind == "text" else seed + 1)
            for start in range(0, len(index), self.max_batch_size):
                chunk = index[start : start + self.max_batch_size]
                for i, rec in zip(chunk, run([jobs[i] for i in chunk], gen)):
                    rec.seed = seed
                    out[i] = rec
        groups = range(len(prompts)) if groups is None else groups
        for i, rec in enumerate(out):
            prompt = prompts[i // group_size]
            rec.group, rec.question, rec.gold = groups[i // group_size], prompt.question, prompt.answer
        return out

    def _record(self, prompt: Prompt, group_index: int, **fields) -> RolloutRecord:
        return RolloutRecord(prompt_id=prompt.prompt_id, group_index=group_index, task=prompt.task,
                             policy_version=self._version, worker=self.name, **fields)

    def _generate_text(self, jobs, generator, text_config: TextSamplerConfig) -> list[RolloutRecord]:
        # G jobs share each prompt: tokenise each distinct prompt once (the tokenizer call, not the
        # model, dominated a tiny policy's rollout time outside the sampler)
        cache: dict[tuple, list[int]] = {}
        prompt_lists = []
        for p, _ in jobs:
            codes = tuple(p.image_codes) if p.task == "mmu" else None
            key = (p.question, p.think, codes)
            if key not in cache:
                cache[key] = (chat_prompt_ids(self.tokenizer, self.layout, key[0], think=key[1]) if codes is None
                              else mmu_prompt_ids(self.tokenizer, self.layout, codes, key[0], think=key[1]))
            prompt_lists.append(cache[key])
        ids, mask = left_pad(prompt_lists, self.layout.pad_id)
        start = time.perf_counter()
        out = generate_text(self.model, ids.to(self.device), mask.to(self.device), self.layout,
                            text_config, generator)
        gen_s = time.perf_counter() - start
        settings = {"kind": "text", **asdict(text_config)}
        responses = out.response_ids.tolist()
        cut = [r[: r.index(self.layout.eos_id)] if self.layout.eos_id in r else r for r in responses]
        texts = self.tokenizer.batch_decode(cut, skip_special_tokens=True)
        unmask_step, confidence = out.unmask_step.tolist(), out.confidence.tolist()
        early_filled, forwards = out.early_filled.tolist(), out.sample_forwards.tolist()
        # MMU input images, decoded once per distinct image: pixels for image rewards (CLIP on a
        # caption), PNG for the store and the dashboard
        mmu_img: dict[tuple, tuple] = {}
        for p, _ in jobs:
            if p.task == "mmu" and tuple(p.image_codes) not in mmu_img:
                codes = tuple(p.image_codes)
                pixels, pngs = self.image_decoder(torch.tensor([codes]))
                mmu_img[codes] = (pixels[0], pngs[0])
        records = []
        for row, ((prompt, g), prompt_ids) in enumerate(zip(jobs, prompt_lists)):
            records.append(self._record(
                prompt, g,
                prompt_ids=list(prompt_ids),
                prompt_mask=[1] * len(prompt_ids),
                response_ids=responses[row],
                suffix_ids=[],
                response_text=texts[row],
                image_codes=None if prompt.task != "mmu" else list(prompt.image_codes),
                image=mmu_img[tuple(prompt.image_codes)][0] if prompt.task == "mmu" else None,
                image_png=mmu_img[tuple(prompt.image_codes)][1] if prompt.task == "mmu" else None,
                unmask_step=unmask_step[row],
                confidence=confidence[row],
                early_filled=early_filled[row],
                num_forwards=int(forwards[row]),
                sampler=settings,
                timings={"gen_s": gen_s, "batch_size": len(jobs)},
            ))
        return records

    def _generate_images(self, jobs, generator) -> list[RolloutRecord]:
        n, width = self.num_image_tokens, self.max_text_len
        conds = [t2i_prompt_ids(self.tokenizer, self.layout, p.question, n, width) for p, _ in jobs]
        uncond, uncond_mask = t2i_uncond_prompt_ids(self.tokenizer, self.layout, n, width)
        cond_ids = torch.tensor([c for c, _ in conds], device=self.device)
        cond_mask = torch.tensor([m for _, m in conds], device=self.device)
        start = time.perf_counter()
        out = generate_image(self.model, cond_ids, cond_mask, torch.tensor([uncond], device=self.device),
                             torch.tensor([uncond_mask], device=self.device), self.layout, self.image_config,
                             generator)
        gen_s = time.perf_counter() - start
        start = time.perf_counter()
        images, pngs = self.image_decoder(out.codes)
        decode_s = time.perf_counter() - start
        settings = {"kind": "image", **asdict(self.image_config), "num_image_tokens": n, "max_text_len": width}
        records = []
        for row, (prompt, g) in enumerate(jobs):
            codes = out.codes[row]
            prompt_ids, prompt_mask, suffix_ids = t2i_row_parts(*conds[row], n)
            records.append(self._record(
                prompt, g,
                prompt_ids=prompt_ids,
                prompt_mask=prompt_mask,
                response_ids=self.layout.code_to_token(codes).tolist(),
                suffix_ids=suffix_ids,
                response_text="",
                image_codes=codes.tolist(),
                image=images[row],
                image_png=pngs[row],
                unmask_step=out.unmask_step[row].tolist(),
                confidence=out.confidence[row].tolist(),
                early_filled=[False] * n,
                num_forwards=out.num_forwards,
                sampler=settings,
                timings={"gen_s": gen_s, "decode_s": decode_s, "batch_size": len(jobs)},
            ))
        return records


def start_rollout_worker(index: int, policy_path: str | Path, text_config: TextSamplerConfig | None = None,
                         image_config: ImageSamplerConfig | None = None, num_gpus_per_worker: float = 0,
                         num_cpus_per_worker: float = 1, max_restarts: int = ACTOR_MAX_RESTARTS,
                         placement: dict | None = None, **worker_kwargs):
    """One RolloutWorker actor (`placement`: the options that pin it to its placement-group bundle, from
    policy/actor_group.py). A crashed actor is restarted by Ray from its constructor (initial weights); its
    RolloutGroup then sends it the current weights. On GPU clusters pass num_gpus_per_worker=1 and
    device="cuda"; Ray sets CUDA_VISIBLE_DEVICES per actor. Its records name it "rollout-<index>", or
    "elastic-<6 hex>" for an elastic extra (index -1); a restart in place keeps the name."""
    import uuid

    import ray

    worker_kwargs.setdefault("name", f"rollout-{index}" if index >= 0 else f"elastic-{uuid.uuid4().hex[:6]}")

    return ray.remote(RolloutWorker).options(
        num_gpus=num_gpus_per_worker, num_cpus=num_cpus_per_worker, max_restarts=max_restarts, **(placement or {}),
    ).remote(str(policy_path), text_config, image_config, **worker_kwargs)
