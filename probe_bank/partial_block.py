"""The deepest captured block, computed only at the token positions a probe reads.

A probe at block L reads the residual stream at one or a few positions (`last`, `last-k`, the
alias's tokens). In a causal decoder those positions need block L's keys and values at every
earlier position, but its queries, attention output, MLP and residual only at the read ones.
On the `small` default (probe at block 0 of 4, last token) that is most of the forward: the MLP
and three of the four attention projections run on one token per prompt instead of ~20.

Only Llama-style blocks (`LlamaDecoderLayer`: SmolLM2 and the trainer's own models) with eager
or SDPA attention take this path; any other block runs whole (`supports`). The result equals the
whole block's at the read positions to float rounding (tested); every other position of the
returned tensor holds the block's *input*, and nothing reads it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


def supports(block: Any) -> bool:
    """Whether `block` is a decoder layer this module reproduces exactly."""
    if type(block).__name__ != "LlamaDecoderLayer":
        return False
    attn = getattr(block, "self_attn", None)
    config = getattr(attn, "config", None)
    impl = getattr(config, "_attn_implementation", None)
    return impl in ("eager", "sdpa") and all(
        hasattr(attn, name) for name in ("q_proj", "k_proj", "v_proj", "o_proj", "head_dim")
    )


def run_at(
    block: Any,
    hidden: torch.Tensor,
    position_embeddings: tuple[torch.Tensor, torch.Tensor],
    index: torch.Tensor,
) -> torch.Tensor:
    """Block output [batch, seq, d] correct at `index` [batch, slots] (positions per row; a
    row may repeat one to fill its slots); elsewhere the block's input. Right padding: a read
    position attends to itself and earlier tokens only, so pads (always later) never count."""
    import torch
    from transformers.models.llama.modeling_llama import repeat_kv, rotate_half

    attn = block.self_attn
    b, t, d = hidden.shape
    slots = index.shape[1]
    hd = attn.head_dim
    x = block.input_layernorm(hidden)
    pick = index[..., None].expand(b, slots, d)
    q = attn.q_proj(torch.gather(x, 1, pick)).view(b, slots, -1, hd).transpose(1, 2)
    k = attn.k_proj(x).view(b, t, -1, hd).transpose(1, 2)
    v = attn.v_proj(x).view(b, t, -1, hd).transpose(1, 2)
    cos, sin = (e.expand(b, t, hd) for e in position_embeddings)
    at = index[..., None].expand(b, slots, hd)
    cos_q, sin_q = torch.gather(cos, 1, at).unsqueeze(1), torch.gather(sin, 1, at).unsqueeze(1)
    q = q * cos_q + rotate_half(q) * sin_q
    k = k * cos.unsqueeze(1) + rotate_half(k) * sin.unsqueeze(1)
    k, v = repeat_kv(k, attn.num_key_value_groups), repeat_kv(v, attn.num_key_value_groups)
    causal = torch.arange(t, device=hidden.device)[None, None, :] <= index[:, :, None]
    o = torch.nn.functional.scaled_dot_product_attention(
        q, k, v, attn_mask=causal[:, None], scale=attn.scaling
    )
    o = attn.o_proj(o.transpose(1, 2).reshape(b, slots, -1))
    h = torch.gather(hidden, 1, pick) + o
    h = h + block.mlp(block.post_attention_layernorm(h))
    return hidden.scatter(1, pick, h)
