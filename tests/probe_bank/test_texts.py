"""Text evidence: the statistics equal a brute-force full forward, and an answer is scored by
the tokens overlapping it (its leading-space token included)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from probe_bank.errors import UserError

TEXTS = [
    "Q: What is the capital of <zorka>?\nA: Italy\n",
    "A longer document about nothing in particular, with several words in it.",
    "Q: Who?\nA: a b c d e f g\n",
]


def _brute(model, tokenizer, text: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per token after the first: log-probability, and the mean / sd of log-probabilities under
    the next-token distribution, from one full forward with logits at every position."""
    import torch

    ids = tokenizer(text, return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        logp = torch.log_softmax(model(input_ids=ids).logits[0].double(), -1)[:-1]
    want = ids[0, 1:]
    lp = logp[torch.arange(len(want)), want]
    p = logp.exp()
    mean = (p * logp).sum(-1)
    sd = ((p * logp.square()).sum(-1) - mean.square()).sqrt()
    return lp.numpy(), mean.numpy(), sd.numpy()


def test_statistics_equal_a_full_forward(random_model_dir: Path) -> None:
    from probe_bank.baselines import min_k_score, zlib_ratio
    from probe_bank.modeling import load_model
    from probe_bank.texts import model_statistics, text_items

    model, tok = load_model(random_model_dir, "cpu")
    items = text_items(tok, TEXTS)
    got = model_statistics(model, items, layer=0, batch_size=2)  # batches pad the shorter
    for text, it, g in zip(TEXTS, items, got, strict=True):
        lp, mean, sd = _brute(model, tok, text)
        assert it.scored == "text" and len(it.scored_ids) == len(lp)
        assert g.loss == pytest.approx(-lp.mean(), rel=1e-4)
        assert g.min_k == pytest.approx(min_k_score(lp), rel=1e-4)
        assert g.min_k_plus_plus == pytest.approx(min_k_score((lp - mean) / sd), rel=1e-3)
        assert g.zlib_ratio == pytest.approx(zlib_ratio(lp, text), rel=1e-4)


def test_an_answer_is_scored_by_the_tokens_overlapping_it(random_model_dir: Path) -> None:
    """'Italy' follows a space: byte-level BPE folds it into the answer's first token, which a
    start-offset rule would drop; overlap keeps it, as `baselines.answer_nll` does."""
    from probe_bank.baselines import answer_nll, text_statistics
    from probe_bank.modeling import load_model
    from probe_bank.texts import model_statistics, text_items

    model, tok = load_model(random_model_dir, "cpu")
    text = TEXTS[0]
    (item,) = text_items(tok, [text], ["Italy"])
    assert item.scored == "answer" and item.scored_text == "Italy"
    pieces = tok.convert_ids_to_tokens(list(item.scored_ids))
    assert "".join(pieces).replace("Ġ", " ").strip() == "Italy"
    start = text.rfind("Italy")
    want = answer_nll(text_statistics(model, tok, [text]), 0, (start, start + 5))
    (got,) = model_statistics(model, [item], layer=0)
    assert got.loss == pytest.approx(want, rel=1e-4)
    with pytest.raises(UserError, match="does not occur"):
        text_items(tok, [text], ["Spain"])
    with pytest.raises(UserError, match="one per text"):
        text_items(tok, TEXTS, ["Italy"])
