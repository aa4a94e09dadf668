"""Prometheus view of the jobs, read from the store at scrape time (registered into the service's
registry, so `/metrics` and the dashboards see job progress next to the live traffic)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from audit_service.jobs.store import JobStore
from audit_service.telemetry import PREFIX


class JobsCollector(Collector):
    """Jobs by state, progress of unfinished jobs, and inputs scored by this process."""

    def __init__(self, store: JobStore, *, per_job: bool = True) -> None:
        """`per_job`: also per-job gauges labelled with job ids (off when /metrics is open to
        anyone while the API needs keys: a job id is a capability to read its results)."""
        self.store = store
        self.per_job = per_job
        self.items_scored = 0

    def collect(self) -> Iterator[Metric]:
        by_state = GaugeMetricFamily(f"{PREFIX}_jobs", "Batch jobs by state", labels=["state"])
        for state, n in sorted(self.store.count_by_state().items()):
            by_state.add_metric([state], n)
        yield by_state
        done = GaugeMetricFamily(
            f"{PREFIX}_job_items_done", "Inputs done, per unfinished job", labels=["job"]
        )
        total = GaugeMetricFamily(
            f"{PREFIX}_job_items_total", "Inputs in all, per unfinished job", labels=["job"]
        )
        progress = GaugeMetricFamily(
            f"{PREFIX}_job_progress", "done / total, per unfinished job", labels=["job"]
        )
        for job in self.store.unfinished() if self.per_job else []:
            done.add_metric([job.id], job.done)
            total.add_metric([job.id], job.total)
            progress.add_metric([job.id], job.done / job.total if job.total else 1.0)
        yield done
        yield total
        yield progress
        yield CounterMetricFamily(
            f"{PREFIX}_job_items_scored",
            "Job inputs scored and committed by this process",
            value=self.items_scored,
        )

    def describe(self) -> Iterator[Metric]:
        return iter(())
