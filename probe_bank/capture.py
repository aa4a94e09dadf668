"""Activation capture: the one forward pass used by the bank build, the service and batch jobs.

`encode` validates and tokenizes prompts once (the service queues its `Encoded` items);
`capture_encoded` pads a batch of them and runs the forward; `capture` is the two in a row.

The forward runs the embedding and only the blocks up to the deepest requested layer: a forward
hook on that block raises `_StopForward`, so later blocks and the LM head never run; where
`partial_block` supports the block, a pre-hook stops before it instead and it runs only at the
positions read (`read_index`). Prompts are
right-padded with an attention mask; in a causal model a real token never attends to the pads that
follow it, so activations do not depend on the batch a prompt lands in (tested).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from probe_bank import partial_block
from probe_bank.errors import PromptTooLong, UserError
from probe_bank.modeling import decoder_layers

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

#: Token positions a probe can read: the last token, `last-k` (k tokens before it, the study
#: probed the last 8: last .. last-7) and the mean over the alias's tokens.
LAST_OFFSETS = 8
POSITIONS = ("last", *(f"last-{k}" for k in range(1, LAST_OFFSETS)), "alias_mean")


def last_offset(position: str) -> int | None:
    """k for `last` (0) and `last-k`; None for other positions."""
    if position == "last":
        return 0
    if position.startswith("last-") and position in POSITIONS:
        return int(position[5:])
    return None


_LOCKS: weakref.WeakKeyDictionary[Any, threading.Lock] = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def hook_name(layer: int) -> str:
    """TransformerLens name of the residual stream after block `layer`."""
    return f"blocks.{layer}.hook_resid_post"


@dataclass
class Capture:
    """Activations in input order: hook -> position -> float32 [n, d_model]; tokens per prompt."""

    acts: dict[str, dict[str, np.ndarray]]
    n_tokens: np.ndarray


class _StopForward(Exception):
    """Raised by the hook on the deepest needed block to skip every later block."""


@dataclass(frozen=True)
class Encoded:
    """One prompt, validated and tokenized once: what the batcher queues and the forward reads.

    `alias_mask` marks the tokens overlapping the alias's characters (None: no alias given);
    `alias` is the entity the prompt is about, when the caller names it (`in_bank_sample`).
    """

    input_ids: tuple[int, ...]
    alias_mask: tuple[bool, ...] | None = None
    alias: str | None = None

    @property
    def n_tokens(self) -> int:
        return len(self.input_ids)


def _alias_token_mask(
    offsets: Sequence[tuple[int, int]], span: tuple[int, int]
) -> tuple[bool, ...]:
    """Tokens overlapping the alias's character span [start, end); special tokens excluded."""
    start, end = span
    mask = tuple(s < end and e > start and e > s for s, e in offsets)
    if not any(mask):
        raise UserError(f"alias span {span} covers no token of the prompt")
    return mask


def encode(
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    alias_spans: Sequence[tuple[int, int] | None] | None = None,
    *,
    max_tokens: int | None = None,
) -> list[Encoded]:
    """Tokenize every prompt once (with the tokenizer's special tokens, as in training) and
    locate each alias's tokens; a prompt over `max_tokens` is a `PromptTooLong`."""
    prompts = list(prompts)
    if alias_spans is not None and len(alias_spans) != len(prompts):
        raise UserError(f"{len(alias_spans)} alias spans for {len(prompts)} prompts")
    if not prompts:
        return []
    spans = list(alias_spans) if alias_spans is not None else [None] * len(prompts)
    backend = _direct_backend(tokenizer)
    if backend is not None:  # the same ids and offsets, without the Python wrapper's cost
        encs = backend.encode_batch(prompts, add_special_tokens=True)
        ids_list, offsets = [e.ids for e in encs], [e.offsets for e in encs]
    else:
        need_offsets = any(s is not None for s in spans)
        enc = tokenizer(prompts, add_special_tokens=True, return_offsets_mapping=need_offsets)
        ids_list, offsets = enc["input_ids"], enc.get("offset_mapping")
    items = []
    for i, ids in enumerate(ids_list):
        span = spans[i]
        mask = None if span is None else _alias_token_mask(offsets[i], span)
        items.append(Encoded(tuple(ids), mask))
    if max_tokens is not None:
        check_lengths([it.n_tokens for it in items], max_tokens)
    return items


