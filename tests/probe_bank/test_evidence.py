"""The verdict served with every score: above chance only when an interval clears chance."""

from probe_bank.evidence import bank_evidence
from tests.service.fakes import fake_metrics as _metrics


def _m(value: float | None, lo: float | None, hi: float | None, n: int = 100) -> dict:
    return {"value": value, "ci95": [lo, hi], "n_entities": n}


def test_chance_when_every_interval_covers_chance() -> None:
    ev = bank_evidence(
        _metrics(
            stage1_vs_stage6=_m(0.5, 0.44, 0.56),
            early_vs_late=_m(0.52, 0.48, 0.56),
            stage_accuracy=_m(0.16, 0.14, 0.19),
        )
    )
    assert ev.verdict == "chance" and "no measured recency signal" in ev.note
    assert ev.stage_accuracy is not None and abs(ev.stage_accuracy.chance - 1 / 7) < 1e-12


def test_above_chance_needs_a_lower_bound_over_chance() -> None:
    ev = bank_evidence(
        _metrics(stage1_vs_stage6=_m(0.9, 0.84, 0.95), early_vs_late=_m(0.5, 0.4, 0.6))
    )
    assert ev.verdict == "above_chance"
    assert ev.stage1_vs_stage6 is not None and ev.stage1_vs_stage6.n_entities == 100


def test_unknown_without_validation() -> None:
    assert bank_evidence(None).verdict == "unknown"
    assert bank_evidence(_metrics()).verdict == "unknown"  # no figure has an interval
    assert bank_evidence(_metrics(early_vs_late=_m(0.7, None, None))).verdict == "unknown"


def test_the_after_bank_operating_point_is_served_as_measured() -> None:
    """A families bank's evidence carries the fused class-7 figures from metrics.json (typed,
    checked on load); a probes-only bank's carries none."""
    fused = {"after_bank_false_alarms": _m(0.036, 0.019, 0.055), "after_bank_recall": _m(1, 1, 1)}
    ev = bank_evidence(_metrics(families={"false_alarm_target": 0.05, "fused": fused}))
    point = ev.after_bank
    assert point is not None and point.false_alarm_budget == 0.05
    assert point.false_alarms is not None and point.false_alarms.ci95 == (0.019, 0.055)
    assert point.recall is not None and point.recall.value == 1
    assert bank_evidence(_metrics()).after_bank is None
    assert bank_evidence(_metrics(families={"behaviour": {}})).after_bank is None


def test_the_after_bank_note_names_the_kinds_it_was_measured_on() -> None:
    """The budget is a rate measured on the calibration finetunes: the note served with every
    score says how many and of which kinds, and that another kind or size can pay more."""
    fused = {"after_bank_false_alarms": _m(0.04, 0.03, 0.05)}

    def note(**families: object) -> str:
        point = bank_evidence(_metrics(families={"fused": fused, **families})).after_bank
        assert point is not None
        return point.note

    two = note(calibration_kinds=["recipe", "lora16"], after_rule="calibration_and_anchors")
    assert "2 later finetunes" in two and "calibration kinds: recipe, lora16" in two
    assert "anchor aliases" in two and "another kind or size" in two
    one = note(calibration_kinds=["lora16"])
    assert "1 later finetune of" in one and "anchor" not in one
    assert "before their kinds were recorded" in note()


def _baseline(v1v6: float, lo: float, hi: float) -> dict:
    return {"stage1_vs_stage6": _m(v1v6, lo, hi), "early_vs_late": _m(0.6, 0.55, 0.65)}


def _beside(probe: tuple[float, float, float], **baselines: tuple[float, float, float]):
    """The evidence of a bank whose probe reads stage 1 vs 6 at `probe`, with those baselines."""
    rows = {name: _baseline(*fig) for name, fig in baselines.items()}
    return bank_evidence(_metrics(stage1_vs_stage6=_m(*probe), baselines=rows))


def test_a_probe_above_chance_is_set_beside_its_strongest_baseline() -> None:
    """Beating chance is not the study's claim: a baseline reading stage 1 vs 6 far better than
    the probe turns the note into a warning (the verdict keeps its meaning), and the
    statistic-balanced probes, which are probes, never count as that baseline."""
    ev = _beside(
        (0.59, 0.53, 0.65),
        zlib_ratio=(0.97, 0.95, 0.99),
        answer_loss=(0.91, 0.87, 0.94),
        balanced_zlib_ratio=(0.995, 0.99, 1.0),
    )
    assert ev.verdict == "above_chance"
    c = ev.control
    assert c is not None and c.statistic == "zlib_ratio" and not c.probe_ahead
    assert abs(c.margin - (0.59 - 0.97)) < 1e-9 and c.baseline.ci95 == (0.95, 0.99)
    assert "zlib ratio" in ev.note and "0.97" in ev.note and "familiarity" in ev.note


def test_a_probe_ahead_of_every_baseline_by_the_studys_margin() -> None:
    ev = _beside((0.92, 0.88, 0.96), answer_loss=(0.70, 0.64, 0.76), norm=(0.55, 0.5, 0.6))
    assert ev.control is not None and ev.control.statistic == "answer_loss"
    assert ev.control.probe_ahead and "familiarity" not in ev.note
    behind = _beside((0.92, 0.88, 0.96), answer_loss=(0.80, 0.74, 0.86))
    assert behind.control is not None and not behind.control.probe_ahead  # 0.12 < 0.15
    edge = _beside((0.95, 0.9, 0.99), min_k=(0.80, 0.75, 0.85))  # 0.95 - 0.80 < 0.15 in floats
    assert edge.control is not None and edge.control.probe_ahead


def test_no_control_without_baselines_or_a_probe_figure() -> None:
    assert _beside((0.9, 0.84, 0.95)).control is None
    assert _beside((0.9, 0.84, 0.95), balanced_norm=(0.6, 0.5, 0.7)).control is None
    assert bank_evidence(_metrics(baselines={"norm": _baseline(0.6, 0.5, 0.7)})).control is None
