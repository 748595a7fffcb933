"""MAGVIT-v2 image tokenizer, weight-compatible with Show-o's `showlab/magvitv2` (used by MMaDA).

A taming-transformers style conv encoder/decoder around a lookup-free quantiser (LFQ):

    pixels [B,3,H,W] --encoder--> z [B,bits,H/16,W/16] --sign--> ±1 --bits, MSB first--> code in [0, 2^bits)
    code --> ±1 vector --decoder--> pixels

Module names, registration order and buffer layout follow Show-o's `models/modeling_magvitv2.py`, so its
`pytorch_model.safetensors` loads with no key mapping (`encoder.down.1.block.0.nin_shortcut.weight`, ...).
The defaults of `MAGVITv2Config` *are* the real model: the HF repo's config.json carries no
architecture fields at all, so an empty `{}` must build the 8192-code, factor-16 tokenizer.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from policy.image_tokenizer import ImageTokenizer

CONFIG_NAME = "config.json"
SAFETENSORS_NAME = "pytorch_model.safetensors"
# Looked for in this order; Show-o's ModelMixin writes the first or the last.
WEIGHTS_NAMES = (SAFETENSORS_NAME, "model.safetensors", "pytorch_model.bin")
# LFQ buffers that are a pure function of the bit count: recomputed, so a checkpoint may omit them.
DERIVED_BUFFERS = ("quantize.embedding", "quantize.power_vals")
# Aliases accepted in config.json: Show-o's encoder calls the latent width z_channels, its LFQ codebook_dim.
_BIT_ALIASES = ("z_channels", "codebook_dim")


class CheckpointError(ValueError):
    """A MAGVIT-v2 checkpoint whose tensors do not match the configured architecture."""


@dataclass
class MAGVITv2Config:
    ch: int = 128
    ch_mult_enc: list[int] = field(default_factory=lambda: [1, 2, 2, 4, 4])
    num_res_blocks_enc: list[int] = field(default_factory=lambda: [4, 3, 4, 3, 4])
    ch_mult_dec: list[int] = field(default_factory=lambda: [1, 1, 2, 2, 4])
    num_res_blocks_dec: list[int] = field(default_factory=lambda: [4, 4, 3, 4, 3])
    # Latent width = LFQ bits; codebook_size = 2**codebook_bits.
    codebook_bits: int = 13
    # Show-o puts attention in a down/up level when its running resolution (starting from `resolution`)
    # is listed here. With 256 and [5] that never happens; both exist only to reproduce that bookkeeping.
    # `resolution` does NOT limit the input size: any multiple of the downsample factor works.
    resolution: int = 256
    attn_resolutions: list[int] = field(default_factory=lambda: [5])
    in_channels: int = 3
    out_channels: int = 3
    num_groups: int = 32  # GroupNorm groups; must divide every channel width (tiny configs use fewer)
    norm_eps: float = 1e-6
    dropout: float = 0.0

    def __post_init__(self) -> None:
        self.validate()

    @property
    def codebook_size(self) -> int:
        return 2**self.codebook_bits

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.ch_mult_enc) - 1)

    def validate(self) -> None:
        if len(self.ch_mult_enc) != len(self.num_res_blocks_enc):
            raise ValueError("ch_mult_enc and num_res_blocks_enc must have one entry per level")
        if len(self.ch_mult_dec) != len(self.num_res_blocks_dec):
            raise ValueError("ch_mult_dec and num_res_blocks_dec must have one entry per level")
        if len(self.ch_mult_dec) != len(self.ch_mult_enc):
            # The decoder upsamples once per level but the last: equal level counts = same factor.
            raise ValueError("encoder and decoder must have the same number of levels (same scale factor)")
        if not 1 <= self.codebook_bits <= 24:
            # The embedding buffer is [2**bits, bits]: beyond ~24 bits it no longer fits in memory.
            raise ValueError(f"codebook_bits must be in [1, 24], got {self.codebook_bits}")
        widths = {self.ch * m for m in self.ch_mult_enc + self.ch_mult_dec}
        bad = sorted(w for w in widths if w % self.num_groups)
        if bad:
            raise ValueError(f"num_groups={self.num_groups} does not divide channel widths {bad}")

    @classmethod
    def tiny(cls, **overrides: Any) -> MAGVITv2Config:
        """The real topology (5 levels, factor 16, nin_shortcuts at the same places) at toy width:
        ch 8 -> widths 8/16/32, one res block per level, 6 bits = 64 codes. 64 px -> 4 x 4 codes."""
        kwargs: dict[str, Any] = dict(
            ch=8,
            num_res_blocks_enc=[1, 1, 1, 1, 1],
            num_res_blocks_dec=[1, 1, 1, 1, 1],
            codebook_bits=6,
            num_groups=4,
        )
        kwargs.update(overrides)
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MAGVITv2Config:
        # Keys starting with "_" are diffusers/Show-o metadata (_class_name, _diffusers_version): ignored.
        d = {k: v for k, v in d.items() if not k.startswith("_")}
        for alias in _BIT_ALIASES:
            if alias in d:
                bits = d.pop(alias)
                if d.setdefault("codebook_bits", bits) != bits:
                    raise ValueError(f"config: {alias}={bits} contradicts codebook_bits={d['codebook_bits']}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            # A misspelt field would otherwise silently fall back to the real model's value.
            raise ValueError(f"config: unknown MAGVIT-v2 keys {unknown}; known keys are {sorted(known)}")
        return cls(**d)

    @classmethod
    def from_json_file(cls, path: str | Path) -> MAGVITv2Config:
        return cls.from_dict(json.loads(Path(path).read_text()))

    def to_json_file(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")


# --------------------------------------------------------------------------------------------------
# Building blocks (taming-transformers layout)


def swish(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(x)


def _norm(channels: int, cfg: MAGVITv2Config) -> nn.GroupNorm:
    return nn.GroupNorm(cfg.num_groups, channels, eps=cfg.norm_eps, affine=True)


class ResnetBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, cfg: MAGVITv2Config):
        super().__init__()
        self.norm1 = _norm(in_ch, cfg)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.norm2 = _norm(out_ch, cfg)
        self.dropout = nn.Dropout(cfg.dropout)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        # 1x1 projection of the skip path, only where the width changes (that is what the checkpoint has).
        self.nin_shortcut = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(swish(self.norm1(x)))
        h = self.conv2(self.dropout(swish(self.norm2(h))))
        if self.nin_shortcut is not None:
            x = self.nin_shortcut(x)
        return x + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all spatial positions, with 1x1 convs as projections."""

    def __init__(self, ch: int, cfg: MAGVITv2Config):
        super().__init__()
        self.norm = _norm(ch, cfg)
        self.q = nn.Conv2d(ch, ch, 1)
        self.k = nn.Conv2d(ch, ch, 1)
        self.v = nn.Conv2d(ch, ch, 1)
        self.proj_out = nn.Conv2d(ch, ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, hgt, wid = x.shape
        h = self.norm(x)
        # [B, C, H, W] -> [B, 1 head, H*W, C]; SDPA's default scale is C**-0.5, as in taming.
        q, k, v = (t.reshape(b, 1, c, hgt * wid).transpose(2, 3) for t in (self.q(h), self.k(h), self.v(h)))
        h = F.scaled_dot_product_attention(q, k, v)
        h = h.transpose(2, 3).reshape(b, c, hgt, wid)
        return x + self.proj_out(h)


class Downsample(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Asymmetric right/bottom zero pad (torch convs only pad symmetrically): H -> H/2 exactly.
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Level(nn.Module):
    """One resolution level: res blocks (+ attention where configured), then an optional resample.
    Attribute names `block`, `attn`, `downsample`/`upsample` are the checkpoint's key components."""

    def __init__(self, in_ch: int, out_ch: int, n_blocks: int, use_attn: bool, cfg: MAGVITv2Config):
        super().__init__()
        self.block = nn.ModuleList()
        self.attn = nn.ModuleList()
        for _ in range(n_blocks):
            self.block.append(ResnetBlock(in_ch, out_ch, cfg))
            in_ch = out_ch
            if use_attn:
                self.attn.append(AttnBlock(out_ch, cfg))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        for i, block in enumerate(self.block):
            h = block(h)
            if len(self.attn) > 0:
                h = self.attn[i](h)
        return h


class Mid(nn.Module):
    def __init__(self, ch: int, cfg: MAGVITv2Config):
        super().__init__()
        self.block_1 = ResnetBlock(ch, ch, cfg)
        self.attn_1 = AttnBlock(ch, cfg)
        self.block_2 = ResnetBlock(ch, ch, cfg)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(h)))


