"""Durable batch audit jobs: datasets in, canonical JSONL results out, resumable after a crash.

`JobsController` (path /v1/jobs) takes the `JobManager` by dependency injection as `job_manager`;
the app calls `JobManager.start(engine, settings, metrics)` / `stop()` in its lifespan.
"""

from audit_service.jobs.controller import JobsController
from audit_service.jobs.manager import JobManager, JobsConfig, JobStatus, JobSummary

__all__ = ["JobManager", "JobStatus", "JobSummary", "JobsConfig", "JobsController"]
