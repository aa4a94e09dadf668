"""`results.summarize`: what a job's or audit's result lines say, families and texts included."""

from __future__ import annotations

import json
from typing import Any

from audit_service.jobs.results import summarize


def _entity(index: int, fused: int, p_after: float, behaviour: int = 0) -> str:
    fam = [
        {"family": "behaviour", "estimated_class": behaviour, "p_after_bank": 0.0},
        {"family": "fused", "estimated_class": fused, "p_after_bank": p_after},
    ]
    rec: dict[str, Any] = {
        "index": index,
        "id": None,
        "kind": "entity",
        "input": f"<e{index}>",
        "estimated_stage": 3,
        "recency_score": 3.0,
        "p_late": 0.5,
        "families": fam,
    }
    return json.dumps(rec)


def _text(index: int, z: float | None, touched: bool | None) -> str:
    return json.dumps(
        {
            "index": index,
            "id": f"t{index}",
            "kind": "text",
            "input": "Q: ...",
            "loss_drop": None if z is None else z / 10,
            "loss_drop_anchor_z": z,
            "touched": touched,
        }
    )


def test_the_fused_classes_and_the_entities_and_texts_a_later_finetune_touched() -> None:
    lines = [
        _entity(0, fused=2, p_after=0.10),
        _entity(1, fused=7, p_after=0.90, behaviour=7),
        _entity(2, fused=7, p_after=0.95),
        _entity(3, fused=0, p_after=0.01),
        _text(4, z=0.5, touched=False),
        _text(5, z=6.0, touched=True),
        _text(6, z=None, touched=None),  # the reference audited: no reference pass
        json.dumps({"index": 7, "id": None, "kind": "entity", "input": "x", "error": "bad"}),
    ]
    s = summarize(lines, top=2)
    assert s.scored == 4 and s.errors == 1
    assert s.fused_class_histogram == {
        "0": 1,
        "1": 0,
        "2": 1,
        "3": 0,
        "4": 0,
        "5": 0,
        "6": 0,
        "7": 2,
    }
    assert s.entities_after_bank == 2
    assert [r["input"] for r in s.most_after_bank] == ["<e2>", "<e1>"]
    assert s.most_after_bank[0]["families_after_bank"] == ["fused"]
    assert s.most_after_bank[1]["families_after_bank"] == ["behaviour", "fused"]
    assert s.texts == 3 and s.texts_touched == 1
    assert [r["id"] for r in s.most_moved_texts] == ["t5", "t4"]


def test_a_bank_without_families_summarises_as_before() -> None:
    line = json.loads(_entity(0, fused=0, p_after=0.0))
    del line["families"]
    s = summarize([json.dumps(line)])
    assert s.fused_class_histogram == {} and s.entities_after_bank == 0
    assert s.most_after_bank == [] and s.most_moved_texts == []
    assert s.stage_histogram["3"] == 1 and s.most_recent[0]["input"] == "<e0>"
