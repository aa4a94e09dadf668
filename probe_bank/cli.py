"""`recency-audit bank build` and `recency-audit report` (heavy imports inside the commands)."""

from __future__ import annotations

from pathlib import Path

import typer

from probe_bank.errors import UserError

bank_app = typer.Typer(help="Build probe banks from trained runs.", no_args_is_help=True)


def _parse_layers(layers: str | None) -> list[int] | None:
    if layers is None:
        return None
    try:
        return [int(x) for x in layers.replace(" ", "").split(",") if x]
    except ValueError:
        raise UserError(f"--layers must be comma-separated integers, got {layers!r}") from None


@bank_app.command("build")
def build(
    run: Path = typer.Option(..., "--run", help="RUN_DIR written by `recency-audit train`"),
    out: Path = typer.Option(..., "--out", help="new BANK_DIR"),
    config: str = typer.Option(
        "default", "--config", help="named build config: default, or pretrained (30-block base)"
    ),
    layers: str | None = typer.Option(None, help="blocks to scan, e.g. '1,2'; default all"),
    positions: str | None = typer.Option(
        None, help="positions to scan (last, last-1..last-7, alias_mean); default last,alias_mean"
    ),
    seed: int = typer.Option(0, help="fold and bootstrap seed"),
    n_boot: int | None = typer.Option(None, help="bootstrap resamples for the 95% intervals"),
    no_baselines: bool = typer.Option(False, "--no-baselines", help="skip the scalar baselines"),
    n_jobs: int = typer.Option(1, "--n-jobs", help="joblib workers for probe fits"),
    n_permutations: int | None = typer.Option(None, help="label shuffles for the permutation null"),
    cell_rule: str | None = typer.Option(
        None,
        "--cell-rule",
        help="without a pre-registered cell: one_se (default: the earliest block within one "
        "standard error of the best scan score) or best (the highest score)",
    ),
    families_questions: int | None = typer.Option(
        None,
        "--families-questions",
        help="trained-attribute questions the evidence families ask per entity (their cost); "
        "default one per attribute",
    ),
    false_alarm_budget: float | None = typer.Option(
        None,
        "--false-alarm-budget",
        help="class 7's operating point: the share of each calibration model's held-out "
        "untouched entities it may class 'after the bank' (default: the build config's)",
    ),
) -> None:
    """Sweep layers x positions, score probes and baselines on held-out entities, save BANK_DIR."""
    import logging

    from probe_bank.build import build_bank, build_config
    from probe_bank.heldout.folds import ProbeConfig

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if n_boot is not None and n_boot < 10:
        raise UserError("--n-boot must be at least 10")
    if (n_permutations is not None and n_permutations < 0) or n_jobs == 0:
        raise UserError("--n-permutations must be >= 0 and --n-jobs non-zero")
    cfg = build_config(
        config,
        layers=_parse_layers(layers),
        positions=[p for p in positions.replace(" ", "").split(",") if p] if positions else None,
        probe=ProbeConfig(seed=seed, n_jobs=n_jobs),
        n_boot=n_boot,
        baselines=False if no_baselines else None,
        n_permutations=n_permutations,
        cell_rule=cell_rule,
        families_questions=families_questions,
        families_false_alarm=false_alarm_budget,
    )
    bank = build_bank(run, out, cfg)
    typer.echo(str(bank))


def report(
    bank: Path = typer.Option(..., "--bank", help="BANK_DIR"),
    out: Path = typer.Option(..., "--out", help="REPORT_DIR (created)"),
    extra_run: list[Path] = typer.Option(
        [], "--extra-run", help="more runs (other seeds) to overlay on the centroid line"
    ),
) -> None:
    """Write a self-contained HTML report with PNG figures from a bank's metrics."""
    from probe_bank.report import write_report

    typer.echo(str(write_report(bank, out, extra_runs=extra_run)))


def register(app: typer.Typer) -> None:
    """Add the `bank` group and the `report` command to the main app."""
    app.add_typer(bank_app, name="bank")
    bank_app.command("report")(report)
    app.command("report")(report)
