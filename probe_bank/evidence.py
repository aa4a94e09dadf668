"""What a bank's held-out validation says about its scores, attached to every score it serves.

A stage probability printed without the probe's measured accuracy invites over-reading: a bank
whose probes sit at chance still returns confident-looking numbers. `bank_evidence` condenses
metrics.json into the headline accuracies (value, 95% interval, entities, chance level) and a
verdict that is "above chance" only when an interval's lower bound clears chance.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from probe_bank.schemas import BankMetrics, Interval

#: Headline metrics reported with every score, and their chance level when not in metrics.json.
_CHANCE = {"stage1_vs_stage6": 0.5, "early_vs_late": 0.5}


class Measured(BaseModel):
    """One held-out accuracy of the bank's probes, as measured when the bank was built."""

    value: float
    ci95: tuple[float, float]
    n_entities: int
    chance: float


class BankEvidence(BaseModel):
    """The bank's own validation, so a reader can tell signal from chance."""

    stage1_vs_stage6: Measured | None = None
    early_vs_late: Measured | None = None
    stage_accuracy: Measured | None = None
    verdict: Literal["above_chance", "chance", "unknown"]
    note: str = Field(description="one sentence a person can act on")


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
    verdict: Literal["above_chance", "chance", "unknown"]
    if not known:
        verdict, note = "unknown", "this bank carries no held-out validation; scores are unverified"
    elif any(m.ci95[0] > m.chance for m in known):
        verdict = "above_chance"
        note = "the probes beat chance on entities they never saw; read scores with the intervals"
    else:
        verdict = "chance"
        note = (
            "the probes are at chance on entities they never saw: these scores carry no "
            "measured recency signal"
        )
    return BankEvidence(**found, verdict=verdict, note=note)
