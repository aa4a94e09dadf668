"""What the /dashboard page polls: live numbers read from the service's own Prometheus registry,
recent jobs from the job store, and the served bank's headline figures from its metrics.json.

Reading the registry (not a second set of counters) keeps the page and Prometheus/Grafana in
agreement by construction.
"""

from __future__ import annotations

import math
import threading
import time
from collections import defaultdict, deque
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from weakref import WeakKeyDictionary

from prometheus_client import CollectorRegistry
from pydantic import BaseModel

from audit_service.telemetry import PREFIX
from probe_bank.evidence import BankEvidence, bank_evidence

#: Routes that score (live traffic), as the request counter labels them.
SCORING_ROUTES = ("/v1/score", "/v1/entities/score")
#: Where `recency-audit report` output may sit relative to BANK_DIR.
REPORT_DIRS = ("report", "../../reports/{name}", "../report", "../{name}-report")
RATE_WINDOW_S = 60.0


class Headline(BaseModel):
    key: str
    label: str
    value: float | None
    ci95: list[float] | None
    n_entities: int | None


class BankFigures(BaseModel):
    """The served bank's report figures (numbers always; PNGs when a report dir exists)."""

    bank_dir: str | None
    bank_id: str | None
    relation: str | None = None  # the served model against the bank's reference
    headline: list[Headline]
    evidence: BankEvidence
    #: per family, the p_after_bank at which the served model's entities are classed 7
    after_thresholds: dict[str, float | None] = {}
    pairwise_accuracy: list[list[float | None]] | None
    figures: list[str]


class LiveStats(BaseModel):
    """Numbers derived from the registry at one moment."""

    requests_total: float
    scoring_requests_total: float
    request_rate_per_s: float | None
    scoring_rate_per_s: float | None
    latency_p50_s: float | None
    latency_p95_s: float | None
    latency_p99_s: float | None
    queue_depth: dict[str, float]
    items_scored: dict[str, float]
    stage_distribution: dict[str, float]
    fused_classes: dict[str, float] = {}  # entities by fused class (a families bank; 7: after)
    recency_histogram: list[tuple[str, float]]
    batch_size_mean: float | None


class DashboardData(BaseModel):
    """`detail`: `full` for a key with the `jobs` and `score` scopes (or auth off); `aggregate`
    otherwise: live numbers and job counts by state only, no job ids, sources or errors, no
    bank path and no bank figures (which `/v1/bank` guards with the score scope)."""

    time: float
    detail: str = "full"
    live: LiveStats
    jobs: list[dict[str, Any]]
    job_counts: dict[str, int] = {}
    bank: BankFigures


# --- registry ---------------------------------------------------------------------------------


def samples(registry: CollectorRegistry) -> list[tuple[str, dict[str, str], float]]:
    """Every (sample name, labels, value) the registry exposes now."""
    return [(s.name, dict(s.labels), s.value) for m in registry.collect() for s in m.samples]


def _sum(rows: Iterable[tuple[str, dict[str, str], float]], name: str, **match: Any) -> float:
    return sum(
        v
        for n, labels, v in rows
        if n == name and all(pred(labels.get(k)) for k, pred in match.items())
    )


def _by_label(rows, name: str, label: str) -> dict[str, float]:
    out: dict[str, float] = defaultdict(float)
    for n, labels, v in rows:
        if n == name and label in labels:
            out[labels[label]] += v
    return dict(out)


def histogram_quantile(q: float, buckets: dict[float, float]) -> float | None:
    """Prometheus' histogram_quantile over cumulative {upper bound: count} buckets."""
    if not buckets:
        return None
    bounds = sorted(buckets)
    total = buckets[bounds[-1]]
    if total <= 0:
        return None
    rank = q * total
    prev_bound, prev_count = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return prev_bound
            width = count - prev_count
            frac = (rank - prev_count) / width if width > 0 else 0.0
            return prev_bound + (bound - prev_bound) * frac
        prev_bound, prev_count = bound, count
    return prev_bound


def _buckets(rows, name: str, **match: Any) -> dict[float, float]:
    out: dict[float, float] = defaultdict(float)
    for n, labels, v in rows:
        if n == name and all(pred(labels.get(k)) for k, pred in match.items()):
            out[float(labels["le"])] += v
    return dict(out)


