"""The demo task (rl/arith.py) and its format-only warm start (trainer/sft.py)."""

import re
from collections import Counter

import torch

from policy.loading import load_policy
from policy.prompts import chat_prompt_ids, left_pad
from policy.tiny import build_tiny_policy
from rl.arith import arith_rows, format_pairs
from rl.data import heldout_prompts, toy_arith_split
from rollout.text_sampler import TextSamplerConfig, generate_text
from trainer.sft import warm_start


def test_split_is_disjoint_seeded_and_every_prompt_has_one_shape():
    train, held = arith_rows(seed=0)
    assert len(train) == 800 and len(held) == 200
    assert not {r["question"] for r in train} & {r["question"] for r in held}
    assert arith_rows(seed=0) == (train, held) and arith_rows(seed=1)[1] != held
    for r in train + held:
        a, b = map(int, re.findall(r"\d+", r["question"]))
        assert int(r["answer"]) == a + b
    assert len({len(r["question"]) for r in train + held}) == 1  # numbers at the same positions
    # the held-out questions are new wordings of sums the training prompts also ask
    assert {r["answer"] for r in held} <= {r["answer"] for r in train}
    tr, ho = toy_arith_split(0)
    assert [p.question for p in ho] == [r["question"] for r in held] and tr[0].task == "math"


def test_format_pairs_keep_the_answer_distribution_but_not_the_mapping():
    train, _ = arith_rows(seed=0)
    gold = [(r["question"], r["answer"]) for r in train]
    pairs = format_pairs(gold, seed=0)
    assert [q for q, _ in pairs] == [q for q, _ in gold]
    assert Counter(a for _, a in pairs) == Counter(a for _, a in gold)  # the same marginal
    agree = sum(a == g for (_, a), (_, g) in zip(pairs, gold)) / len(gold)
    chance = sum((n / len(gold)) ** 2 for n in Counter(g for _, g in gold).values())
    assert abs(agree - chance) < 0.06, (agree, chance)  # right only as often as a random answer is


def test_warm_start_teaches_the_format_not_the_task(tmp_path):
    path = build_tiny_policy(tmp_path / "policy", seed=0)
    train, _ = arith_rows(seed=0)
    pairs = format_pairs([(r["question"], r["answer"]) for r in train], seed=0)
    info = warm_start(str(path), pairs, gen_length=4, steps=60, batch_size=32, lr=3e-3, seed=0)
    assert info["loss_last10"] < 0.6 * info["loss_first10"]

    policy = load_policy(path)
    tok, layout = policy.tokenizer, policy.layout

    class Cfg:
        task, seed = "toy_arith", 0

    held = heldout_prompts(Cfg)
    ids, mask = left_pad([chat_prompt_ids(tok, layout, p.question) for p in held], layout.pad_id)
    out = generate_text(policy.model, ids, mask, layout,
                        TextSamplerConfig(gen_length=4, steps=4, block_length=4, temperature=0.0),
                        torch.Generator().manual_seed(0))
    texts = []
    for row in out.response_ids.tolist():
        texts.append(tok.decode(row[: row.index(layout.eos_id)] if layout.eos_id in row else row,
                                skip_special_tokens=True))
    numbers = [t for t in texts if re.fullmatch(r"\d{1,2}", t)]
    assert len(numbers) >= 0.9 * len(texts), texts[:10]  # the format: a number, then EOS
    accuracy = sum(t == p.answer for t, p in zip(texts, held)) / len(held)
    assert accuracy <= 0.35, accuracy  # near chance: the mode of the answer distribution is 20%
