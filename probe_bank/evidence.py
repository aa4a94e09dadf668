"""What a bank's held-out validation says about its scores, attached to every score it serves.

A stage probability printed without the probe's measured accuracy invites over-reading: a bank
whose probes sit at chance still returns confident-looking numbers. `bank_evidence` condenses
metrics.json into the headline accuracies (value, 95% interval, entities, chance level) and a
verdict that is "above chance" only when an interval's lower bound clears chance. Beating chance
is not the study's claim: a probe can read familiarity, which loss-type statistics read too, so
the probe is also set beside the strongest scalar baseline on the same folds (`ControlCheck`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from probe_bank.schemas import BALANCED_PREFIX, AfterRule, BankMetrics, Interval

#: Headline metrics reported with every score, and their chance level when not in metrics.json.
_CHANCE = {"stage1_vs_stage6": 0.5, "early_vs_late": 0.5}

#: How a note names each scalar baseline (probe_bank.baselines.BASELINE_NAMES, and "combined")
_STATISTIC = {
    "answer_loss": "answer loss",
    "entropy": "output entropy",
    "norm": "activation norm",
    "max_logit": "max logit",
    "min_k": "Min-K%",
    "zlib_ratio": "zlib ratio",
    "combined": "all statistics combined",
}

#: The study's bar for a probe to count as more than the scalar statistics: every control at
#: least this far below it (arXiv 2509.14223; issue 4's targets)
CONTROL_MARGIN = 0.15


class Measured(BaseModel):
    """One held-out accuracy of the bank's probes, as measured when the bank was built."""

    value: float
    ci95: tuple[float, float]
    n_entities: int
    chance: float


class AfterBankPoint(BaseModel):
    """What the class "learned after the bank" costs and finds, as the bank build measured it:
    the fused family's operating point on the calibration model, held out."""

    false_alarm_budget: float | None = Field(
        description="the false-alarm rate the class-7 threshold was set for (None: argmax)"
    )
    false_alarms: Interval | None = Field(
        description="share of the calibration model's untouched entities classed 7"
    )
    recall: Interval | None = Field(description="share of its freshly trained entities classed 7")
    rule: AfterRule | None = Field(
        None,
        description="how class 7's threshold is read (metrics.json families.after_rule; None: "
        "calibration, a bank built before the rule existed)",
    )
    note: str = Field(description="one sentence a person can act on")


class ControlCheck(BaseModel):
    """The probe beside the strongest scalar baseline (answer loss, zlib ratio, Min-K%, entropy,
    max logit, activation norm, or all combined) on one task, same folds and entities."""

    task: str
    statistic: str = Field(description="the baseline that reads the task best")
    baseline: Measured
    margin: float = Field(description="probe accuracy minus the baseline's")
    probe_ahead: bool = Field(
        description=f"margin >= {CONTROL_MARGIN}: the study's bar for every control; false means "
        "the probe's accuracy may be familiarity, not a recency direction"
    )


class BankEvidence(BaseModel):
    """The bank's own validation, so a reader can tell signal from chance."""

    stage1_vs_stage6: Measured | None = None
    early_vs_late: Measured | None = None
    stage_accuracy: Measured | None = None
    verdict: Literal["above_chance", "chance", "unknown"]
    note: str = Field(description="one sentence a person can act on")
    control: ControlCheck | None = Field(
        None, description="stage 1 vs 6: the probe beside its strongest scalar baseline"
    )
    after_bank: AfterBankPoint | None = Field(
        None, description="the fused class-7 operating point (a bank with evidence families)"
    )


def _measured(entry: Interval, chance: float) -> Measured | None:
    lo, hi = entry.ci95
    if entry.value is None or lo is None or hi is None:
        return None
    return Measured(value=entry.value, ci95=(lo, hi), n_entities=entry.n_entities, chance=chance)


