"""The `recency-audit` console script: one typer app composed of each package's sub-commands.

Sub-apps are imported lazily so `recency-audit --help` does not pay for importing torch.
"""

from __future__ import annotations

import sys

import typer

app = typer.Typer(
    name="recency-audit",
    help="Audit whether and how recently a language model was finetuned on an entity.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


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
