"""A deterministic stand-in for the service's ScoringEngine (same async methods), for unit tests."""

from __future__ import annotations

import asyncio
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

    async def score_prompts(self, prompts, aliases=None, *, priority="live", deadline=None):
        self.calls.append(("prompts", len(prompts), priority))
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.fail_times > 0:
            self.fail_times -= 1
            raise RuntimeError("engine hiccup")
        if any("BAD" in p for p in prompts):
            raise UserError("prompt too long")
        return [fake_score(p) for p in prompts]

    async def score_entities(self, aliases, *, priority="live", deadline=None):
        self.calls.append(("entities", len(aliases), priority))
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        return [fake_score("entity:" + a) for a in aliases]


@dataclass
class FakeSettings:
    """The two service settings the jobs read."""

    resolved_state_dir: Path
    resolved_data_dir: Path
