"""Offline audits: score a whole dataset with `BankScorer` directly, no server.

`recency-audit audit --bank BANK_DIR DATASET --out RESULTS.jsonl` writes the same result lines as
a service job (same parser, same chunk scoring, same canonical serialisation). Under
`accelerate launch --num_processes N` each process scores one contiguous shard and rank 0 writes
one merged file in input order. Shard boundaries fall on multiples of the batch size, so every
batch holds the same inputs whatever N is, and N processes give exactly the 1-process bytes.

Launching: `accelerate launch --num_processes N -m audit_service.offline ...` on GPUs, and on a
CPU-only host `accelerate launch --multi_gpu --num_processes N ...` (torch.distributed workers
joined over gloo) or `torchrun --nproc_per_node N -m audit_service.offline ...`. Note that
`accelerate launch --cpu --num_processes N` starts a single process (accelerate's simple launcher
spawns N only under mpirun); the audit then runs unsharded and says "on 1 process(es)".
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic import Field

from audit_service.engine import Priority
from audit_service.jobs.datasets import DatasetItem, read_dataset_file
from audit_service.jobs.results import ResultSummary, chunk_bounds, summarize
from audit_service.jobs.runner import score_chunk
from probe_bank.evidence import BankEvidence, bank_evidence
from probe_bank.schemas import AFTER_BANK

if TYPE_CHECKING:
    from probe_bank.schemas import TextScore
    from probe_bank.scoring import BankScorer, StageScore


class AuditReport(ResultSummary):
    """What an offline audit did (rank 0's view of the merged result) and what its results say
    (`ResultSummary`)."""

    items: int
    processes: int
    seconds: float
    items_per_s: float
    out: str
    evidence: BankEvidence = Field(
        description="the bank's held-out validation, as every served score carries it: the "
        "probes' verdict, their strongest scalar baseline, and what class 7 costs and finds"
    )
    after_thresholds: dict[str, float | None] = Field(
        default_factory=dict,
        description="per family, the p_after_bank at which this model's entities were classed 7",
    )


class _ScorerEngine:
    """`BankScorer` behind the engine's async interface, so offline audits reuse `score_chunk`."""

    def __init__(self, scorer: BankScorer, batch_size: int) -> None:
        self.scorer = scorer
        self.batch_size = batch_size

    async def score_prompts(
        self,
        prompts: list[str],
        aliases: list[str | None] | None = None,
        *,
        priority: Priority = "batch",
        deadline: float | None = None,
    ) -> Sequence[StageScore]:
        return self.scorer.score_prompts(prompts, aliases, batch_size=self.batch_size)

    async def score_entities(
        self, aliases: list[str], *, priority: Priority = "batch", deadline: float | None = None
    ) -> Sequence[StageScore]:
        return self.scorer.score_entities(aliases, batch_size=self.batch_size)

    async def score_texts(
        self, texts: list[str], answers: list[str | None] | None, *, priority: Priority = "batch"
    ) -> Sequence[TextScore]:
        return self.scorer.score_texts(self.scorer.prepare_texts(texts, answers))


def shard_bounds(total: int, processes: int, rank: int, align: int) -> tuple[int, int]:
    """Contiguous [lo, hi) of `rank`, with boundaries on multiples of `align` (whole batches)."""
    blocks = -(-total // align)
    per, extra = divmod(blocks, processes)
    lo_block = rank * per + min(rank, extra)
    hi_block = lo_block + per + (1 if rank < extra else 0)
    return min(total, lo_block * align), min(total, hi_block * align)


def score_items(
    scorer: BankScorer,
    items: Sequence[DatasetItem],
    *,
    offset: int = 0,
    batch_size: int = 32,
    on_batch: Callable[[int], None] | None = None,
) -> tuple[list[str], int]:
    """Canonical result lines for `items` (global indices from `offset`), batch by batch."""
    engine = _ScorerEngine(scorer, batch_size)
    lines: list[str] = []
    errors = 0

    async def run() -> None:
        nonlocal errors
        for lo, hi in chunk_bounds(len(items), batch_size):
            chunk_lines, chunk_errors = await score_chunk(engine, offset + lo, items[lo:hi])
            lines.extend(chunk_lines)
            errors += chunk_errors
            if on_batch is not None:
                on_batch(hi - lo)

    asyncio.run(run())
    return lines, errors


def _progress_bar(enabled: bool, label: str) -> Any:
    """A rich progress bar (disabled, so silent, off the main process)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeRemainingColumn(),
        disable=not enabled,
    )


def _process_state() -> Any:
    """accelerate's view of this process (rank, world size, device)."""
    import torch
    from accelerate import PartialState

    threads = os.environ.get("OMP_NUM_THREADS")
    if threads and threads.isdigit():
        torch.set_num_threads(int(threads))
    # On a host without GPUs, `cpu=True` lets accelerate form a gloo group from the launcher's
    # WORLD_SIZE/LOCAL_RANK (otherwise every process would think it is alone).
    forced_cpu = os.environ.get("ACCELERATE_USE_CPU", "").lower() == "true"
    return PartialState(cpu=forced_cpu or not torch.cuda.is_available())


def _score_shard(
    scorer: BankScorer, items: Sequence[DatasetItem], lo: int, batch_size: int, bar: Any
) -> list[str]:
    """Result lines of one shard (global indices from `lo`), advancing the progress bar."""
    import torch

    start = time.perf_counter()
    task = bar.add_task("", total=len(items), rate="")

    def advance(n: int) -> None:
        rate = (bar.tasks[task].completed + n) / max(1e-9, time.perf_counter() - start)
        bar.update(task, advance=n, rate=f"{rate:.1f} items/s")

    with torch.inference_mode():
        lines, _ = score_items(scorer, items, offset=lo, batch_size=batch_size, on_batch=advance)
    return lines


def run_offline_audit(
    bank_dir: Path,
    dataset: Path,
    out: Path,
    *,
    model_dir: Path | None = None,
    batch_size: int = 32,
    show_progress: bool = True,
) -> AuditReport | None:
    """Score `dataset` (sharded over the accelerate processes, if launched so) into `out`.

    Returns the report on the main process and None on the others.
    """
    from probe_bank.errors import UserError

    if batch_size < 1:
        raise UserError("batch size must be at least 1")
    items = read_dataset_file(dataset)  # bad input fails before any model loads
    if not (bank_dir / "manifest.json").is_file():
        raise UserError(f"{bank_dir} is not a bank directory (no manifest.json)")
    state = _process_state()
    try:
        return _audit_on_processes(
            state, bank_dir, items, out, model_dir, batch_size, show_progress
        )
    finally:
        # Every rank leaves the gloo/NCCL group before the interpreter winds down: a group left to
        # finalization can abort (SIGABRT) while its worker threads still hold tensors.
        state.destroy_process_group()


def _audit_on_processes(
    state: Any,
    bank_dir: Path,
    items: Sequence[DatasetItem],
    out: Path,
    model_dir: Path | None,
    batch_size: int,
    show_progress: bool,
) -> AuditReport | None:
    from accelerate.utils import gather_object

    from probe_bank.scoring import BankScorer

    n = state.num_processes
    lo, hi = shard_bounds(len(items), n, state.process_index, batch_size)
    scorer = BankScorer.from_bank_dir(bank_dir, model_dir=model_dir, device=state.device)
    state.wait_for_everyone()
    start = time.perf_counter()
    label = "auditing" if n == 1 else f"auditing (rank 0 of {n})"
    with _progress_bar(show_progress and state.is_main_process, label) as bar:
        lines = _score_shard(scorer, items[lo:hi], lo, batch_size, bar)
    merged = gather_object(lines) if n > 1 else lines
    seconds = time.perf_counter() - start
    if state.is_main_process:
        if len(merged) != len(items):
            raise RuntimeError(f"merged {len(merged)} result lines for {len(items)} inputs")
        _write_atomic(out, merged)
    state.wait_for_everyone()
    if not state.is_main_process:
        return None
    return AuditReport(
        **dict(summarize(merged)),
        items=len(items),
        processes=n,
        seconds=seconds,
        items_per_s=len(items) / seconds if seconds > 0 else 0.0,
        out=str(out),
        evidence=bank_evidence(scorer.bank.metrics),
        after_thresholds=scorer.after_thresholds(),
    )


def _write_atomic(out: Path, lines: Sequence[str]) -> None:
    """Write all lines to a temp file, then rename it over `out` (no half-written results)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")
    with open(tmp, "w", encoding="utf-8", newline="\n") as fh:
        for line in lines:
            fh.write(line + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, out)


def audit(
    dataset: Annotated[Path, typer.Argument(help="JSONL or CSV: one prompt or entity per line")],
    bank: Annotated[Path, typer.Option("--bank", help="BANK_DIR to score with")],
    out: Annotated[Path, typer.Option("--out", help="results JSONL (one line per input)")],
    model_dir: Annotated[
        Path | None,
        typer.Option(
            "--model",
            "--model-dir",
            help="model to audit: the bank's reference (default) or a descendant of it, as a "
            "model directory or a PEFT adapter directory (merged onto the reference once)",
        ),
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="prompts per pass")] = 32,
    progress: Annotated[bool, typer.Option("--progress/--no-progress")] = True,
) -> None:
    """Audit a dataset offline (no server); under `accelerate launch` the dataset is sharded."""
    report = run_offline_audit(
        bank, dataset, out, model_dir=model_dir, batch_size=batch_size, show_progress=progress
    )
    if report is not None:
        typer.echo(
            f"audited {report.items} inputs ({report.errors} errors) on {report.processes} "
            f"process(es) in {report.seconds:.1f}s ({report.items_per_s:.1f} items/s) -> {out}"
        )
        typer.echo(f"probes ({report.evidence.verdict}): {report.evidence.note}")
        if report.fused_class_histogram:
            shown = ", ".join(
                f"{r['input']} ({r['p_after_bank']:.2f})"
                for r in report.most_after_bank[:5]
                if r["estimated_class"] == AFTER_BANK
            )
            typer.echo(
                f"evidence families: {report.entities_after_bank} of "
                f"{sum(report.fused_class_histogram.values())} entities classed learned after "
                f"the bank (fused){': ' + shown if shown else ''}"
            )
            point = report.evidence.after_bank
            fa, (lo, hi) = (
                (point.false_alarms.value, point.false_alarms.ci95)
                if point is not None and point.false_alarms is not None
                else (None, (None, None))
            )
            if point is not None and fa is not None and lo is not None and hi is not None:
                b = point.false_alarm_budget
                budget = "argmax" if b is None else f"{b:g}"
                typer.echo(
                    f"class 7 operating point (false-alarm budget {budget}): held out on the "
                    f"calibration finetunes it classed {fa:.3f} [{lo:.3f}, {hi:.3f}] of untouched "
                    f"entities 7; {point.note}"
                    + (
                        f"; on this model fused needs p_after_bank >= {t:.3f}"
                        if (t := report.after_thresholds.get("fused")) is not None
                        else ""
                    )
                )
        if report.texts:
            typer.echo(f"texts: {report.texts_touched} of {report.texts} flagged touched")
        if report.in_bank_sample:
            typer.echo(
                f"note: {report.in_bank_sample} input(s) are entities the bank was fitted on "
                "(in_bank_sample: true); their scores are in-sample and read better than the "
                "bank's held-out accuracy"
            )


def register(app: typer.Typer) -> None:
    """Add the `audit` command to the `recency-audit` app."""
    app.command("audit")(audit)


def main() -> None:
    """`python -m audit_service.offline ...`: the audit command alone (what accelerate launches)."""
    from probe_bank.errors import UserError

    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    register(app)
    try:
        app()
    except UserError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
