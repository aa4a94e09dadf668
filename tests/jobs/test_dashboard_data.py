"""Dashboard numbers from a registry, quantiles, bank figures, and the page itself (in-process)."""

from __future__ import annotations

import json
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from litestar import Litestar
from litestar.di import Provide
from litestar.testing import TestClient

from audit_service.dashboard import DashboardController
from audit_service.dashboard.data import bank_figures, histogram_quantile, live_stats
from audit_service.engine import ScoringEngine
from audit_service.jobs import JobManager, JobsConfig
from audit_service.settings import ServiceSettings
from audit_service.telemetry import Telemetry
from tests.jobs.fakes import FakeEngine
from tests.service.fakes import FakeScorer


def test_histogram_quantile_interpolates_like_prometheus() -> None:
    buckets = {0.1: 10.0, 0.5: 30.0, 1.0: 40.0, float("inf"): 40.0}
    assert histogram_quantile(0.25, buckets) == pytest.approx(0.1)
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.3)
    assert histogram_quantile(0.95, buckets) == pytest.approx(0.9)
    assert histogram_quantile(0.5, {}) is None
    assert histogram_quantile(0.5, {1.0: 0.0, float("inf"): 0.0}) is None


def test_live_stats_read_the_service_registry() -> None:
    m = Telemetry()
    m.observe_scores("m", "b", "live", [0, 6, 6, 3], [-1.0, 2.2, 2.4, 0.1])
    for _ in range(4):
        m.observe_request("POST", "/v1/score", 200, 0.02)
    m.observe_request("GET", "/healthz", 200, 0.001)
    m.observe_batch("m", "b", 4, 64, 0.01)
    m.queue_depth.labels("batch").set(7)
    m.observe_fused("m", "b", "live", [7, 0, 7])
    first = live_stats(m.registry, now=100.0)
    assert first.stage_distribution == {"0": 1.0, "3": 1.0, "6": 2.0}
    assert first.fused_classes == {"0": 1.0, "7": 2.0}
    assert (first.requests_total, first.scoring_requests_total) == (5.0, 4.0)
    assert first.request_rate_per_s is None  # one sample: no rate yet
    assert first.queue_depth == {"live": 0.0, "batch": 7.0}
    assert first.batch_size_mean == 4.0
    assert 0.01 < (first.latency_p50_s or 0) <= 0.025
    assert sum(c for _, c in first.recency_histogram) == 4
    m.observe_request("POST", "/v1/score", 200, 0.02)
    second = live_stats(m.registry, now=102.0)
    assert second.request_rate_per_s == pytest.approx(0.5)
    assert second.scoring_rate_per_s == pytest.approx(0.5)


def test_bank_figures_from_the_loaded_bank_and_report_dir(tiny_bank, tmp_path) -> None:
    """The dashboard shows the bank as verified at load, not a re-read of its files."""
    import shutil

    from probe_bank.bank import ProbeBank
    from probe_bank.schemas import HEADLINE

    bank_dir = Path(shutil.copytree(tiny_bank, tmp_path / "bank"))
    bank = ProbeBank.load(bank_dir)
    on_disk = json.loads((bank_dir / "metrics.json").read_text())
    (bank_dir / "metrics.json").write_text("{}")  # edited after load: must not show
    figs = bank_figures(bank, bank_dir)
    assert figs.bank_id == bank.manifest.bank_id and figs.figures == []
    assert [h.key for h in figs.headline] == [k for k, _ in HEADLINE]
    assert [h.value for h in figs.headline] == [on_disk[k]["value"] for k, _ in HEADLINE]
    assert figs.pairwise_accuracy == on_disk["pairwise_accuracy"]
    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "grid.png").write_bytes(b"\x89PNG")
    assert bank_figures(bank, bank_dir).figures == ["grid.png"]
    assert bank_figures(None, None).headline == []


def test_page_and_data_endpoint(tmp_path) -> None:
    metrics = Telemetry()
    metrics.observe_scores("m", "b", "batch", [2], [0.5])
    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "grid.png").write_bytes(b"\x89PNG fake")
    settings = ServiceSettings(
        home=tmp_path,
        bank_dir=tmp_path / "bank",
        state_dir=tmp_path / "state",
        data_dir=tmp_path / "data",
    )
    (tmp_path / "bank").mkdir()
    manager = JobManager(JobsConfig())

    @asynccontextmanager
    async def lifespan(_app):
        await manager.start(FakeEngine(), settings, metrics)
        yield
        await manager.stop()

    def const(value):
        return Provide(lambda: value, sync_to_thread=False)

    app = Litestar(
        [DashboardController],
        dependencies={
            "metrics": const(metrics),
            "settings": const(settings),
            "job_manager": const(manager),
            "engine": const(ScoringEngine(settings, metrics, FakeScorer)),  # not started: loading
        },
        lifespan=[lifespan],
    )
    with TestClient(app) as client:
        html = client.get("/dashboard")
        assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
        assert "/dashboard/data" in html.text
        # No external resources: nothing is fetched from another origin.
        assert "http://" not in html.text.replace("http://www.w3.org/2000/svg", "")
        assert "https://" not in html.text
        data = client.get("/dashboard/data").json()
        assert data["live"]["stage_distribution"] == {"2": 1.0}
        assert data["jobs"] == [] and data["bank"]["figures"] == ["grid.png"]
        assert client.get("/dashboard/figures/grid.png").content == b"\x89PNG fake"
        assert client.get("/dashboard/figures/..%2Fsecret.png").status_code == 404
