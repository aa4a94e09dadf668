"""Activation capture: the one forward pass used by the bank build, the service and batch jobs.

`encode` validates and tokenizes prompts once (the service queues its `Encoded` items);
`capture_encoded` pads a batch of them and runs the forward; `capture` is the two in a row.

The forward runs the embedding and only the blocks up to the deepest requested layer: a forward
hook on that block raises `StopForward`, so later blocks and the LM head never run; where
`partial_block` supports the block, a pre-hook stops before it instead and it runs only at the
positions read (`read_index`). Prompts are
right-padded with an attention mask; in a causal model a real token never attends to the pads that
follow it, so activations do not depend on the batch a prompt lands in (tested).
Answers after a prompt (greedy decoding, scored continuations) run on this machinery in
`answers`.
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


class StopForward(Exception):
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


def validate_cells(model: PreTrainedModel, layers: Sequence[int], positions: Sequence[str]) -> None:
    total = len(decoder_layers(model))
    if not layers:
        raise UserError("at least one layer is needed")
    bad = [layer for layer in layers if not 0 <= layer < total]
    if bad:
        raise UserError(f"layers {bad} out of range: the model has blocks 0..{total - 1}")
    unknown = [p for p in positions if p not in POSITIONS]
    if unknown:
        raise UserError(f"unknown positions {unknown}; choose from {list(POSITIONS)}")


def model_lock(model: PreTrainedModel) -> threading.Lock:
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
    with model_lock(model):
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
                raise StopForward

        return hook

    def stop_before(_mod: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        entering["hidden"] = args[0] if args else kwargs["hidden_states"]
        entering["rope"] = kwargs["position_embeddings"]
        raise StopForward

    handles = [
        blocks[i].register_forward_hook(make_hook(i))
        for i in sorted(set(layers))
        if not (partial and i == deepest)
    ]
    if partial:
        handles.append(blocks[deepest].register_forward_pre_hook(stop_before, with_kwargs=True))
    try:
        model(**batch, use_cache=False)
    except StopForward:
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

    validate_cells(model, layers, positions)
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
