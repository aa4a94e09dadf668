"""One result line per input, serialised deterministically (service jobs and offline audits).

Byte-identical results across a crash and resume, or across 1 and N processes, need the same bytes
for the same item even when the item was scored in a differently composed batch. Float results of a
batched forward pass can differ in the last bits with batch shape, so probabilities and scores are
rounded to `DECIMALS` places, and keys are written in a fixed order with fixed separators.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from pydantic import BaseModel, Field

from audit_service.jobs.datasets import DatasetItem
from probe_bank.schemas import AFTER_BANK, StageScore, TextScore, TextStatistics

#: Decimal places kept in result floats; far below the probes' own uncertainty.
DECIMALS = 6


def _r(x: float) -> float:
    value = round(float(x), DECIMALS)
    return 0.0 if value == 0 else value  # no "-0.0"


def _echo(index: int, item: DatasetItem) -> dict[str, Any]:
    """The fields every result line starts with: where it came from in the input."""
    return {
        "index": index,
        "id": item.id,
        "kind": item.kind,
        "input": item.input,
    }


def result_record(index: int, item: DatasetItem, score: StageScore) -> dict[str, Any]:
    """The result of one input as a plain dict (fixed key order); entity results of a bank with
    evidence families end with each family's estimate."""
    record = {
        **_echo(index, item),
        "estimated_stage": int(score.estimated_stage),
        "stage_probabilities": [_r(p) for p in score.stage_probabilities],
        "recency_score": _r(score.recency_score),
        "p_late": _r(score.p_late),
        "n_tokens": int(score.n_tokens),
        "in_bank_sample": score.in_bank_sample,
        "relation": score.relation,
    }
    if score.families is not None:
        record["families"] = [
            {
                "family": f.family,
                "estimated_class": f.estimated_class,
                "p_after_bank": _r(f.p_after_bank),
                "class_probabilities": [_r(p) for p in f.class_probabilities],
                "after_threshold": None if f.after_threshold is None else _r(f.after_threshold),
            }
            for f in score.families
        ]
    return record


def _stats(s: TextStatistics | None) -> dict[str, float] | None:
    if s is None:
        return None
    return {k: _r(v) for k, v in s.model_dump().items()}


def text_record(index: int, item: DatasetItem, score: TextScore) -> dict[str, Any]:
    """The result of one text input (membership evidence; fixed key order)."""

    def opt(x: float | None) -> float | None:
        return None if x is None else _r(x)

    return {
        **_echo(index, item),
        "scored": score.scored,
        "n_tokens": score.n_tokens,
        "n_scored": score.n_scored,
        "audited": _stats(score.audited),
        "reference": _stats(score.reference),
        "loss_drop": opt(score.loss_drop),
        "loss_drop_anchor_z": opt(score.loss_drop_anchor_z),
        "touched": score.touched,
        "relation": score.relation,
    }


def error_record(index: int, item: DatasetItem, reason: str) -> dict[str, Any]:
    """The result of an input that could not be scored (the job goes on; the line says why)."""
    return {**_echo(index, item), "error": reason}


def dumps(record: dict[str, Any]) -> str:
    """Canonical JSON text of one record (no trailing newline)."""
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


class ResultSummary(BaseModel):
    """What a set of result lines says (a job's summary, an offline audit's report)."""

    scored: int = Field(description="entity and prompt inputs scored")
    errors: int = Field(description="inputs that could not be scored (their lines say why)")
    stage_histogram: dict[str, int] = Field(description="the probes' estimated stage, 0..6")
    most_recent: list[dict[str, Any]] = Field(
        description="the inputs the probes read as most recently trained (recency score)"
    )
    in_bank_sample: int = Field(
        0,
        description="scored inputs whose alias the bank was fitted on: their scores are "
        "in-sample and read better than the bank's held-out accuracy",
    )
    fused_class_histogram: dict[str, int] = Field(
        default_factory=dict,
        description="entities by the fused family's class, 0 never trained, 1..6 stage, 7 "
        "learned after the bank was built (a families bank; empty otherwise)",
    )
    entities_after_bank: int = Field(
        0, description="entities the fused family classes 7: what a later finetune touched"
    )
    most_after_bank: list[dict[str, Any]] = Field(
        default_factory=list,
        description="the entities of highest fused P(learned after the bank), each with the "
        "families that class it 7 (which evidence carried the verdict)",
    )
    texts: int = Field(0, description="text inputs scored (membership evidence, not stages)")
    texts_touched: int = Field(
        0, description="of those, flagged `touched` by a finetune after the bank (descendants)"
    )
    most_moved_texts: list[dict[str, Any]] = Field(
        default_factory=list,
        description="the texts whose loss dropped most against the reference, in units of the "
        "bank's anchor texts (a descendant audited with a families bank)",
    )


