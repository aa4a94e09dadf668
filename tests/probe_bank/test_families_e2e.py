"""The evidence families end to end on the real tiny run: calibrate, build, serve a descendant."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

from probe_bank.build import BuildConfig
from probe_bank.schemas import AFTER_BANK, FAMILIES, FamilyFigures

if TYPE_CHECKING:
    from probe_bank.scoring import BankScorer

#: A bank build without what these tests do not read (baselines, nulls, wide intervals).
QUICK_BUILD: dict[str, object] = {
    "baselines": False,
    "nested_selection": False,
    "n_permutations": 0,
    "scan_n_boot": 20,
    "centroid_n_boot": 20,
}


def served_features(scorer: BankScorer, aliases: list[str]) -> tuple[np.ndarray, list]:
    """The service's entity feature rows and aggregated probe scores: each alias's probe prompts
    scored, folded per entity, then the families' columns."""
    from probe_bank.scoring import aggregate_entity

    k = len(scorer.bank.manifest.templates)
    pairs = [pt for a in aliases for pt in scorer.entity_prompts(a)]
    probe = scorer.score_prompts([p for p, _ in pairs], [a for _, a in pairs])
    agg = [aggregate_entity(probe[i * k : (i + 1) * k]) for i in range(len(aliases))]
    return scorer.entity_features(aliases, agg), agg


