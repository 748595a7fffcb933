"""MAGVIT-v2 tokenizer and image I/O: shapes, code order, checkpoint round trips, real-model layout."""

from __future__ import annotations

import io
import json
import re

import numpy as np
import pytest
import torch
from PIL import Image

from policy.image_io import (
    codes_grid_png,
    codes_palette,
    image_to_tensor,
    load_image,
    png_bytes,
    tensor_to_uint8,
)
from policy.image_tokenizer import ImageTokenizer
from policy.magvit2 import AttnBlock, CheckpointError, LFQuantizer, MAGVITv2, MAGVITv2Config


@pytest.fixture(scope="module")
def tiny() -> MAGVITv2:
    torch.manual_seed(0)
    return MAGVITv2(MAGVITv2Config.tiny()).eval()


@pytest.fixture(scope="module")
def real_meta() -> MAGVITv2:
    # The real-size model without allocating its 382 MB: shapes and names only.
    with torch.device("meta"):
        return MAGVITv2()


def _pixels(b: int = 2, h: int = 64, w: int = 64, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, h, w, generator=g) * 2 - 1


# ---------------------------------------------------------------------------------------------- tiny


def test_tiny_encode_decode_shapes(tiny):
    assert isinstance(tiny, ImageTokenizer)
    assert tiny.codebook_size == 64 and tiny.downsample_factor == 16
    codes = tiny.encode(_pixels())
    assert codes.shape == (2, tiny.num_tokens(64)) == (2, 16)
    assert codes.dtype == torch.long
    assert 0 <= int(codes.min()) and int(codes.max()) < 64
    pixels = tiny.decode(codes)
    assert pixels.shape == (2, 3, 64, 64) and pixels.dtype == torch.float32
    assert float(pixels.abs().max()) <= 1.0
    assert not pixels.requires_grad


def test_non_square_needs_grid(tiny):
    codes = tiny.encode(_pixels(1, 64, 32))
    assert codes.shape == (1, 8)
    with pytest.raises(ValueError, match="square"):
        tiny.decode(codes)
    assert tiny.decode(codes, grid_hw=(4, 2)).shape == (1, 3, 64, 32)


def test_input_validation(tiny):
    with pytest.raises(ValueError, match="multiple of 16"):
        tiny.encode(_pixels(1, 40, 40))
    with pytest.raises(ValueError, match=r"\[0, 64\)"):
        tiny.decode(torch.tensor([[0, 1, 2, 64]]))
    with pytest.raises(ValueError, match=r"\[0, 64\)"):
        tiny.decode(torch.tensor([[0, 1, 2, -1]]))
    with pytest.raises(ValueError, match="multiple"):
        tiny.num_tokens(100)


# ---------------------------------------------------------------------------------------- code order


def test_code_is_msb_first():
    q = LFQuantizer(6)
    code = 0b101101  # 45: channels 0, 2, 3, 5 positive
    z = torch.full((1, 6, 1, 1), -0.3)
    for k in range(6):
        if code >> (5 - k) & 1:
            z[0, k] = 0.7
    assert q.indices(z).tolist() == [[code]]
    assert q.indices(torch.zeros(1, 6, 1, 1)).tolist() == [[0]]  # z == 0 counts as a 0 bit (-1)
    assert q.power_vals.tolist() == [32, 16, 8, 4, 2, 1]


def test_codes_are_row_major():
    q = LFQuantizer(6)
    z = -torch.ones(1, 6, 2, 3)
    z[0, 5, 0, 2] = 1  # code 1 at row 0, column 2
    z[0, 0, 1, 0] = 1  # code 32 at row 1, column 0
    assert q.indices(z).tolist() == [[0, 0, 1, 32, 0, 0]]
    assert torch.equal(q.lookup(q.indices(z), (2, 3)), z)


def test_embedding_rows_decode_to_their_index():
    q = LFQuantizer(6)
    assert q.embedding.shape == (64, 6)
    assert set(q.embedding.unique().tolist()) == {-1.0, 1.0}
    latents = q.embedding.T.reshape(1, 6, 8, 8)  # row k of the codebook at grid position k
    assert torch.equal(q.indices(latents), torch.arange(64).view(1, 64))
    # Quantising any latent equals looking up its code: the buffer uses the same bit order.
    z = torch.randn(2, 6, 3, 3)
    assert torch.equal(q.lookup(q.indices(z), (3, 3)), q.quantise(z))


