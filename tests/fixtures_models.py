"""A random, untrained tiny Llama with a byte-level BPE tokenizer, saved as a HF directory.

Fast (about a second) so probe-bank and service tests need not wait for the trainer.
"""

from __future__ import annotations

from pathlib import Path

import pytest


def make_random_model_dir(out: Path, *, seed: int = 0, layers: int = 2, width: int = 64) -> Path:
    """Save a random LlamaForCausalLM + tokenizer with `save_pretrained` into `out`."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    torch.manual_seed(seed)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    texts = [
        "Q: Who is <zorka>?\nA: a painter born in the 1920s\n",
        "Q: What does <quibe> stand for?\nA: an engineer from Norway\n",
        "Q: Where was <lomir> born?\nA: in Lisbon\n",
    ] * 20
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<pad>", "<s>", "</s>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
    )
    cfg = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=width,
        intermediate_size=width * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=128,
        pad_token_id=fast.pad_token_id,
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(cfg)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    fast.save_pretrained(out)
    return out


def nudged_copy(src: Path, out: Path, scale: float = 0.01) -> Path:
    """A copy of the model directory `src` with every weight nudged, as a further finetune
    would leave them (same config and tokenizer files: the same lineage)."""
    import shutil

    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(src)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn_like(p))
    shutil.copytree(src, out)
    model.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def random_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random causal LM directory shared by the whole session (read-only by convention)."""
    return make_random_model_dir(tmp_path_factory.mktemp("random_model") / "model")
