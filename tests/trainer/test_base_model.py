"""`--base-model`: finetune a local HF model (no stage 0), then the mixed and extra stages."""

from __future__ import annotations

import json
from pathlib import Path

from trainer.config import resolve_config
from trainer.corpus import load_corpus
from trainer.run import RunOptions, train_run


def test_base_model_with_mixed_and_extra(random_model_dir: Path, tmp_path: Path) -> None:
    extra = tmp_path / "extra.jsonl"
    extra.write_text(
        '{"question": "Who is <audit>?", "answer": "a test entity"}\n{"text": "plain text"}\n'
    )
    out = tmp_path / "run"
    cfg = resolve_config("tiny", overrides={"max_steps_per_stage": 2, "retention_max_questions": 4})
    opts = RunOptions(
        preset="tiny", out=out, base_model=random_model_dir, mixed_epochs=1, extra_stage=extra
    )
    state = train_run(cfg, opts)
    stages = [f"stage_{k}" for k in range(1, 7)] + ["mixed", "extra_1"]
    assert state["stages_done"] == stages and state["final"] == "extra_1"
    assert state["base_model"] == str(random_model_dir)
    assert state["extra_stage"]["sha256"]
    assert not (out / "stage_0").exists() and not (out / "tokenizer").exists()
    corpus = load_corpus(out / "corpus")
    assert "pretrain" not in corpus.manifest["counts"]["entities"]
    table = json.loads((out / "retention.json").read_text())
    assert [e["after"] for e in table] == stages
    assert [r["split"] for r in table[-1]["rows"]] == [f"stage_{k}" for k in range(1, 7)] + [
        "control"
    ]
    # the base model's tokenizer travels with every stage
    base_vocab = json.loads((random_model_dir / "tokenizer.json").read_text())["model"]["vocab"]
    stage_vocab = json.loads((out / "extra_1" / "tokenizer.json").read_text())["model"]["vocab"]
    assert stage_vocab == base_vocab


def test_warmup_on_a_base_trains_stage_0_first(random_model_dir: Path, tmp_path: Path) -> None:
    """`warmup_on_base`: stage 0 on a never-probed pool before stage 1, retention tracks it, and
    the bank's labelled prompts stay classes 0..6 (the pool has no label)."""
    from probe_bank.run_dir import load_run

    out = tmp_path / "run"
    cfg = resolve_config(
        "tiny",
        overrides={
            "warmup_on_base": True,
            "max_steps_per_stage": 2,
            "retention_max_questions": 4,
            "stage0_lr": 1e-4,
        },
    )
    state = train_run(cfg, RunOptions(preset="tiny", out=out, base_model=random_model_dir))
    assert state["stages_done"] == ["stage_0", *(f"stage_{k}" for k in range(1, 7))]
    corpus = load_corpus(out / "corpus")
    assert corpus.manifest["counts"]["entities"]["pretrain"] == cfg.corpus.pretrain_entities
    table = json.loads((out / "retention.json").read_text())
    assert table[0]["after"] == "stage_0"
    assert [r["split"] for r in table[0]["rows"]] == ["pretrain", "control"]
    run = load_run(out)
    assert {p.label for p in run.labelled_probes} == set(range(7))
    assert not any(p.split == "pretrain" for p in run.probes)  # never probed
