"""Capture: padding/batch invariance, alias_mean correctness, early stop, clear input errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from probe_bank.capture import POSITIONS, capture, encode, hook_name
from probe_bank.errors import UserError
from probe_bank.modeling import decoder_layers, load_model

PROMPTS = [
    "Q: Who is <zorka>?\nA:",
    "Q: What does <quibe> stand for? It is a rather long question about it\nA:",
    "Q: Where was <lomir> born?\nA:",
    "Hi <ab>",
]
ALIASES = ["<zorka>", "<quibe>", "<lomir>", "<ab>"]
SPANS = [(p.index(a), p.index(a) + len(a)) for p, a in zip(PROMPTS, ALIASES, strict=True)]


@pytest.fixture(scope="module")
def model_tok(random_model_dir):
    torch.set_num_threads(1)
    return load_model(random_model_dir, "cpu")


def _run(model_tok, prompts, spans, batch_size):
    model, tok = model_tok
    return capture(
        model,
        tok,
        prompts,
        layers=[0, 1],
        positions=POSITIONS,
        alias_spans=spans,
        batch_size=batch_size,
    )


def test_hook_name_is_transformerlens_style():
    assert hook_name(3) == "blocks.3.hook_resid_post"


def test_invariant_to_batch_size_and_padding(model_tok):
    one = _run(model_tok, PROMPTS, SPANS, batch_size=1)  # no padding at all
    full = _run(model_tok, PROMPTS, SPANS, batch_size=4)  # padded to the longest
    counts = [it.n_tokens for it in encode(model_tok[1], PROMPTS)]
    assert list(one.n_tokens) == list(full.n_tokens) == counts
    for name in (hook_name(0), hook_name(1)):
        for pos in POSITIONS:
            assert one.acts[name][pos].shape == (4, 64)
            np.testing.assert_allclose(one.acts[name][pos], full.acts[name][pos], atol=1e-5)


def test_invariant_to_batch_composition(model_tok):
    """A prompt's activations do not change with its batch neighbours or its place in the batch."""
    alone = _run(model_tok, PROMPTS[:1], SPANS[:1], batch_size=8)
    mixed = _run(model_tok, PROMPTS[::-1], SPANS[::-1], batch_size=8)
    for pos in POSITIONS:
        np.testing.assert_allclose(
            alone.acts[hook_name(1)][pos][0], mixed.acts[hook_name(1)][pos][-1], atol=1e-5
        )


def test_positions_match_full_forward(model_tok):
    """`last` and `alias_mean` equal the reference computed from HF's own hidden states."""
    model, tok = model_tok
    got = _run(model_tok, PROMPTS, SPANS, batch_size=2)
    for i, (prompt, (s, e)) in enumerate(zip(PROMPTS, SPANS, strict=True)):
        enc = tok(prompt, return_tensors="pt", return_offsets_mapping=True)
        offs = enc.pop("offset_mapping")[0].tolist()
        with torch.inference_mode():
            hs = model(**enc, output_hidden_states=True).hidden_states
        in_alias = [j for j, (a, b) in enumerate(offs) if a < e and b > s]
        assert in_alias, "the alias must map to tokens"
        for layer in (0, 1):
            h = hs[layer + 1][0].numpy()  # hidden_states[0] is the embedding output
            if layer == 1:  # the last block's output in hidden_states is after the final norm
                continue
            np.testing.assert_allclose(got.acts[hook_name(layer)]["last"][i], h[-1], atol=1e-5)
            np.testing.assert_allclose(
                got.acts[hook_name(layer)]["alias_mean"][i], h[in_alias].mean(0), atol=1e-5
            )


def test_stops_after_deepest_layer(model_tok):
    model, tok = model_tok
    calls: list[int] = []
    blocks = decoder_layers(model)
    handles = [
        b.register_forward_pre_hook(lambda *_a, i=i: calls.append(i)) for i, b in enumerate(blocks)
    ]
    try:
        capture(model, tok, PROMPTS[:2], layers=[0])
    finally:
        for h in handles:
            h.remove()
    assert calls == [0], "block 1 must never run when only layer 0 is requested"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"layers": [5]},
        {"layers": []},
        {"layers": [0], "positions": ["middle"]},
        {"layers": [0], "positions": ["alias_mean"]},
        {"layers": [0], "max_tokens": 3},
        {"layers": [0], "positions": ["alias_mean"], "alias_spans": [(0, 0)] * 4},
    ],
)
def test_bad_input_is_a_user_error(model_tok, kwargs):
    model, tok = model_tok
    with pytest.raises(UserError):
        capture(model, tok, PROMPTS, **kwargs)


def test_concurrent_captures_do_not_mix(model_tok):
    """Hooks live on shared modules; concurrent calls (service threads) must stay separate."""
    from concurrent.futures import ThreadPoolExecutor

    model, tok = model_tok
    jobs = [([p], [0]) for p in PROMPTS] + [([p], [1]) for p in PROMPTS]
    want = [capture(model, tok, p, layers=layers).acts for p, layers in jobs]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda j: capture(model, tok, j[0], layers=j[1]).acts, jobs))
    for w, g in zip(want, got, strict=True):
        assert w.keys() == g.keys()
        for name in w:
            np.testing.assert_allclose(w[name]["last"], g[name]["last"], atol=1e-6)


def test_last_k_reads_k_tokens_before_the_last(model_tok):
    """`last-k` is the residual stream k real tokens before the prompt's last (pads ignored)."""
    model, tok = model_tok
    cap = capture(model, tok, PROMPTS, layers=[0], positions=["last", "last-1", "last-7"])
    for i, prompt in enumerate(PROMPTS):
        ids = tok(prompt, return_tensors="pt")
        with torch.inference_mode():
            h = model(**ids, output_hidden_states=True).hidden_states[1][0]  # after block 0
        n = h.shape[0]
        acts = cap.acts[hook_name(0)]
        np.testing.assert_allclose(acts["last"][i], h[n - 1], atol=1e-5)
        np.testing.assert_allclose(acts["last-1"][i], h[n - 2], atol=1e-5)
        np.testing.assert_allclose(acts["last-7"][i], h[max(n - 8, 0)], atol=1e-5)


def test_encode_reads_the_rust_tokenizer_as_the_wrapper_would(model_tok):
    """`encode` calls the fast tokenizer's backend directly (cheaper per request): the ids and
    alias masks equal the transformers wrapper's; a backend left configured to truncate is not
    read directly (the wrapper, which resets that state per call, is used instead)."""
    from probe_bank.capture import _alias_token_mask, _direct_backend

    _, tok = model_tok
    prompts = [*PROMPTS, "über café <zorka>  two  spaces\n\nA:", "x" * 300 + " <ab>"]
    spans = [*SPANS, (16, 23), (301, 305)]
    got = encode(tok, prompts, spans)
    want = tok(prompts, add_special_tokens=True, return_offsets_mapping=True)
    assert _direct_backend(tok) is not None
    for g, ids, offs, span in zip(
        got, want["input_ids"], want["offset_mapping"], spans, strict=True
    ):
        assert g.input_ids == tuple(ids)
        assert g.alias_mask == _alias_token_mask(offs, span) and any(g.alias_mask or ())
    backend = tok.backend_tokenizer
    backend.enable_truncation(max_length=4)
    try:
        assert _direct_backend(tok) is None
        fallback = [it.input_ids for it in encode(tok, prompts)]  # through the wrapper
        assert fallback == [tuple(ids) for ids in want["input_ids"]]
    finally:
        backend.no_truncation()
