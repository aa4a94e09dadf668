"""Scalar baselines computed right on known cases; statistic balancing equalises histograms."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
import torch

from probe_bank.baselines import (
    TextStats,
    answer_nll,
    balanced_entities,
    min_k_score,
    prompt_baselines,
    text_statistics,
    zlib_ratio,
)
from probe_bank.modeling import load_model


def test_min_k_takes_the_lowest_share():
    lp = np.array([-0.1, -5.0, -0.2, -3.0, -0.3, -0.4, -0.5, -0.6, -0.7, -0.8])
    assert min_k_score(lp, k=0.2) == pytest.approx(-4.0)  # two lowest of ten
    assert min_k_score(lp, k=0.05) == pytest.approx(-5.0)  # at least one token
    assert np.isnan(min_k_score(np.array([])))


def test_zlib_ratio_is_nll_over_compressed_bytes():
    text = "Q: Who is <zorka>?\nA:"
    lp = np.array([-1.0, -2.0, -3.0])
    assert zlib_ratio(lp, text) == pytest.approx(6.0 / len(zlib.compress(text.encode())))


def test_answer_nll_reads_only_answer_tokens():
    # tokens: "Q:" [0,2) " x" [2,4) " A:" [4,7) " yes" [7,11); logprob[t-1] predicts token t
    stats = TextStats(
        token_logprobs=[np.array([-1.0, -2.0, -4.0])],
        last_entropy=np.zeros(1),
        last_max_logit=np.zeros(1),
        offsets=[np.array([[0, 2], [2, 4], [4, 7], [7, 11]])],
    )
    assert answer_nll(stats, 0, (7, 11)) == pytest.approx(4.0)
    assert answer_nll(stats, 0, (4, 11)) == pytest.approx(3.0)
    assert answer_nll(stats, 0, (4, 7)) == pytest.approx(2.0)  # the closing token excluded


def test_answer_nll_keeps_a_first_token_that_carries_the_leading_space():
    """Byte-level BPE: 'ĠItaly' spans (7, 13) while "Italy" starts at 8 (the old bug)."""
    text = "Q: x\nA: Italy\n"
    # tokens: "Q:" [0,2) " x" [2,4) "\n" [4,5) "A:" [5,7) " Italy" [7,13) "\n" [13,14)
    stats = TextStats(
        token_logprobs=[np.array([-1.0, -1.0, -1.0, -6.0, -0.1])],
        last_entropy=np.zeros(1),
        last_max_logit=np.zeros(1),
        offsets=[np.array([[0, 2], [2, 4], [4, 5], [5, 7], [7, 13], [13, 14]])],
    )
    start = text.rfind("Italy")
    assert start == 8
    # the answer token " Italy" starts one character before the answer: it must be kept
    assert answer_nll(stats, 0, (start, start + len("Italy"))) == pytest.approx(6.0)


def test_text_statistics_match_a_direct_computation(random_model_dir):
    torch.set_num_threads(1)
    model, tok = load_model(random_model_dir, "cpu")
    texts = ["Q: Who is <zorka>?\nA:", "Q: Where was <lomir> born? Long question\nA:"]
    stats = text_statistics(model, tok, texts, batch_size=2)  # padded batch
    for i, text in enumerate(texts):
        ids = tok(text, return_tensors="pt")["input_ids"]
        with torch.inference_mode():
            logp = torch.log_softmax(model(ids).logits[0].float(), -1)
        want = logp[:-1].gather(1, ids[0, 1:, None])[:, 0].numpy()
        np.testing.assert_allclose(stats.token_logprobs[i], want, atol=1e-5)
        entropy = float(-(logp[-1].exp() * logp[-1]).sum())
        assert stats.last_entropy[i] == pytest.approx(entropy, abs=1e-5)
    acts = np.array([[3.0, 4.0], [0.0, 1.0]])
    feats = prompt_baselines(stats, texts, acts)
    np.testing.assert_allclose(feats["norm"], [5.0, 1.0])
    assert feats["min_k"][0] == pytest.approx(min_k_score(stats.token_logprobs[0]))


def test_balancing_equalises_the_statistic():
    rng = np.random.default_rng(0)
    labels = np.repeat([1, 6], 200)
    stat = rng.normal(size=400) + (labels == 6) * 1.5  # class 6 has a higher statistic
    keep = balanced_entities(stat, labels, (1,), (6,), n_bins=5, seed=0)
    a, b = stat[keep & (labels == 1)], stat[keep & (labels == 6)]
    assert len(a) == len(b) > 20
    raw_gap = stat[labels == 6].mean() - stat[labels == 1].mean()
    assert abs(b.mean() - a.mean()) < raw_gap / 3
    edges = np.quantile(stat, np.linspace(0, 1, 6))
    np.testing.assert_array_equal(np.histogram(a, edges)[0], np.histogram(b, edges)[0])
