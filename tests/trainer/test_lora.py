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


def test_a_lora_stage_keeps_its_adapter_which_merges_to_the_stage(
    tiny_run: Path, tmp_path: Path
) -> None:
    """STAGE/adapter is the stage's LoRA adapter in PEFT's format, trained on the stage before:
    PEFT merging it onto that stage gives the stage's own weights."""
    import json

    import torch
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from trainer.checkpoint import ADAPTER_DIR
    from trainer.config import resolve_config
    from trainer.run import RunOptions, train_run

    cfg = resolve_config("tiny", overrides={"lora_rank": 4, "max_steps_per_stage": 2, "lr": 1e-2})
    out = tmp_path / "run"
    train_run(cfg, RunOptions(preset="tiny", out=out, base_model=tiny_run / "stage_0"))
    adapter = out / "stage_2" / ADAPTER_DIR
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 4
    assert Path(config["base_model_name_or_path"]).resolve() == (out / "stage_1").resolve()
    base = AutoModelForCausalLM.from_pretrained(out / "stage_1")
    merged = PeftModel.from_pretrained(base, str(adapter)).merge_and_unload().state_dict()
    stage = load_file(str(out / "stage_2" / "model.safetensors"))
    for k, v in stage.items():
        torch.testing.assert_close(merged[k], v, rtol=0, atol=1e-6)


def test_lora_rank_is_part_of_the_recipe() -> None:
    from trainer.config import resolve_config, resume_key

    plain = resolve_config("tiny").model_dump()
    lora = resolve_config("tiny", overrides={"lora_rank": 8}).model_dump()
    assert resume_key(plain) != resume_key(lora)
    with pytest.raises(Exception, match="lora_rank"):
        resolve_config("tiny", overrides={"lora_rank": 0})


def test_an_extra_stage_trained_as_a_lora_adapter(tiny_run: Path, tmp_path: Path) -> None:
    """A LoRA finetune kind (`train --extra-lora-rank R [--extra-lr-scale K]`): the run's
    stages untouched, only the extra stage trained as an adapter on the run's last stage,
    recorded in run.json (a rerun at another rank or learning rate is refused, not resumed)."""
    import json

    from probe_bank.errors import UserError
    from probe_bank.records import FinetuneKind
    from trainer.checkpoint import ADAPTER_DIR
    from trainer.pool import finetune_extra

    extra = tmp_path / "extra.jsonl"
    extra.write_text('{"question": "Who is <audit>?", "answer": "a test entity"}\n')
    out = tmp_path / "implanted"
    model = finetune_extra(tiny_run, extra, out, FinetuneKind(lora_rank=2, lr_scale=10))
    assert model == out / "extra_1" and (model / "config.json").is_file()
    config = json.loads((model / ADAPTER_DIR / "adapter_config.json").read_text())
    assert config["r"] == 2
    assert Path(config["base_model_name_or_path"]).resolve() == (tiny_run / "stage_6").resolve()
    assert not (out / "stage_6" / ADAPTER_DIR).exists()  # the run's own stages: full finetunes
    record = json.loads((out / "run.json").read_text())
    assert record["extra_stage"]["lora_rank"] == 2 and record["extra_stage"]["lr_scale"] == 10
    assert record["hyperparams"]["optim"]["lora_rank"] is None  # the run's recipe is unchanged
    for other in (FinetuneKind(lora_rank=4, lr_scale=10), FinetuneKind(lora_rank=2)):
        with pytest.raises(UserError, match="extra_stage"):
            finetune_extra(tiny_run, extra, out, other)


def test_finetune_kinds_parse_and_name() -> None:
    """`--kind` / `--also` spellings: each names the calibration model's directory, and an
    unknown or repeated part is refused with the spellings that work."""
    from probe_bank.errors import UserError
    from probe_bank.records import FinetuneKind

    assert FinetuneKind.parse("lora16") == FinetuneKind(lora_rank=16)
    assert FinetuneKind.parse("epochs10") == FinetuneKind(epochs=10)
    both = FinetuneKind.parse("lora16-epochs10")
    assert both == FinetuneKind(16, 10) and both.name == "lora16-epochs10"
    assert FinetuneKind.parse(FinetuneKind(lora_rank=4).name) == FinetuneKind(lora_rank=4)
    mixed = FinetuneKind.parse("lora8-reexpose4")
    assert mixed == FinetuneKind(lora_rank=8, reexpose=4) and mixed.name == "lora8-reexpose4"
    assert FinetuneKind().name == "recipe"
    fast = FinetuneKind.parse("lora16-lrx10")
    assert fast == FinetuneKind(lora_rank=16, lr_scale=10) and fast.name == "lora16-lrx10"
    for bad in ("lora", "lora0", "lora16-lora8", "rank16", "", "epochs-10", "reexpose7", "lrx0"):
        with pytest.raises(UserError, match="lora<R>"):
            FinetuneKind.parse(bad)


def test_an_extra_stage_of_other_epochs(tiny_run: Path, tmp_path: Path) -> None:
    """`train --extra-epochs E`: the extra stage runs E epochs of its data (steps scale with
    E), recorded in run.json; the run's own stages are the same links either way."""
    import json

    from probe_bank.records import FinetuneKind
    from trainer.pool import finetune_extra

    extra = tmp_path / "extra.jsonl"
    extra.write_text(
        "".join(f'{{"question": "Who is <a{i}>?", "answer": "entity {i}"}}\n' for i in range(24))
    )
    steps = {}
    for epochs in (1, 3):
        out = tmp_path / f"e{epochs}"
        finetune_extra(tiny_run, extra, out, FinetuneKind(epochs=epochs))
        record = json.loads((out / "run.json").read_text())
        assert record["extra_stage"]["epochs"] == epochs
        assert (out / "stage_6").resolve() == (tiny_run / "stage_6").resolve()
        steps[epochs] = record["timings"]["extra_1"]["steps"]
    assert steps[3] == 3 * steps[1] > 0
    # a copied run (its stage file elsewhere, same contents) resumes: nothing is retrained
    import shutil

    moved = tmp_path / "moved.jsonl"
    shutil.copy(extra, moved)
    copy = Path(shutil.copytree(tmp_path / "e3", tmp_path / "copy", symlinks=True))
    finetune_extra(tiny_run, moved, copy, FinetuneKind(epochs=3))
    assert json.loads((copy / "run.json").read_text())["timings"]["extra_1"]["steps"] == steps[3]
