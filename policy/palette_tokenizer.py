"""A tiny image tokenizer whose codes mean something: each code is one solid colour patch.

A random tiny MAGVIT-v2 decodes any code grid into noise, so a tiny policy that learns to draw
"a red square in the top left" would produce images nobody (and no pixel-checking reward) can read.
`PaletteTokenizer` sits behind the same `ImageTokenizer` interface and is exact on images made of
palette-coloured, patch-aligned regions (the synthetic shapes of the multimodal demo):

    encode:  code(i, j) = argmin_k || mean RGB of patch (i, j) - palette[k] ||^2
    decode:  patch (i, j) = palette[code(i, j)], a solid square of `patch` x `patch` pixels

It is saved as one JSON file (`image_tokenizer.json`) so a run directory carries it like a model.
MMaDA itself uses MAGVIT-v2 (`policy/magvit2.py`); `load_image_tokenizer` returns either.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from policy.image_tokenizer import ImageTokenizer

CONFIG_NAME = "image_tokenizer.json"

# The default palette, in code order; colour names are part of the demo's captions and questions.
NAMED_COLOURS: dict[str, tuple[int, int, int]] = {
    "black": (0, 0, 0),
    "white": (255, 255, 255),
    "red": (255, 0, 0),
    "green": (0, 255, 0),
    "blue": (0, 0, 255),
    "yellow": (255, 255, 0),
    "magenta": (255, 0, 255),
    "cyan": (0, 255, 255),
}


class PaletteTokenizer(ImageTokenizer):
    def __init__(self, palette: list[tuple[int, int, int]] | None = None, patch: int = 8) -> None:
        colours = list(NAMED_COLOURS.values()) if palette is None else [tuple(int(v) for v in c) for c in palette]
        if len(colours) < 2 or any(len(c) != 3 or not all(0 <= v <= 255 for v in c) for c in colours):
            raise ValueError("palette: need >= 2 RGB triples with values in [0, 255]")
        if len(set(colours)) != len(colours):
            raise ValueError("palette: colours must be distinct")
        if patch < 1:
            raise ValueError(f"patch must be >= 1, got {patch}")
        self.palette = colours
        self.patch = int(patch)
        # the palette in the [-1, 1] pixel convention of ImageTokenizer
        self._colours = torch.tensor(colours, dtype=torch.float32) / 127.5 - 1.0  # [K, 3]

    @property
    def codebook_size(self) -> int:
        return len(self.palette)

    @property
    def downsample_factor(self) -> int:
        return self.patch

    def encode(self, pixels: torch.Tensor) -> torch.LongTensor:
        if pixels.dim() != 4 or pixels.shape[1] != 3:
            raise ValueError(f"expected [B, 3, H, W] pixels, got {tuple(pixels.shape)}")
        B, _, H, W = pixels.shape
        f = self.patch
        if H % f or W % f:
            raise ValueError(f"image {H}x{W} is not a multiple of the patch size {f}")
        means = torch.nn.functional.avg_pool2d(pixels.float(), f)  # [B, 3, h, w]
        flat = means.permute(0, 2, 3, 1).reshape(B, -1, 3)  # row-major patches
        dist = ((flat[:, :, None, :] - self._colours.to(flat.device)) ** 2).sum(-1)  # [B, h*w, K]
        return dist.argmin(-1)

    def decode(self, codes: torch.Tensor, grid_hw: tuple[int, int] | None = None) -> torch.FloatTensor:
        codes = torch.as_tensor(codes).long()
        if codes.dim() != 2:
            raise ValueError(f"expected [B, N] codes, got {tuple(codes.shape)}")
        B, N = codes.shape
        if codes.numel() and (codes.min() < 0 or codes.max() >= self.codebook_size):
            raise ValueError(f"codes must lie in [0, {self.codebook_size})")
        if grid_hw is None:
            side = int(round(N ** 0.5))
            if side * side != N:
                raise ValueError(f"{N} codes are not a square grid; pass grid_hw")
            grid_hw = (side, side)
        h, w = grid_hw
        rgb = self._colours.to(codes.device)[codes].view(B, h, w, 3).permute(0, 3, 1, 2)  # [B, 3, h, w]
        return rgb.repeat_interleave(self.patch, 2).repeat_interleave(self.patch, 3)

    # ---- a directory on disk, like any model ---------------------------------------------------
    def save_pretrained(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        out = directory / CONFIG_NAME
        out.write_text(json.dumps({"type": "palette", "patch": self.patch, "palette": self.palette}, indent=1))
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> PaletteTokenizer:
        cfg = json.loads((Path(directory) / CONFIG_NAME).read_text())
        if cfg.get("type") != "palette":
            raise ValueError(f"{directory}/{CONFIG_NAME}: type {cfg.get('type')!r} is not 'palette'")
        return cls([tuple(c) for c in cfg["palette"]], int(cfg["patch"]))


def load_image_tokenizer(directory: str | Path) -> ImageTokenizer:
    """'palette' (the default palette, 8 px patches), a palette tokenizer directory (image_tokenizer.json)
    or MAGVIT-v2 (a model directory)."""
    if str(directory) == "palette":
        return PaletteTokenizer()
    directory = Path(directory)
    if (directory / CONFIG_NAME).is_file():
        return PaletteTokenizer.from_pretrained(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"image tokenizer directory {directory} does not exist")
    from policy.magvit2 import MAGVITv2

    return MAGVITv2.from_pretrained(directory).eval()
