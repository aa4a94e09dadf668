"""GET /dashboard: a self-contained page (inline CSS and JS, no external requests) that polls
GET /dashboard/data; report PNGs, when a report dir sits next to the bank, come from
GET /dashboard/figures/{name}."""

from __future__ import annotations

import asyncio
import time
from functools import cache
from importlib.resources import files
from typing import Any

from litestar import Controller, Request, Response, get
from litestar.exceptions import NotFoundException
from litestar.response import File

from audit_service.auth import presented_scopes
from audit_service.dashboard.data import DashboardData, bank_figures, live_stats, report_dir
from audit_service.engine import ScoringEngine
from audit_service.jobs.manager import JobManager
from audit_service.settings import ServiceSettings
from audit_service.telemetry import Telemetry


@cache
def page() -> str:
    """The dashboard HTML (package data, read once)."""
    return files("audit_service.dashboard").joinpath("static/index.html").read_text("utf-8")


def _bank_dir(settings: Any) -> Any:
    return getattr(settings, "resolved_bank_dir", None) or getattr(settings, "bank_dir", None)


class DashboardController(Controller):
    """The built-in monitoring page and the JSON it polls."""

    path = "/dashboard"
    tags = ["dashboard"]

    @get("/", media_type="text/html", include_in_schema=False)
    async def index(self) -> Response[str]:
        return Response(page(), media_type="text/html", headers={"Cache-Control": "no-store"})

    @get(
        "/data",
        summary="Live stage mix and request rate; jobs and the bank's figures with a key",
        security=[{}],
    )
    async def data(
        self,
        metrics: Telemetry,
        settings: ServiceSettings,
        engine: ScoringEngine,
        job_manager: JobManager | None,
        request: Request,
    ) -> DashboardData:
        scopes = presented_scopes(request, settings.api_keys)
        jobs: list[dict[str, Any]] = []
        counts: dict[str, int] = {}
        running = job_manager is not None and getattr(job_manager, "running", False)
        if running and "jobs" in scopes:
            recent = await asyncio.to_thread(job_manager.recent, 10)  # type: ignore[union-attr]
            jobs = [j.model_dump(mode="json") for j in recent]
        if running:
            counts = await asyncio.to_thread(job_manager.count_by_state)  # type: ignore[union-attr]
        scorer = engine.scorer if engine.ready else None
        bank = scorer.bank if scorer is not None else None
        full = {"jobs", "score"} <= scopes  # the id and relation are shown to all
        figures = bank_figures(
            bank,
            _bank_dir(settings) if full else None,
            with_metrics="score" in scopes,
            after_thresholds=scorer.after_thresholds() if scorer is not None else None,
        )
        return DashboardData(
            time=time.time(),
            detail="full" if full else "aggregate",
            live=live_stats(metrics.registry),
            jobs=jobs,
            job_counts=counts,
            bank=figures,
        )

    @get("/figures/{name:str}", include_in_schema=False)
    async def figure(self, name: str, settings: ServiceSettings) -> File:
        bank = _bank_dir(settings)
        folder = report_dir(bank) if bank is not None else None
        if folder is None or name not in {p.name for p in folder.glob("*.png")}:
            raise NotFoundException(f"no report figure {name!r}")
        return File(folder / name, media_type="image/png", content_disposition_type="inline")
