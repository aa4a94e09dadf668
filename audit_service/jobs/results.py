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

from audit_service.jobs.datasets import DatasetItem
from probe_bank.schemas import StageScore, TextScore, TextStatistics

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


def summarize(lines: Iterable[str], *, top: int = 10) -> dict[str, Any]:
    """Stage histogram and the inputs that look most recently trained, from result lines, and
    how many scores are in-sample (inputs whose alias the bank was fitted on)."""
    histogram: Counter[int] = Counter()
    errors = in_sample = texts = touched = 0
    ranked: list[tuple[float, float, int, dict[str, Any]]] = []
    for line in lines:
        rec = json.loads(line)
        if "error" in rec:
            errors += 1
            continue
        if rec["kind"] == "text":
            texts += 1
            touched += rec["touched"] is True
            continue
        histogram[rec["estimated_stage"]] += 1
        in_sample += rec.get("in_bank_sample") is True  # lines written before the flag lack it
        key = (rec["recency_score"], rec["p_late"], -rec["index"])
        ranked.append((*key, rec))
        if len(ranked) > 4 * top:  # keep memory bounded on big jobs
            ranked.sort(key=lambda t: t[:3], reverse=True)
            del ranked[top:]
    ranked.sort(key=lambda t: t[:3], reverse=True)
    shown = ("index", "id", "kind", "input", "estimated_stage", "recency_score", "p_late")
    most_recent = [
        {**{k: r[k] for k in shown}, "in_bank_sample": r.get("in_bank_sample")}
        for *_, r in ranked[:top]
    ]
    return {
        "scored": sum(histogram.values()),
        "errors": errors,
        "stage_histogram": {str(s): histogram.get(s, 0) for s in sorted({*range(7), *histogram})},
        "most_recent": most_recent,
        "in_bank_sample": in_sample,
        "texts": texts,
        "texts_touched": touched,
    }


def chunk_bounds(total: int, chunk: int, start: int = 0) -> Sequence[tuple[int, int]]:
    """Half-open [lo, hi) ranges of `chunk` items covering start..total."""
    return [(lo, min(lo + chunk, total)) for lo in range(start, total, chunk)]