class RateTracker:
    """Per-second rates of counters from samples taken at each poll (last RATE_WINDOW_S)."""

    def __init__(self) -> None:
        self._samples: deque[tuple[float, dict[str, float]]] = deque()
        self._lock = threading.Lock()

    def rates(self, now: float, values: dict[str, float]) -> dict[str, float | None]:
        with self._lock:
            self._samples.append((now, values))
            while len(self._samples) > 2 and now - self._samples[0][0] > RATE_WINDOW_S:
                self._samples.popleft()
            t0, first = self._samples[0]
        dt = now - t0
        return {k: (v - first.get(k, 0.0)) / dt if dt > 0 else None for k, v in values.items()}


_trackers: WeakKeyDictionary[CollectorRegistry, RateTracker] = WeakKeyDictionary()


def live_stats(registry: CollectorRegistry, now: float | None = None) -> LiveStats:
    """The page's live numbers from the service registry."""
    now = time.monotonic() if now is None else now
    rows = samples(registry)
    is_scoring = lambda route: route in SCORING_ROUTES  # noqa: E731
    totals = {
        "all": _sum(rows, f"{PREFIX}_requests_total"),
        "scoring": _sum(rows, f"{PREFIX}_requests_total", route=is_scoring),
    }
    rates = _trackers.setdefault(registry, RateTracker()).rates(now, totals)
    latency = _buckets(rows, f"{PREFIX}_request_seconds_bucket", route=is_scoring)
    score_buckets = _buckets(rows, f"{PREFIX}_recency_score_bucket")
    hist, prev = [], 0.0
    for bound in sorted(score_buckets):
        label = "+Inf" if math.isinf(bound) else f"{bound:g}"
        hist.append((label, score_buckets[bound] - prev))
        prev = score_buckets[bound]
    batches = _sum(rows, f"{PREFIX}_batch_size_count")
    return LiveStats(
        requests_total=totals["all"],
        scoring_requests_total=totals["scoring"],
        request_rate_per_s=rates["all"],
        scoring_rate_per_s=rates["scoring"],
        latency_p50_s=histogram_quantile(0.5, latency),
        latency_p95_s=histogram_quantile(0.95, latency),
        latency_p99_s=histogram_quantile(0.99, latency),
        queue_depth=_by_label(rows, f"{PREFIX}_queue_depth", "priority"),
        items_scored=_by_label(rows, f"{PREFIX}_items_scored_total", "priority"),
        stage_distribution={
            k: v
            for k, v in sorted(
                _by_label(rows, f"{PREFIX}_estimated_stage_total", "stage").items(),
                key=lambda kv: int(kv[0]),
            )
        },
        fused_classes=dict(
            sorted(
                _by_label(rows, f"{PREFIX}_fused_class_total", "class").items(),
                key=lambda kv: int(kv[0]),
            )
        ),
        recency_histogram=hist,
        batch_size_mean=(_sum(rows, f"{PREFIX}_batch_size_sum") / batches) if batches else None,
    )


# --- bank figures -----------------------------------------------------------------------------


def report_dir(bank_dir: Path) -> Path | None:
    """The first report directory (with PNG figures) found next to the bank."""
    for pattern in REPORT_DIRS:
        candidate = (bank_dir / pattern.format(name=bank_dir.name)).resolve()
        if candidate.is_dir() and any(candidate.glob("*.png")):
            return candidate
    return None


def bank_figures(
    bank: Any,
    bank_dir: Path | None,
    *,
    with_metrics: bool = True,
    after_thresholds: dict[str, float | None] | None = None,
) -> BankFigures:
    """Headline numbers and the pairwise grid of the loaded, verified bank (a
    `probe_bank.bank.ProbeBank`, None while loading), plus report PNG names next to BANK_DIR;
    `with_metrics=False` keeps only the bank's id and relation (and `bank_dir` None hides the
    path and the figures)."""
    metrics = bank.metrics if bank is not None and with_metrics else None
    headline = []
    if metrics is not None:
        for key, label, entry in metrics.headline():
            headline.append(
                Headline(
                    key=key,
                    label=label,
                    value=entry.value,
                    ci95=None if None in entry.ci95 else list(entry.ci95),
                    n_entities=entry.n_entities,
                )
            )
    reports = report_dir(bank_dir) if bank_dir is not None else None
    return BankFigures(
        bank_dir=str(bank_dir) if bank_dir is not None else None,
        bank_id=bank.manifest.bank_id if bank is not None else None,
        relation=bank.relation if bank is not None else None,
        headline=headline,
        evidence=bank_evidence(metrics),
        after_thresholds=(after_thresholds or {}) if metrics is not None else {},
        pairwise_accuracy=metrics.pairwise_accuracy if metrics is not None else None,
        figures=sorted(p.name for p in reports.glob("*.png")) if reports else [],
    )