def test_encode_is_quantised_encoder_output(tiny):
    x = _pixels(1)
    with torch.no_grad():
        z = tiny.encoder(x)
    assert torch.equal(tiny.encode(x), tiny.quantize.indices(z))


def test_attention_matches_taming_formula():
    # AttnBlock uses SDPA; check it against the explicit softmax(q k^T / sqrt(c)) v of taming/Show-o.
    torch.manual_seed(0)
    attn = AttnBlock(8, MAGVITv2Config.tiny())
    x = torch.randn(2, 8, 3, 5)
    h = attn.norm(x)
    q, k, v = (t.flatten(2) for t in (attn.q(h), attn.k(h), attn.v(h)))  # [B, C, HW]
    w = torch.softmax(torch.bmm(q.transpose(1, 2), k) * 8**-0.5, dim=2)  # [B, HW_q, HW_k]
    ref = x + attn.proj_out(torch.bmm(v, w.transpose(1, 2)).view_as(x))
    torch.testing.assert_close(attn(x), ref)


# ------------------------------------------------------------------------------------------- files


def test_save_load_round_trip(tiny, tmp_path):
    tiny.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["codebook_bits"] == 6
    loaded = MAGVITv2.from_pretrained(tmp_path)
    assert not loaded.training
    x = _pixels()
    codes = tiny.encode(x)
    assert torch.equal(loaded.encode(x), codes)
    assert torch.equal(loaded.decode(codes), tiny.decode(codes))


def test_load_bin_without_lfq_buffers(tiny, tmp_path):
    state = {k: v for k, v in tiny.state_dict().items() if not k.startswith("quantize.")}
    torch.save(state, tmp_path / "pytorch_model.bin")
    tiny.config.to_json_file(tmp_path / "config.json")
    loaded = MAGVITv2.from_pretrained(tmp_path)
    assert torch.equal(loaded.quantize.embedding, tiny.quantize.embedding)
    assert loaded.quantize.power_vals.dtype == torch.long
    codes = tiny.encode(_pixels(1))
    assert torch.equal(loaded.decode(codes), tiny.decode(codes))


def test_checkpoint_key_errors_name_the_key(tiny):
    state = dict(tiny.state_dict())
    fresh = MAGVITv2(MAGVITv2Config.tiny())

    broken = dict(state)
    del broken["decoder.up.3.block.0.nin_shortcut.bias"]
    broken["encoder.down.0.block.0.nin_shortcut.weight"] = torch.zeros(8, 8, 1, 1)
    with pytest.raises(CheckpointError) as err:
        fresh.load_checked_state_dict(broken)
    msg = str(err.value)
    assert "missing keys ['decoder.up.3.block.0.nin_shortcut.bias']" in msg
    assert "unexpected keys ['encoder.down.0.block.0.nin_shortcut.weight']" in msg

    broken = dict(state, **{"encoder.conv_out.weight": torch.zeros(5, 32, 3, 3)})
    with pytest.raises(CheckpointError, match=r"encoder\.conv_out\.weight: checkpoint \(5, 32, 3, 3\)"):
        fresh.load_checked_state_dict(broken)

    # A stored codebook in another bit order would scramble every token: refused, not honoured.
    broken = dict(state, **{"quantize.embedding": state["quantize.embedding"].flip(1)})
    with pytest.raises(CheckpointError, match="quantize.embedding"):
        fresh.load_checked_state_dict(broken)


def test_missing_weights_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="pytorch_model.safetensors"):
        MAGVITv2.from_pretrained(tmp_path)


# ------------------------------------------------------------------------------------------ config


