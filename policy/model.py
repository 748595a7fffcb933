"""The MMaDA / LLaDA bidirectional transformer, with the released checkpoints' parameter names.

    x = wte(ids)
    for each block:   h = x + attn_out(Attn(RoPE(q_proj(n)), RoPE(k_proj(n)), v_proj(n))),  n = RMSNorm(x)
                      x = h + ff_out(SiLU(ff_proj(m)) * up_proj(m)),                          m = RMSNorm(h)
    hidden = ln_f(x);  logits = transformer.ff_out(hidden)          (untied head, no biases anywhere)

Attention is fully bidirectional (no causal mask); an optional padding mask hides pad keys. RMSNorm
and RoPE run in fp32 as in the reference. Positions are 0..L-1 over the whole sequence including any
left padding, exactly as LLaDA/MMaDA compute them.

Two things an RL system needs beyond the reference forward:
- `logits_at`: apply the LM head only at requested positions. With a 134,656-wide vocabulary, full
  logits dominate memory; the learner and the samplers only ever need a few positions.
- a prefix KV cache (`past_key_values`/`use_cache`) so the block sampler can reuse keys and values of
  finished blocks (Fast-dLLM style). The cache is a plain list of (k, v) per layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers import PreTrainedModel

from policy.config import MMadaConfig

KVCache = list[tuple[torch.Tensor, torch.Tensor]]


class RMSNorm(nn.Module):
    """x * rsqrt(mean(x^2) + eps) in fp32, cast back, then times weight (not 1 + weight)."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return normed.to(x.dtype) * self.weight


def rope_tables(positions: torch.Tensor, head_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables [L, head_dim] in fp32 for the split-halves ("rotate_half") convention."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32) / head_dim))
    freqs = positions.float()[:, None] * inv_freq[None, :]
    angles = torch.cat([freqs, freqs], dim=-1)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: [B, H, L, D]; rotation in fp32, result in x's dtype."""
    x32 = x.float()
    half = x32.shape[-1] // 2
    rotated = torch.cat([-x32[..., half:], x32[..., :half]], dim=-1)
    return (x32 * cos + rotated * sin).to(x.dtype)


class LLaDABlock(nn.Module):
    def __init__(self, config: MMadaConfig) -> None:
        super().__init__()
        d, kv_dim = config.d_model, config.n_kv_heads * config.head_dim
        self.n_heads, self.n_kv_heads, self.head_dim = config.n_heads, config.n_kv_heads, config.head_dim
        self.attn_norm = RMSNorm(d, config.rms_norm_eps)
        self.q_proj = nn.Linear(d, d, bias=False)
        self.k_proj = nn.Linear(d, kv_dim, bias=False)
        self.v_proj = nn.Linear(d, kv_dim, bias=False)
        self.attn_out = nn.Linear(d, d, bias=False)
        self.ff_norm = RMSNorm(d, config.rms_norm_eps)
        self.ff_proj = nn.Linear(d, config.mlp_hidden_size, bias=False)  # "gate": SiLU is applied to it
        self.up_proj = nn.Linear(d, config.mlp_hidden_size, bias=False)
        self.ff_out = nn.Linear(config.mlp_hidden_size, d, bias=False)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        key_mask: torch.Tensor | None,
        past: tuple[torch.Tensor, torch.Tensor] | None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        B, L, _ = x.shape
        n = self.attn_norm(x)
        q = self.q_proj(n).view(B, L, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(n).view(B, L, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(n).view(B, L, self.n_kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if past is not None:
            k = torch.cat([past[0], k], dim=2)
            v = torch.cat([past[1], v], dim=2)
        present = (k, v)
        if self.n_kv_heads != self.n_heads:
            rep = self.n_heads // self.n_kv_heads
            k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        attn = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask, is_causal=False)
        h = x + self.attn_out(attn.transpose(1, 2).reshape(B, L, -1))
        m = self.ff_norm(h)
        return h + self.ff_out(F.silu(self.ff_proj(m)) * self.up_proj(m)), present


class LLaDAModel(nn.Module):
    """Holds `transformer` (a ModuleDict, as in the reference) so names read model.transformer.*."""

    def __init__(self, config: MMadaConfig) -> None:
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.embedding_size, config.d_model),
                blocks=nn.ModuleList(LLaDABlock(config) for _ in range(config.n_layers)),
                ln_f=RMSNorm(config.d_model, config.rms_norm_eps),
                ff_out=nn.Linear(config.d_model, config.embedding_size, bias=False),
            )
        )
        self.gradient_checkpointing = False


