"""`recency-audit serve`: the audit service under uvicorn (production settings, one worker).

Heavy imports (litestar app, torch) happen inside the command, not at import of this module.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from probe_bank.errors import UserError

if TYPE_CHECKING:
    from audit_service.settings import ServiceSettings


def register(app: typer.Typer) -> None:
    """Add `serve` and the offline `audit` to the main app."""
    from audit_service.offline import register as register_offline

    app.command("serve")(serve)
    register_offline(app)


def serve(
    bank: Path | None = typer.Option(
        None,
        "--bank",
        help="BANK_DIR to serve (default: RECENCY_AUDIT_BANK_DIR, else the embedded default "
        "$RECENCY_AUDIT_HOME/banks/default)",
    ),
    model: Path | None = typer.Option(
        None,
        "--model",
        help="model to audit: the bank's reference (default) or a descendant of it, as a model "
        "directory or a PEFT adapter directory (default RECENCY_AUDIT_MODEL_DIR)",
    ),
    host: str | None = typer.Option(None, help="bind address (default RECENCY_AUDIT_HOST)"),
    port: int | None = typer.Option(None, help="port (default RECENCY_AUDIT_PORT)"),
) -> None:
    """Serve the scoring API, batch jobs, metrics and dashboard for one probe bank.

    All other settings come from RECENCY_AUDIT_* environment variables (see the README).
    """
    from pydantic import ValidationError

    from audit_service.settings import ServiceSettings

    overrides = {
        k: v
        for k, v in {"bank_dir": bank, "model_dir": model, "host": host, "port": port}.items()
        if v is not None
    }
    try:
        settings = ServiceSettings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise UserError(f"invalid RECENCY_AUDIT_* settings: {problems}") from None
    run_server(settings)


def run_server(settings: ServiceSettings) -> None:
    """Run the app under uvicorn until interrupted (also used by `recency-audit up`)."""
    import uvicorn

    from audit_service.app import create_app
    from audit_service.protocol import deadline_protocol

    bank_dir = settings.resolved_bank_dir
    if not (bank_dir / "manifest.json").is_file():
        raise UserError(
            f"no probe bank at {bank_dir}: build one with `recency-audit bank build` "
            "or run `recency-audit up`"
        )
    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        workers=1,
        reload=False,
        lifespan="on",
        proxy_headers=True,
        server_header=False,
        log_level="info",
        timeout_graceful_shutdown=10,
        http=deadline_protocol(settings.read_timeout_s, settings.http_parser),
        loop=settings.event_loop,
        timeout_keep_alive=int(settings.keep_alive_s),
        limit_concurrency=settings.max_connections,
    )
    uvicorn.Server(config).run()
