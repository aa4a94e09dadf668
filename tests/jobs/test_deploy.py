"""deploy/: compose wiring, Grafana provisioning, and dashboard queries that name real metrics."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from audit_service.jobs.store import JobStore
from audit_service.jobs.telemetry import JobsCollector
from audit_service.telemetry import Telemetry

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "recency-audit.json"


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every target, Grafana's range variables made concrete."""
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [
        (p["title"], t["expr"].replace("$__rate_interval", "1m").replace("$__range", "5m"))
        for p in panels
        for t in p["targets"]
    ]


def exposed_names(tmp_path: Path) -> set[str]:
    """Every sample name the service (with jobs) can expose."""
    metrics = Telemetry()
    metrics.observe_request("GET", "/x", 200, 0.1)
    metrics.observe_batch("m", "b", 1, 1, 0.1)
    metrics.observe_scores("m", "b", "live", [1], [0.5])
    metrics.observe_texts("m", "b", "live", [True, None])
    metrics.observe_evidence("m", "b", 4, 0.2)
    metrics.observe_fused("m", "b", "live", [7])
    metrics.rejected.labels("queue_full").inc()
    store = JobStore(tmp_path / "jobs.sqlite3")
    store.create([], chunk_size=1, source="t")
    metrics.registry.register(JobsCollector(store))
    names = {s.name for m in metrics.registry.collect() for s in m.samples}
    store.close()
    return names | {"recency_audit_job_progress"}  # present only while a job is unfinished


def test_every_dashboard_query_names_an_exposed_metric(tmp_path) -> None:
    names = exposed_names(tmp_path)
    queries = dashboard_queries()
    assert len(queries) >= 10
    for title, expr in queries:
        used = set(re.findall(r"\brecency_audit_[a-z_]+", expr))
        assert used, f"{title}: no recency_audit metric in {expr}"
        assert used <= names, f"{title}: unknown {sorted(used - names)}"
    titles = " ".join(t for t, _ in queries).lower()
    for needed in (
        "request rate",
        "latency",
        "queue depth",
        "batch sizes",
        "stage",
        "recency score",
        "job progress",
    ):
        assert needed in titles, needed


def test_compose_starts_service_prometheus_and_provisioned_grafana() -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"recency-audit", "prometheus", "grafana"} <= set(services)
    build = services["recency-audit"]["build"]
    assert (DEPLOY / build["context"] / build["dockerfile"]).is_file()  # relative to the context
    mounts = {
        v.split(":")[1]: v.split(":")[0]
        for v in services["grafana"]["volumes"]
        if v.startswith("./")
    }
    assert (DEPLOY / mounts["/etc/grafana/provisioning"]).is_dir()
    provider = yaml.safe_load(
        (DEPLOY / "grafana/provisioning/dashboards/recency-audit.yml").read_text()
    )
    dash_path = provider["providers"][0]["options"]["path"]
    assert (DEPLOY / mounts[dash_path] / DASHBOARD.name).is_file()
    datasource = yaml.safe_load(
        (DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text()
    )
    uid = datasource["datasources"][0]["uid"]
    panels = json.loads(DASHBOARD.read_text())["panels"]
    assert all(p["datasource"]["uid"] == uid for p in panels)
    prom = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    target = prom["scrape_configs"][0]["static_configs"][0]["targets"][0]
    assert target.split(":")[0] == "recency-audit"
    assert "./prometheus.yml:/etc/prometheus/prometheus.yml:ro" in services["prometheus"]["volumes"]


def test_promtool_accepts_the_scrape_config() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("`promtool` is absent (Debian package `prometheus`)")
    r = subprocess.run(
        [promtool, "check", "config", str(DEPLOY / "prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stdout + r.stderr
