"""The deepest block computed at the read positions only equals the whole block there."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from probe_bank import partial_block
from probe_bank.capture import POSITIONS, _run_blocks, encode, pad_batch, read_index, read_positions
from probe_bank.modeling import decoder_layers, load_model

from .test_capture import PROMPTS, SPANS


@pytest.fixture(scope="module")
def model_tok(random_model_dir):
    torch.set_num_threads(1)
    return load_model(random_model_dir, "cpu")


def _gqa_like(model) -> LlamaForCausalLM:
    """A random Llama with grouped-query attention (SmolLM2: 9 query heads, 3 key/value heads)
    and an odd head count, on the same vocabulary."""
    torch.manual_seed(1)
    cfg = LlamaConfig(
        vocab_size=model.config.vocab_size,
        hidden_size=72,
        intermediate_size=96,
        num_hidden_layers=3,
        num_attention_heads=9,
        num_key_value_heads=3,
        max_position_embeddings=128,
    )
    return LlamaForCausalLM(cfg).eval()


@pytest.mark.parametrize("which", ["fixture", "gqa"])
@pytest.mark.parametrize("positions", [["last"], ["last-3", "alias_mean"], list(POSITIONS)])
def test_equals_whole_block_at_read_positions(model_tok, which, positions):
    model, tok = model_tok
    if which == "gqa":
        model = _gqa_like(model)
    items = encode(tok, PROMPTS, SPANS)
    batch = pad_batch(items, torch.device("cpu"))
    deepest = len(decoder_layers(model)) - 1
    assert partial_block.supports(decoder_layers(model)[deepest])
    with torch.inference_mode():
        whole = _run_blocks(model, batch, [0, deepest])
        part = _run_blocks(model, batch, [0, deepest], read_index(items, positions))
    for layer in (0, deepest):
        a = read_positions(whole[layer], items, positions)
        b = read_positions(part[layer], items, positions)
        for pos in positions:
            np.testing.assert_allclose(a[pos], b[pos], rtol=1e-5, atol=1e-5)
    # and the shortcut was taken: positions nobody reads were not computed
    assert not torch.allclose(whole[deepest], part[deepest])


def test_block_runs_on_the_read_slots_only(model_tok):
    """The deepest block's MLP sees one token per prompt for `last`, not the padded width."""
    model, tok = model_tok
    items = encode(tok, PROMPTS, SPANS)
    seen: list[tuple[int, ...]] = []
    mlp = decoder_layers(model)[1].mlp
    handle = mlp.register_forward_hook(lambda _m, inp, _o: seen.append(tuple(inp[0].shape)))
    try:
        with torch.inference_mode():
            _run_blocks(
                model, pad_batch(items, torch.device("cpu")), [1], read_index(items, ["last"])
            )
    finally:
        handle.remove()
    assert seen == [(len(PROMPTS), 1, model.config.hidden_size)]


def test_read_index_covers_every_read_token(model_tok):
    _, tok = model_tok
    items = encode(tok, PROMPTS, SPANS)
    index = read_index(items, ["last", "last-2", "alias_mean"])
    for row, it in zip(index.tolist(), items, strict=True):
        alias = {i for i, on in enumerate(it.alias_mask or ()) if on}
        want = {it.n_tokens - 1, max(it.n_tokens - 3, 0)} | alias
        assert set(row) == want


def test_other_blocks_run_whole():
    """A block this module does not reproduce (not a Llama decoder layer) is not taken."""
    assert not partial_block.supports(torch.nn.Linear(2, 2))
