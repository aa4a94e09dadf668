"""A whole run: corpus, tokenizer, stage 0, stages 1..6, optional extras; resumable at any point.

A stage is done iff RUN_DIR/<stage>/ exists (it is renamed into place only when complete), so the
same command run again skips finished stages and resumes a half-done one from its checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from probe_bank.errors import UserError
from probe_bank.fingerprint import file_sha256
from probe_bank.records import ExtraStage, FinetuneKind, RunRecord
from trainer.checkpoint import (
    LoraAdapter,
    MidStageCheckpoint,
    remove_stale_temps,
    save_stage,
    save_tokenizer,
    write_json_atomic,
)
from trainer.config import TrainConfig, resume_key
from trainer.corpus import Corpus, build_corpus, load_corpus
from trainer.data import Example, encode, read_extra_stage
from trainer.retention import RetentionEntry, retention_rows, upsert_retention
from trainer.stages import EXTRA_STAGE, Stage, plan_stages

if TYPE_CHECKING:
    from accelerate import Accelerator
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from trainer.loop import StageStats


@dataclass(frozen=True)
class RunOptions:
    preset: str
    out: Path
    base_model: Path | None = None
    mixed_epochs: int = 0
    extra_stage: Path | None = None
    #: how the extra stage differs from the recipe: a LoRA adapter (kept in extra_1/adapter, a
    #: later finetune delivered the way auditors are often handed one), other epochs (another
    #: size), an earlier stage re-exposed in its file (recorded only)
    extra_kind: FinetuneKind = FinetuneKind()


def prepare_out_dir(out: Path) -> None:
    """Create RUN_DIR and prove it is writable, or fail with one clear line."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise UserError(f"cannot write to output directory {out}: {exc.strerror or exc}") from None


def run_record(cfg: TrainConfig, opts: RunOptions) -> dict[str, Any]:
    """The identity part of run.json: what must match for a rerun to resume this run."""
    extra: dict[str, Any] | None = None
    if opts.extra_stage is not None:
        kind = opts.extra_kind
        extra = ExtraStage(
            path=str(opts.extra_stage),
            sha256=file_sha256(opts.extra_stage),
            lora_rank=kind.lora_rank,
            epochs=kind.epochs,
            reexpose=kind.reexpose,
            lr_scale=kind.lr_scale,
        ).model_dump(mode="json")
    elif opts.extra_kind != FinetuneKind():
        raise UserError(
            "--extra-lora-rank, --extra-epochs and --extra-lr-scale apply to an --extra-stage only"
        )
    return {
        "preset": opts.preset,
        "seed": cfg.seed,
        "base_model": str(opts.base_model) if opts.base_model else None,
        "hyperparams": json.loads(cfg.model_dump_json()),
        "resume_key": resume_key(json.loads(cfg.model_dump_json())),
        "mixed_epochs": opts.mixed_epochs,
        "extra_stage": extra,
    }


def check_resumable(existing: dict[str, Any], record: dict[str, Any], done: list[str]) -> None:
    """A rerun may add extras to a finished run, but not change anything already trained."""
    changed = [k for k in ("preset", "seed", "base_model") if existing.get(k) != record[k]]
    if resume_key(existing.get("hyperparams") or {}) != record["resume_key"]:
        changed.append("hyperparams")
    if "mixed" in done and existing.get("mixed_epochs") != record["mixed_epochs"]:
        changed.append("mixed_epochs")
    if "extra_1" in done and _extra_identity(existing) != _extra_identity(record):
        changed.append("extra_stage")
    if changed:
        raise UserError(
            f"the output directory already holds a run with different {', '.join(changed)}; "
            "rerun with the same settings to resume, or choose another --out"
        )


def _extra_identity(record: dict[str, Any]) -> tuple[str, FinetuneKind] | None:
    """What the extra stage trained: its file's SHA-256 and kind, not where the file lies (a
    copied or moved run resumes)."""
    extra = record.get("extra_stage")
    if extra is None:
        return None
    stage = ExtraStage.model_validate(extra)  # a record from before `epochs` omits it
    return stage.sha256, stage.kind