class _Top:
    """The `n` records of largest key seen so far (memory bounded on big jobs)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self._kept: list[tuple[tuple[float, ...], dict[str, Any]]] = []

    def push(self, key: tuple[float, ...], record: dict[str, Any]) -> None:
        self._kept.append((key, record))
        if len(self._kept) > 4 * self.n:
            self._trim()

    def _trim(self) -> None:
        self._kept.sort(key=lambda kr: kr[0], reverse=True)
        del self._kept[self.n :]

    def records(self) -> list[dict[str, Any]]:
        self._trim()
        return [r for _, r in self._kept]


def summarize(lines: Iterable[str], *, top: int = 10) -> ResultSummary:
    """From result lines: the probes' stage histogram and the inputs they read as most recently
    trained; how many scores are in-sample (inputs whose alias the bank was fitted on); with a
    families bank, the fused class histogram (7: learned after the bank) and the entities most
    likely learned after it, with the families that class them so; the texts scored and those
    a later finetune moved most (a descendant audited)."""
    histogram: Counter[int] = Counter()
    fused: Counter[int] = Counter()
    errors = in_sample = texts = touched = 0
    recent, after, moved = _Top(top), _Top(top), _Top(top)
    for line in lines:
        rec = json.loads(line)
        if "error" in rec:
            errors += 1
            continue
        head = {k: rec[k] for k in ("index", "id", "kind", "input")}
        if rec["kind"] == "text":
            texts += 1
            touched += rec["touched"] is True
            if rec.get("loss_drop_anchor_z") is not None:
                shown = ("loss_drop", "loss_drop_anchor_z", "touched")
                moved.push(
                    (rec["loss_drop_anchor_z"], -rec["index"]),
                    {**head, **{k: rec[k] for k in shown}},
                )
            continue
        histogram[rec["estimated_stage"]] += 1
        in_sample += rec.get("in_bank_sample") is True  # lines written before the flag lack it
        shown = ("estimated_stage", "recency_score", "p_late")
        recent.push(
            (rec["recency_score"], rec["p_late"], -rec["index"]),
            {**head, **{k: rec[k] for k in shown}, "in_bank_sample": rec.get("in_bank_sample")},
        )
        by_family = {f["family"]: f for f in rec.get("families") or []}
        if "fused" in by_family:
            f = by_family["fused"]
            fused[f["estimated_class"]] += 1
            after.push(
                (f["p_after_bank"], -rec["index"]),
                {
                    **head,
                    "estimated_class": f["estimated_class"],
                    "p_after_bank": f["p_after_bank"],
                    "families_after_bank": [
                        name for name, g in by_family.items() if g["estimated_class"] == AFTER_BANK
                    ],
                },
            )
    return ResultSummary(
        scored=sum(histogram.values()),
        errors=errors,
        stage_histogram={str(s): histogram.get(s, 0) for s in sorted({*range(7), *histogram})},
        most_recent=recent.records(),
        in_bank_sample=in_sample,
        fused_class_histogram=(
            {str(c): fused.get(c, 0) for c in range(AFTER_BANK + 1)} if fused else {}
        ),
        entities_after_bank=fused.get(AFTER_BANK, 0),
        most_after_bank=after.records(),
        texts=texts,
        texts_touched=touched,
        most_moved_texts=moved.records(),
    )


def chunk_bounds(total: int, chunk: int, start: int = 0) -> Sequence[tuple[int, int]]:
    """Half-open [lo, hi) ranges of `chunk` items covering start..total."""
    return [(lo, min(lo + chunk, total)) for lo in range(start, total, chunk)]
