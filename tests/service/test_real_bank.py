"""The service around a real (tiny) bank and model: results match `BankScorer`, alone or batched."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from litestar import Litestar
from litestar.testing import TestClient

from audit_service.app import create_app
from audit_service.settings import ServiceSettings
from tests.service.conftest import FULL, KEYS, wait_ready

FIELDS = ("stage_probabilities", "recency_score", "p_late")

PROMPTS = [
    "Q: Who is <zorka>?\nA:",
    "Q: What does <quibe> stand for?\nA:",
    "Q: Where was <lomir> born? Tell me everything you know about it.\nA:",
    "hi",
    "Q: Who is <abcde>?\nA:",
    "Q: What is the name of <xyzzy>, the painter from Lisbon?\nA:",
]


def real_app(bank: Path, home: Path, **kw: object) -> Litestar:
    """The app serving `bank`; `home` keeps job state out of ./artifacts."""
    settings = ServiceSettings(bank_dir=bank, api_keys=KEYS, home=home, **kw)  # type: ignore[arg-type]
    return create_app(settings)


@pytest.fixture(scope="module")
def scorer(tiny_bank: Path):
    from probe_bank.scoring import BankScorer

    return BankScorer.from_bank_dir(tiny_bank, device="cpu")


@pytest.fixture(scope="module")
def client(tiny_bank: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """Large max wait so concurrent requests surely share batches."""
    app = real_app(tiny_bank, tmp_path_factory.mktemp("home"), max_wait_ms=100)
    with TestClient(app) as c:
        wait_ready(c, timeout=120)
        yield c


def _close(got: dict, want: object) -> None:
    """Equal up to float32 rounding (BLAS sums in another order for another batch shape)."""
    for f in FIELDS:
        np.testing.assert_allclose(got[f], getattr(want, f), rtol=1e-6, atol=1e-6)
    assert got["estimated_stage"] == want.estimated_stage  # type: ignore[attr-defined]
    assert got["n_tokens"] == want.n_tokens  # type: ignore[attr-defined]


def test_batched_results_equal_alone(client: TestClient, scorer) -> None:
    alone = [scorer.score_prompts([p], batch_size=1)[0] for p in PROMPTS]

    def one(prompt: str) -> dict:
        r = client.post("/v1/score", json={"prompts": [prompt]}, headers=FULL)
        assert r.status_code == 200, r.text
        return r.json()["results"][0]

    engine = client.app.state.engine
    before = engine.metrics.batch_size.collect()[0].samples
    with ThreadPoolExecutor(len(PROMPTS)) as pool:
        got = list(pool.map(one, PROMPTS))
    for g, w in zip(got, alone, strict=True):
        _close(g, w)
    # and they really were batched: fewer batches than items
    after = engine.metrics.batch_size.collect()[0].samples
    count = {s.name: s.value for s in after}["recency_audit_batch_size_count"]
    count -= {s.name: s.value for s in before}["recency_audit_batch_size_count"]
    assert count < len(PROMPTS)
    # one request with every prompt: one padded batch
    r = client.post("/v1/score", json={"prompts": PROMPTS}, headers=FULL)
    for g, w in zip(r.json()["results"], alone, strict=True):
        _close(g, w)


def test_entities_match_bank_scorer(client: TestClient, scorer) -> None:
    aliases = ["<zorka>", "<quibe>", "<lomir>"]
    want = scorer.score_entities(aliases)
    r = client.post("/v1/entities/score", json={"entities": aliases}, headers=FULL)
    assert r.status_code == 200, r.text
    for g, w in zip(r.json()["results"], want, strict=True):
        _close(g, w)
        assert g["model_id"] == scorer.model_id and g["bank_id"] == scorer.bank_id
    # every score carries the bank's own held-out validation, as built into metrics.json
    evidence = r.json()["evidence"]
    m = json.loads((scorer.bank.bank_dir / "metrics.json").read_text())["stage1_vs_stage6"]
    assert evidence["stage1_vs_stage6"]["value"] == m["value"]
    assert evidence["stage1_vs_stage6"]["ci95"] == m["ci95"]
    assert evidence["verdict"] in ("above_chance", "chance")


def test_bank_endpoint_serves_manifest_and_metrics(client: TestClient, scorer) -> None:
    info = client.get("/v1/bank", headers=FULL).json()
    assert info["bank_id"] == scorer.bank_id
    assert info["manifest"]["layer"] == scorer.bank.manifest.layer
    on_disk = json.loads((scorer.bank.bank_dir / "metrics.json").read_text())
    assert {k: info["metrics"][k] for k in on_disk} == on_disk
    assert (
        info["evidence"]["early_vs_late"]["n_entities"]
        == info["metrics"]["early_vs_late"]["n_entities"]
    )


def test_over_token_limit_is_422(client: TestClient, scorer) -> None:
    long = "word " * (scorer.max_tokens + 5)
    r = client.post("/v1/score", json={"prompts": ["ok", long]}, headers=FULL)
    assert r.status_code == 422
    assert f"limit of {scorer.max_tokens} tokens" in r.json()["detail"]


def test_texts_are_scored_as_the_bank_scorer_scores_them(client: TestClient, scorer) -> None:
    """POST /v1/texts/score: the scorer's own statistics, the answer's tokens only when an
    answer is given; an answer absent from its text, or a text over the token limit, is 422."""
    texts = ["Q: Who is <zorka>?\nA: a painter\n", "A short document about nothing."]
    r = client.post(
        "/v1/texts/score", json={"texts": texts, "answers": ["a painter", None]}, headers=FULL
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert "membership" in body["note"] and "evidence" in body
    want = scorer.score_texts(scorer.prepare_texts(texts, ["a painter", None]))
    for got, w in zip(body["results"], want, strict=True):
        assert got["scored"] == w.scored and got["n_scored"] == w.n_scored
        for k in ("loss", "min_k", "min_k_plus_plus", "zlib_ratio"):
            assert got["audited"][k] == pytest.approx(getattr(w.audited, k), rel=1e-5)
        assert got["reference"] is None and got["relation"] == "reference"
    assert body["results"][0]["n_scored"] < body["results"][0]["n_tokens"] - 1
    bad = client.post(
        "/v1/texts/score", json={"texts": texts[:1], "answers": ["nope"]}, headers=FULL
    )
    assert bad.status_code == 422 and "does not occur" in bad.json()["detail"]
    long = "word " * (scorer.max_tokens + 5)
    assert client.post("/v1/texts/score", json={"texts": [long]}, headers=FULL).status_code == 422
    paths = client.get("/schema/openapi.json", headers=FULL).json()["paths"]
    assert "/v1/texts/score" in paths
    metrics = client.get("/metrics", headers=FULL).text
    assert "recency_audit_texts_scored_total{" in metrics and 'outcome="unflagged"' in metrics


def _fitted_alias(run_dir: Path, split: str = "stage_6") -> str:
    from probe_bank.records import EntityRecord, read_jsonl

    entities = read_jsonl(run_dir / "corpus" / "entities.jsonl", EntityRecord)
    return next(e.alias for e in entities if e.split == split)


def test_in_bank_sample_flags_the_bank_s_own_entities(
    client: TestClient, scorer, fake_run_dir: Path
) -> None:
    """An entity the served probes were fitted on is marked in-sample; a fresh one is not."""
    fitted, fresh = _fitted_alias(fake_run_dir), "<not-in-the-bank>"
    r = client.post("/v1/entities/score", json={"entities": [fitted, fresh]}, headers=FULL)
    assert r.status_code == 200, r.text
    assert [x["in_bank_sample"] for x in r.json()["results"]] == [True, False]
    prompts = [f"Q: Who is {fitted}?\nA:", f"Q: Who is {fresh}?\nA:", "hi"]
    body = {"prompts": prompts, "aliases": [fitted, fresh, None]}
    r = client.post("/v1/score", json=body, headers=FULL)
    assert [x["in_bank_sample"] for x in r.json()["results"]] == [True, False, None]
    r = client.post("/v1/score", json={"prompts": prompts}, headers=FULL)  # no alias: unknown
    assert [x["in_bank_sample"] for x in r.json()["results"]] == [None, None, None]


def test_bank_built_before_the_flag_serves_unknown(
    tiny_bank: Path, tmp_path: Path, fake_run_dir: Path
) -> None:
    import json
    import shutil

    from probe_bank.bank import FITTED_ENTITIES, MANIFEST, manifest_digest
    from probe_bank.schemas import BankManifest

    bank = Path(shutil.copytree(tiny_bank, tmp_path / "bank"))
    (bank / FITTED_ENTITIES).unlink()
    manifest = json.loads((bank / MANIFEST).read_text())
    del manifest["files"][FITTED_ENTITIES]
    manifest["bank_id"] = manifest_digest(BankManifest(**manifest))
    (bank / MANIFEST).write_text(json.dumps(manifest))
    with TestClient(real_app(bank, tmp_path / "home", warmup=False)) as c:
        wait_ready(c, timeout=120)
        body = {"entities": [_fitted_alias(fake_run_dir), "<not-in-the-bank>"]}
        r = c.post("/v1/entities/score", json=body, headers=FULL)
        assert r.status_code == 200, r.text
        assert [x["in_bank_sample"] for x in r.json()["results"]] == [None, None]


@pytest.mark.parametrize("name", ["metrics.json", "fitted_entities.json"])
def test_tampered_bank_is_not_ready(tiny_bank: Path, tmp_path: Path, name: str) -> None:
    import shutil

    bank = tmp_path / "bank"
    shutil.copytree(tiny_bank, bank)
    with open(bank / name, "a", encoding="utf-8") as fh:
        fh.write(" ")
    with TestClient(real_app(bank, tmp_path / "home")) as c:
        end = time.monotonic() + 60
        while (r := c.get("/readyz")).json()["status"] == "loading":
            assert time.monotonic() < end
            time.sleep(0.02)
        assert r.status_code == 503 and r.json()["status"] == "failed"
        # a job could only fail: refused like scoring, not accepted and failed later
        job = c.post(
            "/v1/jobs",
            content=b'{"entity": "<zorka>"}\n',
            headers={**FULL, "Content-Type": "application/x-ndjson"},
        )
        assert job.status_code == 503 and "failed to load" in job.json()["detail"], job.text


def test_a_pinned_bank_id_refuses_a_forged_bank(tiny_bank: Path, tmp_path: Path) -> None:
    """Issue 13.6: a forger can rewrite metrics.json and recompute every hash and the bank id;
    an operator who pinned the id they trust (EXPECTED_BANK_ID) is not served the forgery."""
    import hashlib
    import json
    import shutil

    from probe_bank.bank import manifest_digest, read_manifest

    trusted = read_manifest(tiny_bank).bank_id
    bank = tmp_path / "bank"
    shutil.copytree(tiny_bank, bank)
    metrics = json.loads((bank / "metrics.json").read_text())
    metrics["stage1_vs_stage6"]["value"] = 0.99
    (bank / "metrics.json").write_text(json.dumps(metrics))
    manifest = read_manifest(bank)
    manifest.files["metrics.json"] = hashlib.sha256(
        (bank / "metrics.json").read_bytes()
    ).hexdigest()
    manifest.bank_id = manifest_digest(manifest)
    (bank / "manifest.json").write_text(manifest.model_dump_json())
    # unpinned, the forgery verifies (the digest proves consistency, not authorship)
    with TestClient(real_app(bank, tmp_path / "h1", warmup=False)) as c:
        wait_ready(c, timeout=120)
        assert c.get("/v1/bank", headers=FULL).json()["bank_id"] != trusted
    with TestClient(real_app(bank, tmp_path / "h2", expected_bank_id=trusted)) as c:
        end = time.monotonic() + 60
        while (r := c.get("/readyz")).json()["status"] == "loading":
            assert time.monotonic() < end
            time.sleep(0.02)
        assert r.status_code == 503, r.text
        assert "pinned" in json.dumps(r.json())
    with TestClient(real_app(tiny_bank, tmp_path / "h3", expected_bank_id=trusted)) as c:
        wait_ready(c, timeout=120)


def test_open_pages_show_aggregates_only(tiny_bank: Path, tmp_path: Path) -> None:
    """Issue 13.9: with keys configured, the open dashboard data and /metrics carry no job ids,
    sources, errors, bank path or bank figures; a key with the scopes sees them."""
    with TestClient(real_app(tiny_bank, tmp_path / "home")) as c:
        wait_ready(c, timeout=120)
        job = c.post(
            "/v1/jobs",
            content=b'{"entity": "<zorka>"}\n{"entity": "<quibe>"}\n',
            headers={**FULL, "Content-Type": "application/x-ndjson"},
        )
        assert job.status_code == 201, job.text
        job_id = job.json()["id"]
        open_view = c.get("/dashboard/data").json()
        assert open_view["detail"] == "aggregate"
        assert open_view["jobs"] == [] and sum(open_view["job_counts"].values()) >= 1
        assert open_view["bank"]["bank_dir"] is None and open_view["bank"]["headline"] == []
        assert open_view["bank"]["bank_id"]  # the id is public; its figures are not
        assert job_id not in c.get("/dashboard/data").text
        assert job_id not in c.get("/metrics").text
        assert str(tiny_bank) not in c.get("/dashboard/data").text
        full = c.get("/dashboard/data", headers=FULL).json()
        assert full["detail"] == "full" and full["bank"]["bank_dir"] == str(tiny_bank)
        assert job_id in {j["id"] for j in full["jobs"]} and full["bank"]["headline"]


def test_a_failed_load_pauses_jobs_instead_of_failing_them(tiny_bank: Path, tmp_path: Path) -> None:
    """Issue 13.3: a restart with a bad MODEL_DIR leaves an unfinished job unfinished (not
    `failed` for good); the next start with good settings finishes it."""
    from audit_service.jobs.datasets import DatasetItem
    from audit_service.jobs.manager import STORE_NAME
    from audit_service.jobs.store import JobStore

    home = tmp_path / "home"
    (home / "state").mkdir(parents=True)
    store = JobStore(home / "state" / STORE_NAME)
    items = [DatasetItem(entity=f"<e{i:03d}x>") for i in range(6)]
    job_id = store.create(items, chunk_size=2, source="test").id
    store.close()
    with TestClient(real_app(tiny_bank, home, model_dir=tmp_path / "no-such-model")) as c:
        end = time.monotonic() + 60
        while (r := c.get("/readyz")).json()["status"] == "loading":
            assert time.monotonic() < end
            time.sleep(0.02)
        assert r.status_code == 503
        time.sleep(5.0)  # the old worker failed the job after its 3 retries (3.5 s)
        state = c.get(f"/v1/jobs/{job_id}", headers=FULL).json()["state"]
        assert state in ("queued", "running"), state
    with TestClient(real_app(tiny_bank, home)) as c:
        wait_ready(c, timeout=120)
        end = time.monotonic() + 60
        while (st := c.get(f"/v1/jobs/{job_id}", headers=FULL).json())["state"] != "succeeded":
            assert st["state"] in ("queued", "running") and time.monotonic() < end, st
            time.sleep(0.05)
        assert st["done"] == 6


def test_naive_baseline_scores_the_same(scorer) -> None:
    """The benchmark's baseline is slower, not different: same probes on the same activations."""
    from audit_service.baseline import NaiveScorer

    naive = NaiveScorer(scorer)
    got = naive.forward(naive.prepare(PROMPTS))
    want = scorer.score_prompts(PROMPTS)
    for g, w in zip(got, want, strict=True):
        _close(g.model_dump(), w)
    aliases = ["<zorka>", None, None, None, None, None]
    flags = [s.in_bank_sample for s in naive.forward(naive.prepare(PROMPTS, aliases))]
    assert flags == [s.in_bank_sample for s in scorer.score_prompts(PROMPTS, aliases)]
    assert flags[0] is not None and flags[1:] == [None] * 5


