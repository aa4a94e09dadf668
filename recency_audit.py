"""The `recency-audit` console script: one typer app composed of each package's sub-commands.

Sub-apps are imported lazily so `recency-audit --help` does not pay for importing torch.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

app = typer.Typer(
    name="recency-audit",
    help="Audit whether and how recently a language model was finetuned on an entity.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.command("up")
def up(
    preset: str = typer.Option(
        "small", "--preset", help="reference-model preset to build if missing"
    ),
    seed: int = typer.Option(0, "--seed", help="seed of the embedded default run"),
    build_only: bool = typer.Option(False, "--build-only", help="build the default, do not serve"),
    also: list[str] = typer.Option(
        ["lora16"],
        "--also",
        help="calibrate on a later finetune of this kind too (as `calibrate --also`: parts "
        "lora<R>, epochs<E>, reexpose<K> joined by '-'), so class 7's threshold is set on each "
        "kind (repeatable)",
    ),
) -> None:
    """The main job: build the embedded default (model, bank, report) if missing, then serve it.

    Everything lives under $RECENCY_AUDIT_HOME (default ./artifacts): runs/default, banks/default,
    reports/default. Each step is skipped when its output is complete and verifies, so a second
    `up` starts serving at once and an interrupted one resumes where it stopped.
    """
    import logging

    from audit_service.cli import run_server
    from audit_service.settings import ServiceSettings

    logging.basicConfig(level=logging.INFO, format="%(message)s")  # bank-build progress
    settings = ServiceSettings()
    home = settings.home
    run_dir, bank_dir = home / "runs" / "default", home / "banks" / "default"
    report_dir = home / "reports" / "default"
    _ensure_run(run_dir, preset, seed)
    _ensure_calibration(run_dir, also)
    rebuilt = _ensure_bank(run_dir, bank_dir)
    if rebuilt or not (report_dir / "index.html").is_file():
        from probe_bank.report import write_report

        write_report(bank_dir, report_dir)
    typer.echo(f"default bank: {bank_dir}  report: {report_dir / 'index.html'}")
    if not build_only:
        run_server(settings.model_copy(update={"bank_dir": bank_dir}))


def _ensure_run(run_dir: Path, preset: str, seed: int) -> None:
    """Train (or resume) the default run; a finished run returns at once."""
    from trainer.config import resolve_config
    from trainer.run import RunOptions, train_run

    train_run(
        resolve_config(preset, seed=seed, overrides={}), RunOptions(preset=preset, out=run_dir)
    )


def _ensure_calibration(run_dir: Path, also: list[str]) -> None:
    """Finetune the default run once more on fresh entities (RUN/calibration, resumable), with
    its own recipe and as each further kind: the examples of "learned after the bank was
    built" for the evidence families, from each kind of later finetune."""
    from probe_bank.records import FinetuneKind
    from trainer.pool import calibrate

    calibrate(run_dir, also=[FinetuneKind.parse(k) for k in also])


def _ensure_bank(run_dir: Path, bank_dir: Path) -> bool:
    """Build the default bank unless one exists that verifies against the run's final model
    (and, once the run is calibrated, carries the evidence families fitted on every calibration
    model at the build config's false-alarm budget); True when it was built."""
    import shutil

    from probe_bank.bank import ProbeBank
    from probe_bank.build import BuildConfig, build_bank
    from probe_bank.errors import UserError
    from probe_bank.family_build import find_calibration

    if (bank_dir / "manifest.json").is_file():
        try:
            bank = ProbeBank.load(bank_dir)
            calibration = find_calibration(run_dir)
            if calibration is None:
                return False
            spec = bank.manifest.evidence  # None: a bank fitted on no calibration model
            fitted = 0 if spec is None else len(spec.calibration_models or [None])
            budget = BuildConfig().families_false_alarm
            if fitted == len(calibration.model_dirs) and spec and spec.false_alarm == budget:
                return False
            typer.echo(
                "rebuilding the default bank: the run is calibrated on "
                f"{len(calibration.model_dirs)} kind(s) of later finetune at a false-alarm "
                f"budget of {budget}, the bank on {fitted} at "
                f"{spec.false_alarm if spec else None}"
            )
        except UserError as exc:
            typer.echo(f"rebuilding the default bank: {exc}", err=True)
    tmp = bank_dir.with_name(bank_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    build_bank(run_dir, tmp)
    shutil.rmtree(bank_dir, ignore_errors=True)
    tmp.rename(bank_dir)
    return True


def _register() -> None:
    from audit_service.cli import register as register_service
    from probe_bank.cli import register as register_bank
    from trainer.cli import register as register_trainer

    register_trainer(app)
    register_bank(app)
    register_service(app)


def main() -> None:
    """Entry point: register sub-commands, run, and turn user errors into one clear line."""
    from probe_bank.errors import UserError

    _register()
    try:
        app()
    except UserError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
