"""HTTP API of batch jobs: submit a dataset, follow progress, stream results, summarise, cancel.

A dataset arrives as a JSONL body (`application/x-ndjson`), a multipart upload (field `file`,
JSONL or CSV by file name or part content type), or a JSON body `{"path": ...}` naming a file
under the data root. Handlers receive the `JobManager` by dependency injection (`job_manager`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Annotated, Any

from litestar import Controller, Request, delete, get, post
from litestar.datastructures import UploadFile
from litestar.exceptions import ClientException, HTTPException, NotFoundException
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import (
    OpenAPIFormat,
    OpenAPIMediaType,
    OpenAPIType,
    Operation,
    RequestBody,
    Schema,
)
from litestar.params import Parameter
from litestar.response import Stream
from litestar.status_codes import (
    HTTP_201_CREATED,
    HTTP_413_REQUEST_ENTITY_TOO_LARGE,
    HTTP_415_UNSUPPORTED_MEDIA_TYPE,
    HTTP_422_UNPROCESSABLE_ENTITY,
)
from pydantic import BaseModel, ConfigDict, Field

from audit_service.auth import requires_scope
from audit_service.jobs.datasets import (
    DatasetError,
    DatasetItem,
    TooLarge,
    format_of,
    parse_dataset,
    read_dataset_file,
    resolve_under,
)
from audit_service.jobs.manager import (
    JobFinished,
    JobManager,
    JobStatus,
    JobSummary,
    UnknownJob,
)
from audit_service.schemas import ErrorBody

NDJSON = "application/x-ndjson"
_JSONL_TYPES = {NDJSON, "application/jsonl", "application/x-jsonlines", "application/json-lines"}
#: Multipart framing allowed on top of the file itself.
_MULTIPART_SLACK = 64 * 1024


#: Every jobs operation needs a key with the `jobs` scope (when keys are configured).
_AUTH = {
    401: ResponseSpec(ErrorBody, description="missing or invalid API key"),
    403: ResponseSpec(ErrorBody, description="the key lacks the 'jobs' scope"),
}
_NOT_FOUND = {**_AUTH, 404: ResponseSpec(ErrorBody, description="no job with that id")}


class DatasetPath(BaseModel):
    """A dataset already on the server, relative to RECENCY_AUDIT_DATA_DIR."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(min_length=1, max_length=4096)


class JobList(BaseModel):
    jobs: list[JobStatus]


@dataclass
class _SubmitOperation(Operation):
    """Documents the three dataset encodings POST /v1/jobs accepts (the handler reads the raw
    request, so litestar cannot infer the body)."""

    def __post_init__(self) -> None:
        text = Schema(type=OpenAPIType.STRING, description="one JSON object per line")
        upload = Schema(
            type=OpenAPIType.OBJECT,
            properties={"file": Schema(type=OpenAPIType.STRING, format=OpenAPIFormat.BINARY)},
            required=["file"],
        )
        path = Schema(
            type=OpenAPIType.OBJECT,
            properties={"path": Schema(type=OpenAPIType.STRING, min_length=1)},
            required=["path"],
        )
        self.request_body = RequestBody(
            required=True,
            description='Each line {"prompt": ..., "alias"?: ...}, {"entity": ...} or '
            '{"text": ..., "answer"?: ...}, with an optional "id"; CSV columns id, '
            "prompt|entity|text, alias, answer.",
            content={
                NDJSON: OpenAPIMediaType(schema=text),
                "multipart/form-data": OpenAPIMediaType(schema=upload),
                "application/json": OpenAPIMediaType(schema=path),
            },
        )


def _dataset_error(exc: DatasetError) -> HTTPException:
    """A 413 for an oversize dataset, else a 422 listing each bad line."""
    status = HTTP_422_UNPROCESSABLE_ENTITY
    if isinstance(exc, TooLarge):
        status = HTTP_413_REQUEST_ENTITY_TOO_LARGE
    extra: dict[str, Any] | None = None
    if exc.errors:
        extra = {"errors": [e.model_dump() for e in exc.errors]}
    return HTTPException(status_code=status, detail=str(exc), extra=extra)


