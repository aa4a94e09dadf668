"""A deterministic stand-in for the service's ScoringEngine (same async methods), for unit tests."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

from probe_bank.errors import UserError
from probe_bank.schemas import StageScore
from tests.service.fakes import fake_score

__all__ = ["FakeEngine", "FakeSettings", "fake_score"]


@dataclass
class FakeEngine:
    """Records calls; refuses prompts containing 'BAD' like the engine refuses overlong prompts."""

    delay_s: float = 0.0
    calls: list[tuple[str, int, str]] = field(default_factory=list)
    fail_times: int = 0
    fitted: frozenset[str] | None = None  # aliases "the bank was fitted on"; None = an old bank

    def _mark(self, score: StageScore, alias: str | None) -> StageScore:
        if alias is None or self.fitted is None:
            return score  # unknown, like the real bank without an alias or without the file
        return score.model_copy(update={"in_bank_sample": alias in self.fitted})

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
