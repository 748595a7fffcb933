"""The policy model: checkpoint names and shapes, save/load, bidirectional attention, padding, configs."""

import json

import pytest
import torch

from policy.config import ConfigError, MMadaConfig
from policy.loading import load_policy
from policy.model import MMadaModelLM
from policy.prompts import chat_prompt_ids, left_pad, mmu_prompt_ids, t2i_prompt_ids, t2i_uncond_prompt_ids
from policy.tiny import build_tiny_policy, build_tiny_tokenizer
from policy.vocab import VocabLayout, VocabLayoutError

# The MMaDA-8B config.json keys (reference section 3.1), including keys the model does not use.
MMADA_8B_CONFIG = {
    "model_type": "mmada", "architectures": ["MMadaModelLM"], "d_model": 4096, "n_layers": 32, "n_heads": 32,
    "n_kv_heads": 32, "mlp_hidden_size": 12288, "mlp_ratio": 4, "activation_type": "silu", "block_type": "llama",
    "layer_norm_type": "rms", "rms_norm_eps": 1e-5, "layer_norm_with_affine": True, "bias_for_layer_norm": False,
    "include_bias": False, "include_qkv_bias": False, "rope": True, "rope_theta": 500000.0,
    "rope_full_precision": True, "alibi": False, "attention_layer_norm": False, "input_emb_norm": False,
    "scale_logits": False, "weight_tying": False, "vocab_size": 134656, "embedding_size": 134656,
    "llm_vocab_size": 126464, "new_vocab_size": 134656, "codebook_size": 8192, "num_vq_tokens": 1024,
    "mask_token_id": 126336, "eos_token_id": 126081, "pad_token_id": 126081, "max_sequence_length": 4096,
    "attention_dropout": 0.0, "residual_dropout": 0.0, "embedding_dropout": 0.0, "use_cache": False,
    "llm_model_path": "GSAI-ML/LLaDA-8B-Instruct", "init_fn": "mitchell",
    "auto_map": {"AutoConfig": "configuration_llada.LLaDAConfig", "AutoModel": "modeling_llada.LLaDAModelLM"},
}


def reference_parameter_list():
    """Reference section 3.2, written out independently of the model code."""
    d, f, v = 4096, 12288, 134656
    names = [("model.transformer.wte.weight", (v, d))]
    for i in range(32):
        p = f"model.transformer.blocks.{i}."
        names += [
            (p + "attn_norm.weight", (d,)), (p + "q_proj.weight", (d, d)), (p + "k_proj.weight", (d, d)),
            (p + "v_proj.weight", (d, d)), (p + "attn_out.weight", (d, d)), (p + "ff_norm.weight", (d,)),
            (p + "ff_proj.weight", (f, d)), (p + "up_proj.weight", (f, d)), (p + "ff_out.weight", (d, f)),
        ]
    names += [("model.transformer.ln_f.weight", (d,)), ("model.transformer.ff_out.weight", (v, d))]
    return sorted(names)


def test_mmada_8b_names_and_shapes_match_reference(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(MMADA_8B_CONFIG))
    config = MMadaConfig.from_pretrained(tmp_path)
    with torch.device("meta"):
        model = MMadaModelLM(config)
    got = sorted((n, tuple(p.shape)) for n, p in model.state_dict().items())
    assert got == reference_parameter_list()
    assert sum(p.numel() for p in model.parameters()) == 8_082_690_048
    assert VocabLayout.from_model_config(config) == VocabLayout.mmada_8b()


@pytest.mark.parametrize(
    "change, key",
    [({"weight_tying": True}, "weight_tying"), ({"block_type": "sequential"}, "block_type"),
     ({"alibi": True}, "alibi"), ({"n_heads": 31}, "n_heads"), ({"embedding_size": 1000}, "embedding_size")],
)
def test_contradictory_config_is_rejected_naming_the_key(tmp_path, change, key):
    (tmp_path / "config.json").write_text(json.dumps({**MMADA_8B_CONFIG, **change}))
    with pytest.raises(ConfigError, match=key):
        MMadaConfig.from_pretrained(tmp_path)


def test_missing_config_key_is_rejected(tmp_path):
    bad = dict(MMADA_8B_CONFIG)
    del bad["d_model"]
    (tmp_path / "config.json").write_text(json.dumps(bad))
    with pytest.raises(ConfigError, match="d_model"):
        MMadaConfig.from_pretrained(tmp_path)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return load_policy(build_tiny_policy(tmp_path_factory.mktemp("tiny"), seed=1))


def test_save_load_round_trip_bf16_sharded(tiny, tmp_path):
    model = tiny.model.to(torch.bfloat16)
    model.save_pretrained(tmp_path, max_shard_size="20KB")  # forces several safetensors shards
    tiny.tokenizer.save_pretrained(tmp_path)
    assert len(list(tmp_path.glob("*.safetensors"))) > 1
    again = load_policy(tmp_path, dtype="bfloat16")
    ids = torch.randint(0, tiny.layout.text_vocab_size, (2, 12))
    with torch.no_grad():
        assert torch.equal(model(ids).logits, again.model(ids).logits)
    tiny.model.to(torch.float32)


