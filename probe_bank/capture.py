"""Activation capture: the one forward pass used by the bank build, the service and batch jobs.

The forward runs the embedding and only the blocks up to the deepest requested layer: a forward
hook on that block raises `_StopForward`, so later blocks and the LM head never run. Prompts are
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

from probe_bank.errors import UserError
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


def tokenize_lengths(tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str]) -> list[int]:
    """Token count of each prompt, exactly as `capture` will tokenize it."""
    enc = tokenizer(list(prompts), add_special_tokens=True)
    return [len(ids) for ids in enc["input_ids"]]


def _alias_token_mask(
    offsets: list[tuple[int, int]], span: tuple[int, int] | None, n_real: int
) -> list[bool]:
    """Tokens overlapping the alias's character span [start, end); special tokens excluded."""
    if span is None:
        raise UserError("position 'alias_mean' needs the alias span of every prompt")
    start, end = span
    mask = [s < end and e > start and e > s for s, e in offsets[:n_real]]
    if not any(mask):
        raise UserError(f"alias span {span} covers no token of the prompt")
    return mask


def _validate(
    model: PreTrainedModel,
    layers: Sequence[int],
    positions: Sequence[str],
    n: int,
    alias_spans: Sequence[tuple[int, int] | None] | None,
) -> None:
    total = len(decoder_layers(model))
    if not layers:
        raise UserError("at least one layer is needed")
    bad = [layer for layer in layers if not 0 <= layer < total]
    if bad:
        raise UserError(f"layers {bad} out of range: the model has blocks 0..{total - 1}")
    unknown = [p for p in positions if p not in POSITIONS]
    if unknown:
        raise UserError(f"unknown positions {unknown}; choose from {list(POSITIONS)}")
    if "alias_mean" in positions and (alias_spans is None or len(alias_spans) != n):
        raise UserError("position 'alias_mean' needs one alias span per prompt")


def _model_lock(model: PreTrainedModel) -> threading.Lock:
    """One lock per model: hooks are per module, so two concurrent captures would mix outputs."""
    with _LOCKS_GUARD:
        lock = _LOCKS.get(model)
        if lock is None:
            lock = _LOCKS[model] = threading.Lock()
        return lock


def _run_blocks(
    model: PreTrainedModel, batch: dict[str, torch.Tensor], layers: Sequence[int]
) -> dict[int, torch.Tensor]:
    """Forward through blocks 0..max(layers) only; returns each requested block's output."""
    with _model_lock(model):
        return _run_blocks_unlocked(model, batch, layers)


def _run_blocks_unlocked(
    model: PreTrainedModel, batch: dict[str, torch.Tensor], layers: Sequence[int]
) -> dict[int, torch.Tensor]:
    blocks = decoder_layers(model)
    deepest = max(layers)
    out: dict[int, torch.Tensor] = {}

    def make_hook(idx: int) -> Any:
        def hook(_mod: Any, _inp: Any, output: Any) -> None:
            out[idx] = output[0] if isinstance(output, tuple) else output
            if idx == deepest:
                raise _StopForward

        return hook

    handles = [blocks[i].register_forward_hook(make_hook(i)) for i in sorted(set(layers))]
    try:
        model(**batch, use_cache=False)
    except _StopForward:
        pass
    finally:
        for h in handles:
            h.remove()
    return out


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
    import torch

    prompts = list(prompts)
    _validate(model, layers, positions, len(prompts), alias_spans)
    if batch_size < 1:
        raise UserError("batch_size must be >= 1")
    device = next(model.parameters()).device
    acts: dict[str, dict[str, list[np.ndarray]]] = {
        hook_name(layer): {p: [] for p in positions} for layer in layers
    }
    n_tokens: list[int] = []
    for lo in range(0, len(prompts), batch_size):
        chunk = prompts[lo : lo + batch_size]
        enc = tokenizer(
            chunk,
            padding=True,
            return_tensors="pt",
            return_offsets_mapping="alias_mean" in positions,
        )
        offsets = enc.pop("offset_mapping", None)
        lengths = enc["attention_mask"].sum(dim=1)
        if max_tokens is not None and int(lengths.max()) > max_tokens:
            raise UserError(f"a prompt has {int(lengths.max())} tokens; the limit is {max_tokens}")
        batch = {k: v.to(device) for k, v in enc.items()}
        with torch.inference_mode():
            hidden = _run_blocks(model, batch, layers)
        rows = torch.arange(len(chunk))
        for layer in layers:
            h = hidden[layer].float().cpu()
            name = hook_name(layer)
            for pos in positions:
                k = last_offset(pos)
                if k is not None:  # a prompt shorter than k+1 tokens reads its first token
                    acts[name][pos].append(h[rows, (lengths - 1 - k).clamp(min=0)].numpy())
            if "alias_mean" in positions:
                assert offsets is not None and alias_spans is not None
                masks = [
                    _alias_token_mask(offsets[i].tolist(), alias_spans[lo + i], int(lengths[i]))
                    for i in range(len(chunk))
                ]
                m = torch.zeros(h.shape[:2])
                for i, mask in enumerate(masks):
                    m[i, : len(mask)] = torch.tensor(mask, dtype=torch.float32)
                mean = (h * m[..., None]).sum(1) / m.sum(1, keepdim=True)
                acts[name]["alias_mean"].append(mean.numpy())
        n_tokens.extend(int(x) for x in lengths)
    d = int(model.config.hidden_size)
    return Capture(
        acts={
            name: {
                p: (np.concatenate(v).astype(np.float32) if v else np.zeros((0, d), np.float32))
                for p, v in per.items()
            }
            for name, per in acts.items()
        },
        n_tokens=np.asarray(n_tokens, dtype=np.int64),
    )
