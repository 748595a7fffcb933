"""Multimodal data: the palette tokenizer, synthetic shapes, MMU/t2i files, mixtures, image rewards."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from policy.image_io import tensor_to_uint8
from policy.palette_tokenizer import NAMED_COLOURS, PaletteTokenizer, load_image_tokenizer
from rewards.api import RewardInput
from rewards.choice_reward import choice_reward
from rewards.examples.region_colour import region_colour
from rl.cli import main as cli_main
from rl.config import ConfigError, load_config
from rl.data import DataError, ImageEncoder, MixtureDataset, PromptDataset, build_dataset, load_prompt_files
from rl.tasks import shapes

MULTIMODAL = ["model.image_tokenizer=palette", "model.tiny.codebook_size=8",
              "data.mixture={text: 0.5, mmu: 0.25, t2i: 0.25}",
              "data.mmu={source: shapes, shapes_size: 16}", "data.t2i={source: shapes, shapes_size: 16}",
              "rollout.image.resolution=32"]


def test_palette_tokenizer_round_trips_palette_images(tmp_path):
    tok = PaletteTokenizer(patch=4)
    codes = torch.randint(0, tok.codebook_size, (3, 16), generator=torch.Generator().manual_seed(0))
    pixels = tok.decode(codes)
    assert pixels.shape == (3, 3, 16, 16) and pixels.min() >= -1 and pixels.max() <= 1
    assert torch.equal(tok.encode(pixels), codes)
    # a slightly noisy image still maps to the nearest colours
    assert torch.equal(tok.encode((pixels + 0.05 * torch.randn_like(pixels)).clamp(-1, 1)), codes)
    img = tensor_to_uint8(pixels)[0]
    assert tuple(img[0, 0]) == NAMED_COLOURS[list(NAMED_COLOURS)[int(codes[0, 0])]]
    loaded = load_image_tokenizer(tok.save_pretrained(tmp_path / "tok"))
    assert loaded.palette == tok.palette and loaded.downsample_factor == 4
    assert loaded.num_tokens(32) == 64
    with pytest.raises(ValueError, match="distinct"):
        PaletteTokenizer([(0, 0, 0), (0, 0, 0)])


def test_shapes_scenes_encode_exactly_and_answer_their_question():
    enc = ImageEncoder(load_image_tokenizer("palette"), 32)
    for row in shapes.mmu_rows(8, seed=1):
        grid = np.array(enc.encode(row["image"], "row")).reshape(4, 4)
        colour = shapes.COLOURS[int(row["answer"]) - 1]
        code = list(NAMED_COLOURS).index(colour)
        assert (grid == code).sum() == 4 and (grid == 0).sum() == 12  # one quadrant, black elsewhere
    t2i = shapes.t2i_rows(4)
    assert all(r["caption"].startswith("a ") and json.loads(r["answer"])["box"] for r in t2i)


def test_region_colour_reward_checks_pixels():
    row = {"caption": "a red square in the top left", "answer": shapes.region_gold("red", "top left")}
    tok = load_image_tokenizer("palette")
    enc = ImageEncoder(tok, 32)
    perfect = tensor_to_uint8(tok.decode(torch.tensor([enc.encode(shapes.render_scene("red", "top left"), "x")])))[0]
    inp = lambda img: RewardInput("t2i", row["caption"], "", row["answer"], image=img)  # noqa: E731
    assert region_colour(inp(perfect)).value == 1.0
    assert region_colour(inp(np.zeros((32, 32, 3), np.uint8))).value == 0.5  # background right, square missing
    wrong = tensor_to_uint8(tok.decode(torch.tensor([enc.encode(shapes.render_scene("blue", "top right"), "x")])))[0]
    assert region_colour(inp(wrong)).value == pytest.approx(1 / 3)  # 2 of 3 background quadrants, no square
    assert region_colour(inp(wrong), inside_weight=1.0).value == 0.0
    assert region_colour(inp(perfect), inside_weight=1.0).value == 1.0
    iou = lambda img: region_colour(inp(img), metric="iou").value  # noqa: E731
    assert iou(perfect) == 1.0 and iou(np.zeros((32, 32, 3), np.uint8)) == 0.0 and iou(wrong) == 0.0
    all_red = np.zeros((32, 32, 3), np.uint8) + np.array([255, 0, 0], np.uint8)
    assert iou(all_red) == 0.25  # the box is a quarter of what is red
    half = perfect.copy()
    half[:8] = 0  # the top half of the square left black
    assert iou(half) == 0.5
    assert region_colour(inp(perfect), metric="area").status == "error"
    assert region_colour(inp(None)).status == "unparsable"
    assert region_colour(RewardInput("t2i", "c", "", "not json", image=perfect)).status == "error"


def test_choice_reward():
    gold = RewardInput("mmu", "q", "it is 2.", "2")
    assert choice_reward(gold, choices=["1", "2", "3", "4"]).value == 1.0
    assert choice_reward(RewardInput("mmu", "q", "3 or 2", "2"), choices=["1", "2", "3", "4"]).value == 0.0
    assert choice_reward(RewardInput("mmu", "q", "xyz", "2"), choices=["1", "2"]).status == "unparsable"
    assert choice_reward(RewardInput("mmu", "q", " Red! ", "red")).value == 1.0  # exact match
    assert choice_reward(RewardInput("mmu", "q", "dark red", "red")).value == 0.0
    assert choice_reward(RewardInput("mmu", "q", "red", "red", metadata={"choices": ["red", "blue"]})).value == 1.0


def test_mmu_files_bytes_and_relative_paths_give_the_same_codes(tmp_path):
    files = shapes.write_shapes_files(tmp_path / "d", n=6)
    enc = ImageEncoder(load_image_tokenizer("palette"), 32)
    from_paths = load_prompt_files([str(files["mmu_jsonl"])], "mmu", images=enc, require_answer=True)
    encoded_once = enc.encoded
    from_bytes = load_prompt_files([str(files["mmu_parquet"])], "mmu", images=enc, require_answer=True)
    assert [p.image_codes for p in from_paths] == [p.image_codes for p in from_bytes]
    assert enc.encoded == encoded_once == len({p.image_codes for p in from_paths})  # content-hash cache
    assert all(p.task == "mmu" and p.kind == "mmu" and len(p.image_codes) == 16 for p in from_paths)
    t2i = load_prompt_files([str(files["t2i_jsonl"])], "t2i", question_field="caption")
    assert all(p.kind == "t2i" and p.image_codes is None and "square" in p.question for p in t2i)


def test_bad_mmu_rows_name_file_and_row(tmp_path):
    enc = ImageEncoder(load_image_tokenizer("palette"), 32)
    good = shapes.render_scene("red", "top left", size=32)
    (tmp_path / "ok.png").write_bytes(good)
    cases = {
        "unreadable": ({"question": "q", "answer": "1", "image": b"not a png"}, "row 2: unreadable image"),
        "missing": ({"question": "q", "answer": "1"}, "row 2: field 'image'"),
        "nofile": ({"question": "q", "answer": "1", "image": "nope.png"}, "row 2: field 'image': image file"),
        "noanswer": ({"question": "q", "image": "ok.png"}, "row 2: field 'answer'"),
    }
    for name, (row, message) in cases.items():
        path = tmp_path / f"{name}.parquet"
        first = {"question": "q", "answer": "1", "image": good}
        if isinstance(row.get("image"), str):
            path = tmp_path / f"{name}.jsonl"
            path.write_text(json.dumps({**first, "image": "ok.png"}) + "\n" + json.dumps(row) + "\n")
        else:
            pq.write_table(pa.Table.from_pylist([first, {"image": None, "answer": None, **row}]), path)
        with pytest.raises(DataError, match=f"{name}.*{message}"):
            load_prompt_files([str(path)], "mmu", images=enc, require_answer=True)
    big = tmp_path / "big.jsonl"
    (tmp_path / "big.png").write_bytes(shapes.render_scene("red", "top left", size=64))
    big.write_text(json.dumps({"question": "q", "answer": "1", "image": "big.png"}) + "\n")
    with pytest.raises(DataError, match="big.jsonl: row 1: image is 64x64, expected 32x32"):
        load_prompt_files([str(big)], "mmu", images=ImageEncoder(enc.tokenizer, 32, "none"),
                          require_answer=True)


def test_cli_rejects_bad_mmu_data_before_starting_anything(tmp_path, capsys):
    bad = tmp_path / "mmu.jsonl"
    bad.write_text(json.dumps({"question": "q", "answer": "1", "image": "missing.png"}) + "\n")
    overrides = [o for o in MULTIMODAL if not o.startswith("data.mmu")]
    code = cli_main(["train", *overrides, f"data.mmu={{files: [{bad}]}}", f"run.dir={tmp_path}/runs"])
    assert code == 2 and "mmu.jsonl: row 1" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_multimodal_config_errors_name_their_key(tmp_path):
    cfg = load_config(None, MULTIMODAL)
    assert cfg.data.kinds() == ["text", "mmu", "t2i"]
    for overrides, key in [
        (["model.image_tokenizer=null"], "model.image_tokenizer"),
        (["model.tiny.codebook_size=64"], "model.tiny.codebook_size"),
        (["data.t2i=null"], "data.t2i"),
        (["data.mmu={source: files}"], "files is empty"),
        (["rewards.functions=[{name: clip, tasks: [t2i]}]"], "rewards.clip_model_path"),
        (["rewards.functions=[{name: clip}]", f"rewards.clip_model_path={tmp_path}"], "rewards.clip_model_path"),
        (["model.warm_start={tasks: [t2i]}", "data.t2i.source=files", f"data.t2i.files=[{tmp_path}/t2i.jsonl]"],
         "model.warm_start.tasks"),  # a t2i warm-start set exists for the built-in shapes only
        (["model.warm_start={tasks: [video]}"], "model.warm_start.tasks"),
    ]:
        with pytest.raises(ConfigError, match=key):
            load_config(None, MULTIMODAL + overrides)


def test_mixture_quotas_and_per_task_cursors_resume():
    cfg = load_config(None, MULTIMODAL + ["data.prompts_per_step=7"])
    data = build_dataset(cfg.data, load_image_tokenizer("palette"), 32)
    assert isinstance(data, MixtureDataset) and data.quotas(7) == {"text": 3, "mmu": 2, "t2i": 2}  # 3.5, 1.75, 1.75
    assert data.quotas(8) == {"text": 4, "mmu": 2, "t2i": 2}
    batch = data.next_batch(7)
    assert [p.kind for p in batch] == ["text"] * 3 + ["mmu"] * 2 + ["t2i"] * 2
    assert all(len(p.image_codes) == 16 for p in batch if p.kind == "mmu")
    for _ in range(5):
        data.next_batch(7)
    state = json.loads(json.dumps(data.state_dict()))
    expected = [p.prompt_id for _ in range(6) for p in data.next_batch(7)]
    again = build_dataset(cfg.data, load_image_tokenizer("palette"), 32)
    again.load_state_dict(state)
    assert [p.prompt_id for _ in range(6) for p in again.next_batch(7)] == expected
    assert isinstance(build_dataset(load_config().data), PromptDataset)  # no mixture: text as before


def test_rewards_check_scores_t2i_dumps_with_an_image_reward(tmp_path, capsys):
    from rewards.cli import check_main

    tok = load_image_tokenizer("palette")
    enc = ImageEncoder(tok, 32)
    (tmp_path / "imgs").mkdir()
    lines = []
    for i, (colour, quadrant) in enumerate([("red", "top left"), ("blue", "bottom right")]):
        drawn = shapes.render_scene(colour if i == 0 else "green", quadrant, size=32)  # the 2nd is wrong
        codes = torch.tensor([enc.encode(drawn, "x")])
        from policy.image_io import png_bytes

        (tmp_path / "imgs" / f"{i}.png").write_bytes(png_bytes(tensor_to_uint8(tok.decode(codes))[0]))
        lines.append(json.dumps({"caption": shapes.caption(colour, quadrant), "image": f"imgs/{i}.png",
                                 "gold": shapes.region_gold(colour, quadrant)}))
    dump = tmp_path / "t2i_dump.jsonl"
    dump.write_text("\n".join(lines) + "\n")
    cfg = tmp_path / "rewards.yaml"
    cfg.write_text("rewards:\n  - {name: region, tasks: [t2i], path: 'rewards.examples.region_colour:region_colour'}\n")
    out = tmp_path / "scored.jsonl"
    assert check_main(["--input", str(dump), "--config", str(cfg), "--output", str(out)]) == 0
    recs = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["task"] for r in recs] == ["t2i", "t2i"]  # a caption + image line is a t2i task
    assert recs[0]["components"]["region"]["value"] == 1.0
    assert recs[1]["components"]["region"]["value"] == 0.5  # background right, square the wrong colour


def test_mmada_8b_unified_config_needs_its_paths_and_has_the_papers_weights(tmp_path):
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "configs" / "mmada_8b_unified.yaml"
    with pytest.raises(ConfigError, match="model.path|model.image_tokenizer|files is empty"):
        load_config(path)
    (tmp_path / "clip").mkdir()
    (tmp_path / "clip" / "config.json").write_text("{}")
    (tmp_path / "magvit").mkdir()
    files = shapes.write_shapes_files(tmp_path / "d", n=2)
    cfg = load_config(path, [f"model.path={tmp_path}", f"model.image_tokenizer={tmp_path}/magvit",
                             f"rewards.clip_model_path={tmp_path}/clip", f"data.files=[{files['t2i_jsonl']}]",
                             f"data.mmu.files=[{files['mmu_parquet']}]", f"data.t2i.files=[{files['t2i_jsonl']}]"])
    weights = {f.name: f.weight for f in cfg.rewards.functions}
    assert weights == {"math": 2.0, "format": 0.5, "clip": 0.1}
    assert cfg.rollout.image.resolution == 512 and 512 // 16 * (512 // 16) == 1024
    assert cfg.data.kinds() == ["text", "mmu", "t2i"]
