"""`MMadaConfig`: reads a real MMaDA / LLaDA `config.json` (LLaDA field names: d_model, n_layers, ...).

Keys the model does not need (auto_map, llm_model_path, init settings, ...) are tolerated and kept.
Keys it needs but that are missing, or settings this implementation does not support (and would
otherwise silently compute something different from the checkpoint), are rejected naming the key.
"""

from __future__ import annotations

from typing import Any

from transformers import PretrainedConfig

# The keys a checkpoint's config.json must state: without them we would guess the architecture.
REQUIRED_KEYS = ("d_model", "n_layers", "n_heads", "vocab_size")

# Settings under which this implementation equals LLaDA/MMaDA's forward pass. A config that states
# another value for one of these describes a model we would compute wrongly, so it is rejected.
SUPPORTED_VALUES: dict[str, tuple[Any, ...]] = {
    "block_type": ("llama",),
    "activation_type": ("silu", "swiglu"),
    "layer_norm_type": ("rms",),
    "include_bias": (False,),
    "include_qkv_bias": (False,),
    "bias_for_layer_norm": (False, None),
    "layer_norm_with_affine": (True,),
    "rope": (True,),
    "alibi": (False,),
    "weight_tying": (False,),
    "attention_layer_norm": (False,),
    "input_emb_norm": (False,),
    "scale_logits": (False,),
    "multi_query_attention": (False, None),
}


class ConfigError(ValueError):
    """A model config that is missing a key or contradicts itself."""


class MMadaConfig(PretrainedConfig):
    model_type = "mmada"

    def __init__(
        self,
        d_model: int = 4096,
        n_layers: int = 32,
        n_heads: int = 32,
        n_kv_heads: int | None = None,
        mlp_hidden_size: int | None = 12288,
        mlp_ratio: int = 4,
        vocab_size: int = 134656,
        embedding_size: int | None = None,
        rope_theta: float = 500000.0,
        rms_norm_eps: float = 1e-5,
        max_sequence_length: int = 4096,
        mask_token_id: int = 126336,
        codebook_size: int = 8192,
        num_vq_tokens: int = 1024,
        vocab_layout: dict[str, int] | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("tie_word_embeddings", False)
        kwargs.setdefault("eos_token_id", 126081)
        kwargs.setdefault("pad_token_id", 126081)
        kwargs.setdefault("bos_token_id", 126080)
        self.d_model = d_model
        self.n_layers = n_layers
        self.n_heads = n_heads
        self.n_kv_heads = n_kv_heads if n_kv_heads is not None else n_heads
        self.mlp_ratio = mlp_ratio
        self.mlp_hidden_size = mlp_hidden_size if mlp_hidden_size is not None else mlp_ratio * d_model
        self.vocab_size = vocab_size
        self.embedding_size = embedding_size if embedding_size is not None else vocab_size
        self.rope_theta = float(rope_theta)
        self.rms_norm_eps = float(rms_norm_eps)
        self.max_sequence_length = max_sequence_length
        self.mask_token_id = mask_token_id
        self.codebook_size = codebook_size
        self.num_vq_tokens = num_vq_tokens
        self.vocab_layout = vocab_layout
        super().__init__(**kwargs)
        self.validate()

    # HF-style aliases so generic tooling (DeepSpeed auto configs, FLOP counters) finds the sizes.
    @property
    def hidden_size(self) -> int:
        return self.d_model

    @property
    def num_hidden_layers(self) -> int:
        return self.n_layers

    @property
    def num_attention_heads(self) -> int:
        return self.n_heads

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    def validate(self) -> None:
        for key, allowed in SUPPORTED_VALUES.items():
            if hasattr(self, key) and getattr(self, key) not in allowed:
                raise ConfigError(
                    f"config key {key!r}={getattr(self, key)!r} is not supported; expected one of {allowed} "
                    "(the MMaDA/LLaDA-8B architecture)"
                )
        if self.d_model % self.n_heads:
            raise ConfigError(f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}")
        if self.n_heads % self.n_kv_heads:
            raise ConfigError(f"n_heads={self.n_heads} is not divisible by n_kv_heads={self.n_kv_heads}")
        if self.head_dim % 2:
            raise ConfigError(f"head_dim={self.head_dim} must be even for RoPE")
        if self.embedding_size < self.vocab_size:
            raise ConfigError(
                f"embedding_size={self.embedding_size} is smaller than vocab_size={self.vocab_size}"
            )
        if self.tie_word_embeddings:
            raise ConfigError("tie_word_embeddings=True: MMaDA/LLaDA use a separate output head (ff_out)")
        # Imported here: vocab.py is plain Python and this keeps the dependency one-way.
        from policy.vocab import VocabLayout, VocabLayoutError

        try:
            layout = VocabLayout.from_model_config(self)
        except (VocabLayoutError, TypeError) as err:
            raise ConfigError(f"config key 'vocab_layout': {err}") from err
        if layout.mask_id != self.mask_token_id and self.vocab_layout:
            raise ConfigError(
                f"mask_token_id={self.mask_token_id} contradicts vocab_layout.mask_id={layout.mask_id}"
            )

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any], **kwargs: Any):
        missing = [k for k in REQUIRED_KEYS if k not in config_dict and k not in kwargs]
        if missing:
            raise ConfigError(f"model config.json is missing required key(s) {missing}")
        model_type = config_dict.get("model_type")
        if model_type not in (None, "mmada", "llada"):
            raise ConfigError(f"config key 'model_type'={model_type!r}: expected 'mmada' or 'llada'")
        return super().from_dict(config_dict, **kwargs)


class LLaDAConfig(MMadaConfig):
    """Same architecture; LLaDA-8B checkpoints say model_type 'llada'."""

    model_type = "llada"


def register_with_auto_classes() -> None:
    """Let transformers' Auto* classes (AutoTokenizer reads config.json) recognise both model types."""
    from transformers import AutoConfig

    for cls in (MMadaConfig, LLaDAConfig):
        try:
            AutoConfig.register(cls.model_type, cls)
        except ValueError:  # already registered (by us, or by a future transformers release)
            pass


register_with_auto_classes()
