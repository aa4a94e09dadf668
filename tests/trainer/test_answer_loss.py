"""The training loss with the LM head only at labelled positions equals the model's own loss."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from trainer.data import Text, collate, encode
from trainer.loop import answer_loss
from trainer.model import load_for_training, load_tokenizer


@pytest.mark.parametrize("loss_on", ["answer", "all"])
def test_answer_loss_equals_the_full_head_loss(random_model_dir: Path, loss_on: str) -> None:
    torch.manual_seed(0)
    tok, model = load_tokenizer(random_model_dir), load_for_training(random_model_dir)
    texts = [
        Text("Q: Who is <ab>?\nA: a painter\n", len("Q: Who is <ab>?\nA:")),
        Text(
            "Q: Where does <abcd> live, today?\nA: Oslo\n",
            len("Q: Where does <abcd> live, today?\nA:"),
        ),
    ]
    batch = collate(encode(tok, texts, block_size=64, loss_on=loss_on), tok.pad_token_id)  # type: ignore[arg-type]
    want = model(**batch).loss
    got = answer_loss(model, batch)
    assert got.item() == pytest.approx(want.item(), rel=1e-5)
    got.backward()
    grad_fast = model.lm_head.weight.grad.clone()
    model.zero_grad()
    model(**batch).loss.backward()
    torch.testing.assert_close(grad_fast, model.lm_head.weight.grad, rtol=1e-4, atol=1e-6)