def _direct_backend(tokenizer: PreTrainedTokenizerBase) -> Any | None:
    """The Rust tokenizer behind a fast HF tokenizer when calling it directly is the same
    computation (nothing configured to truncate or pad); None otherwise (use the wrapper)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or backend.truncation is not None or backend.padding is not None:
        return None
    return backend


def check_lengths(counts: Sequence[int], limit: int) -> None:
    """Every prompt fits the model's limit, or one `PromptTooLong` naming the first few."""
    over = [(i, n) for i, n in enumerate(counts) if n > limit]
    if over:
        shown = ", ".join(f"#{i} has {n}" for i, n in over[:5])
        more = f" (and {len(over) - 5} more)" if len(over) > 5 else ""
        raise PromptTooLong(
            f"{len(over)} prompt(s) exceed the model's limit of {limit} tokens: {shown}{more}"
        )


def _validate(model: PreTrainedModel, layers: Sequence[int], positions: Sequence[str]) -> None:
    total = len(decoder_layers(model))
    if not layers:
        raise UserError("at least one layer is needed")
    bad = [layer for layer in layers if not 0 <= layer < total]
    if bad:
        raise UserError(f"layers {bad} out of range: the model has blocks 0..{total - 1}")
    unknown = [p for p in positions if p not in POSITIONS]
    if unknown:
        raise UserError(f"unknown positions {unknown}; choose from {list(POSITIONS)}")


def _model_lock(model: PreTrainedModel) -> threading.Lock:
    """One lock per model: hooks are per module, so two concurrent captures would mix outputs."""
    with _LOCKS_GUARD:
        lock = _LOCKS.get(model)
        if lock is None:
            lock = _LOCKS[model] = threading.Lock()
        return lock


def _run_blocks(
    model: PreTrainedModel,
    batch: dict[str, torch.Tensor],
    layers: Sequence[int],
    index: torch.Tensor | None = None,
) -> dict[int, torch.Tensor]:
    """Forward through blocks 0..max(layers) only; returns each requested block's output.
    With `index` ([batch, slots] positions read), the deepest block runs only there when
    `partial_block` supports it (its output is then correct only at those positions)."""
    with _model_lock(model):
        return _run_blocks_unlocked(model, batch, layers, index)


