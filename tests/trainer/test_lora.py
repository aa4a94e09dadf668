"""LoRA as a training option: adapters on the block linears, merged into plain stage models."""

from __future__ import annotations

from pathlib import Path

import pytest


def test_lora_stages_are_plain_models_that_moved_only_the_adapted_layers(
    tiny_run: Path, tmp_path: Path
) -> None:
    from safetensors.torch import load_file

    from trainer.config import resolve_config
    from trainer.run import RunOptions, train_run

    cfg = resolve_config("tiny", overrides={"lora_rank": 4, "max_steps_per_stage": 3, "lr": 1e-2})
    out = tmp_path / "run"
    train_run(cfg, RunOptions(preset="tiny", out=out, base_model=tiny_run / "stage_0"))
    before = load_file(str(tiny_run / "stage_0" / "model.safetensors"))
    after = load_file(str(out / "stage_1" / "model.safetensors"))
    assert not any("lora" in k for k in after), "adapters must be merged, not saved"
    assert set(after) == set(before)
    moved = {k for k in before if not (before[k] == after[k]).all()}
    assert moved, "the stage trained nothing"
    frozen = {k for k in before if "embed" in k or "norm" in k}
    assert not moved & frozen
    assert all("_proj" in k for k in moved)  # only the adapted block linears moved
    assert (out / "stage_6" / "config.json").is_file()


def test_lora_rank_is_part_of_the_recipe() -> None:
    from trainer.config import resolve_config, resume_key

    plain = resolve_config("tiny").model_dump()
    lora = resolve_config("tiny", overrides={"lora_rank": 8}).model_dump()
    assert resume_key(plain) != resume_key(lora)
    with pytest.raises(Exception, match="lora_rank"):
        resolve_config("tiny", overrides={"lora_rank": 0})