@dataclass
class MMadaOutput:
    logits: torch.Tensor | None  # [B, L, V], or [N, V] at `logits_at` positions, or None
    hidden_states: torch.Tensor | None = None  # final-normed hidden states [B, L, D]
    past_key_values: KVCache | None = None


class MMadaModelLM(PreTrainedModel):
    config_class = MMadaConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["LLaDABlock"]
    _supports_sdpa = True

    def __init__(self, config: MMadaConfig) -> None:
        super().__init__(config)
        self.model = LLaDAModel(config)
        self.post_init()

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        # LLaDA-style init for models built from a config (tiny test models, from-scratch runs).
        if isinstance(module, nn.Linear):
            module.weight.normal_(0.0, 0.02)
        elif isinstance(module, nn.Embedding):
            module.weight.normal_(0.0, 0.02)
        elif isinstance(module, RMSNorm):
            module.weight.fill_(1.0)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.transformer.wte

    def get_output_embeddings(self) -> nn.Linear:
        return self.model.transformer.ff_out

    def _set_gradient_checkpointing(self, enable: bool = True, gradient_checkpointing_func=None) -> None:
        self.model.gradient_checkpointing = enable

    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs=None) -> None:
        self.model.gradient_checkpointing = True

    def gradient_checkpointing_disable(self) -> None:
        self.model.gradient_checkpointing = False

    @property
    def lm_head(self) -> nn.Linear:
        return self.model.transformer.ff_out

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        past_key_values: KVCache | None = None,
        use_cache: bool = False,
        logits_at: torch.Tensor | None = None,
        compute_logits: bool = True,
        output_hidden_states: bool = False,
        **unused,
    ) -> MMadaOutput:
        """
        input_ids:       [B, L] token ids (positions start after any cached prefix).
        attention_mask:  optional [B, past + L]; 1 = real token, 0 = padding hidden from every query.
                         None = every token visible, the way the released checkpoints were trained.
        past_key_values: prefix cache from an earlier call with use_cache=True (see module doc).
        logits_at:       optional bool mask [B, L] or index tuple; logits only there, shape [N, V].
        """
        t = self.model.transformer
        B, L = input_ids.shape
        past_len = past_key_values[0][0].shape[2] if past_key_values else 0
        positions = torch.arange(past_len, past_len + L, device=input_ids.device)
        cos, sin = rope_tables(positions, self.config.head_dim, self.config.rope_theta)

        key_mask = None
        if attention_mask is not None:
            if attention_mask.shape != (B, past_len + L):
                raise ValueError(
                    f"attention_mask has shape {tuple(attention_mask.shape)}, expected {(B, past_len + L)}"
                )
            key_mask = attention_mask.bool()[:, None, None, :]  # True = may be attended to

        x = t.wte(input_ids)
        presents: KVCache = []
        for i, block in enumerate(t.blocks):
            past = past_key_values[i] if past_key_values else None
            if self.model.gradient_checkpointing and self.training and torch.is_grad_enabled():
                x, present = checkpoint(block, x, cos, sin, key_mask, past, use_reentrant=False)
            else:
                x, present = block(x, cos, sin, key_mask, past)
            if use_cache:
                presents.append(present)
        hidden = t.ln_f(x)

        logits = None
        if compute_logits:
            logits = t.ff_out(hidden[logits_at] if logits_at is not None else hidden)
        return MMadaOutput(
            logits=logits,
            hidden_states=hidden if output_hidden_states or not compute_logits else None,
            past_key_values=presents if use_cache else None,
        )

    def num_flops_per_token(self, seq_len: int) -> float:
        """Forward FLOPs per token (matmuls only, LM head excluded): 2 * non-embedding params + attention."""
        c = self.config
        per_layer = 2 * (2 * c.d_model * c.d_model + 2 * c.d_model * c.n_kv_heads * c.head_dim
                         + 3 * c.d_model * c.mlp_hidden_size)
        attention = 2 * 2 * seq_len * c.d_model
        return c.n_layers * (per_layer + attention)
