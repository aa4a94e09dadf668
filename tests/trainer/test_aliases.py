"""Aliases are several shared sub-tokens long, never one token, and all of one length per run."""

from __future__ import annotations

import random
from collections import Counter
from functools import partial
from pathlib import Path

import pytest

from probe_bank.errors import UserError
from trainer.aliases import alias_token_ids, pick_aliases
from trainer.config import resolve_config
from trainer.corpus import build_corpus
from trainer.tokenizer import train_tokenizer


@pytest.mark.parametrize("preset", ["tiny", "small"])
@pytest.mark.parametrize("style", ["synthetic", "natural"])
def test_alias_lengths_and_sharing(preset: str, style: str) -> None:
    cfg = resolve_config(preset, overrides={"alias_style": style})
    corpus, tok = build_corpus(
        cfg,
        from_scratch=True,
        train_tokenizer=partial(train_tokenizer, vocab_size=cfg.arch.vocab_size),
    )
    token_ids = {e.alias: alias_token_ids(tok, e.alias) for e in corpus.entities}
    lengths = {len(ids) for ids in token_ids.values()}
    assert lengths == {corpus.manifest["alias_tokens"]}
    assert min(lengths) >= 2, "an alias must never be a single token"
    # no alias (with or without its leading space) is a vocabulary entry of its own
    vocab = tok.get_vocab()
    for alias in token_ids:
        assert alias not in vocab and "Ġ" + alias.replace(" ", "Ġ") not in vocab
    # sub-tokens are shared: far fewer distinct pieces than alias tokens in all, and nearly every
    # piece recurs in other aliases
    uses = Counter(t for ids in token_ids.values() for t in set(ids))
    assert len(uses) < sum(len(ids) for ids in token_ids.values()) / 2
    shared = sum(c for c in uses.values() if c >= 2) / sum(uses.values())
    assert shared >= 0.95


def test_base_model_tokenizer_filter(random_model_dir: Path) -> None:
    from trainer.model import load_tokenizer

    tok = load_tokenizer(random_model_dir)
    aliases, n = pick_aliases(random.Random(0), 50, tok, style="synthetic", letters=4)
    assert len(set(aliases)) == 50 and n >= 2
    assert {len(alias_token_ids(tok, a)) for a in aliases} == {n}


def test_impossible_alias_request_is_a_user_error(random_model_dir: Path) -> None:
    from trainer.model import load_tokenizer

    tok = load_tokenizer(random_model_dir)
    with pytest.raises(UserError, match="aliases"):
        # one adjective + noun: 24 * 24 combinations cannot give 5000 distinct aliases
        pick_aliases(random.Random(0), 5000, tok, style="natural", adjectives=1)
