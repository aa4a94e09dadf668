"""`finetune_seed`: runs that share corpus, tokenizer and stage 0 but differ in finetuning order."""

from __future__ import annotations

import json
import shutil
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from trainer.config import TrainConfig, resolve_config
from trainer.corpus import build_corpus, load_corpus
from trainer.run import RunOptions, train_run
from trainer.stages import data_seed, plan_stages
from trainer.tokenizer import train_tokenizer

SMALL = {"max_steps_per_stage": 3, "retention_max_questions": 4}


def _cfg(finetune_seed: int | None) -> TrainConfig:
    return resolve_config("tiny", seed=0, overrides={**SMALL, "finetune_seed": finetune_seed})


def _weights(stage_dir: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(str(stage_dir / "model.safetensors"))


def _same(a: Path, b: Path) -> bool:
    import torch

    wa, wb = _weights(a), _weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Seed 0 with finetune_seed unset, 1 and 0 (= seed); a run resumed from a copied stage 0."""
    root = tmp_path_factory.mktemp("finetune_seed")
    out: dict[str, Path] = {}
    for name, fs in (("none", None), ("one", 1), ("zero", 0)):
        out[name] = root / name
        train_run(_cfg(fs), RunOptions(preset="tiny", out=out[name]))
    shared = root / "shared"
    shared.mkdir()
    for part in ("corpus", "tokenizer", "stage_0"):  # the documented way to share stage 0
        shutil.copytree(out["none"] / part, shared / part)
    train_run(_cfg(1), RunOptions(preset="tiny", out=shared))
    out["shared"] = shared
    return out


def test_stage0_and_corpus_shared_finetuning_differs(runs: dict[str, Path]) -> None:
    none, one = runs["none"], runs["one"]
    assert load_corpus(none / "corpus").manifest == load_corpus(one / "corpus").manifest
    assert (none / "tokenizer" / "tokenizer.json").read_bytes() == (
        one / "tokenizer" / "tokenizer.json"
    ).read_bytes()
    assert _same(none / "stage_0", one / "stage_0")
    assert not _same(none / "stage_1", one / "stage_1")
    assert not _same(none / "stage_6", one / "stage_6")


def test_unset_equals_seed(runs: dict[str, Path]) -> None:
    for stage in ("stage_0", "stage_1", "stage_6"):
        assert _same(runs["none"] / stage, runs["zero"] / stage), stage


def test_run_from_copied_stage0_equals_full_run(runs: dict[str, Path]) -> None:
    shared, one = runs["shared"], runs["one"]
    state = json.loads((shared / "run.json").read_text())
    assert state["stages_done"][0] == "stage_0" and state["final"] == "stage_6"
    assert "stage_0" not in state["timings"]  # copied, not trained
    assert state["hyperparams"]["finetune_seed"] == 1
    for stage in ("stage_1", "stage_6"):
        assert _same(shared / stage, one / stage), stage


def test_unset_field_keeps_run_json_identity(runs: dict[str, Path]) -> None:
    """Runs written before the field existed (no key in hyperparams) stay resumable."""
    hyper = json.loads((runs["none"] / "run.json").read_text())["hyperparams"]
    assert "finetune_seed" not in hyper
    assert TrainConfig(**hyper) == _cfg(None)
    assert "finetune_seed" in _cfg(1).model_dump()


def test_data_seed_per_stage() -> None:
    cfg = _cfg(7)
    assert data_seed(cfg, "stage_0") == 0
    assert {data_seed(cfg, s) for s in ("stage_1", "stage_6", "mixed", "extra_1")} == {7}
    assert data_seed(_cfg(None), "stage_3") == 0


def test_draws_follow_finetune_seed() -> None:
    cfg = resolve_config(
        "tiny",
        overrides={
            "replay_stage0_share": 0.5,
            "familiarity_entities": 16,
            "familiarity_share0": 0.5,
            "familiarity_share": 0.5,
        },
    )
    corpus, _ = build_corpus(
        cfg,
        from_scratch=True,
        train_tokenizer=partial(train_tokenizer, vocab_size=cfg.arch.vocab_size),
    )
    a = plan_stages(cfg, corpus, from_scratch=True, mixed_epochs=2)
    b = plan_stages(
        cfg.model_copy(update={"finetune_seed": 5}), corpus, from_scratch=True, mixed_epochs=2
    )
    assert a[0].name == "stage_0" and a[0].data.per_epoch == b[0].data.per_epoch
    for sa, sb in zip(a[1:], b[1:], strict=True):
        assert sa.data.fixed == sb.data.fixed
        assert sa.data.per_epoch != sb.data.per_epoch, sa.name
