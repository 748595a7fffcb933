"""Images in and out of the tokenizer, with PIL and numpy only (torchvision does not import here).

`image_to_tensor` reproduces MMaDA's `image_transform` (torchvision Resize(shorter side, bicubic) ->
CenterCrop -> ToTensor -> Normalize(0.5, 0.5)) step for step, so codes computed here match the ones
MMaDA computes for the same file.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def load_image(src: str | Path | bytes | Image.Image) -> Image.Image:
    """A path, encoded bytes or a PIL image -> a fully loaded RGB PIL image (alpha is dropped, as
    MMaDA's `.convert("RGB")` does)."""
    if isinstance(src, Image.Image):
        return src.convert("RGB")
    with Image.open(io.BytesIO(src) if isinstance(src, bytes | bytearray) else src) as im:
        # convert() returns a new, loaded image, so the file can be closed on return.
        return im.convert("RGB")


def image_to_tensor(pil: Image.Image, resolution: int, mode: str = "center_crop") -> torch.Tensor:
    """PIL image -> [3, R, R] float32 in [-1, 1].

    mode="center_crop": shorter side to R (bicubic), then the central R x R (MMaDA's `image_transform`).
    mode="squash":      both sides to R (bicubic), aspect ratio not kept (MMaDA's `image_transform_squash`).
    """
    pil = pil.convert("RGB")
    w, h = pil.size
    if mode == "center_crop":
        # torchvision's rule: the longer side is truncated, not rounded.
        short, long = min(w, h), max(w, h)
        new_long = int(resolution * long / short)
        size = (resolution, new_long) if w <= h else (new_long, resolution)
        if size != (w, h):
            pil = pil.resize(size, Image.BICUBIC)
        w, h = pil.size
        # torchvision CenterCrop: offsets are round((size - crop) / 2) (Python's round-half-to-even).
        left, top = int(round((w - resolution) / 2.0)), int(round((h - resolution) / 2.0))
        pil = pil.crop((left, top, left + resolution, top + resolution))
    elif mode == "squash":
        if pil.size != (resolution, resolution):
            pil = pil.resize((resolution, resolution), Image.BICUBIC)
    else:
        raise ValueError(f"mode must be 'center_crop' or 'squash', got {mode!r}")
    x = torch.from_numpy(np.asarray(pil, dtype=np.uint8).copy()).permute(2, 0, 1)
    # Same float ops as ToTensor + Normalize(mean 0.5, std 0.5), for bit-identical inputs.
    return (x.float() / 255.0 - 0.5) / 0.5


def tensor_to_uint8(t: torch.Tensor) -> np.ndarray:
    """[3, H, W] (or [B, 3, H, W]) in [-1, 1] -> H x W x 3 (or B x H x W x 3) uint8.

    Values outside [-1, 1] are clamped. Rounds to the nearest level, so it exactly inverts
    `image_to_tensor`; MMaDA's sample-saving code truncates instead (at most 1/255 darker).
    """
    if t.dim() not in (3, 4) or t.shape[-3] != 3:
        raise ValueError(f"expected [3, H, W] or [B, 3, H, W], got {tuple(t.shape)}")
    x = ((t.detach().float().cpu() + 1.0) / 2.0).clamp(0.0, 1.0) * 255.0
    return x.round().to(torch.uint8).movedim(-3, -1).contiguous().numpy()


def png_bytes(array: np.ndarray) -> bytes:
    """H x W x 3 (or H x W grey) uint8 -> PNG file bytes."""
    array = np.asarray(array)
    if array.dtype != np.uint8 or not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] == 3)):
        raise ValueError(f"expected uint8 HxWx3 or HxW, got {array.dtype} {array.shape}")
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def codes_palette(codes: np.ndarray, codebook_size: int) -> np.ndarray:
    """Code ids -> RGB uint8, by splitting the id's bits (MSB first) into red, green and blue groups.

    For MAGVIT-v2's LFQ an id's bits are the signs of its latent channels (channel 0 = MSB), so the colour
    shows the first few latent channels as red, the next as green, the last as blue: equal codes get
    equal colours and codes differing only in low bits look alike.
    """
    bits = max(1, math.ceil(math.log2(codebook_size)))
    split = [bits - 2 * (bits // 3), bits // 3, bits // 3]  # red gets the remainder: 13 -> 5, 4, 4
    out = np.zeros((*codes.shape, 3), dtype=np.uint8)
    shift = bits
    for c, n in enumerate(split):
        shift -= n
        if n == 0:
            continue
        part = (codes >> shift) & ((1 << n) - 1)
        out[..., c] = np.round(part * (255.0 / ((1 << n) - 1))).astype(np.uint8)
    return out


def codes_grid_png(
    codes: torch.Tensor | np.ndarray, grid_hw: tuple[int, int], codebook_size: int, cell: int = 8
) -> bytes:
    """A token grid as a false-colour PNG (each code a `cell` x `cell` square): a look at generated image
    tokens when no decoder weights are available."""
    arr = codes.detach().cpu().numpy() if isinstance(codes, torch.Tensor) else np.asarray(codes)
    h, w = grid_hw
    if arr.size != h * w:
        raise ValueError(f"{arr.size} codes do not fill a {h} x {w} grid")
    arr = arr.astype(np.int64).reshape(h, w)
    if arr.min() < 0 or arr.max() >= codebook_size:
        raise ValueError(f"codes must lie in [0, {codebook_size}); got [{arr.min()}, {arr.max()}]")
    rgb = codes_palette(arr, codebook_size)
    return png_bytes(np.repeat(np.repeat(rgb, cell, axis=0), cell, axis=1))
