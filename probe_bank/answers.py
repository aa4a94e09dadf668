"""Answers after prompts: a model's greedy answers, or given answers scored, with per-token
statistics, for the evidence families (questions about an alias) and text scoring (a text's
tokens after its prefix).

They run through capture's machinery (its padding, position reader, per-model lock and hook
names), but past the probed block: the final norm's output is kept and the LM head applied only
where a next token is needed (`_Hooks`); greedy decoding keeps a KV cache.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from probe_bank.capture import (
    Encoded,
    StopForward,
    model_lock,
    pad_batch,
    read_positions,
    validate_cells,
)
from probe_bank.errors import UserError
from probe_bank.modeling import decoder_layers

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


@dataclass
class AnswerCapture:
    """Per prompt: an answer after it (the model's own greedy one, or a given one scored), its
    tokens' log-probabilities and next-token entropies, and the residual stream at one
    (layer, position) cell on the prompt. A given answer lets two models be compared on the
    same continuation without a ground truth."""

    acts: np.ndarray  # [n, d]
    answers: list[tuple[int, ...]]  # token ids, ending at the first stop token (or the cap)
    logprob_mean: np.ndarray  # [n] mean log-probability of the answer's tokens
    logprob_min: np.ndarray  # [n] the least likely answer token
    entropy_mean: np.ndarray  # [n] mean next-token entropy (nats) over the answer's positions
    alias_logprob: np.ndarray  # [n] mean log-probability of the alias's tokens in the prompt


def stop_token_ids(tokenizer: PreTrainedTokenizerBase) -> frozenset[int]:
    """Tokens that end an answer: any whose text holds a newline (QA answers end with one),
    and the end-of-sequence token."""
    vocab = tokenizer.get_vocab()
    ids = {i for i in vocab.values() if "\n" in tokenizer.decode([i])}
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    return frozenset(ids)


def _entropy(logp: torch.Tensor) -> torch.Tensor:
    return -(logp.exp() * logp).sum(-1)


class _Hooks:
    """Block output at `layer` and the final norm's output, the forward stopped after the norm
    (the LM head is then applied only where a next token is needed)."""

    def __init__(self, model: PreTrainedModel, layer: int) -> None:
        self.out: dict[str, Any] = {}
        base = getattr(model, "model", None) or model.get_decoder()
        self.handles = [
            decoder_layers(model)[layer].register_forward_hook(self._keep("block", False)),
            base.norm.register_forward_hook(self._keep("norm", True)),
        ]

    def _keep(self, name: str, stop: bool) -> Any:
        def hook(_mod: Any, _inp: Any, output: Any) -> None:
            self.out[name] = output[0] if isinstance(output, tuple) else output
            if stop:
                raise StopForward

        return hook

    def run(self, model: PreTrainedModel, **kwargs: Any) -> dict[str, Any]:
        try:
            model(**kwargs)
        except StopForward:
            pass
        finally:
            for h in self.handles:
                h.remove()
        return self.out


def _alias_logprob(
    head: Any, norm: torch.Tensor, input_ids: torch.Tensor, chunk: Sequence[Encoded]
) -> list[float]:
    """Each prompt's mean log-probability of its alias's tokens, each predicted from the tokens
    before it (the LM head applied at those positions only): how familiar the model finds the
    name itself, which a model trained on texts that contain it learns without any answer.
    NaN for a prompt without an alias mask or whose alias is its first token."""
    import torch

    rows, cols = [], []
    for i, it in enumerate(chunk):
        if it.alias_mask is not None:
            for j, on in enumerate(it.alias_mask[: it.n_tokens]):
                if on and j > 0:
                    rows.append(i)
                    cols.append(j)
    out = [float("nan")] * len(chunk)
    if not rows:
        return out
    r = torch.tensor(rows, device=norm.device)
    c = torch.tensor(cols, device=norm.device)
    logp = torch.log_softmax(head(norm[r, c - 1]).float(), dim=-1)
    lp = logp[torch.arange(len(rows), device=norm.device), input_ids[r, c]].tolist()
    per: dict[int, list[float]] = {}
    for i, v in zip(rows, lp, strict=True):
        per.setdefault(i, []).append(v)
    for i, v in per.items():
        out[i] = float(np.mean(v))
    return out


def _greedy(
    model: PreTrainedModel,
    chunk: Sequence[Encoded],
    layer: int,
    position: str,
    max_new_tokens: int,
    stop_ids: frozenset[int],
    steps: list[torch.Tensor] | None = None,
    alias: list[float] | None = None,
) -> tuple[np.ndarray, list[tuple[int, ...]], list[list[float]], list[list[float]]]:
    """Greedy decoding of one right-padded batch with a KV cache: the prompt once, then one
    token per step appended after the padding (masked), each at its own position id. A row
    that has ended leaves the batch (its cache rows dropped), so the steps cost what the rows
    still decoding cost. `steps`, when given, receives each step's next-token
    log-probabilities [batch, vocab] (rows ended before that step: NaN); `alias`, each
    prompt's `_alias_logprob` from the same prompt pass."""
    import torch
    from transformers import DynamicCache

    device = next(model.parameters()).device
    head = model.get_output_embeddings()
    batch = pad_batch(chunk, device)
    cache = DynamicCache()
    out = _Hooks(model, layer).run(model, **batch, cache=cache, use_cache=True)
    acts = read_positions(out["block"], chunk, [position])[position]
    if alias is not None:
        alias.extend(_alias_logprob(head, out["norm"], batch["input_ids"], chunk))
    lengths = torch.tensor([it.n_tokens for it in chunk], device=device)
    rows = torch.arange(len(chunk), device=device)
    logp = torch.log_softmax(head(out["norm"][rows, lengths - 1]).float(), dim=-1)
    mask = batch["attention_mask"]
    answers: list[list[int]] = [[] for _ in chunk]
    lps: list[list[float]] = [[] for _ in chunk]
    ents: list[list[float]] = [[] for _ in chunk]
    live = list(range(len(chunk)))  # the batch's rows still decoding, in cache order
    for t in range(max_new_tokens):
        if steps is not None:
            full = logp.new_full((len(chunk), logp.shape[-1]), float("nan"))
            full[live] = logp
            steps.append(full)
        tok = logp.argmax(-1)
        here = torch.arange(len(live), device=device)
        lp, ent = logp[here, tok].tolist(), _entropy(logp).tolist()
        keep = []
        for k, (i, token) in enumerate(zip(live, tok.tolist(), strict=True)):
            answers[i].append(token)
            lps[i].append(lp[k])
            ents[i].append(ent[k])
            if token not in stop_ids:
                keep.append(k)
        if not keep or t == max_new_tokens - 1:
            break
        if len(keep) < len(live):
            idx = torch.tensor(keep, device=device)
            cache.batch_select_indices(idx)
            mask, tok, lengths = mask[idx], tok[idx], lengths[idx]
            live = [live[k] for k in keep]
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        logits = model(
            input_ids=tok[:, None],
            attention_mask=mask,
            position_ids=(lengths + t)[:, None],
            cache=cache,
            use_cache=True,
        ).logits[:, -1]
        logp = torch.log_softmax(logits.float(), dim=-1)
    return acts, [tuple(a) for a in answers], lps, ents


def _score(
    model: PreTrainedModel,
    chunk: Sequence[Encoded],
    answers: Sequence[Sequence[int]],
    layer: int,
    position: str,
    flat: list[torch.Tensor] | None = None,
    alias: list[float] | None = None,
) -> tuple[np.ndarray, list[list[float]], list[list[float]]]:
    """Given answers teacher-forced after their prompts, one forward: each answer token's
    log-probability and the entropy where it is predicted. `flat`, when given, receives the
    log-probabilities [answer tokens, vocab] in answer order; `alias`, each prompt's
    `_alias_logprob` from the same forward."""
    import torch

    device = next(model.parameters()).device
    head = model.get_output_embeddings()
    joined = [
        Encoded(
            it.input_ids + tuple(a),
            None if it.alias_mask is None else it.alias_mask + (False,) * len(a),
        )
        for it, a in zip(chunk, answers, strict=True)
    ]
    batch = pad_batch(joined, device)
    out = _Hooks(model, layer).run(model, **batch, use_cache=False)
    acts = read_positions(out["block"], chunk, [position])[position]
    if alias is not None:
        alias.extend(_alias_logprob(head, out["norm"], batch["input_ids"], chunk))
    row = torch.tensor([i for i, a in enumerate(answers) for _ in a], device=device)
    col = torch.tensor(
        [it.n_tokens - 1 + j for it, a in zip(chunk, answers, strict=True) for j in range(len(a))],
        device=device,
    )
    logp = torch.log_softmax(head(out["norm"][row, col]).float(), dim=-1)
    want = torch.tensor([t for a in answers for t in a], device=device)
    lp_flat = logp[torch.arange(len(want), device=device), want].tolist()
    ent_flat = _entropy(logp).tolist()
    if flat is not None:
        flat.append(logp)
    lps, ents, k = [], [], 0
    for a in answers:
        lps.append(lp_flat[k : k + len(a)])
        ents.append(ent_flat[k : k + len(a)])
        k += len(a)
    return acts, lps, ents


def capture_answers(
    model: PreTrainedModel,
    items: Sequence[Encoded],
    *,
    layer: int,
    position: str,
    answers: Sequence[Sequence[int]] | None = None,
    max_new_tokens: int = 8,
    stop_ids: frozenset[int] = frozenset(),
    batch_size: int = 32,
) -> AnswerCapture:
    """The model's greedy answer after each prompt (up to `max_new_tokens`, ending at a stop
    token) or, with `answers`, those answers scored; the block output at `layer` read at
    `position` on the prompt (same hook name and reader as `capture_encoded`)."""
    import torch

    validate_cells(model, [layer], [position])
    if answers is not None and (len(answers) != len(items) or any(not a for a in answers)):
        raise UserError("give one non-empty answer per prompt")
    if max_new_tokens < 1:
        raise UserError("max_new_tokens must be >= 1")
    acts: list[np.ndarray] = []
    got: list[tuple[int, ...]] = []
    lps: list[list[float]] = []
    ents: list[list[float]] = []
    alias: list[float] = []
    for lo in range(0, len(items), batch_size):
        chunk = list(items[lo : lo + batch_size])
        with model_lock(model), torch.inference_mode():
            if answers is None:
                a, ans, lp, ent = _greedy(
                    model, chunk, layer, position, max_new_tokens, stop_ids, alias=alias
                )
            else:
                ans = [tuple(x) for x in answers[lo : lo + batch_size]]
                a, lp, ent = _score(model, chunk, ans, layer, position, alias=alias)
        acts.append(a)
        got.extend(ans)
        lps.extend(lp)
        ents.extend(ent)
    d = int(model.config.hidden_size)
    return AnswerCapture(
        np.concatenate(acts).astype(np.float32) if acts else np.zeros((0, d), np.float32),
        got,
        *_pack(lps, ents),
        np.array(alias, dtype=np.float64),
    )


@dataclass
class TokenScores:
    """Per scored token of one text: its log-probability, and the mean and standard deviation
    of log-probabilities under the model's next-token distribution there (Min-K%++ needs both)."""

    logprob: np.ndarray
    mean: np.ndarray
    sd: np.ndarray


def capture_continuations(
    model: PreTrainedModel,
    items: Sequence[Encoded],
    continuations: Sequence[Sequence[int]],
    *,
    layer: int,
    batch_size: int = 8,
) -> list[TokenScores]:
    """Each continuation's tokens teacher-forced after its prefix (the same forward as scored
    answers, `_score`): what a text's membership statistics read."""
    import torch

    validate_cells(model, [layer], ["last"])
    if len(continuations) != len(items) or any(not c for c in continuations):
        raise UserError("give one non-empty continuation per prefix")
    out: list[TokenScores] = []
    for lo in range(0, len(items), batch_size):
        chunk = list(items[lo : lo + batch_size])
        conts = [tuple(c) for c in continuations[lo : lo + batch_size]]
        flat: list[torch.Tensor] = []
        with model_lock(model), torch.inference_mode():
            _, lps, _ = _score(model, chunk, conts, layer, "last", flat)
            p = flat[0].exp()
            mean = (p * flat[0]).sum(-1)
            sd = ((p * flat[0].square()).sum(-1) - mean.square()).clamp_min(0).sqrt()
        mean_l, sd_l, k = mean.tolist(), sd.tolist(), 0
        for lp in lps:
            n = len(lp)
            out.append(
                TokenScores(np.array(lp), np.array(mean_l[k : k + n]), np.array(sd_l[k : k + n]))
            )
            k += n
    return out


def _pack(
    lps: list[list[float]], ents: list[list[float]]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (
        np.array([np.mean(x) for x in lps], dtype=np.float64),
        np.array([np.min(x) for x in lps], dtype=np.float64),
        np.array([np.mean(x) for x in ents], dtype=np.float64),
    )


def capture_answer_pair(
    audited: PreTrainedModel,
    reference: PreTrainedModel,
    items: Sequence[Encoded],
    *,
    layer: int,
    position: str,
    max_new_tokens: int = 8,
    stop_ids: frozenset[int] = frozenset(),
    batch_size: int = 32,
) -> tuple[AnswerCapture, AnswerCapture, np.ndarray, np.ndarray, np.ndarray]:
    """The audited model's greedy answers, the reference's statistics on those same answers,
    and per prompt: the mean and the largest over answer positions of KL(audited || reference)
    between the two models' next-token distributions (exact over the vocabulary), and the
    largest per-token log-probability gain of the answer (audited minus reference)."""
    import torch

    validate_cells(audited, [layer], [position])
    per: dict[str, list] = {
        k: []
        for k in (
            *("a_acts", "r_acts", "ans", "a_lp", "a_ent", "r_lp", "r_ent"),
            *("a_alias", "r_alias", "kl", "kl_peak"),
        )
    }
    for lo in range(0, len(items), batch_size):
        chunk = list(items[lo : lo + batch_size])
        steps: list[torch.Tensor] = []
        flat: list[torch.Tensor] = []
        with torch.inference_mode():
            with model_lock(audited):
                a, ans, a_lp, a_ent = _greedy(
                    audited, chunk, layer, position, max_new_tokens, stop_ids, steps, per["a_alias"]
                )
            with model_lock(reference):
                r, r_lp, r_ent = _score(
                    reference, chunk, ans, layer, position, flat, per["r_alias"]
                )
            mine = torch.stack([steps[j][i] for i, x in enumerate(ans) for j in range(len(x))])
            theirs = flat[0].to(mine.device)
            kl_flat = (mine.exp() * (mine - theirs)).sum(-1).tolist()
        k = 0
        for x in ans:
            per["kl"].append(float(np.mean(kl_flat[k : k + len(x)])))
            per["kl_peak"].append(float(np.max(kl_flat[k : k + len(x)])))
            k += len(x)
        per["a_acts"].append(a)
        per["r_acts"].append(r)
        per["ans"].extend(ans)
        for key, v in (("a_lp", a_lp), ("a_ent", a_ent), ("r_lp", r_lp), ("r_ent", r_ent)):
            per[key].extend(v)
    d = int(audited.config.hidden_size)

    def acts(key: str) -> np.ndarray:
        v = per[key]
        return np.concatenate(v).astype(np.float32) if v else np.zeros((0, d), np.float32)

    mine_stats = _pack(per["a_lp"], per["a_ent"])
    ref_stats = _pack(per["r_lp"], per["r_ent"])
    return (
        AnswerCapture(acts("a_acts"), per["ans"], *mine_stats, np.array(per["a_alias"])),
        AnswerCapture(acts("r_acts"), per["ans"], *ref_stats, np.array(per["r_alias"])),
        np.array(per["kl"], dtype=np.float64),
        np.array(per["kl_peak"], dtype=np.float64),
        np.array(
            [
                max(m - t for m, t in zip(a, b, strict=True))
                for a, b in zip(per["a_lp"], per["r_lp"], strict=True)
            ]
        ),
    )