def test_attention_is_bidirectional(tiny):
    ids = torch.randint(0, tiny.layout.text_vocab_size, (1, 10))
    later = ids.clone()
    later[0, -1] = (later[0, -1] + 1) % tiny.layout.text_vocab_size
    with torch.no_grad():
        a, b = tiny.model(ids).logits, tiny.model(later).logits
    assert not torch.allclose(a[0, 0], b[0, 0])  # the first position sees the last token


def test_padding_mask_hides_pad_tokens(tiny):
    body = torch.randint(0, tiny.layout.text_vocab_size, (1, 6))
    pads_a = torch.full((1, 3), 5)
    pads_b = torch.full((1, 3), 7)
    mask = torch.tensor([[0, 0, 0, 1, 1, 1, 1, 1, 1]])
    with torch.no_grad():
        a = tiny.model(torch.cat([pads_a, body], 1), attention_mask=mask).logits[:, 3:]
        b = tiny.model(torch.cat([pads_b, body], 1), attention_mask=mask).logits[:, 3:]
        c = tiny.model(torch.cat([pads_b, body], 1)).logits[:, 3:]
    torch.testing.assert_close(a, b)  # what sits under the mask does not matter
    assert not torch.allclose(a, c)  # and without the mask it does


def test_logits_at_and_kv_cache_match_full_forward(tiny):
    ids = torch.randint(0, tiny.layout.text_vocab_size, (2, 9))
    with torch.no_grad():
        full = tiny.model(ids).logits
        where = torch.zeros_like(ids, dtype=torch.bool)
        where[:, [2, 7]] = True
        torch.testing.assert_close(tiny.model(ids, logits_at=where).logits, full[where])
        # Bidirectional: a prefix's K/V depend on the suffix, so the cache is cut from a full forward
        # (as the block sampler does); with the suffix unchanged the cached call is exact.
        cache = tiny.model(ids, use_cache=True).past_key_values
        prefix = [(k[:, :, :5], v[:, :, :5]) for k, v in cache]
        torch.testing.assert_close(tiny.model(ids[:, 5:], past_key_values=prefix).logits, full[:, 5:])


def test_vocab_layout_checks_tokenizer():
    tok = build_tiny_tokenizer()
    layout = VocabLayout.from_tokenizer(tok, codebook_size=64)
    layout.check_tokenizer(tok)
    assert layout.image_slice == slice(len(tok), len(tok) + 64)
    with pytest.raises(VocabLayoutError, match="mask"):
        VocabLayout(**{**layout.to_dict(), "mask_id": layout.eos_id}).check_tokenizer(tok)
    with pytest.raises(VocabLayoutError, match="exceed"):
        VocabLayout(**{**layout.to_dict(), "vocab_size": layout.vocab_size - 1})
    with pytest.raises(VocabLayoutError, match="text_vocab_size"):
        VocabLayout.mmada_8b().check_tokenizer(tok)


def test_prompt_layouts(tiny):
    tok, layout = tiny.tokenizer, tiny.layout
    chat = chat_prompt_ids(tok, layout, "What is 2+2?", think=True)
    assert chat[0] == layout.bos_id and chat.count(layout.bos_id) == 1
    text = tok.decode(chat)
    assert text.startswith("<|startoftext|><|start_header_id|>user<|end_header_id|>\nYou should first think")
    assert text.endswith("What is 2+2?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n")

    mmu = mmu_prompt_ids(tok, layout, [0, 5, 63], "Describe.")
    assert mmu[:5] == [layout.mmu_id, layout.soi_id, layout.image_offset, layout.image_offset + 5,
                       layout.image_offset + 63]
    assert mmu[5] == layout.eoi_id and mmu[6] == layout.bos_id
    with pytest.raises(ValueError):
        mmu_prompt_ids(tok, layout, [64], "x")

    ids, mask = t2i_prompt_ids(tok, layout, "a red cat", num_image_tokens=16, max_text_len=20)
    assert len(ids) == 20 + 1 + 16 + 1 and len(mask) == len(ids)
    k = 20 - (len("a red cat") + 3)
    assert ids[:k] == [layout.ipad_id] * k and mask[:k] == [0] * k and mask[k:] == [1] * (len(ids) - k)
    assert ids[k:k + 2] == [layout.t2i_id, layout.bos_id] and ids[19] == layout.eos_id
    assert ids[20] == layout.soi_id and ids[21:37] == [layout.mask_id] * 16 and ids[-1] == layout.eoi_id
    uncond, _ = t2i_uncond_prompt_ids(tok, layout, 16, 20)
    assert len(uncond) == len(ids)
    assert uncond[17:20] == [layout.t2i_id, layout.bos_id, layout.eos_id]

    batch, attn = left_pad([[1, 2, 3], [4]], pad_id=layout.pad_id)
    assert batch.tolist() == [[1, 2, 3], [layout.pad_id, layout.pad_id, 4]]
    assert attn.tolist() == [[1, 1, 1], [0, 0, 1]]
