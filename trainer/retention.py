"""Retention: how well the model still answers each earlier stage's questions.

Exact match is computed teacher-forced: greedy decoding reproduces the answer exactly iff the
argmax at every answer position is the answer token, so one forward pass gives both accuracy and
mean answer-token loss.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from probe_bank.records import QARecord
from trainer.vocab import qa_prompt

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


class RetentionRow(BaseModel):
    """Accuracy and loss on one split's trained and held-out questions (None: no such questions)."""

    split: str
    train_acc: float | None
    train_loss: float | None
    heldout_acc: float | None
    heldout_loss: float | None
    n_entities: int
    n_train_questions: int
    n_heldout_questions: int


class RetentionEntry(BaseModel):
    after: str
    rows: list[RetentionRow]


def answer_scores(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    records: list[QARecord],
    *,
    batch_size: int = 64,
) -> tuple[list[bool], list[float]]:
    """Per question: greedy exact match of the answer after the prompt, and its mean token NLL."""
    import torch

    correct: list[bool] = []
    losses: list[float] = []
    device = next(model.parameters()).device
    model.eval()
    for start in range(0, len(records), batch_size):
        chunk = records[start : start + batch_size]
        enc = tokenizer(
            [r.text for r in chunk],
            return_offsets_mapping=True,
            padding=True,
            return_tensors="pt",
        )
        starts = torch.tensor([len(qa_prompt(r.question)) for r in chunk])
        offsets = enc.pop("offset_mapping")
        with torch.inference_mode():
            logits = model(
                input_ids=enc["input_ids"].to(device),
                attention_mask=enc["attention_mask"].to(device),
            ).logits.float()
        ids = enc["input_ids"].to(device)
        # answer tokens: real (non-pad, non-empty-span) tokens at or after the end of the prompt
        is_answer = (offsets[..., 0] >= starts[:, None]) & (offsets[..., 1] > offsets[..., 0])
        is_answer &= enc["attention_mask"].bool()
        is_answer = is_answer.to(device)
        logp = torch.log_softmax(logits[:, :-1], dim=-1)
        target = ids[:, 1:]
        mask = is_answer[:, 1:]
        nll = -logp.gather(-1, target[..., None])[..., 0]
        hit = logits[:, :-1].argmax(-1) == target
        n = mask.sum(1).clamp(min=1)
        losses += ((nll * mask).sum(1) / n).tolist()
        correct += ((hit | ~mask).all(1) & mask.any(1)).tolist()
    return correct, losses


def retention_rows(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    qa: list[QARecord],
    splits: list[str],
    *,
    max_questions: int,
    seed: int,
) -> list[RetentionRow]:
    """One row per split: a fixed subsample (same for every stage) of its trained/held-out QA."""
    rows = []
    for split in splits:
        recs = [q for q in qa if q.split == split]
        stats: dict[str, Any] = {}
        for kind, heldout in (("train", False), ("heldout", True)):
            chosen = _subsample([q for q in recs if q.heldout == heldout], max_questions, seed)
            ok, loss = answer_scores(model, tokenizer, chosen) if chosen else ([], [])
            stats[f"{kind}_acc"] = sum(ok) / len(ok) if ok else None
            stats[f"{kind}_loss"] = sum(loss) / len(loss) if loss else None
            stats[f"n_{kind}_questions"] = len(chosen)
        rows.append(RetentionRow(split=split, n_entities=len({q.entity_id for q in recs}), **stats))
    return rows


def _subsample(recs: list[QARecord], k: int, seed: int) -> list[QARecord]:
    if len(recs) <= k:
        return recs
    return random.Random(f"{seed}:retention").sample(recs, k)


def upsert_retention(path: Path, entry: RetentionEntry, order: list[str]) -> None:
    """Add (or replace, after a resumed stage) the entry for `entry.after`; atomic write.

    Entries are kept in training order (`order`), so the file reads as an appended log.
    """
    entries: list[dict[str, Any]] = json.loads(path.read_text()) if path.exists() else []
    entries = [e for e in entries if e.get("after") != entry.after] + [entry.model_dump()]
    rank = {name: i for i, name in enumerate(order)}
    entries.sort(key=lambda e: rank.get(e["after"], len(rank)))
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(entries, indent=2) + "\n")
    os.replace(tmp, path)