# --------------------------------------------------------------------------------------------------
# Encoder, quantiser, decoder


class Encoder(nn.Module):
    def __init__(self, cfg: MAGVITv2Config):
        super().__init__()
        n = len(cfg.ch_mult_enc)
        self.conv_in = nn.Conv2d(cfg.in_channels, cfg.ch, 3, padding=1)
        in_mult = [1, *cfg.ch_mult_enc]  # level i maps ch*in_mult[i] -> ch*ch_mult[i]
        res = cfg.resolution
        self.down = nn.ModuleList()
        for i in range(n):
            out_ch = cfg.ch * cfg.ch_mult_enc[i]
            level = Level(
                cfg.ch * in_mult[i], out_ch, cfg.num_res_blocks_enc[i], res in cfg.attn_resolutions, cfg
            )
            if i != n - 1:
                level.downsample = Downsample(out_ch)
                res //= 2
            self.down.append(level)
        top = cfg.ch * cfg.ch_mult_enc[-1]
        self.mid = Mid(top, cfg)
        self.norm_out = _norm(top, cfg)
        self.conv_out = nn.Conv2d(top, cfg.codebook_bits, 3, padding=1)
        self.quant_conv = nn.Conv2d(cfg.codebook_bits, cfg.codebook_bits, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for level in self.down:
            h = level(h)
            if hasattr(level, "downsample"):
                h = level.downsample(h)
        h = self.mid(h)
        h = self.conv_out(swish(self.norm_out(h)))
        return self.quant_conv(h)


class Decoder(nn.Module):
    def __init__(self, cfg: MAGVITv2Config):
        super().__init__()
        n = len(cfg.ch_mult_dec)
        ch_in = cfg.ch * cfg.ch_mult_dec[-1]
        res = cfg.resolution // 2 ** (n - 1)
        self.conv_in = nn.Conv2d(cfg.codebook_bits, ch_in, 3, padding=1)
        self.mid = Mid(ch_in, cfg)
        # Built from the coarsest level down but stored finest-first, so `up.{i}` is level i as in the
        # checkpoint; forward walks it in reverse.
        levels: list[Level] = []
        for i in reversed(range(n)):
            out_ch = cfg.ch * cfg.ch_mult_dec[i]
            level = Level(ch_in, out_ch, cfg.num_res_blocks_dec[i], res in cfg.attn_resolutions, cfg)
            ch_in = out_ch
            if i != 0:
                level.upsample = Upsample(out_ch)
                res *= 2
            levels.insert(0, level)
        self.up = nn.ModuleList(levels)
        self.norm_out = _norm(ch_in, cfg)
        self.conv_out = nn.Conv2d(ch_in, cfg.out_channels, 3, padding=1)
        # Registered last but applied first (Show-o's order, kept so state-dict order matches).
        self.post_quant_conv = nn.Conv2d(cfg.codebook_bits, cfg.codebook_bits, 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(self.post_quant_conv(z))
        h = self.mid(h)
        for level in reversed(self.up):
            h = level(h)
            if hasattr(level, "upsample"):
                h = level.upsample(h)
        return self.conv_out(swish(self.norm_out(h)))


class LFQuantizer(nn.Module):
    """Lookup-free quantisation: each latent channel is one bit, sign(z) -> ±1 (z == 0 counts as -1).

    code = sum_k 2**(bits-1-k) * [z_k > 0]: channel 0 is the most significant bit. `embedding[code]` is the
    ±1 vector of that code in the same order, so `embedding[code(z)] == quantise(z)`.
    """

    def __init__(self, bits: int):
        super().__init__()
        self.bits = bits
        embedding, power_vals = self.codebook(bits)
        # Persistent buffers because Show-o's are (its strict loaders expect them); recomputable from bits.
        self.register_buffer("embedding", embedding)
        self.register_buffer("power_vals", power_vals)

    @staticmethod
    def codebook(bits: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(embedding [2**bits, bits] float ±1, power_vals [bits] long = 2**(bits-1) ... 1)."""
        power_vals = 2 ** torch.arange(bits - 1, -1, -1, dtype=torch.long)
        binary = (torch.arange(2**bits).unsqueeze(1) // power_vals) % 2
        return binary.float() * 2 - 1, power_vals

    def quantise(self, z: torch.Tensor) -> torch.Tensor:
        """[B, bits, h, w] -> same shape, ±1."""
        return torch.where(z > 0, 1.0, -1.0).to(z.dtype)

    def indices(self, z: torch.Tensor) -> torch.Tensor:
        """[B, bits, h, w] latents (raw or quantised) -> [B, h*w] long codes, row-major over (h, w)."""
        if z.shape[1] != self.bits:
            raise ValueError(f"expected {self.bits} latent channels, got {z.shape[1]}")
        # Integer arithmetic: exact for any bit count, unlike a float sum.
        codes = ((z > 0).long() * self.power_vals.view(1, -1, 1, 1)).sum(1)
        return codes.flatten(1)

    def lookup(self, codes: torch.Tensor, grid_hw: tuple[int, int]) -> torch.Tensor:
        """[B, h*w] codes -> [B, bits, h, w] ±1 latents."""
        b = codes.shape[0]
        h, w = grid_hw
        return self.embedding[codes.reshape(-1)].view(b, h, w, self.bits).permute(0, 3, 1, 2).contiguous()


# --------------------------------------------------------------------------------------------------
# The tokenizer


class MAGVITv2(nn.Module, ImageTokenizer):
    def __init__(self, config: MAGVITv2Config | None = None):
        super().__init__()
        self.config = config if config is not None else MAGVITv2Config()
        self.encoder = Encoder(self.config)
        self.decoder = Decoder(self.config)
        self.quantize = LFQuantizer(self.config.codebook_bits)

    # ImageTokenizer ---------------------------------------------------------------------------------

    @property
    def codebook_size(self) -> int:
        return self.config.codebook_size

    @property
    def downsample_factor(self) -> int:
        return self.config.downsample_factor

    # no_grad, not inference_mode: codes often become embedding indices in a graph that is
    # back-propagated, and inference tensors cannot be saved for backward.
    @torch.no_grad()
    def encode(self, pixels: torch.Tensor) -> torch.LongTensor:
        """[B, 3, H, W] in [-1, 1] -> [B, (H/f)*(W/f)] codes, on the model's device."""
        if pixels.dim() != 4 or pixels.shape[1] != self.config.in_channels:
            raise ValueError(
                f"expected pixels [B, {self.config.in_channels}, H, W], got {tuple(pixels.shape)}"
            )
        f = self.downsample_factor
        if pixels.shape[2] % f or pixels.shape[3] % f:
            raise ValueError(f"image size {tuple(pixels.shape[2:])} is not a multiple of {f}")
        return self.get_code(pixels)

    @torch.no_grad()
    def decode(self, codes: torch.Tensor, grid_hw: tuple[int, int] | None = None) -> torch.FloatTensor:
        """[B, N] codes -> [B, 3, H, W] clamped to [-1, 1] (the raw decoder output overshoots slightly;
        every consumer clamps before converting to uint8, so the interface does it once)."""
        return self.decode_code(codes, grid_hw).clamp(-1.0, 1.0)

    # Show-o's method names, unclamped and grad-enabled -------------------------------------------

    def get_code(self, pixels: torch.Tensor) -> torch.Tensor:
        p = next(self.parameters())
        z = self.encoder(pixels.to(device=p.device, dtype=p.dtype))
        return self.quantize.indices(z)

    def decode_code(self, codes: torch.Tensor, grid_hw: tuple[int, int] | None = None) -> torch.Tensor:
        if codes.dim() != 2:
            raise ValueError(f"expected codes [B, N], got {tuple(codes.shape)}")
        n = codes.shape[1]
        if grid_hw is None:
            side = math.isqrt(n)
            if side * side != n:
                raise ValueError(f"{n} codes do not form a square grid; pass grid_hw")
            grid_hw = (side, side)
        if grid_hw[0] * grid_hw[1] != n:
            raise ValueError(f"grid {grid_hw} does not hold {n} codes")
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= self.codebook_size):
            # Negative ids would silently wrap around in the lookup; usually a forgotten vocab offset.
            raise ValueError(
                f"codes must lie in [0, {self.codebook_size}); got [{int(codes.min())}, {int(codes.max())}]"
            )
        p = next(self.parameters())
        z_q = self.quantize.lookup(codes.to(device=p.device, dtype=torch.long), grid_hw)
        return self.decoder(z_q.to(p.dtype))

    # Checkpoints ------------------------------------------------------------------------------------

    @classmethod
    def from_pretrained(
        cls, path: str | Path, *, device: str | torch.device = "cpu", dtype: torch.dtype | None = None
    ) -> MAGVITv2:
        """Load `config.json` + weights from a local directory (e.g. a download of showlab/magvitv2).

        No config.json means the default (real) architecture; the strict key/shape check below still
        rejects weights of any other shape. Returned in eval mode.

        Prefer the default float32 for encoding: codes are signs of latents, and bf16 rounding flips the
        near-zero ones (on an H200, random weights, 512 px: 9% of codes differed from float32).
        """
        path = Path(path)
        cfg_file = path / CONFIG_NAME
        config = MAGVITv2Config.from_json_file(cfg_file) if cfg_file.exists() else MAGVITv2Config()
        weights = next((path / n for n in WEIGHTS_NAMES if (path / n).exists()), None)
        if weights is None:
            raise FileNotFoundError(f"{path}: none of {list(WEIGHTS_NAMES)} found")
        state = load_state_file(weights)
        # Build on the meta device (no wasted random init of ~100M parameters), then adopt the tensors.
        with torch.device("meta"):
            model = cls(config)
        model.load_checked_state_dict(state, assign=True, source=str(weights))
        # Module.to(dtype) casts only floating tensors: power_vals stays integer.
        return model.to(device=device, dtype=dtype).eval()

    def load_checked_state_dict(
        self, state: dict[str, torch.Tensor], *, assign: bool = False, source: str = "state dict"
    ) -> None:
        """`load_state_dict`, but every missing, unexpected or mis-shaped key is named in the error, and
        the LFQ buffers are recomputed when absent (and verified when present)."""
        state = dict(state)
        bits = self.config.codebook_bits
        for name, derived in zip(DERIVED_BUFFERS, LFQuantizer.codebook(bits)):
            if name not in state:
                state[name] = derived
            elif state[name].shape != derived.shape or not torch.equal(
                state[name].to(derived.dtype), derived
            ):
                # Honouring a different bit order would silently scramble every image token.
                raise CheckpointError(f"{source}: {name} is not the MSB-first {bits}-bit LFQ codebook")
        expected = {k: tuple(v.shape) for k, v in self.state_dict().items()}
        missing = [k for k in expected if k not in state]
        unexpected = [k for k in state if k not in expected]
        mismatched = [
            f"{k}: checkpoint {tuple(state[k].shape)} vs model {expected[k]}"
            for k in expected
            if k in state and tuple(state[k].shape) != expected[k]
        ]
        problems = []
        if missing:
            problems.append(f"missing keys {missing}")
        if unexpected:
            problems.append(f"unexpected keys {unexpected}")
        if mismatched:
            problems.append(f"shape mismatches {mismatched}")
        if problems:
            raise CheckpointError(f"{source} does not fit MAGVITv2({self.config}): " + "; ".join(problems))
        # power_vals stays integer whatever dtype the checkpoint stored it in.
        state["quantize.power_vals"] = state["quantize.power_vals"].long()
        self.load_state_dict(state, strict=True, assign=assign)

    def save_pretrained(self, path: str | Path) -> None:
        """Write `config.json` + `pytorch_model.safetensors` (Show-o's file names)."""
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.config.to_json_file(path / CONFIG_NAME)
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        save_file(state, str(path / SAFETENSORS_NAME), metadata={"format": "pt"})


def load_state_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A flat state dict from .safetensors or a torch pickle (loaded with weights_only=True: no code runs)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: expected a flat {{name: tensor}} state dict")
    return state
