"""Scalar baselines: statistics a probe could be exploiting instead of a recency direction.

Per prompt: output entropy and max logit at the last position, Min-K% (mean of the lowest k% token
log-probabilities), zlib ratio (total NLL / zlib-compressed byte length) and the activation norm at
the bank's layer and position; per entity: answer loss (mean NLL of the answer tokens of its trained
QA pairs). Each is evaluated alone and combined with the probes' code on the same folds, and the
probes are retrained on entities balanced on each statistic (as the study did).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

BASELINE_NAMES = ("answer_loss", "entropy", "norm", "max_logit", "min_k", "zlib_ratio")


@dataclass
class TextStats:
    """Per text: log-probability of each token given its prefix, and last-position logit stats."""

    token_logprobs: list[np.ndarray]
    last_entropy: np.ndarray
    last_max_logit: np.ndarray
    offsets: list[np.ndarray]


def text_statistics(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    batch_size: int = 32,
) -> TextStats:
    """Full forward (logits needed) over right-padded batches."""
    import torch

    device = next(model.parameters()).device
    logprobs: list[np.ndarray] = []
    offsets: list[np.ndarray] = []
    ent: list[float] = []
    mx: list[float] = []
    for lo in range(0, len(texts), batch_size):
        chunk = list(texts[lo : lo + batch_size])
        enc = tokenizer(chunk, padding=True, return_tensors="pt", return_offsets_mapping=True)
        offs = enc.pop("offset_mapping")
        lengths = enc["attention_mask"].sum(1)
        with torch.inference_mode():
            logits = model(**{k: v.to(device) for k, v in enc.items()}, use_cache=False).logits
        logp = torch.log_softmax(logits.float(), dim=-1).cpu()
        ids = enc["input_ids"]
        for i in range(len(chunk)):
            n = int(lengths[i])
            tok_lp = logp[i, : n - 1].gather(1, ids[i, 1:n, None])[:, 0]
            logprobs.append(tok_lp.numpy())
            offsets.append(offs[i, :n].numpy())
            last = logp[i, n - 1]
            ent.append(float(-(last.exp() * last).sum()))
            mx.append(float(logits[i, n - 1].float().max()))
    return TextStats(logprobs, np.array(ent), np.array(mx), offsets)


def min_k_score(token_logprobs: np.ndarray, k: float = 0.2) -> float:
    """Min-K% prob: the mean of the lowest k share of token log-probabilities."""
    if len(token_logprobs) == 0:
        return float("nan")
    n = max(1, int(np.ceil(k * len(token_logprobs))))
    return float(np.sort(token_logprobs)[:n].mean())


def zlib_ratio(token_logprobs: np.ndarray, text: str) -> float:
    """Total NLL of the text over its zlib-compressed length in bytes (Carlini et al.)."""
    return float(-token_logprobs.sum() / len(zlib.compress(text.encode("utf-8"))))


def answer_nll(stats: TextStats, index: int, answer_span: tuple[int, int]) -> float:
    """Mean NLL of the tokens overlapping the answer's characters [start, end).

    Overlap, not "starts at or after": a byte-level BPE token carries its leading space
    ('ĠItaly' spans (36, 42) while "Italy" starts at 37), so selecting by start offset drops the
    answer's first token (often the whole answer) and leaves the closing newline's NLL.
    """
    start, end = answer_span
    spans = stats.offsets[index][1:]  # token t is predicted by logprob[t-1]
    sel = (spans[:, 0] < end) & (spans[:, 1] > start) & (spans[:, 1] > spans[:, 0])
    lp = stats.token_logprobs[index][sel]
    return float(-lp.mean()) if len(lp) else float("nan")


def prompt_baselines(
    stats: TextStats, prompts: Sequence[str], acts: np.ndarray
) -> dict[str, np.ndarray]:
    """Per-prompt baselines except answer loss."""
    return {
        "entropy": stats.last_entropy,
        "max_logit": stats.last_max_logit,
        "min_k": np.array([min_k_score(lp) for lp in stats.token_logprobs]),
        "zlib_ratio": np.array(
            [zlib_ratio(lp, t) for lp, t in zip(stats.token_logprobs, prompts, strict=True)]
        ),
        "norm": np.linalg.norm(acts, axis=1),
    }


def balanced_entities(
    stat: np.ndarray,
    labels: np.ndarray,
    group_a: Sequence[int],
    group_b: Sequence[int],
    *,
    n_bins: int = 5,
    seed: int = 0,
) -> np.ndarray:
    """Boolean mask over entities: both groups subsampled to the same histogram of `stat`.

    Bins are quantiles of the pooled statistic; in each bin the larger group is randomly cut to
    the smaller group's count, so a probe on the kept entities cannot win through `stat`.
    """
    rng = np.random.default_rng(seed)
    in_a, in_b = np.isin(labels, group_a), np.isin(labels, group_b)
    pooled = stat[(in_a | in_b) & np.isfinite(stat)]
    keep = np.zeros(len(labels), bool)
    if len(pooled) == 0:
        return keep
    edges = np.unique(np.quantile(pooled, np.linspace(0, 1, n_bins + 1)))
    bins = np.clip(np.searchsorted(edges, stat, side="right") - 1, 0, max(len(edges) - 2, 0))
    for b in np.unique(bins):
        a = np.flatnonzero(in_a & (bins == b) & np.isfinite(stat))
        c = np.flatnonzero(in_b & (bins == b) & np.isfinite(stat))
        n = min(len(a), len(c))
        keep[rng.choice(a, n, replace=False)] = True
        keep[rng.choice(c, n, replace=False)] = True
    return keep
