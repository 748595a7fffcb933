"""CLIP alignment reward: CLIP score = 100 * max(cos(image, text), 0) (the paper uses 0.1 x this).

The model and tokenizer load from a local directory in the openai/clip-vit-large-patch14 layout
(config.json, model weights, tokenizer files, preprocessor_config.json) with transformers' CLIPModel;
nothing is downloaded. Images are preprocessed with PIL/numpy following preprocessor_config.json
(resize shortest side, center crop, rescale, normalise), because torchvision does not import here.

Which text is compared with the image: the prompt for text-to-image tasks (the image was generated
from it), the response otherwise (a caption of the input image). ``text_field`` overrides this.
"""

from __future__ import annotations

import json
import os

import numpy as np

from rewards.api import RewardInput, RewardResult

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
T2I_TASKS = ("t2i", "text_to_image", "text2image", "image_generation")


def _side(v, default: int) -> int:
    if isinstance(v, dict):
        return int(v.get("shortest_edge") or v.get("height") or default)
    return int(v) if v else default


class ImagePreprocessor:
    """CLIP image preprocessing in PIL/numpy, configured by preprocessor_config.json."""

    def __init__(self, model_dir: str | None, default_size: int = 224):
        cfg = {}
        path = os.path.join(model_dir, "preprocessor_config.json") if model_dir else None
        if path and os.path.exists(path):
            with open(path) as f:
                cfg = json.load(f)
        self.size = _side(cfg.get("size"), default_size)
        self.crop = _side(cfg.get("crop_size"), self.size)
        self.mean = np.asarray(cfg.get("image_mean", CLIP_MEAN), dtype=np.float32)
        self.std = np.asarray(cfg.get("image_std", CLIP_STD), dtype=np.float32)
        self.rescale = float(cfg.get("rescale_factor", 1 / 255))

    def __call__(self, images: list[np.ndarray]) -> np.ndarray:
        from PIL import Image

        out = []
        for img in images:
            arr = np.asarray(img)
            if arr.ndim == 2:
                arr = np.stack([arr] * 3, axis=-1)
            pil = Image.fromarray(arr[..., :3].astype(np.uint8)).convert("RGB")
            w, h = pil.size
            scale = self.size / min(w, h)
            pil = pil.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BICUBIC)
            w, h = pil.size
            left, top = (w - self.crop) // 2, (h - self.crop) // 2
            pil = pil.crop((left, top, left + self.crop, top + self.crop))
            x = np.asarray(pil, dtype=np.float32) * self.rescale
            out.append(((x - self.mean) / self.std).transpose(2, 0, 1))
        return np.stack(out).astype(np.float32)


class ClipReward:
    kind = "model"

    def __init__(self, model_path: str | None = None, device: str = "cpu", batch_size: int = 32,
                 text_field: str = "auto", dtype: str = "float32"):
        if not model_path:
            raise ValueError("clip reward: model_path (a local CLIP directory) is required")
        import torch
        from transformers import AutoTokenizer, CLIPModel

        self.torch = torch
        self.device = torch.device(device)
        self.model = CLIPModel.from_pretrained(model_path, dtype=getattr(torch, dtype)).to(self.device).train(False)  # inference mode
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.preprocess = ImagePreprocessor(model_path, self.model.config.vision_config.image_size)
        self.batch_size = batch_size
        self.text_field = text_field
        self.max_len = int(getattr(self.model.config.text_config, "max_position_embeddings", 77))

    def _text(self, x: RewardInput) -> str:
        field = self.text_field
        if field == "auto":
            field = "prompt" if x.task in T2I_TASKS else "response"
        return str(getattr(x, field) or "")

    def scores(self, images: list[np.ndarray], texts: list[str]) -> list[float]:
        torch = self.torch
        pixels = torch.from_numpy(self.preprocess(images)).to(self.device, self.model.dtype)
        tok = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_len, return_tensors="pt")
        tok = {k: v.to(self.device) for k, v in tok.items()}
        with torch.no_grad():
            img = self.model.get_image_features(pixel_values=pixels)
            txt = self.model.get_text_features(**tok)
            # transformers 5 returns output objects; the projected embedding is pooler_output
            img = getattr(img, "pooler_output", img)
            txt = getattr(txt, "pooler_output", txt)
            cos = torch.nn.functional.cosine_similarity(img.float(), txt.float(), dim=-1)
        return (100.0 * cos.clamp(min=0)).cpu().tolist()

    def __call__(self, batch: list[RewardInput]) -> list[RewardResult]:
        results: list[RewardResult | None] = [None] * len(batch)
        todo = []
        for i, x in enumerate(batch):
            if x.image is None:
                results[i] = RewardResult(0.0, "unparsable", "no image")
            elif not self._text(x).strip():
                results[i] = RewardResult(0.0, "unparsable", "no text")
            else:
                todo.append(i)
        for s in range(0, len(todo), self.batch_size):
            idx = todo[s:s + self.batch_size]
            vals = self.scores([batch[i].image for i in idx], [self._text(batch[i]) for i in idx])
            for i, v in zip(idx, vals):
                results[i] = RewardResult(float(v), "ok", "")
        return results
