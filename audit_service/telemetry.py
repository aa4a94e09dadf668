"""Prometheus metrics of the service, in one registry that the batch jobs also register into.

A private `CollectorRegistry` (not the process-global one) so several apps in one process (tests,
the benchmark) never collide, and `/metrics` shows exactly this service.
"""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

# `*_created` series double the exposition for no dashboard use.
disable_created_metrics()

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
_TOKEN_BUCKETS = (16, 64, 256, 1024, 4096, 16384, 65536)
_SCORE_BUCKETS = (-3, -2, -1, -0.5, 0, 0.5, 1, 2, 3, 4, 5, 6, 7)

PREFIX = "recency_audit"


class Telemetry:
    """Owns the registry and every service metric; `registry` is shared with the jobs package."""

    #: the exposition type without its charset: litestar appends `charset=utf-8` to text/*
    content_type = CONTENT_TYPE_LATEST.split(";charset")[0].split("; charset")[0]

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            f"{PREFIX}_requests",
            "HTTP requests by route and status",
            ["method", "route", "status"],
            registry=r,
        )
        self.request_seconds = Histogram(
            f"{PREFIX}_request_seconds",
            "Whole-request latency",
            ["method", "route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_seconds = Histogram(
            f"{PREFIX}_queue_seconds",
            "Time an item waits before its batch starts",
            ["priority"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.inference_seconds = Histogram(
            f"{PREFIX}_inference_seconds",
            "Forward pass + probes, per batch",
            ["model", "bank"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            f"{PREFIX}_batch_size", "Items per batch", buckets=_SIZE_BUCKETS, registry=r
        )
        self.batch_tokens = Histogram(
            f"{PREFIX}_batch_tokens", "Padded tokens per batch", buckets=_TOKEN_BUCKETS, registry=r
        )
        self.evidence_seconds = Histogram(
            f"{PREFIX}_evidence_seconds",
            "Evidence-family pass (question prompts through the audited model, and the "
            "reference for a descendant), per batch of entities",
            ["model", "bank"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.fused_class = Counter(
            f"{PREFIX}_fused_class",
            "Entities scored with evidence families, by the fused family's class (0 never "
            "trained, 1..6 stage, 7 learned after the bank was built)",
            ["model", "bank", "priority", "class"],
            registry=r,
        )
        self.evidence_batch_size = Histogram(
            f"{PREFIX}_evidence_batch_size",
            "Entities per evidence-family pass",
            buckets=_SIZE_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            f"{PREFIX}_queue_depth", "Items waiting to be batched", ["priority"], registry=r
        )
        self.items_scored = Counter(
            f"{PREFIX}_items_scored", "Prompts scored", ["model", "bank", "priority"], registry=r
        )
        self.estimated_stage = Counter(
            f"{PREFIX}_estimated_stage",
            "Scored items by estimated stage (0 = never trained)",
            ["model", "bank", "stage"],
            registry=r,
        )
        self.recency_score = Histogram(
            f"{PREFIX}_recency_score",
            "Recency scores of scored items",
            ["model", "bank"],
            buckets=_SCORE_BUCKETS,
            registry=r,
        )
        self.texts_scored = Counter(
            f"{PREFIX}_texts_scored",
            "Texts scored for membership, by outcome: touched | untouched (a descendant read "
            "against the reference's anchors) or unflagged (no reference pass)",
            ["model", "bank", "priority", "outcome"],
            registry=r,
        )
        self.rejected = Counter(
            f"{PREFIX}_rejected", "Items refused or dropped by the engine", ["reason"], registry=r
        )
        self.ready = Gauge(
            f"{PREFIX}_ready", "1 once model and bank are loaded and warm", registry=r
        )
        self.model_info = Gauge(
            f"{PREFIX}_model_info",
            "1 for the served model: its id, the bank's, and how it relates to the bank's "
            "reference (reference | descendant)",
            ["model", "bank", "relation"],
            registry=r,
        )
        self.server_info = Gauge(
            f"{PREFIX}_server_info",
            "1 for the running server: its event loop (uvloop | asyncio)",
            ["event_loop"],
            registry=r,
        )
        for priority in ("live", "batch"):
            self.queue_depth.labels(priority).set(0)

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.request_seconds.labels(method, route).observe(seconds)

    def observe_batch(self, model: str, bank: str, size: int, tokens: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.batch_tokens.observe(tokens)
        self.inference_seconds.labels(model, bank).observe(seconds)

    def observe_evidence(self, model: str, bank: str, size: int, seconds: float) -> None:
        self.evidence_batch_size.observe(size)
        self.evidence_seconds.labels(model, bank).observe(seconds)

    def observe_fused(self, model: str, bank: str, priority: str, classes: Sequence[int]) -> None:
        """Count entities by fused class (the dashboard's "learned after the bank" rate)."""
        for c in classes:
            self.fused_class.labels(model, bank, priority, str(c)).inc()

    def observe_scores(
        self,
        model: str,
        bank: str,
        priority: str,
        stages: Sequence[int],
        recency_scores: Sequence[float],
    ) -> None:
        """Count what items were estimated to be (the dashboard's stage mix and score spread)."""
        self.items_scored.labels(model, bank, priority).inc(len(stages))
        for stage in stages:
            self.estimated_stage.labels(model, bank, str(stage)).inc()
        hist = self.recency_score.labels(model, bank)
        for score in recency_scores:
            hist.observe(score)

    def observe_texts(
        self, model: str, bank: str, priority: str, touched: Sequence[bool | None]
    ) -> None:
        for flag in touched:
            outcome = "unflagged" if flag is None else ("touched" if flag else "untouched")
            self.texts_scored.labels(model, bank, priority, outcome).inc()

    def render(self) -> bytes:
        """The registry in Prometheus text exposition format."""
        return generate_latest(self.registry)