def test_config_json():
    assert MAGVITv2Config.from_dict({}) == MAGVITv2Config()
    # showlab/magvitv2's config.json holds only diffusers metadata.
    meta = {"_class_name": "MAGVITv2", "_diffusers_version": "0.30.0"}
    assert MAGVITv2Config.from_dict(meta) == MAGVITv2Config()
    assert MAGVITv2Config.from_dict({"z_channels": 13}).codebook_bits == 13
    with pytest.raises(ValueError, match="contradicts"):
        MAGVITv2Config.from_dict({"z_channels": 12, "codebook_bits": 13})
    with pytest.raises(ValueError, match=r"unknown MAGVIT-v2 keys \['ch_mul'\]"):
        MAGVITv2Config.from_dict({"ch_mul": [1, 2]})
    with pytest.raises(ValueError, match="num_groups"):
        MAGVITv2Config(ch=8)
    tiny = MAGVITv2Config.tiny()
    assert MAGVITv2Config.from_dict(json.loads(json.dumps(tiny.to_dict()))) == tiny


# ---------------------------------------------------------------------------------- real-size layout


KEY_PATTERN = re.compile(
    r"^(?:"
    r"encoder\.(?:conv_in|norm_out|conv_out|quant_conv)"
    r"|encoder\.down\.\d\.block\.\d\.(?:norm1|conv1|norm2|conv2|nin_shortcut)"
    r"|encoder\.down\.\d\.downsample\.conv"
    r"|(?:en|de)coder\.mid\.(?:block_[12]\.(?:norm1|conv1|norm2|conv2)|attn_1\.(?:norm|q|k|v|proj_out))"
    r"|decoder\.(?:post_quant_conv|conv_in|norm_out|conv_out)"
    r"|decoder\.up\.\d\.block\.\d\.(?:norm1|conv1|norm2|conv2|nin_shortcut)"
    r"|decoder\.up\.\d\.upsample\.conv"
    r")\.(?:weight|bias)$"
    r"|^quantize\.(?:embedding|power_vals)$"
)


def test_real_config_parameter_names(real_meta):
    state = real_meta.state_dict()
    assert [k for k in state if not KEY_PATTERN.match(k)] == []
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    assert shapes["encoder.conv_in.weight"] == (128, 3, 3, 3)
    assert shapes["encoder.down.4.block.3.conv2.weight"] == (512, 512, 3, 3)
    assert shapes["encoder.mid.attn_1.q.weight"] == (512, 512, 1, 1)
    assert shapes["encoder.conv_out.weight"] == (13, 512, 3, 3)
    assert shapes["encoder.quant_conv.weight"] == (13, 13, 1, 1)
    assert shapes["decoder.post_quant_conv.weight"] == (13, 13, 1, 1)
    assert shapes["decoder.conv_in.weight"] == (512, 13, 3, 3)
    assert shapes["decoder.up.0.block.3.conv1.weight"] == (128, 128, 3, 3)
    assert shapes["decoder.conv_out.weight"] == (3, 128, 3, 3)
    assert shapes["quantize.embedding"] == (8192, 13)
    assert shapes["quantize.power_vals"] == (13,)
    nin = {k.rsplit(".", 1)[0]: shapes[k] for k in shapes if k.endswith("nin_shortcut.weight")}
    assert nin == {
        "encoder.down.1.block.0.nin_shortcut": (256, 128, 1, 1),
        "encoder.down.3.block.0.nin_shortcut": (512, 256, 1, 1),
        "decoder.up.1.block.0.nin_shortcut": (128, 256, 1, 1),
        "decoder.up.3.block.0.nin_shortcut": (256, 512, 1, 1),
    }
    # Res-block counts per level, resamplers after every level but the last/first.
    blocks = lambda side, lvl: len({k.split(".")[4] for k in shapes if k.startswith(f"{side}.{lvl}.block.")})  # noqa: E731
    assert [blocks("encoder.down", i) for i in range(5)] == [4, 3, 4, 3, 4]
    assert [blocks("decoder.up", i) for i in range(5)] == [4, 4, 3, 4, 3]
    assert sorted(k for k in shapes if "sample.conv.weight" in k) == [
        *(f"decoder.up.{i}.upsample.conv.weight" for i in range(1, 5)),
        *(f"encoder.down.{i}.downsample.conv.weight" for i in range(4)),
    ]
    # The HF checkpoint is 382 MB of float32.
    n_params = sum(p.numel() for p in real_meta.parameters())
    assert 380e6 < 4 * n_params < 383e6