def _run_blocks_unlocked(
    model: PreTrainedModel,
    batch: dict[str, torch.Tensor],
    layers: Sequence[int],
    index: torch.Tensor | None = None,
) -> dict[int, torch.Tensor]:
    blocks = decoder_layers(model)
    deepest = max(layers)
    partial = index is not None and partial_block.supports(blocks[deepest])
    out: dict[int, torch.Tensor] = {}
    entering: dict[str, Any] = {}

    def make_hook(idx: int) -> Any:
        def hook(_mod: Any, _inp: Any, output: Any) -> None:
            out[idx] = output[0] if isinstance(output, tuple) else output
            if idx == deepest:
                raise _StopForward

        return hook

    def stop_before(_mod: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        entering["hidden"] = args[0] if args else kwargs["hidden_states"]
        entering["rope"] = kwargs["position_embeddings"]
        raise _StopForward

    handles = [
        blocks[i].register_forward_hook(make_hook(i))
        for i in sorted(set(layers))
        if not (partial and i == deepest)
    ]
    if partial:
        handles.append(blocks[deepest].register_forward_pre_hook(stop_before, with_kwargs=True))
    try:
        model(**batch, use_cache=False)
    except _StopForward:
        pass
    finally:
        for h in handles:
            h.remove()
    if partial:
        assert index is not None
        out[deepest] = partial_block.run_at(
            blocks[deepest], entering["hidden"], entering["rope"], index
        )
    return out


def read_index(items: Sequence[Encoded], positions: Sequence[str]) -> torch.Tensor:
    """[batch, slots]: per row, every token position `read_positions` reads for `positions`
    (a row with fewer repeats its last one)."""
    import torch

    rows: list[list[int]] = []
    for it in items:
        need: set[int] = set()
        for pos in positions:
            k = last_offset(pos)
            if k is not None:
                need.add(max(it.n_tokens - 1 - k, 0))
            elif it.alias_mask is not None:
                need.update(i for i, on in enumerate(it.alias_mask) if on)
        rows.append(sorted(need))
    slots = max(len(r) for r in rows)
    return torch.tensor([r + [r[-1]] * (slots - len(r)) for r in rows], dtype=torch.long)


def capture(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    *,
    layers: Sequence[int],
    positions: Sequence[str] = ("last",),
    alias_spans: Sequence[tuple[int, int] | None] | None = None,
    batch_size: int = 32,
    max_tokens: int | None = None,
) -> Capture:
    """Residual stream after `layers` at `positions` for every prompt (input order)."""
    items = encode(tokenizer, prompts, alias_spans, max_tokens=max_tokens)
    return capture_encoded(model, items, layers=layers, positions=positions, batch_size=batch_size)


def pad_batch(items: Sequence[Encoded], device: torch.device) -> dict[str, torch.Tensor]:
    """Right-pad token ids with an attention mask (pad ids are masked, so any id will do);
    built in numpy and handed over once (one small tensor per item cost more than the block)."""
    import torch

    lengths = np.fromiter((len(it.input_ids) for it in items), np.int64, len(items))
    ids = np.zeros((len(items), int(lengths.max())), np.int64)
    for i, it in enumerate(items):
        ids[i, : lengths[i]] = it.input_ids
    mask = (np.arange(ids.shape[1])[None, :] < lengths[:, None]).astype(np.int64)
    return {
        "input_ids": torch.from_numpy(ids).to(device),
        "attention_mask": torch.from_numpy(mask).to(device),
    }


def read_positions(
    hidden: torch.Tensor, items: Sequence[Encoded], positions: Sequence[str]
) -> dict[str, np.ndarray]:
    """[batch, seq, d] block output -> position -> [batch, d] float32 (right-padded batch)."""
    import torch

    h = hidden.float().cpu()
    lengths = torch.tensor([it.n_tokens for it in items])
    rows = torch.arange(len(items))
    out = {}
    for pos in positions:
        k = last_offset(pos)
        if k is not None:  # a prompt shorter than k+1 tokens reads its first token
            out[pos] = h[rows, (lengths - 1 - k).clamp(min=0)].numpy()
            continue
        m = torch.zeros(h.shape[:2])
        for i, it in enumerate(items):
            if it.alias_mask is None:
                raise UserError("position 'alias_mean' needs the alias of every prompt")
            m[i, : it.n_tokens] = torch.tensor(it.alias_mask, dtype=torch.float32)
        out[pos] = ((h * m[..., None]).sum(1) / m.sum(1, keepdim=True)).numpy()
    return out


def capture_encoded(
    model: PreTrainedModel,
    items: Sequence[Encoded],
    *,
    layers: Sequence[int],
    positions: Sequence[str] = ("last",),
    batch_size: int = 32,
) -> Capture:
    """The forward over already-encoded prompts, `batch_size` at a time (input order kept)."""
    import torch

    _validate(model, layers, positions)
    if batch_size < 1:
        raise UserError("batch_size must be >= 1")
    if "alias_mean" in positions and any(it.alias_mask is None for it in items):
        raise UserError("position 'alias_mean' needs the alias of every prompt")
    device = next(model.parameters()).device
    acts: dict[str, dict[str, list[np.ndarray]]] = {
        hook_name(layer): {p: [] for p in positions} for layer in layers
    }
    for lo in range(0, len(items), batch_size):
        chunk = items[lo : lo + batch_size]
        with torch.inference_mode():
            index = read_index(chunk, positions).to(device)
            hidden = _run_blocks(model, pad_batch(chunk, device), layers, index)
        for layer in layers:
            for pos, values in read_positions(hidden[layer], chunk, positions).items():
                acts[hook_name(layer)][pos].append(values)
    d = int(model.config.hidden_size)
    return Capture(
        acts={
            name: {
                p: (np.concatenate(v).astype(np.float32) if v else np.zeros((0, d), np.float32))
                for p, v in per.items()
            }
            for name, per in acts.items()
        },
        n_tokens=np.asarray([it.n_tokens for it in items], dtype=np.int64),
    )


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
                raise _StopForward

        return hook

    def run(self, model: PreTrainedModel, **kwargs: Any) -> dict[str, Any]:
        try:
            model(**kwargs)
        except _StopForward:
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

    _validate(model, [layer], [position])
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
        with _model_lock(model), torch.inference_mode():
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

    _validate(model, [layer], ["last"])
    if len(continuations) != len(items) or any(not c for c in continuations):
        raise UserError("give one non-empty continuation per prefix")
    out: list[TokenScores] = []
    for lo in range(0, len(items), batch_size):
        chunk = list(items[lo : lo + batch_size])
        conts = [tuple(c) for c in continuations[lo : lo + batch_size]]
        flat: list[torch.Tensor] = []
        with _model_lock(model), torch.inference_mode():
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

    _validate(audited, [layer], [position])
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
            with _model_lock(audited):
                a, ans, a_lp, a_ent = _greedy(
                    audited, chunk, layer, position, max_new_tokens, stop_ids, steps, per["a_alias"]
                )
            with _model_lock(reference):
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