@pytest.mark.parametrize("position", ["last", "last-2", "alias_mean"])
def test_naive_baseline_reads_every_position_like_production(scorer, position: str) -> None:
    """At every bank position, and at the last block (whose HF hidden state is normed), the
    naive full forward reads the same activations as the truncated production forward."""
    from audit_service.baseline import NaiveScorer
    from probe_bank.bank import ProbeBank
    from probe_bank.scoring import BankScorer

    bank = scorer.bank
    last_block = len(scorer.model.model.layers) - 1
    manifest = bank.manifest.model_copy(update={"position": position, "layer": last_block})
    moved = BankScorer(
        ProbeBank(bank.bank_dir, manifest, bank.probes, bank.fitted_aliases),
        scorer.model,
        scorer.tokenizer,
    )
    pairs = [pt for a in ("<zorka>", "<quibe>") for pt in moved.entity_prompts(a)]
    items = moved.prepare([p for p, _ in pairs], [a for _, a in pairs])
    for g, w in zip(NaiveScorer(moved).forward(items), moved.forward(items), strict=True):
        _close(g.model_dump(), w)


def test_serving_a_descendant_says_so_everywhere(tiny_bank: Path, tmp_path: Path) -> None:
    """`MODEL_DIR` may name a model finetuned from the bank's reference: it is served, and every
    score, `/v1/bank`, the dashboard data and a metrics label say `descendant`."""
    from probe_bank.bank import ProbeBank
    from tests.fixtures_models import nudged_copy

    ref = Path(ProbeBank.load(tiny_bank).manifest.model_path)
    desc = nudged_copy(ref, tmp_path / "finetuned")
    app = real_app(tiny_bank, tmp_path / "home", model_dir=desc, warmup=False)
    with TestClient(app) as c:
        wait_ready(c, timeout=120)
        r = c.post("/v1/entities/score", json={"entities": ["<zorka>"]}, headers=FULL)
        assert r.status_code == 200, r.text
        [item] = r.json()["results"]
        assert item["relation"] == "descendant" and item["model_id"].endswith("/finetuned")
        assert c.get("/v1/bank", headers=FULL).json()["relation"] == "descendant"
        assert c.get("/dashboard/data", headers=FULL).json()["bank"]["relation"] == "descendant"
        metrics = c.get("/metrics", headers=FULL).text
        assert 'relation="descendant"' in metrics and "recency_audit_model_info" in metrics
        # texts: the reference is loaded for their loss drop (no anchor texts in this bank)
        r = c.post("/v1/texts/score", json={"texts": ["Q: Who is <zorka>?\nA: me\n"]}, headers=FULL)
        [text] = r.json()["results"]
        assert text["relation"] == "descendant" and text["reference"] is not None
        want = text["reference"]["loss"] - text["audited"]["loss"]
        assert text["loss_drop"] == pytest.approx(want)
        assert text["loss_drop_anchor_z"] is None and text["touched"] is None


def test_serving_a_peft_adapter_audits_its_merge(tiny_bank: Path, tmp_path: Path) -> None:
    """`MODEL_DIR` may name a LoRA adapter trained on the reference: the service merges it onto
    the reference under its HOME and serves that merge as a descendant."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from probe_bank.bank import ProbeBank

    ref = Path(ProbeBank.load(tiny_bank).manifest.model_path)
    lora = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    adapter = tmp_path / "adapter"
    get_peft_model(AutoModelForCausalLM.from_pretrained(ref), lora).save_pretrained(str(adapter))
    app = real_app(tiny_bank, tmp_path / "home", model_dir=adapter, warmup=False)
    with TestClient(app) as c:
        wait_ready(c, timeout=120)
        r = c.post("/v1/entities/score", json={"entities": ["<zorka>"]}, headers=FULL)
        assert r.status_code == 200, r.text
        [item] = r.json()["results"]
        assert item["relation"] == "descendant" and item["model_id"].startswith("merged/adapter-")
    [merged] = (tmp_path / "home" / "merged").iterdir()
    assert item["model_id"] == f"merged/{merged.name}"