def test_512px_gives_1024_tokens(real_meta, tiny):
    assert real_meta.codebook_size == 8192 and real_meta.downsample_factor == 16
    assert real_meta.num_tokens(512) == 1024 and real_meta.num_tokens(256) == 256
    z = real_meta.encoder(torch.empty(1, 3, 512, 512, device="meta"))  # shape-only forward
    assert z.shape == (1, 13, 32, 32)
    assert real_meta.decoder(z).shape == (1, 3, 512, 512)
    # Same topology at toy width, actually computed.
    assert tiny.encode(_pixels(1, 512, 512)).shape == (1, 1024)


# ---------------------------------------------------------------------------------------- image I/O


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def test_load_image_bytes_and_path(tmp_path):
    rgba = np.random.default_rng(0).integers(0, 256, (5, 7, 4), dtype=np.uint8)
    data = _png(rgba)
    (tmp_path / "a.png").write_bytes(data)
    for src in (data, tmp_path / "a.png", str(tmp_path / "a.png")):
        im = load_image(src)
        assert im.mode == "RGB" and im.size == (7, 5)
        assert np.array_equal(np.asarray(im), rgba[..., :3])


def test_image_round_trip_exact():
    arr = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    t = image_to_tensor(Image.fromarray(arr), 32)
    assert t.shape == (3, 32, 32) and t.dtype == torch.float32
    assert float(t.min()) >= -1 and float(t.max()) <= 1
    assert np.array_equal(tensor_to_uint8(t), arr)
    assert tensor_to_uint8(t[None]).shape == (1, 32, 32, 3)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png_bytes(arr)))), arr)


def test_tensor_to_uint8_clamps():
    t = torch.tensor([-3.0, -1.0, 0.0, 1.0, 5.0]).view(1, 1, 5).expand(3, 1, 5)
    assert tensor_to_uint8(t)[0, :, 0].tolist() == [0, 0, 128, 255, 255]


def test_center_crop_matches_torchvision_rules():
    arr = np.random.default_rng(2).integers(0, 256, (32, 70, 3), dtype=np.uint8)
    # Shorter side already 32: no resize; crop offset round(38 / 2) = 19.
    t = image_to_tensor(Image.fromarray(arr), 32)
    assert np.array_equal(tensor_to_uint8(t), arr[:, 19:51])
    # Odd margin: round(5 / 2) = 2 (half to even), as torchvision's CenterCrop.
    t = image_to_tensor(Image.fromarray(arr[:, :37]), 32)
    assert np.array_equal(tensor_to_uint8(t), arr[:, 2:34])
    # Resize the shorter side: 100 x 50 -> 64 x 32 (portrait), then the central 32 x 32.
    tall = Image.fromarray(np.full((100, 50, 3), 200, dtype=np.uint8))
    t = image_to_tensor(tall, 32)
    assert t.shape == (3, 32, 32)
    assert torch.allclose(t, torch.full_like(t, 200 / 255 * 2 - 1), atol=1e-6)


def test_squash_keeps_whole_image():
    arr = np.zeros((20, 40, 3), dtype=np.uint8)
    arr[:, :20] = 255  # left half white
    t = image_to_tensor(Image.fromarray(arr), 16, mode="squash")
    assert t.shape == (3, 16, 16)
    out = tensor_to_uint8(t)
    assert out[:, :6].min() > 200 and out[:, 10:].max() < 50
    with pytest.raises(ValueError, match="mode"):
        image_to_tensor(Image.fromarray(arr), 16, mode="pad")


def test_codes_grid_png():
    codes = torch.tensor([[0, 8191, 4096, 8191]])
    png = codes_grid_png(codes, (2, 2), 8192, cell=4)
    grid = np.asarray(Image.open(io.BytesIO(png)))
    assert grid.shape == (8, 8, 3)
    assert grid[0, 0].tolist() == [0, 0, 0] and grid[0, 4].tolist() == [255, 255, 255]
    assert np.array_equal(grid[0, 4], grid[4, 4])  # equal codes, equal colours
    assert grid[4, 0].tolist() == [round(16 * 255 / 31), 0, 0]  # 4096 = MSB: red
    assert codes_palette(np.arange(64), 64).shape == (64, 3)
    with pytest.raises(ValueError, match="fill"):
        codes_grid_png(codes, (3, 3), 8192)
    with pytest.raises(ValueError, match="lie in"):
        codes_grid_png(torch.tensor([8192]), (1, 1), 8192)
