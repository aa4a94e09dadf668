"""A stand-in for `BankScorer` with the same interface, for queueing, deadline and auth tests.

Deterministic per prompt (hash-derived scores), counts words as tokens, records every batch it
scored, and can be held at a gate so tests can fill the queue or pass a deadline on purpose.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel

from probe_bank.errors import UserError
from probe_bank.schemas import ItemScore


class FakeManifest(BaseModel):
    bank_id: str = "fake-bank"
    layer: int = 1
    position: str = "last"
    templates: list[str] = ["Q: Who is {alias}?\nA:", "Q: What does {alias} stand for?\nA:"]


class FakeBank:
    manifest = FakeManifest()

    def metrics(self) -> dict[str, Any]:
        return {"stage1_vs_stage6": {"value": 0.5, "ci95": [0.4, 0.6], "n_entities": 10}}


def fake_score(prompt: str) -> ItemScore:
    """Scores that depend only on the prompt (so batching cannot change them)."""
    raw = hashlib.sha256(prompt.encode()).digest()
    weights = [b + 1 for b in raw[:7]]
    probs = [w / sum(weights) for w in weights]
    return ItemScore(
        stage_probabilities=probs,
        estimated_stage=max(range(7), key=probs.__getitem__),
        recency_score=raw[7] / 255 * 6,
        p_late=raw[8] / 255,
        n_tokens=len(prompt.split()),
    )


class FakeScorer:
    model_id = "fake-model"
    bank_id = "fake-bank"
    max_tokens = 32

    def __init__(self, delay: float = 0.0, gate: threading.Event | None = None) -> None:
        self.delay = delay
        self.gate = gate
        self.bank = FakeBank()
        self.batches: list[int] = []
        self.seen: list[str] = []
        self.calls = 0  # calls entered (including those held at the gate)

    def count_tokens(self, prompts: Sequence[str]) -> list[int]:
        return [len(p.split()) for p in prompts]

    def score_prompts(
        self,
        prompts: Sequence[str],
        aliases: Sequence[str | None] | None = None,
        batch_size: int = 32,
    ) -> list[ItemScore]:
        self.calls += 1
        if self.gate is not None:
            self.gate.wait(timeout=30)
        time.sleep(self.delay)
        for i, prompt in enumerate(prompts):
            alias = aliases[i] if aliases is not None else None
            if alias is not None and alias not in prompt:
                raise UserError(f"alias {alias!r} does not occur in prompt {prompt!r}")
        self.batches.append(len(prompts))
        self.seen.extend(prompts)
        return [fake_score(p) for p in prompts]

    def entity_prompts(self, alias: str) -> list[tuple[str, str]]:
        return [(t.replace("{alias}", alias), alias) for t in self.bank.manifest.templates]
