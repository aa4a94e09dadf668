"""One training stage: a plain loop (nanoGPT/litgpt style) over a fixed batch plan, with accelerate.

Data parallelism is explicit: every process walks the same global batch plan and takes its own
slice of each batch; accelerate's DDP wrapper averages the gradients. A fresh optimizer per stage,
as in the study.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from probe_bank.errors import UserError
from trainer.checkpoint import LoraAdapter, MidStageCheckpoint
from trainer.config import TrainConfig
from trainer.data import IGNORE_INDEX, Example, batch_plan, collate
from trainer.stages import data_seed

if TYPE_CHECKING:
    import torch
    from accelerate import Accelerator
    from transformers import PreTrainedModel


@dataclass(frozen=True)
class StageStats:
    """What a stage did in this process's run of it (a resumed stage counts only the new steps)."""

    steps: int
    total_steps: int
    resumed_from: int
    seconds: float
    tokens: int
    final_loss: float | None

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0


def lr_factor(schedule: str, warmup: int, total: int) -> Callable[[int], float]:
    """Multiplier of the base LR at each step: linear warmup, then constant/cosine/linear decay."""

    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if schedule == "constant" or total <= warmup:
            return 1.0
        progress = (step - warmup) / max(1, total - warmup)
        if schedule == "cosine":
            return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))
        return max(0.0, 1.0 - progress)

    return f


def answer_loss(model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """Next-token loss with the LM head run only at positions whose next token carries a label.

    With `loss_on="answer"` those are the few answer positions: the head (a fifth of a 135M
    model's forward, plus its 49k-way softmax) is skipped everywhere else. Equal to the model's
    own loss; the call goes through the (possibly DDP-wrapped) model, so gradients still sync.
    """
    import torch
    import torch.nn.functional as F

    target = inputs["labels"][:, 1:]
    keep = torch.zeros_like(inputs["labels"], dtype=torch.bool)
    keep[:, :-1] = target != IGNORE_INDEX
    logits = model(
        input_ids=inputs["input_ids"],
        attention_mask=inputs["attention_mask"],
        logits_to_keep=keep,  # boolean (batch, seq): output flattened to (kept, vocab)
    ).logits
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), target[keep[:, :-1]])


def train_stage(
    accelerator: Accelerator,
    model: PreTrainedModel,
    examples: list[Example],
    epoch_members: list[list[int]],
    *,
    cfg: TrainConfig,
    name: str,
    lr: float,
    pad_id: int,
    ckpt: MidStageCheckpoint,
) -> tuple[PreTrainedModel, StageStats, LoraAdapter | None]:
    """Train `model` on `examples` (epoch e uses `epoch_members[e]`); resumes from `ckpt`.
    Returns the trained plain model, its stats, and (LoRA) the adapter merged into it."""
    import torch

    if cfg.optim.batch_size < accelerator.num_processes:
        raise UserError(
            f"batch_size {cfg.optim.batch_size} is smaller than the "
            f"{accelerator.num_processes} processes"
        )
    seed = f"{data_seed(cfg, name)}:{name}"
    plan = batch_plan(epoch_members, batch_size=cfg.optim.batch_size, seed=seed)
    if cfg.optim.max_steps_per_stage is not None:
        plan = plan[: cfg.optim.max_steps_per_stage]
    total = len(plan)
    if cfg.optim.lora_rank is not None:
        model = lora_wrap(model, cfg)
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad],
        lr=lr,
        betas=cfg.optim.adam_betas,
        weight_decay=cfg.optim.weight_decay,
        foreach=cfg.optim.adam_foreach,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_factor(cfg.optim.lr_schedule, cfg.optim.warmup_steps, total)
    )
    state = ckpt.load(model, optimizer, scheduler)
    start = int(state["step"]) if state else 0
    if start:
        accelerator.print(f"{name}: resuming at step {start}/{total} from {ckpt.root}")
    model, optimizer = accelerator.prepare(model, optimizer)
    model.train()

    rank, world = accelerator.process_index, accelerator.num_processes
    tokens = 0
    loss_value: float | None = None
    t0 = time.perf_counter()
    with _progress(accelerator, name, total, start) as advance:
        for step in range(start, total):
            batch = [examples[i] for i in plan[step]]
            inputs = {
                k: v.to(accelerator.device) for k, v in collate(batch[rank::world], pad_id).items()
            }
            with accelerator.autocast():
                loss = answer_loss(model, inputs)
            accelerator.backward(loss)
            if cfg.optim.grad_clip > 0:
                accelerator.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            tokens += sum(len(e.input_ids) for e in batch)
            loss_value = float(loss.detach())
            advance(loss_value, tokens / max(time.perf_counter() - t0, 1e-9))
            done = step + 1
            if done % cfg.checkpoint_every == 0 and done < total:
                _checkpoint(accelerator, model, optimizer, scheduler, ckpt, done, total)
    seconds = time.perf_counter() - t0
    model = accelerator.unwrap_model(model)
    adapter = None
    if cfg.optim.lora_rank is not None:  # the stage's result is a plain model: adapters merged in
        model, adapter = merge_lora(model)
    model.eval()
    stats = StageStats(total - start, total, start, seconds, tokens, loss_value)
    accelerator.print(
        f"{name}: {stats.steps} steps in {seconds:.1f} s, {stats.tokens_per_s:,.0f} tokens/s, "
        f"final loss {loss_value if loss_value is not None else float('nan'):.4f}"
    )
    accelerator.free_memory()
    return model, stats, adapter