def make_accelerator() -> Accelerator:
    """bf16 autocast on CUDA, plain fp32 on CPU; `accelerate launch` adds data parallelism."""
    import torch
    import transformers
    from accelerate import Accelerator

    transformers.utils.logging.disable_progress_bar()  # our own bar shows stage progress
    cuda = torch.cuda.is_available()
    return Accelerator(mixed_precision="bf16" if cuda else "no", cpu=not cuda)


def prepare_corpus(cfg: TrainConfig, opts: RunOptions) -> tuple[Corpus, PreTrainedTokenizerBase]:
    """Load RUN_DIR's tokenizer and corpus (verified), or create them (tokenizer first)."""
    from trainer.model import load_tokenizer
    from trainer.tokenizer import train_tokenizer

    tok_dir, corpus_dir = opts.out / "tokenizer", opts.out / "corpus"
    tokenizer = None
    if opts.base_model is not None:
        tokenizer = load_tokenizer(opts.base_model)
    elif tok_dir.is_dir():
        tokenizer = load_tokenizer(tok_dir)
    elif corpus_dir.is_dir():
        raise UserError(f"{tok_dir} is missing but {corpus_dir} exists; choose a fresh --out")
    if corpus_dir.is_dir():
        assert tokenizer is not None
        return load_corpus(corpus_dir), tokenizer
    corpus, tokenizer = build_corpus(
        cfg,
        from_scratch=opts.base_model is None,
        tokenizer=tokenizer,
        train_tokenizer=partial(train_tokenizer, vocab_size=cfg.arch.vocab_size),
    )
    if opts.base_model is None and not tok_dir.is_dir():
        save_tokenizer(tokenizer, tok_dir)
        tokenizer = load_tokenizer(tok_dir)
    from trainer.corpus import write_corpus

    write_corpus(corpus, corpus_dir)
    return load_corpus(corpus_dir), tokenizer


def train_run(cfg: TrainConfig, opts: RunOptions) -> dict[str, Any]:
    """Run (or resume) every stage; returns the final run.json."""
    from trainer.model import check_model_dir

    if opts.base_model is not None:
        check_model_dir(opts.base_model)
    extra = read_extra_stage(opts.extra_stage) if opts.extra_stage is not None else None
    prepare_out_dir(opts.out)
    run_path = opts.out / "run.json"
    record = run_record(cfg, opts)
    existing = _read_run_json(run_path)
    if existing is not None:
        check_resumable(existing, record, existing.get("stages_done", []))
    accelerator = make_accelerator()
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        remove_stale_temps(opts.out)
    with accelerator.main_process_first():
        corpus, tokenizer = prepare_corpus(cfg, opts)
    stages = plan_stages(
        cfg,
        corpus,
        from_scratch=opts.base_model is None,
        mixed_epochs=opts.mixed_epochs,
        extra=extra,
        extra_kind=opts.extra_kind,
    )
    order = [s.name for s in stages]
    state: dict[str, Any] = {**(existing or {}), **record}
    state.setdefault("timings", {})
    state["stages_done"] = [n for n in order if (opts.out / n).is_dir()]
    state["final"] = state["stages_done"][-1] if state["stages_done"] else None
    state["stages"] = order
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        write_json_atomic(run_path, RunRecord.model_validate(state).model_dump(mode="json"))

    extra_cfg = cfg
    if opts.extra_kind.lora_rank is not None:
        lora = cfg.optim.model_copy(update={"lora_rank": opts.extra_kind.lora_rank})
        extra_cfg = cfg.model_copy(update={"optim": lora})
    previous: Path | None = opts.base_model
    for stage in stages:
        stage_dir = opts.out / stage.name
        if stage_dir.is_dir():
            accelerator.print(f"{stage.name}: already done, skipped")
            if accelerator.is_main_process:  # a kill right after the rename can leave one
                MidStageCheckpoint(opts.out, stage.name).clear()
            previous = stage_dir
            continue
        t0 = time.perf_counter()
        stage_cfg = extra_cfg if stage.name == EXTRA_STAGE else cfg
        model = _start_model(cfg, tokenizer, previous)
        texts = stage.data.texts()
        examples = encode(
            tokenizer, texts, block_size=cfg.arch.block_size, loss_on=cfg.optim.loss_on
        )
        model, stats, adapter = _train(
            accelerator, model, examples, stage_cfg, stage, tokenizer, opts.out
        )
        if accelerator.is_main_process:
            _finish_stage(model, tokenizer, corpus, cfg, stage, order, opts.out, adapter)
            state["stages_done"] = [n for n in order if (opts.out / n).is_dir()]
            state["final"] = stage.name
            state["timings"][stage.name] = _timing(stats, accelerator, time.perf_counter() - t0)
            write_json_atomic(run_path, RunRecord.model_validate(state).model_dump(mode="json"))
        accelerator.wait_for_everyone()
        previous = stage_dir
        del model
    if accelerator.is_main_process:
        _remove_if_empty(opts.out / ".ckpt")
    accelerator.wait_for_everyone()
    state = json.loads(run_path.read_text())
    accelerator.print(f"done: {opts.out} (final: {state['final']})")
    accelerator.end_training()
    return state