def bank_evidence(metrics: BankMetrics | None) -> BankEvidence:
    """Summarise metrics.json; the verdict needs an interval wholly above chance."""
    found: dict[str, Measured | None] = {}
    if metrics is not None:
        found = {k: _measured(getattr(metrics, k), c) for k, c in _CHANCE.items()}
        found["stage_accuracy"] = _measured(metrics.stage_accuracy, metrics.stage_chance)
    known = [m for m in found.values() if m is not None]
    probe = found.get("stage1_vs_stage6")
    control = control_check(metrics, probe)
    verdict: Literal["above_chance", "chance", "unknown"]
    if not known:
        verdict, note = "unknown", "this bank carries no held-out validation; scores are unverified"
    elif any(m.ci95[0] > m.chance for m in known):
        verdict = "above_chance"
        note = "the probes beat chance on entities they never saw; read scores with the intervals"
        if probe is not None and control is not None and not control.probe_ahead:
            label = _STATISTIC.get(control.statistic, control.statistic)
            note = (
                "the probes beat chance on entities they never saw, but a scalar baseline "
                f"({label}) reads stage 1 vs 6 at {control.baseline.value:.2f} against their "
                f"{probe.value:.2f}: they may read familiarity, not a recency direction"
            )
    else:
        verdict = "chance"
        note = (
            "the probes are at chance on entities they never saw: these scores carry no "
            "measured recency signal"
        )
    return BankEvidence(
        **found, verdict=verdict, note=note, control=control, after_bank=after_bank_point(metrics)
    )


def control_check(metrics: BankMetrics | None, probe: Measured | None) -> ControlCheck | None:
    """The probe's stage 1 vs 6 beside the best scalar baseline's (the statistic-balanced probes
    are probes, not baselines, and are left out); None without both figures."""
    task = "stage1_vs_stage6"
    if metrics is None or probe is None:
        return None
    best: tuple[str, Measured] | None = None
    for name, figures in metrics.baselines.items():
        if name.startswith(BALANCED_PREFIX):
            continue
        m = _measured(figures.stage1_vs_stage6, _CHANCE[task])
        if m is not None and (best is None or m.value > best[1].value):
            best = (name, m)
    if best is None:
        return None
    margin = round(probe.value - best[1].value, 6)  # 0.95 - 0.80 is 0.15, not 0.1499...
    return ControlCheck(
        task=task,
        statistic=best[0],
        baseline=best[1],
        margin=margin,
        probe_ahead=margin >= CONTROL_MARGIN,
    )


def after_bank_point(metrics: BankMetrics | None) -> AfterBankPoint | None:
    """The fused family's held-out class-7 figures, when the bank has families."""
    families = metrics.families if metrics is not None else None
    if families is None or families.fused is None:
        return None
    return AfterBankPoint(
        false_alarm_budget=families.false_alarm_target,
        false_alarms=families.fused.after_bank_false_alarms,
        recall=families.fused.after_bank_recall,
        rule=families.after_rule,
        note=after_note(families.calibration_kinds, families.after_rule or "calibration"),
    )


def after_note(kinds: list[str] | None, rule: AfterRule) -> str:
    """What class 7's false-alarm budget was measured on, and what it does not bound."""
    if kinds is None:
        measured = (
            "measured on the bank's calibration finetunes (a bank built before their kinds "
            "were recorded)"
        )
    else:
        n = len(kinds)
        measured = (
            f"measured on {n} later finetune{'s' if n > 1 else ''} of the reference on fresh "
            f"entities (calibration kinds: {', '.join(kinds)}; the threshold holds the budget "
            f"on each)"
        )
    if rule == "calibration_and_anchors":
        return (
            f"{measured}; on the audited model the threshold is also raised to where its "
            "never-trained anchor aliases would pay the budget (each estimate's "
            "after_threshold), which bounds the false alarms on never-trained entities, not on "
            "trained ones: a finetune of another kind or size can pay more on those"
        )
    return (
        f"{measured}; a finetune of another kind or size can pay more false alarms than the budget"
    )
