"""The models the trainer works on: a fresh Llama-style model, or any local causal-LM directory."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from probe_bank.errors import UserError
from trainer.config import TrainConfig

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


def new_llama(cfg: TrainConfig, tokenizer: PreTrainedTokenizerBase) -> PreTrainedModel:
    """A randomly initialised `LlamaForCausalLM` sized by the config (seeded: reproducible)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.arch.d_model,
        intermediate_size=cfg.arch.d_ff,
        num_hidden_layers=cfg.arch.n_layers,
        num_attention_heads=cfg.arch.n_heads,
        num_key_value_heads=cfg.arch.n_heads,
        max_position_embeddings=cfg.arch.block_size,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(cfg.seed)
    return LlamaForCausalLM(config)


def check_model_dir(path: Path) -> None:
    """A `--base-model` must be a local HF model directory (config.json); else a `UserError`."""
    if not path.is_dir():
        raise UserError(f"base model directory not found: {path}")
    if not (path / "config.json").is_file():
        raise UserError(f"not a Hugging Face model directory (no config.json): {path}")


def load_for_training(path: Path) -> PreTrainedModel:
    """Weights in fp32 for training (accelerate adds bf16 autocast on CUDA)."""
    import torch
    from transformers import AutoModelForCausalLM

    try:
        return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot load a causal LM from {path}: {_first_line(exc)}") from None


def load_tokenizer(path: Path) -> PreTrainedTokenizerBase:
    from transformers import AutoTokenizer

    from trainer.tokenizer import ensure_pad_token

    try:
        tok = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot load a tokenizer from {path}: {_first_line(exc)}") from None
    ensure_pad_token(tok)
    tok.padding_side = "right"
    return tok


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