def _finish_stage(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    corpus: Corpus,
    cfg: TrainConfig,
    stage: Stage,
    order: list[str],
    out: Path,
    adapter: LoraAdapter | None = None,
) -> None:
    """Retention row first, then the stage dir (with a LoRA stage's adapter): a kill in between
    only retrains the stage."""
    rows = retention_rows(
        model,
        tokenizer,
        corpus.qa,
        stage.eval_splits,
        max_questions=cfg.retention_max_questions,
        seed=cfg.seed,
    )
    upsert_retention(out / "retention.json", RetentionEntry(after=stage.name, rows=rows), order)
    save_stage(model, tokenizer, out / stage.name, adapter)
    MidStageCheckpoint(out, stage.name).clear()


def _timing(stats: StageStats, accelerator: Accelerator, stage_seconds: float) -> dict[str, Any]:
    return {
        "steps": stats.total_steps,
        "steps_this_run": stats.steps,
        "resumed_from_step": stats.resumed_from,
        "train_seconds": round(stats.seconds, 2),
        "tokens": stats.tokens,
        "tokens_per_s": round(stats.tokens_per_s, 1),
        "stage_seconds": round(stage_seconds, 2),
        "num_processes": accelerator.num_processes,
        "device": str(accelerator.device),
        "mixed_precision": accelerator.mixed_precision,  # bf16 autocast on CUDA, else "no"
    }


def _read_run_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        return RunRecord.read(path).model_dump(mode="json")
    except (OSError, ValueError) as exc:
        raise UserError(f"corrupt {path}: {exc}") from None


def _remove_if_empty(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.rmdir()


def _start_model(
    cfg: TrainConfig, tokenizer: PreTrainedTokenizerBase, previous: Path | None
) -> PreTrainedModel:
    from trainer.model import load_for_training, new_llama

    return new_llama(cfg, tokenizer) if previous is None else load_for_training(previous)


def _train(
    accelerator: Accelerator,
    model: PreTrainedModel,
    examples: list[Example],
    cfg: TrainConfig,
    stage: Stage,
    tokenizer: PreTrainedTokenizerBase,
    out: Path,
) -> tuple[PreTrainedModel, StageStats, LoraAdapter | None]:
    from trainer.loop import train_stage

    return train_stage(
        accelerator,
        model,
        examples,
        stage.data.epoch_members(),
        cfg=cfg,
        name=stage.name,
        lr=stage.lr,
        pad_id=tokenizer.pad_token_id,
        ckpt=MidStageCheckpoint(out, stage.name),
    )
