"""A deterministic stand-in for the service's ScoringEngine (same async methods), for unit tests."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from probe_bank.errors import UserError


@dataclass
class FakeScore:
    stage_probabilities: list[float]
    estimated_stage: int
    recency_score: float
    p_late: float
    n_tokens: int
    in_bank_sample: bool | None = None


def fake_score(text: str) -> FakeScore:
    """A score that depends only on the text (like a real, batch-independent scorer)."""
    digest = hashlib.sha256(text.encode()).digest()
    raw = [b + 1 for b in digest[:7]]
    probs = [r / sum(raw) for r in raw]
    stage = max(range(7), key=lambda i: probs[i])
    return FakeScore(probs, stage, digest[8] / 25.5 - 2.0, digest[9] / 255, len(text.split()))


@dataclass
class FakeEngine:
    """Records calls; refuses prompts containing 'BAD' like the engine refuses overlong prompts."""

    delay_s: float = 0.0
    calls: list[tuple[str, int, str]] = field(default_factory=list)
    fail_times: int = 0
    fitted: frozenset[str] | None = None  # aliases "the bank was fitted on"; None = an old bank

    def _mark(self, score: FakeScore, alias: str | None) -> FakeScore:
        if alias is None or self.fitted is None:
            return score  # unknown, like the real bank without an alias or without the file
        return dataclasses.replace(score, in_bank_sample=alias in self.fitted)

    async def score_prompts(self, prompts, aliases=None, *, priority="live", deadline=None):
        self.calls.append(("prompts", len(prompts), priority))
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.fail_times > 0:
            self.fail_times -= 1
            raise RuntimeError("engine hiccup")
        if any("BAD" in p for p in prompts):
            raise UserError("prompt too long")
        alias_of = aliases if aliases is not None else [None] * len(prompts)
        return [self._mark(fake_score(p), a) for p, a in zip(prompts, alias_of, strict=True)]

    async def score_entities(self, aliases, *, priority="live", deadline=None):
        self.calls.append(("entities", len(aliases), priority))
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        return [self._mark(fake_score("entity:" + a), a) for a in aliases]


@dataclass
class FakeSettings:
    """The two service settings the jobs read."""

    resolved_state_dir: Path
    resolved_data_dir: Path