async def _read_capped(request: Request, limit: int) -> bytes:
    """The request body, refused with TooLarge as soon as it passes `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise TooLarge(f"dataset is {declared} bytes; the limit is {limit}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"dataset is over {limit} bytes (the limit)")
        chunks.append(chunk)
    return b"".join(chunks)


async def _from_upload(request: Request, manager: JobManager) -> tuple[list[DatasetItem], str]:
    limit = manager.config.max_upload_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit + _MULTIPART_SLACK:
        raise TooLarge(f"upload is {declared} bytes; the limit is {limit}")
    form = await request.form()
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise DatasetError("multipart upload needs the dataset in a file field named 'file'")
    data = await upload.read()
    if len(data) > limit:
        raise TooLarge(f"dataset is {len(data)} bytes; the limit is {limit}")
    is_csv = upload.content_type in {"text/csv", "application/csv"}
    fmt = "csv" if is_csv else format_of(upload.filename or "upload.jsonl")
    items = await asyncio.to_thread(
        parse_dataset, data, fmt=fmt, max_items=manager.config.max_items
    )  # parsing a large upload must not stall live requests on the event loop
    return items, f"upload:{upload.filename or 'file'}"


async def _from_path(request: Request, manager: JobManager) -> tuple[list[DatasetItem], str]:
    try:
        body = DatasetPath.model_validate_json(await _read_capped(request, 64 * 1024))
    except ValueError as exc:
        hint = 'expected a JSON body {"path": "<file under the data root>"}'
        raise DatasetError(f"{hint}: {exc}") from None
    assert manager.data_dir is not None
    path = resolve_under(manager.data_dir, body.path)
    items = await asyncio.to_thread(
        read_dataset_file,
        path,
        max_bytes=manager.config.max_upload_bytes,
        max_items=manager.config.max_items,
    )
    return items, f"path:{body.path}"


async def _iterate(lines: Iterator[str]) -> AsyncIterator[bytes]:
    """Result lines as NDJSON bytes, reading the store off the event loop page by page."""
    sentinel = object()
    while True:
        batch = await asyncio.to_thread(lambda: [next(lines, sentinel) for _ in range(256)])
        for line in batch:
            if line is sentinel:
                return
            yield (str(line) + "\n").encode("utf-8")


class JobsController(Controller):
    """Durable batch audits over the shared scoring engine (batch priority)."""

    path = "/v1/jobs"
    tags = ["jobs"]
    guards = [requires_scope("jobs")]
    request_max_body_size = None  # datasets are limited by JOBS_MAX_UPLOAD_BYTES (-> 413 JSON)

    @post(
        "/",
        status_code=HTTP_201_CREATED,
        operation_class=_SubmitOperation,
        responses={
            **_AUTH,
            400: ResponseSpec(ErrorBody, description="malformed multipart body"),
            413: ResponseSpec(ErrorBody, description="dataset over JOBS_MAX_UPLOAD_BYTES"),
            415: ResponseSpec(ErrorBody, description="unsupported content type"),
            422: ResponseSpec(ErrorBody, description="invalid dataset: extra.errors per line"),
            503: ResponseSpec(
                ErrorBody,
                description="the model and bank failed to load, or the job store cannot write "
                "(storage full); see Retry-After",
            ),
        },
        summary="Submit a dataset (NDJSON body, multipart JSONL/CSV upload, or a data-root path)",
    )
    async def submit(self, request: Request, job_manager: JobManager) -> JobStatus:
        media = request.content_type[0].lower()
        try:
            if media in _JSONL_TYPES:
                data = await _read_capped(request, job_manager.config.max_upload_bytes)
                items = await asyncio.to_thread(
                    parse_dataset, data, fmt="jsonl", max_items=job_manager.config.max_items
                )
                source = "body"
            elif media == "multipart/form-data":
                items, source = await _from_upload(request, job_manager)
            elif media == "application/json":
                items, source = await _from_path(request, job_manager)
            else:
                raise ClientException(
                    status_code=HTTP_415_UNSUPPORTED_MEDIA_TYPE,
                    detail=f"unsupported content type {media!r}: send {NDJSON}, "
                    'multipart/form-data (field "file") or application/json {"path": ...}',
                )
        except DatasetError as exc:
            raise _dataset_error(exc) from None
        return await job_manager.submit(items, source=source)

    @get("/", summary="Recent jobs, newest first", responses=_AUTH)
    async def list_jobs(
        self, job_manager: JobManager, limit: Annotated[int, Parameter(ge=1, le=200)] = 20
    ) -> JobList:
        return JobList(jobs=await asyncio.to_thread(job_manager.recent, limit))

    @get(
        "/{job_id:str}",
        summary="State and progress (items done, total, rate, ETA)",
        responses=_NOT_FOUND,
    )
    async def status(self, job_id: str, job_manager: JobManager) -> JobStatus:
        return _known(job_manager.get, job_id)

    @get(
        "/{job_id:str}/results",
        summary="Results as NDJSON, one line per input in input order (committed chunks so far)",
        media_type=NDJSON,
        responses=_NOT_FOUND,
    )
    async def results(self, job_id: str, job_manager: JobManager) -> Stream:
        status = _known(job_manager.get, job_id)
        lines = job_manager.results(job_id)
        return Stream(
            _iterate(lines),
            media_type=NDJSON,
            headers={"X-Job-State": status.state.value, "X-Job-Done": str(status.done)},
        )

    @get(
        "/{job_id:str}/summary",
        summary="Stage histogram and the most recently trained inputs",
        responses=_NOT_FOUND,
    )
    async def summary(
        self,
        job_id: str,
        job_manager: JobManager,
        top: Annotated[int, Parameter(ge=1, le=1000)] = 10,
    ) -> JobSummary:
        _known(job_manager.get, job_id)
        return await asyncio.to_thread(job_manager.summary, job_id, top)

    @delete(
        "/{job_id:str}",
        status_code=200,
        summary="Cancel a queued or running job (409 when it already finished)",
        responses={
            **_NOT_FOUND,
            409: ResponseSpec(ErrorBody, description="the job already finished; nothing cancelled"),
        },
    )
    async def cancel(self, job_id: str, job_manager: JobManager) -> JobStatus:
        try:
            status: JobStatus = _known(job_manager.cancel, job_id)
        except JobFinished as exc:
            raise HTTPException(status_code=409, detail=str(exc)) from None
        return status


def _known(fn: Any, job_id: str) -> Any:
    try:
        return fn(job_id)
    except UnknownJob:
        raise NotFoundException(f"no job {job_id!r}") from None
