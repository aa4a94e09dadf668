"""Loading a saved causal LM the same way everywhere (trainer sweep, bank build, service).

One place decides device and dtype (bf16 on CUDA, fp32 on CPU) and the padding convention
(right padding + a real pad token), because capture relies on right padding for its
batch-invariance guarantee.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from probe_bank.errors import UserError

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


def pick_device(prefer: str | None = None) -> torch.device:
    """CUDA when available (or `prefer` when given explicitly), else CPU."""
    import torch

    if prefer:
        dev = torch.device(prefer)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise UserError(f"device {prefer!r} requested but CUDA is not available")
        return dev
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_model(
    path: str | Path, device: torch.device | str | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load model + tokenizer from a `save_pretrained` directory in eval mode."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    if not (path / "config.json").is_file():
        raise UserError(f"{path} is not a saved model directory (no config.json)")
    dev = device if isinstance(device, torch.device) else pick_device(device)
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    model.to(dev)  # type: ignore[arg-type]
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.padding_side = "right"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def decoder_layers(model: PreTrainedModel) -> torch.nn.ModuleList:
    """The list of transformer blocks of a decoder-only model (Llama-style `model.model.layers`)."""
    base = getattr(model, "model", None) or model.get_decoder()
    layers = getattr(base, "layers", None)
    if layers is None:
        raise UserError(f"unsupported architecture {type(model).__name__}: no decoder layers found")
    return layers


def n_layers(model: PreTrainedModel) -> int:
    """Number of transformer blocks."""
    return len(decoder_layers(model))
