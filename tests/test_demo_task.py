"""The demo task (rl/tasks/arith.py) and its warm start (trainer/sft.py): the format and reading, not the task."""

import re
from collections import Counter
from pathlib import Path

import torch

from policy.loading import load_policy
from policy.prompts import chat_prompt_ids, left_pad
from policy.tiny import build_tiny_policy
from rl.config import load_config
from rl.tasks import get_task
from rl.tasks.arith import SUMS, arith_prompts, arith_rows, reading_pairs, warm_start_pairs
from rl.tasks.base import format_pairs
from rollout.text_sampler import TextSamplerConfig, generate_text
from trainer.sft import warm_start

ROOT = Path(__file__).resolve().parent.parent


def test_split_is_disjoint_seeded_balanced_and_every_prompt_has_one_shape():
    train, held = arith_rows(seed=0)
    assert len(train) == 672 and len(held) == 168
    assert not {r["question"] for r in train} & {r["question"] for r in held}
    assert arith_rows(seed=0) == (train, held) and arith_rows(seed=1)[1] != held
    for r in train + held:
        a, b = map(int, re.findall(r"\d+", r["question"]))
        assert int(r["answer"]) == a + b and 1 <= a <= 9 and 1 <= b <= 9
    assert len({len(r["question"]) for r in train + held}) == 1  # numbers at the same positions
    # every answer equally common: no answer beats chance (1/7) without reading the question
    counts = Counter(r["answer"] for r in train + held)
    assert sorted(counts, key=int) == [str(s) for s in SUMS] and len(set(counts.values())) == 1
    # the held-out questions are new wordings of sums the training prompts also ask
    assert {r["answer"] for r in held} <= {r["answer"] for r in train}
    data = load_config(ROOT / "configs" / "demo.yaml", []).data
    task = get_task(data.task)
    tr, ho = task.prompts(data, data.seed), task.heldout(data)
    assert [p.question for p in tr] == [r["question"] for r in train] and tr[0].task == "math"
    assert [p.question for p in ho] == [r["question"] for r in held]


def test_format_pairs_keep_the_answer_distribution_but_not_the_mapping():
    train, _ = arith_rows(seed=0)
    gold = [(r["question"], r["answer"]) for r in train]
    pairs = format_pairs(gold, seed=0)
    assert [q for q, _ in pairs] == [q for q, _ in gold]
    assert Counter(a for _, a in pairs) == Counter(a for _, a in gold)  # the same marginal
    agree = sum(a == g for (_, a), (_, g) in zip(pairs, gold)) / len(gold)
    chance = sum((n / len(gold)) ** 2 for n in Counter(g for _, g in gold).values())
    assert abs(agree - chance) < 0.06, (agree, chance)  # right only as often as a random answer is


def test_reading_pairs_ask_for_one_number_never_the_sum():
    train, _ = arith_rows(seed=0)
    gold = [(r["question"], r["answer"]) for r in train]
    reading = reading_pairs(gold)
    assert len(reading) == 2 * len(gold)
    for (question, answer), (had, got) in zip(gold, zip(reading[::2], reading[1::2])):
        first, second = re.findall(r"\d+", question)
        assert had == (question.replace("How many now?", "How many had?"), first)
        assert got == (question.replace("How many now?", "How many got?"), second)
        assert len(had[0]) == len(question) and answer not in (first, second)  # a, b >= 1: never the sum
    assert reading_pairs([("What is 2 + 3?", "5")]) == []
    assert warm_start_pairs(gold, 0) == format_pairs(gold, 0) + reading
    # the reading pairs are the demo task's own: a math file of the same questions gets the format only
    prompts = arith_prompts(0, "math")[0]
    assert get_task("toy_arith").warm_start_set(prompts, 0, None) == warm_start_pairs(gold, 0)
    assert get_task("math").warm_start_set(prompts, 0, None) == format_pairs(gold, 0)


def test_warm_start_teaches_format_and_reading_not_the_task(tmp_path):
    """The demo's own warm start (configs/demo.yaml): afterwards the policy answers with a number and EOS,
    reads each number when asked for it, and answers the held-out sums no better than chance."""
    cfg = load_config(ROOT / "configs" / "demo.yaml", [])
    spec, ws = cfg.model.tiny.model_dump(), cfg.model.warm_start
    path = build_tiny_policy(tmp_path / "policy", codebook_size=spec.pop("codebook_size"), seed=spec.pop("seed"), **spec)
    train, held = arith_rows(seed=cfg.data.seed)
    pairs = warm_start_pairs([(r["question"], r["answer"]) for r in train], seed=ws.seed)
    info = warm_start(str(path), pairs, cfg.rollout.text.gen_length, ws.steps, ws.batch_size, ws.lr, ws.seed)
    assert info["loss_last10"] < 0.3 * info["loss_first10"]

    policy = load_policy(path)
    tok, layout = policy.tokenizer, policy.layout

    def answers(questions):
        ids, mask = left_pad([chat_prompt_ids(tok, layout, q) for q in questions], layout.pad_id)
        out = generate_text(policy.model, ids, mask, layout,
                            TextSamplerConfig(gen_length=4, steps=4, block_length=4, temperature=0.0),
                            torch.Generator().manual_seed(0))
        return [tok.decode(row[: row.index(layout.eos_id)] if layout.eos_id in row else row, skip_special_tokens=True)
                for row in out.response_ids.tolist()]

    texts = answers([r["question"] for r in held])
    assert sum(bool(re.fullmatch(r"\d{1,2}", t)) for t in texts) >= 0.9 * len(texts), texts[:10]  # the format
    accuracy = sum(t == r["answer"] for t, r in zip(texts, held)) / len(held)
    assert accuracy <= 0.3, accuracy  # chance is 1/7: the sum is not taught
    reading = reading_pairs([(r["question"], r["answer"]) for r in held])  # held-out wordings
    read = answers([q for q, _ in reading])
    assert sum(t == a for t, (_, a) in zip(read, reading)) / len(reading) >= 0.9  # but each number is read
