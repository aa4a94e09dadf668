"""Recipe validation and the pieces of the data pipeline that resume depends on."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from probe_bank.errors import UserError
from trainer.config import PRESETS, TrainConfig, parse_override, resolve_config
from trainer.data import (
    IGNORE_INDEX,
    StageData,
    Text,
    batch_plan,
    draw_per_epoch,
    encode,
    read_extra_stage,
)
from trainer.loop import lr_factor
from trainer.tokenizer import train_tokenizer


def test_presets_are_valid_configs() -> None:
    for name in PRESETS:
        cfg = resolve_config(name)
        assert isinstance(cfg, TrainConfig)
    assert resolve_config("tiny", seed=7).seed == 7


def test_bad_preset_and_overrides() -> None:
    with pytest.raises(UserError, match="unknown preset"):
        resolve_config("huge")
    with pytest.raises(UserError, match="lr"):
        resolve_config("tiny", overrides={"lr": -1})
    with pytest.raises(UserError, match="no_such_knob"):
        resolve_config("tiny", overrides={"no_such_knob": 1})
    with pytest.raises(UserError, match="n_heads"):
        resolve_config("tiny", overrides={"d_model": 66})
    assert parse_override("lr=0.001") == ("lr", 0.001)
    assert parse_override("alias_style=natural") == ("alias_style", "natural")
    with pytest.raises(UserError):
        parse_override("lr")


def test_batch_plan_is_full_deterministic_and_covers_every_example() -> None:
    members = [list(range(10)), [*range(8), 10, 11]]
    plan = batch_plan(members, batch_size=4, seed="s")
    assert plan == batch_plan(members, batch_size=4, seed="s")
    assert plan != batch_plan(members, batch_size=4, seed="t")
    assert len(plan) == 6 and all(len(b) == 4 for b in plan)
    for epoch, batches in zip(members, (plan[:3], plan[3:]), strict=True):
        assert {i for b in batches for i in b} == set(epoch)


def test_per_epoch_draws_cycle_through_the_pool() -> None:
    pool = [Text(str(i)) for i in range(10)]
    draws = draw_per_epoch(pool, 4, 3, random.Random(0))
    assert [len(d) for d in draws] == [4, 4, 4]
    first_two = [t.text for d in draws[:2] for t in d]
    assert len(set(first_two)) == 8  # no repeats before the pool is used up
    assert draw_per_epoch(pool, 0, 2, random.Random(0)) == [[], []]
    data = StageData([Text("a"), Text("b")], [[Text("x")], [Text("y"), Text("z")]])
    assert data.epochs == 2
    assert [data.texts()[i].text for i in data.epoch_members()[1]] == ["a", "b", "y", "z"]


def test_lr_schedule() -> None:
    f = lr_factor("cosine", warmup=2, total=10)
    assert f(0) == 0.5 and f(1) == 1.0 and f(2) == pytest.approx(1.0)
    assert f(9) < 0.2
    assert lr_factor("constant", 0, 10)(9) == 1.0


def test_answer_only_loss_mask() -> None:
    tok = train_tokenizer(["Q: Who is it?\nA: a painter\n"] * 20, vocab_size=300)
    text = "Q: Who is it?\nA: a painter\n"
    prompt_chars = len("Q: Who is it?\nA:")
    (all_ex,) = encode(tok, [Text(text, prompt_chars)], block_size=64, loss_on="all")
    (ans_ex,) = encode(tok, [Text(text, prompt_chars)], block_size=64, loss_on="answer")
    assert all_ex.input_ids == ans_ex.input_ids
    assert all_ex.input_ids[0] == tok.bos_token_id and all_ex.input_ids[-1] == tok.eos_token_id
    kept = [
        t for t, lab in zip(ans_ex.input_ids, ans_ex.labels, strict=True) if lab != IGNORE_INDEX
    ]
    assert tok.decode(kept[:-1]) == " a painter\n"


def test_extra_stage_file(tmp_path: Path) -> None:
    good = tmp_path / "good.jsonl"
    good.write_text('{"text": "hello"}\n\n{"question": "Who is X?", "answer": "a poet"}\n')
    texts = read_extra_stage(good)
    assert [t.text for t in texts] == ["hello", "Q: Who is X?\nA: a poet\n"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"nope": 1}\n')
    with pytest.raises(UserError, match="bad.jsonl:2"):
        read_extra_stage(bad)
    with pytest.raises(UserError, match="not found"):
        read_extra_stage(tmp_path / "missing.jsonl")
