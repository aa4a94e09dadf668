"""Text evidence: was this text (or its answer) learned, and did a later finetune touch it?

An auditor's second question after "which entities": which *texts*. Per text, the membership
detectors of MIMIR (loss, Min-K%, Min-K%++, zlib ratio) on the audited model; on a descendant
the same under the bank's reference, and the loss drop against it (the reference-ratio attack),
read in units of the bank's anchor texts (never-trained entities' QA pairs), whose drop is what a
finetune does to text it never saw. Given an answer, only the tokens overlapping it are scored
(byte-level BPE puts the leading space in the answer's first token: overlap, not start offset,
as `baselines.answer_nll`). One teacher-forced forward per model through `probe_bank.capture`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from probe_bank.answers import TokenScores, capture_continuations
from probe_bank.baselines import min_k_score, zlib_ratio
from probe_bank.capture import Encoded, encode
from probe_bank.errors import UserError
from probe_bank.heldout.stats import robust_scale
from probe_bank.schemas import TextStatistics

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

#: Min-K% and Min-K%++ average the lowest share of tokens (MIMIR's default k).
MIN_K = 0.2


@dataclass(frozen=True)
class TextItem:
    """One text, tokenized once: the context before the scored tokens, and those tokens."""

    prefix: Encoded
    scored_ids: tuple[int, ...]
    scored: Literal["answer", "text"]
    scored_text: str
    n_tokens: int


def text_items(
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    answers: Sequence[str | None] | None = None,
    *,
    max_tokens: int | None = None,
) -> list[TextItem]:
    """Validate and tokenize once. With an answer (its last occurrence in the text) the scored
    tokens are those overlapping it; without, every token after the first."""
    texts = list(texts)
    if answers is not None and len(answers) != len(texts):
        raise UserError(f"{len(answers)} answers for {len(texts)} texts; give one per text")
    given = list(answers) if answers is not None else [None] * len(texts)
    spans: list[tuple[int, int] | None] = []
    for text, answer in zip(texts, given, strict=True):
        if answer is None:
            spans.append(None)
            continue
        start = text.rfind(answer) if answer else -1
        if start < 0:
            raise UserError(f"answer {answer!r} does not occur in text {text[:80]!r}")
        spans.append((start, start + len(answer)))
    items = encode(tokenizer, texts, spans, max_tokens=max_tokens)
    out = []
    for text, answer, it in zip(texts, given, items, strict=True):
        ids = it.input_ids
        if it.alias_mask is None:
            lo, hi = 1, len(ids)
        else:
            where = np.flatnonzero(it.alias_mask)
            lo, hi = max(1, int(where[0])), int(where[-1]) + 1
        if hi <= lo:
            raise UserError(f"text {text[:80]!r} has no token to score after its first")
        out.append(
            TextItem(
                Encoded(ids[:lo]),
                tuple(ids[lo:hi]),
                "text" if answer is None else "answer",
                text if answer is None else answer,
                len(ids),
            )
        )
    return out


def statistics(scores: TokenScores, scored_text: str) -> TextStatistics:
    z = (scores.logprob - scores.mean) / np.maximum(scores.sd, 1e-6)
    return TextStatistics(
        loss=float(-scores.logprob.mean()),
        min_k=min_k_score(scores.logprob, MIN_K),
        min_k_plus_plus=min_k_score(z, MIN_K),
        zlib_ratio=zlib_ratio(scores.logprob, scored_text),
    )


def model_statistics(
    model: PreTrainedModel, items: Sequence[TextItem], *, layer: int, batch_size: int = 8
) -> list[TextStatistics]:
    """Each text's statistics on one model."""
    scores = capture_continuations(
        model,
        [it.prefix for it in items],
        [it.scored_ids for it in items],
        layer=layer,
        batch_size=batch_size,
    )
    return [statistics(s, it.scored_text) for s, it in zip(scores, items, strict=True)]


def pair_statistics(
    audited: PreTrainedModel,
    reference: PreTrainedModel,
    items: Sequence[TextItem],
    *,
    layer: int,
    batch_size: int = 8,
) -> tuple[list[TextStatistics], list[TextStatistics], list[float]]:
    """Both models' statistics and each text's loss drop (reference minus audited)."""
    mine = model_statistics(audited, items, layer=layer, batch_size=batch_size)
    theirs = model_statistics(reference, items, layer=layer, batch_size=batch_size)
    return mine, theirs, [r.loss - a.loss for r, a in zip(theirs, mine, strict=True)]


#: Share of the anchor texts (never trained) that the `touched` flag may claim.
TOUCHED_FALSE_ALARM = 0.05


@dataclass(frozen=True)
class DropScale:
    """The anchor texts' loss drops on one pair of models: their median, their spread
    (IQR / 1.349; 1 where they do not vary) and the z a text must reach to be flagged."""

    median: float
    scale: float
    threshold_z: float

    def z(self, drop: float) -> float:
        return (drop - self.median) / self.scale


def drop_scale(drops: Sequence[float]) -> DropScale:
    """The anchors' scale, and as threshold their own (1 - TOUCHED_FALSE_ALARM) quantile, so
    about that share of never-trained texts is flagged on these two models."""
    d = np.asarray(drops, np.float64)
    mid, scale = (float(x) for x in robust_scale(d))
    top = float(np.quantile(d, 1 - TOUCHED_FALSE_ALARM, method="higher"))
    return DropScale(mid, scale, (top - mid) / scale)