@pytest.fixture(scope="module")
def calibrated(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(RUN_DIR with calibration/, BANK_DIR built on it with families)."""
    from probe_bank.build import BuildConfig, build_bank
    from trainer.pool import calibrate

    root = tmp_path_factory.mktemp("families")
    run = root / "run"
    shutil.copytree(tiny_run, run)
    calibrate(run)
    cfg = BuildConfig.model_validate({**QUICK_BUILD, "n_boot": 50})
    return run, build_bank(run, root / "bank", cfg)


def test_pool_is_new_and_calibration_trains_only_the_extra_stage(
    calibrated: tuple[Path, Path],
) -> None:
    from probe_bank.records import EntityRecord, RunRecord, read_jsonl

    run, _ = calibrated
    pool = read_jsonl(run / "calibration/pool/entities.jsonl", EntityRecord)
    corpus = read_jsonl(run / "corpus/entities.jsonl", EntityRecord)
    assert not {e.alias for e in pool} & {e.alias for e in corpus}
    assert {e.split for e in pool} == {"calibration"}
    record = RunRecord.read(run / "calibration/run/run.json")
    assert record.final == "extra_1"
    assert list(record.timings) == [*RunRecord.read(run / "run.json").timings, "extra_1"]
    assert (run / "calibration/run/stage_6").is_symlink()


def test_bank_records_families_and_their_held_out_figures(calibrated: tuple[Path, Path]) -> None:
    from probe_bank.bank import FAMILY_ROWS, FAMILY_WEIGHTS, ProbeBank

    _, bank_dir = calibrated
    bank = ProbeBank.load(bank_dir)
    assert bank.families is not None and set(bank.families) == set(FAMILIES)
    assert bank.manifest.evidence is not None
    assert {FAMILY_WEIGHTS, FAMILY_ROWS} <= set(bank.manifest.files)
    assert bank.metrics is not None
    assert bank.metrics.families is not None  # typed, checked on load
    fam = bank.metrics.families.model_dump(mode="json")
    for name in FAMILIES:
        for key in (
            "stage1_vs_stage6",
            "early_vs_late",
            "after_bank_recall",
            "after_vs_stage6_auc",
        ):
            v = fam[name][key]["value"]
            assert v is not None and 0.0 <= v <= 1.0
    # the reference rows carry no difference at all: the family cannot see class 7 there
    assert fam["difference"]["reference_false_alarms"]["value"] == 0.0
    # class 7 is an operating point at the build's stated false-alarm rate, recorded and saved
    budget = BuildConfig().families_false_alarm
    assert bank.manifest.evidence.false_alarm == fam["false_alarm_target"] == budget
    assert all(bank.families[name].after_threshold_ is not None for name in FAMILIES)
    # ... read under the build's rule, the one the held-out figures were measured with
    assert bank.manifest.evidence.after_rule == fam["after_rule"] == "calibration_and_anchors"


def test_the_saved_rows_reproduce_the_held_out_figures_and_the_served_fused(
    calibrated: tuple[Path, Path],
) -> None:
    """family_rows.safetensors holds the rows exactly as fitted (float64): the held-out
    figures recomputed from them equal metrics.json, and fused refitted on them makes the
    served choice of columns and C, with the served coefficients."""
    _check_saved_rows(calibrated[1])


@pytest.fixture(scope="module")
def two_kinds(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A run calibrated on two kinds of later finetune (its own recipe, and a LoRA adapter of
    rank 2 trained on the pool with stage 2 re-exposed), and its bank."""
    from probe_bank.build import BuildConfig, build_bank
    from probe_bank.records import FinetuneKind
    from trainer.pool import calibrate

    root = tmp_path_factory.mktemp("two-kinds")
    run = root / "run"
    shutil.copytree(tiny_run, run)
    calibrate(run, also=[FinetuneKind(lora_rank=2, reexpose=2)])
    cfg = BuildConfig.model_validate({**QUICK_BUILD, "n_boot": 50})
    return run, build_bank(run, root / "bank", cfg)


def test_a_bank_calibrated_on_two_kinds_of_finetune(two_kinds: tuple[Path, Path]) -> None:
    """Both calibration models are fitted on (their pool as class 7), each one's false alarms
    are reported, class 7's threshold is the stricter kind's, and it serves either model; the
    entities a calibration finetune re-exposed are not among its untouched rows."""
    from safetensors.numpy import load_file

    from probe_bank.bank import FAMILY_ROWS, ProbeBank
    from probe_bank.evidence import bank_evidence
    from probe_bank.fingerprint import model_fingerprint
    from probe_bank.scoring import BankScorer

    run, bank_dir = two_kinds
    lora = run / "calibration/run-lora2-reexpose2/extra_1"
    stage = (run / "calibration/pool/stage.jsonl").read_text().splitlines()
    again = (run / "calibration/stage-reexpose2.jsonl").read_text().splitlines()
    assert again[: len(stage)] == stage and len(again) > len(stage)  # the pool, then stage 2
    assert (lora / "adapter/adapter_config.json").is_file()
    bank = ProbeBank.load(bank_dir)
    spec, metrics = bank.manifest.evidence, bank.metrics
    assert spec is not None and metrics is not None and metrics.families is not None
    assert spec.calibration_models == [
        model_fingerprint(run / "calibration/run/extra_1"),
        model_fingerprint(lora),
    ]
    assert metrics.families.calibration_models == 2
    assert metrics.families.calibration_kinds == ["recipe", "lora2-reexpose2"]
    point = bank_evidence(metrics).after_bank  # the note every score carries
    assert point is not None and "2 later finetunes" in point.note
    assert "calibration kinds: recipe, lora2-reexpose2" in point.note
    families = metrics.families.model_dump(mode="json")
    by_kind = families["fused"]["after_bank_false_alarms_by_calibration"]
    assert len(by_kind) == 2 and all(0.0 <= k["value"] <= 1.0 for k in by_kind)
    rows = load_file(str(bank_dir / FAMILY_ROWS))
    assert set(np.unique(rows["model"])) == {0, 1, 2}
    assert set(np.unique(rows["anchor_model"])) == {0, 1, 2}
    assert (rows["label"][rows["model"] == 2] == AFTER_BANK).sum() == (
        rows["label"][rows["model"] == 1] == AFTER_BANK
    ).sum()
    # stage 2's entities: rows on the reference and the recipe's model, none on the re-exposing one
    assert (
        (rows["label"][rows["model"] == 1] == 2).sum()
        == (rows["label"][rows["model"] == 0] == 2).sum()
        > 0
    )
    assert (rows["label"][rows["model"] == 2] == 2).sum() == 0
    assert (rows["label"][rows["model"] == 2] == 3).sum() == (
        rows["label"][rows["model"] == 1] == 3
    ).sum()
    _check_saved_rows(bank_dir)
    for model in (run / "calibration/run/extra_1", lora / "adapter"):
        scorer = BankScorer.from_bank_dir(bank_dir, model_dir=model)
        [score] = scorer.score_entities(["<qwert>"])
        assert score.relation == "descendant" and score.families is not None


def _check_saved_rows(bank_dir: Path) -> None:
    from safetensors.numpy import load_file

    from probe_bank.bank import ProbeBank
    from probe_bank.build import BuildConfig
    from probe_bank.heldout.families import (
        evaluate_families,
        family_classifier,
        saved_kinds,
        untouched_rows,
    )

    bank = ProbeBank.load(bank_dir)
    rows = load_file(str(bank_dir / "family_rows.safetensors"))
    assert rows["features"].dtype == rows["anchor_features"].dtype == np.float64
    cfg, spec = BuildConfig(n_boot=50), bank.manifest.evidence
    assert spec is not None and bank.metrics is not None and bank.metrics.families is not None
    on_ref = rows["on_reference"].astype(bool)
    kind, anchors = saved_kinds(rows)
    _, metrics = evaluate_families(
        rows["features"],
        rows["label"],
        rows["entity"],
        on_ref,
        C=cfg.families_C,
        false_alarm=spec.false_alarm,
        n_splits=cfg.probe.n_splits,
        seed=cfg.probe.seed,
        n_boot=cfg.n_boot,
        after_rule=spec.after_rule,
        anchors=anchors,
        fused_Cs=cfg.families_fused_Cs,
        kind=kind,
    )
    built = bank.metrics.families.model_dump(mode="json")
    for name in FAMILIES:
        recomputed = FamilyFigures.model_validate(json.loads(json.dumps(metrics[name])))
        assert recomputed.model_dump(mode="json") == built[name], name
    fused = family_classifier(
        "fused",
        cfg.families_C,
        spec.false_alarm,
        cfg.probe.n_splits,
        cfg.probe.seed,
        cfg.families_fused_Cs,
    ).fit(
        rows["features"], rows["label"], rows["entity"], untouched_rows(rows["label"], on_ref, kind)
    )
    served = bank.families["fused"] if bank.families is not None else None
    assert served is not None and built["fused_C"] == fused.C_ in cfg.families_fused_Cs
    assert served.columns_ == fused.columns_
    assert pytest.approx(fused.C_) == served.C_
    np.testing.assert_allclose(served.coef_, fused.coef_, rtol=1e-5, atol=1e-6)


def test_served_features_equal_the_built_ones(calibrated: tuple[Path, Path]) -> None:
    """The service's feature vector for a calibration entity on the calibration model (a
    descendant) is the one the families were fitted on; on the reference, difference is 0."""
    from safetensors.numpy import load_file

    from probe_bank.families import COLUMNS, FEATURES
    from probe_bank.records import EntityRecord, read_jsonl
    from probe_bank.scoring import BankScorer

    run, bank_dir = calibrated
    rows = load_file(str(bank_dir / "family_rows.safetensors"))
    pool = [e.alias for e in read_jsonl(run / "calibration/pool/entities.jsonl", EntityRecord)]
    after = np.flatnonzero(rows["label"] == AFTER_BANK)  # the pool on the calibration model

    desc = BankScorer.from_bank_dir(bank_dir, model_dir=run / "calibration/run/extra_1")
    assert desc.relation == "descendant" and desc.reference is not None
    F, agg = served_features(desc, pool)
    # the build scores pool entities with fold probes (as the table), the service with the saved
    # probes: every column but the probe-derived ones is the same computation
    same = [i for i, f in enumerate(FEATURES) if not f.startswith("probe_")]
    np.testing.assert_allclose(F[:, same], rows["features"][after][:, same], rtol=1e-4, atol=1e-4)

    scored = desc.score_entities(pool[:3])
    # class 7's threshold on this model: the bank's, raised to the floor of the anchors' P(7)
    # on it, which the build read off the same anchors (saved rows, calibration model)
    assert desc.bank.families is not None
    built_anchors = rows["anchor_features"][rows["anchor_on_reference"] == 0]
    thresholds = desc.after_thresholds()
    for name in FAMILIES:
        est = desc.bank.families[name]
        floor = est.anchor_floor(built_anchors)
        assert floor is not None and thresholds[name] is not None
        assert thresholds[name] == pytest.approx(est.threshold(floor), abs=1e-4)
    for s in scored:
        assert s.families is not None and [f.family for f in s.families] == list(FAMILIES)
        assert all(f.after_threshold == thresholds[f.family] for f in s.families)
        for f in s.families:
            assert len(f.class_probabilities) == 8
            assert sum(f.class_probabilities) == pytest.approx(1.0)
            assert f.p_after_bank == pytest.approx(f.class_probabilities[AFTER_BANK])

    ref = BankScorer.from_bank_dir(bank_dir)
    assert ref.relation == "reference" and ref.reference is None
    assert ref.after_thresholds() == {}  # never classed 7 on its own reference
    F_ref = ref.entity_features(pool, agg)
    assert np.all(F_ref[:, COLUMNS["difference"]] == 0)
    for s in ref.score_entities(pool[:3]):  # the reference itself is never "after its bank"
        assert s.families is not None
        assert all(f.estimated_class < AFTER_BANK and f.p_after_bank == 0 for f in s.families)
    assert ref.bank.families is not None
    F_own, _ = served_features(ref, pool[:3])
    raw = ref.bank.families["fused"].predict_proba(F_own)[:, AFTER_BANK]
    read = ref.score_entities(pool[:3], after_possible=True)  # the classifier as it is
    got = [next(f for f in s.families or [] if f.family == "fused").p_after_bank for s in read]
    np.testing.assert_allclose(got, raw, rtol=1e-5, atol=1e-6)


def test_report_shows_the_families(calibrated: tuple[Path, Path], tmp_path: Path) -> None:
    from probe_bank.report import write_report

    _, bank_dir = calibrated
    page = write_report(bank_dir, tmp_path / "report").read_text()
    assert (tmp_path / "report" / "families.png").is_file()
    assert "Evidence families" in page and "after_bank_recall" in page


def test_a_descendant_without_its_reference_is_refused(
    calibrated: tuple[Path, Path], tmp_path: Path
) -> None:
    from probe_bank.errors import UserError
    from probe_bank.scoring import BankScorer

    run, bank_dir = calibrated
    bank_copy = tmp_path / "bank"
    shutil.copytree(bank_dir, bank_copy)
    reference = run / "stage_6"
    moved = tmp_path / "stage_6_moved"
    reference.rename(moved)
    try:
        with pytest.raises(UserError, match="reference model"):
            BankScorer.from_bank_dir(bank_copy, model_dir=run / "calibration/run/extra_1")
    finally:
        moved.rename(reference)


def test_texts_a_later_finetune_trained_stand_out_against_the_anchors(
    calibrated: tuple[Path, Path],
) -> None:
    """On the calibration model (a descendant), the QA texts of its extra stage's entities lose
    more loss against the reference than the bank's anchor texts do, and more than texts it
    did not train; on the reference itself there is no reference pass and no drop."""
    from probe_bank.records import QARecord, read_jsonl
    from probe_bank.scoring import BankScorer

    run, bank_dir = calibrated
    desc = BankScorer.from_bank_dir(bank_dir, model_dir=run / "calibration/run/extra_1")
    spec = desc.bank.manifest.evidence
    assert spec is not None and len(spec.anchor_texts) >= 20
    pool = [q for q in read_jsonl(run / "calibration/pool/qa.jsonl", QARecord) if not q.heldout]
    old = [q for q in read_jsonl(run / "corpus/qa.jsonl", QARecord) if q.split == "stage_3"]
    texts = [q.text for q in pool[:40] + old[:40]]
    answers = [q.answer for q in pool[:40] + old[:40]]
    got = desc.score_texts(desc.prepare_texts(texts, answers))
    z = np.array([g.loss_drop_anchor_z for g in got], dtype=float)
    assert all(g.scored == "answer" and g.relation == "descendant" for g in got)
    assert all(g.reference is not None and g.loss_drop is not None for g in got)
    assert np.median(z[:40]) > 2.0  # trained by the later finetune: far past the anchors
    assert np.median(z[:40]) > np.median(z[40:]) + 2.0
    touched = np.array([g.touched for g in got], dtype=float)
    # at the anchors' 95th percentile (measured here: 0.20 of the trained, 0.025 of the others)
    assert touched[:40].mean() > 2 * touched[40:].mean() + 0.05
    ref = BankScorer.from_bank_dir(bank_dir)
    on_ref = ref.score_texts(ref.prepare_texts(texts[:3], answers[:3]))
    assert all(g.reference is None and g.loss_drop is None for g in on_ref)
    assert all(g.loss_drop_anchor_z is None and g.relation == "reference" for g in on_ref)
    assert all(g.touched is None for g in on_ref)
    # the bank measured the same flag on its calibration model, with intervals over entities
    texts = desc.bank.metrics.model_extra["texts"]  # type: ignore[union-attr]
    assert texts["n_texts"]["touched"] > 0 and texts["n_texts"]["untouched"] > 0
    auc = texts["auc_touched_vs_untouched"]
    assert auc["ci95"][0] <= auc["value"] <= auc["ci95"][1] and auc["value"] > 0.7
    assert texts["touched_flagged"]["value"] > texts["untouched_flagged"]["value"]


def test_a_bank_built_before_text_scoring_still_loads_and_scores_texts(
    calibrated: tuple[Path, Path], tmp_path: Path
) -> None:
    """A manifest written before `evidence.anchor_texts` existed keeps its digest (the field is
    unset, and unset fields are left out of the digest): it loads, and a descendant's texts get
    the reference's statistics and loss drop but no anchor-unit reading."""
    import hashlib
    import json

    from probe_bank.bank import MANIFEST, manifest_digest
    from probe_bank.schemas import BankManifest
    from probe_bank.scoring import BankScorer

    run, bank_dir = calibrated
    old = tmp_path / "bank"
    shutil.copytree(bank_dir, old)
    raw = json.loads((old / MANIFEST).read_text())
    del raw["evidence"]["anchor_texts"]
    assert raw["evidence"].pop("calibration_models") is None  # nor this later field (one model)
    # the id an earlier build wrote: the canonical JSON of what it had, no such key at all
    body = {k: v for k, v in raw.items() if k != "bank_id"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    raw["bank_id"] = "bank-" + hashlib.sha256(canonical.encode()).hexdigest()[:16]
    assert manifest_digest(BankManifest.model_validate(raw)) == raw["bank_id"]
    (old / MANIFEST).write_text(json.dumps(raw))
    desc = BankScorer.from_bank_dir(old, model_dir=run / "calibration/run/extra_1")
    (got,) = desc.score_texts(desc.prepare_texts(["Q: Who?\nA: someone\n"], ["someone"]))
    assert got.loss_drop is not None and got.reference is not None
    assert got.loss_drop_anchor_z is None and got.touched is None


def test_a_bank_whose_families_read_other_columns_is_refused(
    calibrated: tuple[Path, Path], tmp_path: Path
) -> None:
    """A bank built before the alias columns existed (its manifest lists the older features)
    would have its classifiers read shifted columns: loading it is one clear error."""
    import json

    from probe_bank.bank import MANIFEST, manifest_digest
    from probe_bank.errors import UserError
    from probe_bank.schemas import BankManifest
    from probe_bank.scoring import BankScorer

    _, bank_dir = calibrated
    old = tmp_path / "bank"
    shutil.copytree(bank_dir, old)
    raw = json.loads((old / MANIFEST).read_text())
    raw["evidence"]["features"] = [
        f for f in raw["evidence"]["features"] if not f.startswith("alias_logp")
    ]
    raw["bank_id"] = manifest_digest(BankManifest.model_validate(raw))
    (old / MANIFEST).write_text(json.dumps(raw))
    with pytest.raises(UserError, match="rebuild it"):
        BankScorer.from_bank_dir(old)


def test_the_engine_batches_entities_evidence_across_requests(
    calibrated: tuple[Path, Path],
) -> None:
    """Served through the engine on a descendant, concurrent one-entity requests share
    evidence passes and get what the scorer gives each entity alone; FAMILIES off serves the
    same probe scores without families."""
    import asyncio

    from audit_service.engine import ScoringEngine
    from audit_service.settings import ServiceSettings
    from audit_service.telemetry import Telemetry
    from probe_bank.records import EntityRecord, read_jsonl
    from probe_bank.scoring import BankScorer

    run, bank_dir = calibrated
    model = run / "calibration/run/extra_1"
    scorer = BankScorer.from_bank_dir(bank_dir, model_dir=model)
    pool = [e.alias for e in read_jsonl(run / "calibration/pool/entities.jsonl", EntityRecord)]
    aliases = pool[:6]
    alone = [scorer.score_entities([a])[0] for a in aliases]

    async def serve(families: bool) -> tuple[list, Telemetry]:
        settings = ServiceSettings(bank_dir=bank_dir, model_dir=model, families=families)
        telemetry = Telemetry()
        engine = ScoringEngine(settings, telemetry, lambda _: scorer)
        await engine.start()
        assert await engine.wait_ready(120)
        try:
            got = await asyncio.gather(*(engine.score_entities([a]) for a in aliases))
        finally:
            await engine.stop()
        return [g[0] for g in got], telemetry

    served, telemetry = asyncio.run(serve(True))
    passes = telemetry.evidence_batch_size.collect()[0].samples
    count = next(s.value for s in passes if s.name.endswith("_count"))
    total = next(s.value for s in passes if s.name.endswith("_sum"))
    assert total == len(aliases) and count < total  # some pass held several requests
    for got, want in zip(served, alone, strict=True):
        assert got.families is not None and want.families is not None
        for g, w in zip(got.families, want.families, strict=True):
            assert g.family == w.family
            np.testing.assert_allclose(g.class_probabilities, w.class_probabilities, atol=1e-4)
    probes_only, _ = asyncio.run(serve(False))
    for got, want in zip(probes_only, alone, strict=True):
        assert got.families is None
        np.testing.assert_allclose(got.stage_probabilities, want.stage_probabilities, atol=1e-5)


def test_an_offline_audit_of_the_descendant_names_what_it_learned_after_the_bank(
    calibrated: tuple[Path, Path], tmp_path: Path
) -> None:
    """`recency-audit audit` on the calibration model (a descendant): the report's entities
    classed "after the bank" are mostly the extra stage's, and its top ones are."""
    import json

    from audit_service.offline import run_offline_audit
    from probe_bank.records import EntityRecord, read_jsonl

    run, bank_dir = calibrated
    pool = [e.alias for e in read_jsonl(run / "calibration/pool/entities.jsonl", EntityRecord)]
    corpus = read_jsonl(run / "corpus/entities.jsonl", EntityRecord)
    old = [e.alias for e in corpus if e.split in ("control", "stage_1", "stage_6")]
    new, untouched = pool[:12], old[:24]
    dataset = tmp_path / "entities.jsonl"
    dataset.write_text("".join(json.dumps({"entity": a}) + "\n" for a in new + untouched))
    report = run_offline_audit(
        bank_dir,
        dataset,
        tmp_path / "out.jsonl",
        model_dir=run / "calibration/run/extra_1",
        show_progress=False,
    )
    assert report is not None
    assert sum(report.fused_class_histogram.values()) == len(new) + len(untouched)
    # what class 7 costs, as the build measured it, travels with the report
    point = report.evidence.after_bank
    assert report.evidence.verdict in ("above_chance", "chance")  # the probes' own, beside it
    assert point is not None and point.false_alarm_budget == BuildConfig().families_false_alarm
    assert point.false_alarms is not None and point.false_alarms.value is not None
    # ... and the threshold every fused estimate of this model was read at
    lines = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    fused = [next(f for f in r["families"] if f["family"] == "fused") for r in lines]
    t = report.after_thresholds["fused"]
    assert t is not None and all(f["after_threshold"] == pytest.approx(t, abs=1e-5) for f in fused)
    clear = [f for f in fused if abs(f["p_after_bank"] - t) > 1e-4]  # away from rounding
    assert clear and all((f["estimated_class"] == 7) == (f["p_after_bank"] > t) for f in clear)
    flagged = [r["input"] for r in report.most_after_bank if r["estimated_class"] == 7]
    assert report.entities_after_bank >= 1 and flagged
    assert report.most_after_bank[0]["input"] in new
    assert sum(a in new for a in flagged) > sum(a in untouched for a in flagged)
    assert all(
        "fused" in r["families_after_bank"]
        for r in report.most_after_bank
        if r["estimated_class"] == 7
    )


@pytest.mark.slow
def test_the_dashboard_prints_the_operating_point_the_build_measured(
    calibrated: tuple[Path, Path], tmp_path: Path
) -> None:
    """Served on a descendant, headless Chromium renders the relation and the fused class-7
    operating point with the false alarms (and interval) of the bank's own metrics."""
    import html as html_lib

    import httpx

    from probe_bank.records import EntityRecord, read_jsonl
    from tests.jobs.server import ServiceProcess
    from tests.jobs.test_monitoring import _chromium

    run, bank_dir = calibrated
    env = {
        "RECENCY_AUDIT_BANK_DIR": str(bank_dir),
        "RECENCY_AUDIT_MODEL_DIR": str(run / "calibration/run/extra_1"),
        "RECENCY_AUDIT_DATA_DIR": str(tmp_path / "data"),
        "RECENCY_AUDIT_STATE_DIR": str(tmp_path / "state"),
    }
    pool = [e.alias for e in read_jsonl(run / "calibration/pool/entities.jsonl", EntityRecord)]
    with ServiceProcess(env, tmp_path / "server.log") as service:
        r = httpx.post(service.url + "/v1/entities/score", json={"entities": pool[:2]}, timeout=120)
        assert r.status_code == 200, r.text
        info = httpx.get(service.url + "/v1/bank", timeout=30).json()
        point, thresholds = info["evidence"]["after_bank"], info["after_thresholds"]
        dom = _chromium(
            ["--virtual-time-budget=5000", "--dump-dom", service.url + "/dashboard"], tmp_path
        )
    assert dom.returncode == 0, dom.stderr[-2000:]
    page = html_lib.unescape(dom.stdout)
    assert "(model: descendant)" in page
    fa = point["false_alarms"]
    budget = BuildConfig().families_false_alarm
    assert point["false_alarm_budget"] == budget and fa["value"] is not None
    want = (
        f'id="fused-point">"after" is an operating point at a {budget} false-alarm budget: held '
        f"out on the calibration finetunes it flagged {fa['value']:.3f} [{fa['ci95'][0]:.3f}, "
        f"{fa['ci95'][1]:.3f}] of untouched entities; {point['note']} On this model class 7 "
        f"needs p_after_bank >= {thresholds['fused']:.3f}.<"
    )
    assert point["rule"] == "calibration_and_anchors" and "anchor" in point["note"]
    assert want in page, page[page.find('id="fused-point"') - 20 :][:400]


def test_fewer_questions_are_what_the_bank_serves(
    calibrated: tuple[Path, Path], tmp_path: Path
) -> None:
    """`families_questions` is the families' cost knob: the bank records the questions it was
    fitted and evaluated on, and the service asks exactly those (its features equal the rows)."""
    from safetensors.numpy import load_file

    from probe_bank.bank import ProbeBank
    from probe_bank.build import BuildConfig, build_bank
    from probe_bank.families import FEATURES
    from probe_bank.records import EntityRecord, read_jsonl
    from probe_bank.scoring import BankScorer

    run, full_dir = calibrated
    built = ProbeBank.load(full_dir).manifest
    full = built.evidence
    assert full is not None and len(full.question_templates) >= 2
    one_cell = {"layers": [built.layer], "positions": [built.position], "n_boot": 20}
    cfg = BuildConfig.model_validate({**QUICK_BUILD, **one_cell, "families_questions": 1})
    bank_dir = build_bank(run, tmp_path / "bank", cfg)
    spec = ProbeBank.load(bank_dir).manifest.evidence
    assert spec is not None and spec.question_templates == full.question_templates[:1]

    desc = BankScorer.from_bank_dir(bank_dir, model_dir=run / "calibration/run/extra_1")
    pool = [e.alias for e in read_jsonl(run / "calibration/pool/entities.jsonl", EntityRecord)]
    F, _ = served_features(desc, pool)
    rows = load_file(str(bank_dir / "family_rows.safetensors"))
    after = np.flatnonzero(rows["label"] == AFTER_BANK)
    same = [i for i, f in enumerate(FEATURES) if not f.startswith("probe_")]
    np.testing.assert_allclose(F[:, same], rows["features"][after][:, same], rtol=1e-4, atol=1e-4)
    # one question per entity is not the full bank's evidence: the columns differ
    full_rows = load_file(str(full_dir / "family_rows.safetensors"))
    assert not np.allclose(rows["features"][:, same], full_rows["features"][:, same])


def test_up_rebuilds_the_default_bank_when_the_run_gains_a_calibration_kind(
    calibrated: tuple[Path, Path],
    two_kinds: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`recency-audit up` keeps a default bank fitted on every calibration model the run has at
    the build config's false-alarm budget, and rebuilds one fitted on fewer (a bank from before
    `--also`) or at another budget (a bank from before the default changed)."""
    import probe_bank.build
    from recency_audit import _ensure_bank

    built: list[Path] = []

    def fake_build(run: Path, out: Path) -> Path:
        built.append(run)
        shutil.copytree(two_kinds[1], out)
        return out

    monkeypatch.setattr(probe_bank.build, "build_bank", fake_build)
    run, bank = two_kinds
    current = Path(shutil.copytree(bank, tmp_path / "current"))
    assert _ensure_bank(run, current) is False and built == []
    older = Path(shutil.copytree(calibrated[1], tmp_path / "older"))  # one calibration model
    assert _ensure_bank(run, older) is True and built == [run]

    class OtherBudget(probe_bank.build.BuildConfig):
        families_false_alarm: float | None = 0.2

    monkeypatch.setattr(probe_bank.build, "BuildConfig", OtherBudget)
    assert _ensure_bank(run, current) is True and built == [run, run]
