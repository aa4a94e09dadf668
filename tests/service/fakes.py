"""Test fakes of the scoring pipeline: one `fake_score` (a `StageScore` that depends only on its
text) and a stand-in for `BankScorer` with the same `prepare` / `forward` interface, for queueing,
deadline and auth tests. The scorer counts words as tokens, records every batch it forwarded,
and can be held at a gate so tests can fill the queue or pass a deadline on purpose.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel

from probe_bank.capture import Encoded, check_lengths
from probe_bank.errors import UserError
from probe_bank.schemas import HEADLINE, BankMetrics, FamilyEstimate, StageScore


class FakeManifest(BaseModel):
    bank_id: str = "fake-bank"
    layer: int = 1
    position: str = "last"
    templates: list[str] = ["Q: Who is {alias}?\nA:", "Q: What does {alias} stand for?\nA:"]


def fake_metrics(**figures: Any) -> BankMetrics:
    """A complete metrics.json whose unset figures are undefined (no value, no interval)."""
    none = {"value": None, "ci95": [None, None], "n_entities": 0}
    base: dict[str, Any] = {key: none for key, _ in HEADLINE}
    base.update(
        stage_chance=1 / 7,
        pairwise_accuracy=[],
        pairwise=[],
        n_entities=0,
        n_entities_per_class=[],
        n_prompts=0,
        layer=1,
        position="last",
        hook="blocks.1.hook_resid_post",
        selection="fake",
    )
    return BankMetrics.model_validate({**base, **figures})


class FakeBank:
    manifest = FakeManifest()
    relation = "reference"
    audited_fingerprint = "fake-weights"  # what a job records as the model that scored it
    metrics = fake_metrics(stage1_vs_stage6={"value": 0.5, "ci95": [0.4, 0.6], "n_entities": 10})


def fake_score(
    text: str, *, in_bank_sample: bool | None = None, model_id: str = "fake-model"
) -> StageScore:
    """Scores that depend only on the text (so batching cannot change them)."""
    raw = hashlib.sha256(text.encode()).digest()
    weights = [b + 1 for b in raw[:7]]
    probs = [w / sum(weights) for w in weights]
    return StageScore(
        stage_probabilities=probs,
        estimated_stage=max(range(7), key=probs.__getitem__),
        recency_score=raw[7] / 255 * 6,
        p_late=raw[8] / 255,
        n_tokens=len(text.split()),
        in_bank_sample=in_bank_sample,
        model_id=model_id,
        bank_id="fake-bank",
    )


def fake_family(alias: str) -> FamilyEstimate:
    """A fused estimate that depends only on the alias."""
    raw = hashlib.sha256(alias.encode()).digest()
    weights = [b + 1 for b in raw[:8]]
    probs = [w / sum(weights) for w in weights]
    return FamilyEstimate(
        family="fused",
        estimated_class=max(range(8), key=probs.__getitem__),
        class_probabilities=probs,
        p_after_bank=probs[7],
    )


class _FakeTokenizer:
    """Words as tokens: `Encoded.input_ids` are word indices, the words kept for `forward`."""

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}
        self.texts: dict[tuple[int, ...], str] = {}

    def encode(self, prompt: str) -> tuple[int, ...]:
        n = len(prompt.split())
        k = self.ids.setdefault(prompt, len(self.ids) + 1)
        ids = (k,) + (0,) * (n - 1) if n else ()
        self.texts[ids] = prompt
        return ids


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
        self.evidence_batches = []
        self._tok = _FakeTokenizer()

    def prepare(
        self, prompts: Sequence[str], aliases: Sequence[str | None] | None = None
    ) -> list[Encoded]:
        alias_of = list(aliases) if aliases is not None else [None] * len(prompts)
        for prompt, alias in zip(prompts, alias_of, strict=True):
            if alias is not None and alias not in prompt:
                raise UserError(f"alias {alias!r} does not occur in prompt {prompt!r}")
        items = [
            Encoded(self._tok.encode(p), alias=a) for p, a in zip(prompts, alias_of, strict=True)
        ]
        check_lengths([it.n_tokens for it in items], self.max_tokens)
        return items

    def forward(self, batch: Sequence[Encoded]) -> list[StageScore]:
        self.calls += 1
        if self.gate is not None:
            self.gate.wait(timeout=30)
        time.sleep(self.delay)
        prompts = [self._tok.texts[it.input_ids] for it in batch]
        self.batches.append(len(prompts))
        self.seen.extend(prompts)
        return [fake_score(p) for p in prompts]

    def entity_prompts(self, alias: str) -> list[tuple[str, str]]:
        return [(t.replace("{alias}", alias), alias) for t in self.bank.manifest.templates]

    has_families = False
    #: with `has_families`: the entities of every evidence pass, and an alias whose pass fails
    evidence_batches: list[list[str]]
    failing_alias: str | None = None
    evidence_gate: threading.Event | None = None  # holds evidence passes (not probe forwards)
    evidence_calls = 0

    def after_thresholds(self) -> dict[str, float | None]:
        return {"fused": 0.5} if self.has_families else {}

    def entity_evidence(
        self, aliases: Sequence[str], scores: Sequence[StageScore]
    ) -> list[StageScore]:
        """Probe scores as they came, or with families: each alias's own estimate (it depends
        only on the alias, so batching cannot change it); `failing_alias` fails its pass."""
        if not self.has_families:
            return list(scores)
        self.evidence_calls += 1
        if self.evidence_gate is not None:
            self.evidence_gate.wait(timeout=30)
        time.sleep(self.delay)
        if self.failing_alias in aliases:
            raise ValueError(f"no evidence for {self.failing_alias}")
        self.evidence_batches.append(list(aliases))
        return [
            s.model_copy(update={"families": [fake_family(a)]})
            for a, s in zip(aliases, scores, strict=True)
        ]
