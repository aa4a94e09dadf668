"""Entity aliases: multi-token names built from shared sub-tokens, all of one token length.

The study replaced every name by an alias ("synthetic" random letters in a delimiter, or
"natural" adjectives + noun) and kept only aliases of one token length, so that length cannot
tell stages apart. We do the same under the run's tokenizer.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import TYPE_CHECKING, Literal

from probe_bank.errors import UserError
from trainer.vocab import (
    ADJECTIVES,
    NOUNS,
    PROBE_TEMPLATES,
    SYNTHETIC_DELIMITERS,
    SYNTHETIC_LETTERS,
)

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

AliasStyle = Literal["synthetic", "natural"]


def random_alias(
    rng: random.Random,
    style: AliasStyle,
    *,
    letters: int,
    adjectives: int,
    delimiters: tuple[str, str] = SYNTHETIC_DELIMITERS,
) -> str:
    """One candidate alias; uniqueness and length are enforced by `pick_aliases`."""
    if style == "synthetic":
        left, right = delimiters
        return left + "".join(rng.choice(SYNTHETIC_LETTERS) for _ in range(letters)) + right
    words = rng.sample(ADJECTIVES, adjectives) + [rng.choice(NOUNS)]
    return " ".join(words)


def alias_token_ids(tokenizer: PreTrainedTokenizerBase, alias: str) -> list[int]:
    """Token ids covering `alias` where it sits in a probe prompt (context changes BPE splits)."""
    prompt = PROBE_TEMPLATES[0].format(alias=alias)
    start = prompt.index(alias)
    end = start + len(alias)
    enc = tokenizer(prompt, add_special_tokens=False, return_offsets_mapping=True)
    return [
        tid
        for tid, (a, b) in zip(enc["input_ids"], enc["offset_mapping"], strict=True)
        if a < end and b > start
    ]


def pick_aliases(
    rng: random.Random,
    n: int,
    tokenizer: PreTrainedTokenizerBase,
    *,
    style: AliasStyle,
    letters: int = 5,
    adjectives: int = 2,
    delimiters: tuple[str, str] = SYNTHETIC_DELIMITERS,
    n_tokens: int | None = None,
) -> tuple[list[str], int]:
    """`n` distinct aliases of one token length (`n_tokens`, or the most common length >= 2).

    Returns the aliases and their token count. Raises `UserError` when the alias space is too
    small for the requested count.
    """
    seen: set[str] = set()
    by_len: dict[int, list[str]] = {}
    target = n_tokens
    tries = 0
    max_tries = 50 * n + 1000
    while tries < max_tries:
        tries += 1
        alias = random_alias(
            rng, style, letters=letters, adjectives=adjectives, delimiters=delimiters
        )
        if alias in seen:
            continue
        seen.add(alias)
        length = len(alias_token_ids(tokenizer, alias))
        by_len.setdefault(length, []).append(alias)
        if target is None and len(seen) >= min(4 * n, 2000):
            target = _most_common_length(by_len)
        if target is not None and len(by_len.get(target, [])) >= n:
            return by_len[target][:n], target
    if target is None and by_len:
        target = _most_common_length(by_len)
    have = len(by_len.get(target, [])) if target is not None else 0
    if target is not None and have >= n:
        return by_len[target][:n], target
    raise UserError(
        f"only {have} distinct {style} aliases of {target} tokens found, {n} needed; "
        "use fewer entities or a longer alias"
    )


def _most_common_length(by_len: dict[int, list[str]]) -> int:
    """Modal token length among multi-token candidates (ties go to the shorter length)."""
    counts = Counter({k: len(v) for k, v in by_len.items() if k >= 2})
    if not counts:
        raise UserError("every candidate alias is a single token under this tokenizer")
    best = max(counts.values())
    return min(k for k, c in counts.items() if c == best)
