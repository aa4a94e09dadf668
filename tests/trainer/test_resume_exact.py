"""Resuming from a mid-stage checkpoint reproduces the uninterrupted run bit for bit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from trainer.checkpoint import MidStageCheckpoint
from trainer.config import resolve_config
from trainer.run import RunOptions, train_run


class _Crash(Exception):
    pass


def _weights(stage_dir: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(str(stage_dir / "model.safetensors"))


def test_resumed_run_equals_uninterrupted_run(
    random_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    cfg = resolve_config(
        "tiny",
        overrides={"max_steps_per_stage": 6, "checkpoint_every": 2, "retention_max_questions": 4},
    )
    straight = tmp_path / "straight"
    train_run(cfg, RunOptions(preset="tiny", out=straight, base_model=random_model_dir))

    crashed = tmp_path / "crashed"
    real_save = MidStageCheckpoint.save

    def save_then_crash(self: MidStageCheckpoint, *args: Any) -> None:
        real_save(self, *args)
        if self.root.name == "stage_3" and args[-1]["step"] == 4:
            raise _Crash

    monkeypatch.setattr(MidStageCheckpoint, "save", save_then_crash)
    with pytest.raises(_Crash):
        train_run(cfg, RunOptions(preset="tiny", out=crashed, base_model=random_model_dir))
    monkeypatch.undo()
    assert (crashed / "stage_2").is_dir() and not (crashed / "stage_3").exists()

    state = train_run(cfg, RunOptions(preset="tiny", out=crashed, base_model=random_model_dir))
    assert state["timings"]["stage_3"]["resumed_from_step"] == 4
    for stage in ("stage_3", "stage_6"):
        a, b = _weights(straight / stage), _weights(crashed / stage)
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), stage
