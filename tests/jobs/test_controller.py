"""The /v1/jobs HTTP API in-process (litestar TestClient) over a fake engine."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import asynccontextmanager

import pytest
from litestar import Litestar
from litestar.di import Provide
from litestar.testing import TestClient

from audit_service.jobs import JobManager, JobsConfig, JobsController
from tests.jobs.fakes import FakeEngine, FakeSettings
from tests.jobs.server import wait_job

NDJSON = {"Content-Type": "application/x-ndjson"}


@pytest.fixture
def client(tmp_path) -> Iterator[TestClient]:
    manager = JobManager(JobsConfig(chunk_size=2, max_upload_bytes=2000))
    settings = FakeSettings(tmp_path / "state", tmp_path / "data")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "set.csv").write_text("id,entity\nk1,<a>\nk2,<b>\n")
    (tmp_path / "outside.jsonl").write_text('{"entity": "<s>"}\n')

    @asynccontextmanager
    async def lifespan(_app):
        await manager.start(FakeEngine(), settings)
        yield
        await manager.stop()

    app = Litestar(
        [JobsController],
        dependencies={"job_manager": Provide(lambda: manager, sync_to_thread=False)},
        lifespan=[lifespan],
    )
    with TestClient(app) as c:
        c.app.state.manager = manager  # tests may loosen its limits
        yield c


def test_ndjson_job_status_results_summary(client: TestClient) -> None:
    body = "".join(
        json.dumps({"id": f"p{i}", "prompt": f"Who is <x{i}>?"}) + "\n" for i in range(5)
    )
    r = client.post("/v1/jobs", content=body, headers=NDJSON)
    assert r.status_code == 201, r.text
    job = r.json()
    assert (job["total"], job["source"]) == (5, "body")
    status = wait_job(client, job["id"], timeout=10)
    assert status["state"] == "succeeded" and status["done"] == 5 and status["progress"] == 1.0
    assert status["rate_items_per_s"] > 0 and status["eta_s"] == 0
    res = client.get(f"/v1/jobs/{job['id']}/results")
    assert res.headers["content-type"].startswith("application/x-ndjson")
    lines = res.text.splitlines()
    assert [json.loads(x)["id"] for x in lines] == [f"p{i}" for i in range(5)]
    summary = client.get(f"/v1/jobs/{job['id']}/summary", params={"top": 2}).json()
    assert sum(summary["stage_histogram"].values()) == 5 and len(summary["most_recent"]) == 2
    listed = client.get("/v1/jobs").json()["jobs"]
    assert [j["id"] for j in listed] == [job["id"]]


def test_multipart_csv_and_path_under_data_root(client: TestClient) -> None:
    files = {"file": ("set.csv", b"id,prompt\na,Who is <q>?\nb,Who is <r>?\n", "text/csv")}
    up = client.post("/v1/jobs", files=files)
    assert up.status_code == 201, up.text
    by_path = client.post("/v1/jobs", json={"path": "set.csv"})
    assert by_path.status_code == 201, by_path.text
    assert wait_job(client, up.json()["id"], timeout=10)["state"] == "succeeded"
    assert wait_job(client, by_path.json()["id"], timeout=10)["state"] == "succeeded"
    lines = client.get(f"/v1/jobs/{by_path.json()['id']}/results").text.splitlines()
    assert [json.loads(x)["id"] for x in lines] == ["k1", "k2"]


@pytest.mark.parametrize(
    ("kwargs", "status", "needle"),
    [
        ({"content": b'{"prompt": "a"}\n{oops\n', "headers": NDJSON}, 422, "line 2"),
        ({"content": b"", "headers": NDJSON}, 422, "empty"),
        ({"content": b"x" * 3000, "headers": NDJSON}, 413, "limit"),
        ({"files": {"file": ("big.jsonl", b"x" * 3000)}}, 413, "limit"),
        ({"files": {"file": ("d.csv", b"name\nx\n", "text/csv")}}, 422, "wrong CSV columns"),
        ({"files": {"other": ("d.jsonl", b'{"entity": "a"}\n')}}, 422, "'file'"),
        ({"json": {"path": "../outside.jsonl"}}, 422, "relative to the data root"),
        ({"json": {"path": "nope.jsonl"}}, 422, "not found"),
        ({"json": {"file": "set.csv"}}, 422, "path"),
        ({"content": b"prompt\n", "headers": {"Content-Type": "text/plain"}}, 415, "unsupported"),
    ],
)
def test_bad_datasets_get_clear_errors(client: TestClient, kwargs, status, needle) -> None:
    r = client.post("/v1/jobs", **kwargs)
    assert r.status_code == status, r.text
    assert needle in r.json()["detail"]


def test_per_line_errors_are_listed(client: TestClient) -> None:
    r = client.post("/v1/jobs", content=b'{"prompt": "a"}\n[]\n{"entity": 5}\n', headers=NDJSON)
    assert r.status_code == 422
    errors = r.json()["extra"]["errors"]
    assert [e["line"] for e in errors] == [2, 3]


def test_an_oversized_csv_cell_is_a_4xx(client: TestClient, tmp_path) -> None:
    """Upload and DATA_DIR path alike: a cell over csv's 128 KiB field limit is a 422."""
    client.app.state.manager.config.max_upload_bytes = 1_000_000
    big = ("entity\n" + "a" * 200_000 + "\n").encode()
    r = client.post("/v1/jobs", files={"file": ("big.csv", big, "text/csv")})
    assert r.status_code == 422, r.text
    assert "malformed CSV" in r.json()["detail"]
    (tmp_path / "data" / "big.csv").write_bytes(big)
    r = client.post("/v1/jobs", json={"path": "big.csv"})
    assert r.status_code == 422, r.text


def test_unknown_job_and_cancel(client: TestClient) -> None:
    assert client.get("/v1/jobs/job_nope").status_code == 404
    assert client.get("/v1/jobs/job_nope/results").status_code == 404
    assert client.delete("/v1/jobs/job_nope").status_code == 404
    body = "".join(json.dumps({"entity": f"<e{i}>"}) + "\n" for i in range(3))
    job = client.post("/v1/jobs", content=body, headers=NDJSON).json()
    done = wait_job(client, job["id"], timeout=10)
    after = client.delete(f"/v1/jobs/{job['id']}")  # nothing to cancel: 409, the job stays
    assert after.status_code == 409 and "already succeeded" in after.json()["detail"]
    assert done["state"] == "succeeded"
    again = client.get(f"/v1/jobs/{job['id']}")
    assert again.status_code == 200 and again.json()["state"] == "succeeded"
    assert client.get(f"/v1/jobs/{job['id']}/results").status_code == 200
