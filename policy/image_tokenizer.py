"""`ImageTokenizer`: the one thing the rest of the system knows about turning pixels into tokens.

Samplers, prompt builders and rewards only ever need: pixels in [-1, 1] -> a row-major grid of integer
codes, codes -> pixels, how many codes there are, and how many tokens an image of a given size becomes.
MAGVIT-v2 (`policy/magvit2.py`) is the implementation MMaDA uses; tests and other tokenizers plug in
behind the same interface.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch


class ImageTokenizer(ABC):
    """Pixels <-> discrete codes.

    Conventions, shared by every implementation:
    * pixels are float tensors [B, 3, H, W] in [-1, 1] (MMaDA's `image_transform` normalisation);
    * codes are long tensors [B, h*w] in [0, codebook_size), row-major over the h x w latent grid,
      with h = H / downsample_factor and w = W / downsample_factor;
    * `decode` of a flat [B, N] code tensor assumes a square grid (h = w = sqrt(N)), as MMaDA does.
    """

    @property
    @abstractmethod
    def codebook_size(self) -> int:
        """Number of distinct codes (8192 for MMaDA's MAGVIT-v2)."""

    @property
    @abstractmethod
    def downsample_factor(self) -> int:
        """Pixels per code along each side (16 for MMaDA's MAGVIT-v2: 512 px -> 32 x 32 codes)."""

    @abstractmethod
    def encode(self, pixels: torch.Tensor) -> torch.LongTensor:
        """[B, 3, H, W] floats in [-1, 1] -> [B, h*w] codes, row-major."""

    @abstractmethod
    def decode(self, codes: torch.Tensor, grid_hw: tuple[int, int] | None = None) -> torch.FloatTensor:
        """[B, N] codes -> [B, 3, H, W] floats in [-1, 1]. `grid_hw` overrides the square-grid assumption."""

    def grid_size(self, resolution: int) -> int:
        """Codes along one side of a square `resolution` x `resolution` image."""
        f = self.downsample_factor
        if resolution <= 0 or resolution % f != 0:
            raise ValueError(
                f"resolution {resolution} is not a positive multiple of the downsample factor {f}"
            )
        return resolution // f

    def num_tokens(self, resolution: int) -> int:
        """Image tokens for a square image: MMaDA-8B's 512 px -> 1024, the 256 px Pretrain model -> 256."""
        return self.grid_size(resolution) ** 2
