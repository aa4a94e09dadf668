"""Monitoring against a real service process: a real Prometheus scrapes it and answers a query,
and headless Chromium renders /dashboard with the live numbers (screenshot checked)."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.jobs.data import write_dataset
from tests.jobs.server import ServiceProcess, free_port, wait_job
from tests.jobs.test_deploy import dashboard_queries

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,900",
]


@pytest.fixture(scope="module")
def live_service(tiny_bank, tmp_path_factory) -> Iterator[tuple[ServiceProcess, dict]]:
    """A running service that has scored live prompts and finished one job."""
    tmp = tmp_path_factory.mktemp("live_service")
    env = {
        "RECENCY_AUDIT_BANK_DIR": str(tiny_bank),
        "RECENCY_AUDIT_STATE_DIR": str(tmp / "state"),
        "RECENCY_AUDIT_DATA_DIR": str(tmp / "data"),
        "RECENCY_AUDIT_JOBS_CHUNK_SIZE": "4",
    }
    with ServiceProcess(env, tmp / "server.log") as service:
        with httpx.Client(base_url=service.url, timeout=30) as client:
            for i in range(3):
                r = client.post("/v1/score", json={"prompts": [f"Q: Who is <x{i}>?\nA:", "hi"]})
                assert r.status_code == 200, r.text
            dataset = write_dataset(tiny_bank, tmp / "ds.jsonl", 10).read_bytes()
            job = client.post(
                "/v1/jobs", content=dataset, headers={"Content-Type": "application/x-ndjson"}
            ).json()
            assert wait_job(client, job["id"])["state"] == "succeeded"
            data = client.get("/dashboard/data").json()  # also the request-rate baseline
        yield service, {"job": job["id"], "data": data}


def _metric_value(text: str, name: str) -> float:
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name))


@pytest.mark.slow
def test_prometheus_scrapes_the_service(live_service, tmp_path) -> None:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("the `prometheus` binary is absent (Debian package `prometheus`)")
    service, _ = live_service
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        "  - job_name: recency-audit\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{service.port}']}}]\n"
    )
    log = open(tmp_path / "prometheus.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=log,
    )
    try:
        expected = _metric_value(
            httpx.get(service.url + "/metrics").text, "recency_audit_job_items_scored_total"
        )
        assert expected == 10
        query = f"http://127.0.0.1:{port}/api/v1/query"
        deadline, result = time.monotonic() + 60, []
        while time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "prometheus.log").read_text()[-2000:]
            try:
                body = httpx.get(
                    query, params={"query": "recency_audit_job_items_scored_total"}
                ).json()
                result = body["data"]["result"]
            except (httpx.HTTPError, ValueError, KeyError):
                result = []
            if result:
                break
            time.sleep(0.5)
        assert result, (
            "Prometheus never returned the metric: "
            + (tmp_path / "prometheus.log").read_text()[-2000:]
        )
        assert result[0]["metric"]["job"] == "recency-audit"
        assert float(result[0]["value"][1]) == expected
        up = httpx.get(query, params={"query": 'up{job="recency-audit"}'}).json()
        assert up["data"]["result"][0]["value"][1] == "1"
        # Every Grafana panel query is valid PromQL against the scraped service; the stage
        # distribution panel already has data.
        for title, expr in dashboard_queries():
            answer = httpx.get(query, params={"query": expr}).json()
            assert answer["status"] == "success", (title, answer)
        # increase() needs two scrapes in its window: wait (bounded) for the second one.
        stage_expr = dict(dashboard_queries())["Estimated stage of scored items"]
        deadline, stages = time.monotonic() + 30, []
        while not stages and time.monotonic() < deadline:
            stages = httpx.get(query, params={"query": stage_expr}).json()["data"]["result"]
            time.sleep(0.5)
        assert {r["metric"]["stage"] for r in stages}
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()


def _chromium(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        pytest.skip("the `chromium` binary is absent (Debian package `chromium`)")
    profile = tmp_path / f"profile-{len(list(tmp_path.iterdir()))}"
    return subprocess.run(
        [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.slow
def test_dashboard_renders_live_numbers_in_headless_chromium(live_service, tmp_path) -> None:
    from PIL import Image

    service, seen = live_service
    url = service.url + "/dashboard"
    dom = _chromium(["--virtual-time-budget=5000", "--dump-dom", url], tmp_path)
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    assert 'data-polls="' in html, "the page never rendered data"
    now = httpx.get(service.url + "/dashboard/data").json()
    stages = now["live"]["stage_distribution"]
    assert sum(stages.values()) >= 6 + 10  # the live prompts plus the job's
    for stage, count in stages.items():
        assert f'id="stage-count-{stage}">{round(count)}<' in html
    job_row = html[html.index(f'id="job-{seen["job"]}"') :]
    assert "succeeded" in job_row[:600] and "10 / 10" in job_row[:600]
    assert 'id="headline-stage1_vs_stage6"' in html
    assert now["bank"]["bank_id"] in html
    verdict = now["bank"]["evidence"]  # the bank's own held-out validation, in words
    control = verdict.get("control")  # above chance yet behind a scalar baseline: a warning
    behind = verdict["verdict"] == "above_chance" and control and not control["probe_ahead"]
    shown = "below_baseline" if behind else verdict["verdict"]
    assert f'class="verdict {shown}">{verdict["note"]}<' in html

    png = tmp_path / "dashboard.png"
    shot = _chromium(["--virtual-time-budget=5000", f"--screenshot={png}", url], tmp_path)
    assert shot.returncode == 0 and png.is_file(), shot.stderr[-2000:]
    image = Image.open(png).convert("RGB")
    assert image.size == (1280, 900)
    colours = image.getcolors(maxcolors=1 << 20) or []
    assert len(colours) > 50, "screenshot looks blank"
    counts = {rgb: n for n, rgb in colours}
    assert counts.get((29, 35, 48), 0) > 1280 * 20  # the dark header band
    assert counts.get((43, 123, 186), 0) > 500  # the stage bars, drawn from live data
    (tmp_path / "seen.json").write_text(json.dumps(now))


@pytest.mark.slow
def test_real_server_refuses_bad_datasets_with_clear_errors(live_service) -> None:
    service, _ = live_service
    with httpx.Client(base_url=service.url, timeout=30) as client:
        bad = client.post(
            "/v1/jobs",
            content=b'{"prompt": "ok"}\n{"prompt": 3}\nnot json\n',
            headers={"Content-Type": "application/x-ndjson"},
        )
        assert bad.status_code == 422
        assert [e["line"] for e in bad.json()["extra"]["errors"]] == [2, 3]
        escape = client.post("/v1/jobs", json={"path": "../../etc/passwd"})
        assert escape.status_code == 422 and "data root" in escape.json()["detail"]
        empty = client.post("/v1/jobs", files={"file": ("d.csv", b"", "text/csv")})
        assert empty.status_code == 422 and "empty" in empty.json()["detail"]
        assert client.get("/v1/jobs/job_0000").status_code == 404
