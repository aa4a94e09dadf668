"""Crash-safe persistence: finished stages (save_pretrained dirs) and mid-stage checkpoints.

Everything is written to a temp path and renamed into place, so a kill at any moment leaves either
the old state or the new one, never a half-written directory that looks complete.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

TMP_SUFFIX = ".tmp"
#: Where a LoRA stage keeps its adapter, beside the merged model (PEFT's own format).
ADAPTER_DIR = "adapter"


@dataclass
class LoraAdapter:
    """A LoRA stage's trained adapter, taken before it is merged into the stage's weights: saved
    in PEFT's format under STAGE/adapter, so a stage can also be audited as the adapter an
    auditor would be handed (`probe_bank.adapter`)."""

    config: Any  # peft.LoraConfig; its base_model_name_or_path is the stage it was trained on
    state: dict[str, torch.Tensor]  # get_peft_model_state_dict: keys without the adapter name

    def save(self, out: Path) -> None:
        from safetensors.torch import save_file

        out.mkdir(parents=True, exist_ok=True)
        self.config.save_pretrained(str(out))
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.state.items()}
        save_file(tensors, str(out / "adapter_model.safetensors"), metadata={"format": "pt"})


def save_stage(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    stage_dir: Path,
    adapter: LoraAdapter | None = None,
) -> None:
    """`save_pretrained` model + tokenizer (+ a LoRA stage's adapter, in `ADAPTER_DIR`) into
    `stage_dir`, which appears only when complete."""
    tmp = stage_dir.with_name(stage_dir.name + TMP_SUFFIX)
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    if adapter is not None:
        adapter.save(tmp / ADAPTER_DIR)
    os.replace(tmp, stage_dir)


def save_tokenizer(tokenizer: PreTrainedTokenizerBase, out_dir: Path) -> None:
    tmp = out_dir.with_name(out_dir.name + TMP_SUFFIX)
    shutil.rmtree(tmp, ignore_errors=True)
    tokenizer.save_pretrained(tmp)
    os.replace(tmp, out_dir)


def remove_stale_temps(run_dir: Path) -> None:
    """Delete temp dirs a killed run left behind (they are never read)."""
    for p in run_dir.glob(f"*{TMP_SUFFIX}"):
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + TMP_SUFFIX)
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


class MidStageCheckpoint:
    """RUN_DIR/.ckpt/<stage>/step_NNNNNN/{model.safetensors, optimizer.pt, state.json} + `latest`.

    `latest` (a one-line file, replaced atomically) names the newest complete step dir; older
    step dirs are deleted after it moves on.
    """

    def __init__(self, run_dir: Path, stage: str) -> None:
        self.root = run_dir / ".ckpt" / stage

    def save(
        self,
        model: PreTrainedModel,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        state: dict[str, Any],
    ) -> None:
        import torch
        from safetensors.torch import save_file

        step_dir = self.root / f"step_{state['step']:06d}"
        tmp = step_dir.with_name(step_dir.name + TMP_SUFFIX)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        save_file(_untie(tensors), str(tmp / "model.safetensors"))
        torch.save(
            {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()},
            tmp / "optimizer.pt",
        )
        (tmp / "state.json").write_text(json.dumps(state))
        shutil.rmtree(step_dir, ignore_errors=True)
        os.replace(tmp, step_dir)
        write_json_atomic(self.root / "latest", step_dir.name)
        for old in self.root.glob("step_*"):
            if old.name != step_dir.name:
                shutil.rmtree(old, ignore_errors=True)

    def load(
        self, model: PreTrainedModel, optimizer: torch.optim.Optimizer, scheduler: Any
    ) -> dict[str, Any] | None:
        """Restore the newest checkpoint into the given objects; its state dict, or None."""
        import torch
        from safetensors.torch import load_file

        latest = self.root / "latest"
        if not latest.is_file():
            return None
        step_dir = self.root / json.loads(latest.read_text())
        tensors = load_file(str(step_dir / "model.safetensors"))
        model.load_state_dict(tensors)
        opt = torch.load(step_dir / "optimizer.pt", weights_only=True)
        optimizer.load_state_dict(opt["optimizer"])
        scheduler.load_state_dict(opt["scheduler"])
        state: dict[str, Any] = json.loads((step_dir / "state.json").read_text())
        return state

    def clear(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def _untie(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors refuses shared storage (tied embeddings); store independent copies."""
    seen: set[int] = set()
    out = {}
    for k, v in tensors.items():
        ptr = v.untyped_storage().data_ptr()
        out[k] = v.clone() if ptr in seen else v
        seen.add(ptr)
    return out
