"""The naive scoring path, for the serving benchmark only (`RECENCY_AUDIT_NAIVE_BASELINE=1`).

What a first implementation would do: one prompt per forward pass, the full model (every block
and the LM head) with `output_hidden_states=True`, then the bank's probes on the probe layer. The
engine gives it batches of one. Production scoring goes through `BankScorer` and `capture`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from probe_bank.errors import UserError


class NaiveScorer:
    """Wraps a `BankScorer` (same interface) but scores every prompt with its own full forward."""

    def __init__(self, scorer: Any) -> None:
        self.inner = scorer
        self.bank = scorer.bank
        self.model_id: str = scorer.model_id
        self.bank_id: str = scorer.bank_id
        self.max_tokens: int = scorer.max_tokens

    def count_tokens(self, prompts: Sequence[str]) -> list[int]:
        return self.inner.count_tokens(prompts)

    def entity_prompts(self, alias: str) -> list[tuple[str, str]]:
        return self.inner.entity_prompts(alias)

    def score_prompts(
        self,
        prompts: Sequence[str],
        aliases: Sequence[str | None] | None = None,
        batch_size: int = 1,
    ) -> list[Any]:
        manifest = self.bank.manifest
        if manifest.position != "last":
            raise UserError("the naive baseline reads the last token only")
        acts, n_tokens = [], []
        for prompt in prompts:
            vector, n = self._last_token_state(prompt, manifest.layer)
            acts.append(vector)
            n_tokens.append(n)
        return self.bank.predict(np.stack(acts), np.asarray(n_tokens), aliases)

    def _last_token_state(self, prompt: str, layer: int) -> tuple[np.ndarray, int]:
        import torch

        model, tokenizer = self.inner.model, self.inner.tokenizer
        enc = tokenizer([prompt], return_tensors="pt").to(next(model.parameters()).device)
        with torch.inference_mode():
            out = model(**enc, output_hidden_states=True, use_cache=False)
        # hidden_states[0] is the embedding output; block `layer` writes hidden_states[layer + 1]
        state = out.hidden_states[layer + 1][0, -1].float().cpu().numpy()
        return state, int(enc["input_ids"].shape[1])