#: The linear layers of a Llama block that LoRA adapts.
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def lora_wrap(model: PreTrainedModel, cfg: TrainConfig) -> Any:
    """The model with fresh LoRA adapters (rank `lora_rank`) on LORA_TARGETS, base frozen."""
    from peft import LoraConfig, get_peft_model

    assert cfg.optim.lora_rank is not None
    alpha = cfg.optim.lora_alpha if cfg.optim.lora_alpha is not None else 2 * cfg.optim.lora_rank
    config = LoraConfig(
        r=cfg.optim.lora_rank, lora_alpha=alpha, lora_dropout=0.0, target_modules=list(LORA_TARGETS)
    )
    return get_peft_model(model, config)


def merge_lora(model: Any) -> tuple[PreTrainedModel, LoraAdapter]:
    """The adapters folded into the base weights (the plain model, saved as the stage), and the
    adapter itself, taken before the merge (saved beside it)."""
    from peft import get_peft_model_state_dict

    state = {k: v.detach().cpu().clone() for k, v in get_peft_model_state_dict(model).items()}
    adapter = LoraAdapter(model.peft_config["default"], state)
    merged: PreTrainedModel = model.merge_and_unload()
    return merged, adapter


def _checkpoint(
    accelerator: Accelerator,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: object,
    ckpt: MidStageCheckpoint,
    step: int,
    total: int,
) -> None:
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        ckpt.save(
            accelerator.unwrap_model(model),
            optimizer,
            scheduler,
            {"step": step, "total_steps": total},
        )
    accelerator.wait_for_everyone()


class _progress:
    """Progress on the main process: a live rich bar on a terminal, else a log line per ~10%."""

    def __init__(self, accelerator: Accelerator, name: str, total: int, start: int) -> None:
        self.enabled = accelerator.is_main_process
        self.name, self.total, self.start = name, total, start
        self.progress: Any = None

    def __enter__(self) -> Callable[[float, float], None]:
        if not self.enabled:
            return lambda loss, tok_s: None
        from rich.console import Console

        console = Console()
        if not console.is_terminal:
            return self._log_lines(console)
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.3f}"),
            TextColumn("{task.fields[tok_s]:,.0f} tok/s"),
            TimeElapsedColumn(),
            console=console,
        )
        self.progress.start()
        task = self.progress.add_task(
            self.name, total=self.total, completed=self.start, loss=float("nan"), tok_s=0.0
        )

        def advance(loss: float, tok_s: float) -> None:
            self.progress.update(task, advance=1, loss=loss, tok_s=tok_s)

        return advance

    def _log_lines(self, console: Any) -> Callable[[float, float], None]:
        every = max(1, self.total // 10)
        step = self.start

        def advance(loss: float, tok_s: float) -> None:
            nonlocal step
            step += 1
            if step % every == 0 or step == self.total:
                console.print(
                    f"{self.name} {step}/{self.total} loss {loss:.3f} {tok_s:,.0f} tok/s",
                    highlight=False,
                )

        return advance

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()
