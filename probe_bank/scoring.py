"""BankScorer: a verified bank plus its model on one device, the one scoring path for consumers."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from probe_bank.bank import ProbeBank
from probe_bank.capture import capture, hook_name, tokenize_lengths
from probe_bank.errors import UserError
from probe_bank.modeling import load_model
from probe_bank.run_dir import fill_template
from probe_bank.schemas import ItemScore

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = ["BankScorer", "ItemScore"]


def _alias_span(prompt: str, alias: str | None) -> tuple[int, int] | None:
    if alias is None:
        return None
    start = prompt.find(alias)
    if start < 0:
        raise UserError(f"alias {alias!r} does not occur in prompt {prompt!r}")
    return start, start + len(alias)


class BankScorer:
    """Scores prompts and entities with one bank; safe to share, not thread-safe per call."""

    def __init__(
        self, bank: ProbeBank, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase
    ) -> None:
        self.bank = bank
        self.model = model
        self.tokenizer = tokenizer
        m = bank.manifest
        self.bank_id: str = m.bank_id
        self.model_id: str = f"{Path(m.model_path).parent.name}/{Path(m.model_path).name}"
        self.max_tokens: int = m.max_tokens

    @classmethod
    def from_bank_dir(
        cls,
        bank_dir: str | Path,
        *,
        model_dir: str | Path | None = None,
        device: torch.device | str | None = None,
    ) -> BankScorer:
        """Load and verify the bank, then the model it is bound to."""
        bank = ProbeBank.load(bank_dir, model_dir=model_dir)
        model, tokenizer = load_model(model_dir or bank.manifest.model_path, device)
        return cls(bank, model, tokenizer)

    def count_tokens(self, prompts: Sequence[str]) -> list[int]:
        """Token counts as the scorer will see them (for batch token budgets)."""
        return tokenize_lengths(self.tokenizer, prompts)

    def score_prompts(
        self,
        prompts: Sequence[str],
        aliases: Sequence[str | None] | None = None,
        batch_size: int = 32,
    ) -> list[ItemScore]:
        """One ItemScore per prompt; `aliases` locate the alias when the bank reads alias_mean
        and say whether the prompt is about an entity the bank was fitted on (`in_bank_sample`)."""
        prompts = list(prompts)
        if not prompts:
            return []
        if aliases is not None and len(aliases) != len(prompts):
            raise UserError("aliases must have one entry per prompt")
        position = self.bank.manifest.position
        spans = None
        if aliases is not None:  # a given alias must occur in its prompt, whatever the position
            spans = [_alias_span(p, a) for p, a in zip(prompts, aliases, strict=True)]
        if position == "alias_mean" and (spans is None or any(s is None for s in spans)):
            raise UserError("this bank reads the alias tokens: give the alias of every prompt")
        layer = self.bank.manifest.layer
        cap = capture(
            self.model,
            self.tokenizer,
            prompts,
            layers=[layer],
            positions=[position],
            alias_spans=spans,
            batch_size=batch_size,
            max_tokens=self.max_tokens,
        )
        return self.bank.predict(cap.acts[hook_name(layer)][position], cap.n_tokens, aliases)

    def entity_prompts(self, alias: str) -> list[tuple[str, str]]:
        """(prompt, alias) for each of the bank's probe templates."""
        if not alias or not alias.strip():
            raise UserError("alias must be a non-empty string")
        return [(fill_template(t, alias)[0], alias) for t in self.bank.manifest.templates]

    def score_entities(self, aliases: Sequence[str]) -> list[ItemScore]:
        """Per entity: the mean over its template prompts (probabilities, p_late, recency), and
        whether the bank was fitted on the entity (`in_bank_sample`)."""
        aliases = list(aliases)
        pairs = [pt for a in aliases for pt in self.entity_prompts(a)]
        scores = self.score_prompts([p for p, _ in pairs], [a for _, a in pairs])
        k = len(self.bank.manifest.templates)
        return [_average(scores[i * k : (i + 1) * k]) for i in range(len(aliases))]


def _average(items: list[ItemScore]) -> ItemScore:
    probs = np.mean([s.stage_probabilities for s in items], axis=0)
    probs = probs / probs.sum()
    return ItemScore(
        stage_probabilities=[float(x) for x in probs],
        estimated_stage=int(np.argmax(probs)),
        recency_score=float(np.mean([s.recency_score for s in items])),
        p_late=float(np.mean([s.p_late for s in items])),
        n_tokens=int(sum(s.n_tokens for s in items)),
        in_bank_sample=items[0].in_bank_sample,  # every template prompt has the entity's alias
    )
