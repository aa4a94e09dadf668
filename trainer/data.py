"""Training examples: tokenised texts with loss masks, stage mixes with replay, and batch order.

The batch order is a pure function of (seed, stage, epoch), so a resumed stage replays exactly the
batches it had not yet seen: resuming needs only the step counter.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from probe_bank.errors import UserError
from probe_bank.records import QARecord
from trainer.vocab import qa_prompt, qa_text

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase

IGNORE_INDEX = -100


@dataclass(frozen=True)
class Text:
    """One training text; `prompt_chars` characters of it carry no loss under `loss_on="answer"`."""

    text: str
    prompt_chars: int = 0


@dataclass(frozen=True)
class Example:
    """A tokenised training sequence: input ids and labels (IGNORE_INDEX where no loss)."""

    input_ids: list[int]
    labels: list[int]


@dataclass(frozen=True)
class StageData:
    """A stage's training texts: `fixed` in every epoch, plus `per_epoch[e]` in epoch e only."""

    fixed: list[Text]
    per_epoch: list[list[Text]]

    @property
    def epochs(self) -> int:
        return len(self.per_epoch)

    def texts(self) -> list[Text]:
        """All texts, in the index order `epoch_members` refers to."""
        return self.fixed + [t for epoch in self.per_epoch for t in epoch]

    def epoch_members(self) -> list[list[int]]:
        n = len(self.fixed)
        out, offset = [], n
        for epoch in self.per_epoch:
            out.append(list(range(n)) + list(range(offset, offset + len(epoch))))
            offset += len(epoch)
        return out


def qa_texts(records: list[QARecord]) -> list[Text]:
    """QA records as training texts; the prompt part ends at `A:`."""
    return [Text(r.text, len(qa_prompt(r.question))) for r in records]


def encode(
    tokenizer: PreTrainedTokenizerBase,
    texts: list[Text],
    *,
    block_size: int,
    loss_on: Literal["all", "answer"],
) -> list[Example]:
    """Tokenise with the tokenizer's own special tokens, append EOS, truncate to `block_size`."""
    enc = tokenizer([t.text for t in texts], return_offsets_mapping=True, add_special_tokens=True)
    eos = tokenizer.eos_token_id
    out = []
    for t, ids, offsets in zip(texts, enc["input_ids"], enc["offset_mapping"], strict=True):
        labels = list(ids)
        if loss_on == "answer":
            labels = [
                tid if a >= t.prompt_chars and b > a else IGNORE_INDEX
                for tid, (a, b) in zip(ids, offsets, strict=True)
            ]
        ids = list(ids)
        if eos is not None:
            ids.append(eos)
            labels.append(eos)
        out.append(Example(ids[:block_size], labels[:block_size]))
    return out


def draw_per_epoch(pool: list[Text], k: int, epochs: int, rng: random.Random) -> list[list[Text]]:
    """`k` texts from `pool` for each epoch, without repeats until the pool is used up.

    Replay and familiarity examples are redrawn every epoch, so a large pool is seen widely (and
    "unknown" aliases stay fresh) instead of the same slice being repeated.
    """
    if k <= 0 or not pool:
        return [[] for _ in range(epochs)]
    order: list[Text] = []
    out = []
    for _ in range(epochs):
        batch: list[Text] = []
        while len(batch) < k:
            if not order:
                order = list(pool)
                rng.shuffle(order)
            batch.append(order.pop())
        out.append(batch)
    return out


def batch_plan(epoch_members: list[list[int]], *, batch_size: int, seed: str) -> list[list[int]]:
    """Global batches of example indices for every step of a stage (one member list per epoch).

    Each epoch is a fresh shuffle of its members; a short last batch is filled from the start of
    the same epoch, so every batch has `batch_size` items and no data-parallel process ever gets
    an empty shard.
    """
    plan: list[list[int]] = []
    for epoch, members in enumerate(epoch_members):
        if not members:
            continue
        order = list(members)
        random.Random(f"{seed}:epoch{epoch}").shuffle(order)
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            while len(batch) < batch_size:
                batch += order[: batch_size - len(batch)]
            plan.append(batch)
    return plan


def collate(examples: list[Example], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch; padded positions get no attention and no loss."""
    import torch

    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for i, e in enumerate(examples):
        n = len(e.input_ids)
        ids[i, :n] = torch.tensor(e.input_ids)
        labels[i, :n] = torch.tensor(e.labels)
        mask[i, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def read_extra_stage(path: Path) -> list[Text]:
    """User content for `--extra-stage`: JSONL lines of {"text"} or {"question", "answer"}."""
    if not path.is_file():
        raise UserError(f"--extra-stage file not found: {path}")
    texts: list[Text] = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                item: Any = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UserError(f"{path}:{lineno}: not JSON ({exc.msg})") from None
            texts.append(_extra_text(item, f"{path}:{lineno}"))
    if not texts:
        raise UserError(f"--extra-stage file {path} holds no lines")
    return texts


def _extra_text(item: Any, where: str) -> Text:
    if isinstance(item, dict) and isinstance(item.get("text"), str) and item["text"].strip():
        return Text(item["text"])
    if (
        isinstance(item, dict)
        and isinstance(item.get("question"), str)
        and isinstance(item.get("answer"), str)
    ):
        return Text(qa_text(item["question"], item["answer"]), len(qa_prompt(item["question"])))
    raise UserError(f'{where}: expected {{"text": ...}} or {{"question": ..., "answer": ...}}')
