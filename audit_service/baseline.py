"""The naive scoring path, for the serving benchmark only (`RECENCY_AUDIT_NAIVE_BASELINE=1`).

What a first implementation would do: one prompt per forward pass, the full model (every block
and the LM head) with `output_hidden_states=True`, then the bank's probes on the probe layer. The
engine gives it batches of one. It reads the bank's position from the same `Encoded` items and
`read_positions` as production scoring, so it works for every bank (alias mean included) and
scores identically; only the forward differs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from probe_bank.capture import Encoded, pad_batch, read_positions
from probe_bank.modeling import decoder_layers
from probe_bank.schemas import TextScore
from probe_bank.scoring import StageScore
from probe_bank.texts import TextItem


class NaiveScorer:
    """Wraps a `BankScorer` (same interface) but runs every prompt through its own full forward."""

    def __init__(self, scorer: Any) -> None:
        self.inner = scorer
        self.bank = scorer.bank
        self.model_id: str = scorer.model_id
        self.bank_id: str = scorer.bank_id

    def prepare(
        self, prompts: Sequence[str], aliases: Sequence[str | None] | None = None
    ) -> list[Encoded]:
        return list(self.inner.prepare(prompts, aliases))

    def entity_prompts(self, alias: str) -> list[tuple[str, str]]:
        return list(self.inner.entity_prompts(alias))

    @property
    def has_families(self) -> bool:
        return bool(self.inner.has_families)

    def entity_evidence(
        self, aliases: Sequence[str], scores: Sequence[StageScore]
    ) -> list[StageScore]:
        """The families' evidence is one forward per request already; the inner scorer's."""
        return list(self.inner.entity_evidence(aliases, scores))

    def after_thresholds(self) -> dict[str, float | None]:
        return dict(self.inner.after_thresholds())

    def prepare_texts(
        self, texts: Sequence[str], answers: Sequence[str | None] | None = None
    ) -> list[TextItem]:
        return list(self.inner.prepare_texts(texts, answers))

    def score_texts(self, items: Sequence[TextItem]) -> list[TextScore]:
        """Texts are one forward per request already; the inner scorer's."""
        return list(self.inner.score_texts(items))

    def forward(self, batch: Sequence[Encoded]) -> list[StageScore]:
        import torch

        model = self.inner.model
        m = self.bank.manifest
        device = next(model.parameters()).device
        seen: list[torch.Tensor] = []

        def keep(_mod: Any, _inp: Any, output: Any) -> None:
            # the block's own output: HF's last hidden_states entry is after the final norm
            seen.append(output[0] if isinstance(output, tuple) else output)

        handle = decoder_layers(model)[m.layer].register_forward_hook(keep)
        rows = []
        try:
            for item in batch:
                seen.clear()
                with torch.inference_mode():
                    model(**pad_batch([item], device), output_hidden_states=True, use_cache=False)
                rows.append(read_positions(seen[0], [item], [m.position])[m.position][0])
        finally:
            handle.remove()
        return list(
            self.bank.predict(
                np.stack(rows),
                np.asarray([it.n_tokens for it in batch]),
                [it.alias for it in batch],
                model_id=self.model_id,
            )
        )
