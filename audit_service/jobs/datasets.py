"""Audit datasets: JSONL or CSV, each line a prompt or an entity alias with an optional `id`.

One parser serves the service (request body, multipart upload, path under the data root) and the
offline audit, so a dataset means the same thing everywhere. Every problem is collected with its
line number, so a user fixes a file in one round instead of one error per attempt.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    ValidationError,
    model_validator,
)

from probe_bank.errors import UserError

#: Longest prompt or alias accepted (characters); longer inputs are almost surely a wrong column.
MAX_TEXT_CHARS = 100_000
#: At most this many line errors are reported (a wholly wrong file would otherwise flood the reply).
MAX_REPORTED_ERRORS = 20
#: CSV columns a dataset may use.
CSV_COLUMNS = frozenset({"id", "prompt", "entity", "alias", "text", "answer"})
#: The columns that name an input's kind (exactly one per line).
Kind = Literal["prompt", "entity", "text"]
KINDS: tuple[Kind, ...] = ("prompt", "entity", "text")

#: An input's id, echoed exactly (strict: `true` or `1.0` are refused, not turned into 1).
ItemId = StrictStr | StrictInt | None


class LineError(BaseModel):
    """What is wrong with one line (1-based; for CSV, line 1 is the header)."""

    line: int
    reason: str


class DatasetError(UserError):
    """A dataset that cannot be audited; `errors` holds one entry per bad line when known."""

    def __init__(self, message: str, errors: list[LineError] | None = None) -> None:
        self.errors = errors or []
        if self.errors:
            first = "; ".join(f"line {e.line}: {e.reason}" for e in self.errors[:3])
            more = f" (and {len(self.errors) - 3} more)" if len(self.errors) > 3 else ""
            message = f"{message}: {first}{more}"
        super().__init__(message)


class TooLarge(DatasetError):
    """The upload exceeds the size limit (HTTP 413)."""


class DatasetItem(BaseModel):
    """One input: exactly one of `prompt` (with an optional `alias` inside it), `entity`, or
    `text` (membership evidence; with an optional `answer` inside it, the part scored)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: ItemId = Field(None, description="echoed in the result line")
    prompt: str | None = Field(None, min_length=1, max_length=MAX_TEXT_CHARS)
    alias: str | None = Field(None, min_length=1, max_length=1_000)
    entity: str | None = Field(None, min_length=1, max_length=1_000)
    text: str | None = Field(None, min_length=1, max_length=MAX_TEXT_CHARS)
    answer: str | None = Field(None, min_length=1, max_length=MAX_TEXT_CHARS)

    @model_validator(mode="after")
    def _one_kind(self) -> DatasetItem:
        if sum(getattr(self, k) is not None for k in KINDS) != 1:
            raise ValueError("needs exactly one of 'prompt', 'entity' or 'text'")
        if self.alias is not None and self.prompt is None:
            raise ValueError("'alias' goes with 'prompt' (an entity line is the alias itself)")
        if self.alias is not None and self.prompt is not None and self.alias not in self.prompt:
            raise ValueError("'alias' does not occur in 'prompt'")
        if self.answer is not None and (self.text is None or self.answer not in self.text):
            raise ValueError("'answer' goes with 'text' and must occur in it")
        return self

    @property
    def kind(self) -> Kind:
        return next(k for k in KINDS if getattr(self, k) is not None)

    @property
    def input(self) -> str:
        """The input itself, as echoed in its result line."""
        return str(getattr(self, self.kind))


def _reason(exc: ValidationError) -> str:
    """A one-line reason from pydantic's error list (field + message, no URLs)."""
    parts = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in err["loc"])
        msg = str(err["msg"]).removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts)


def _validate(obj: Any) -> DatasetItem:
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
    try:
        return DatasetItem.model_validate(obj)
    except ValidationError as exc:
        raise ValueError(_reason(exc)) from None


def _finish(
    items: list[DatasetItem], errors: list[LineError], max_items: int | None
) -> list[DatasetItem]:
    if errors:
        raise DatasetError("invalid dataset", errors[:MAX_REPORTED_ERRORS])
    if not items:
        raise DatasetError("empty dataset: no prompt, entity or text lines")
    if max_items is not None and len(items) > max_items:
        raise DatasetError(f"dataset has {len(items)} items; the limit is {max_items}")
    return items


def _text(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DatasetError(f"dataset is not UTF-8 (byte {exc.start})") from None


def parse_jsonl(data: bytes, *, max_items: int | None = None) -> list[DatasetItem]:
    """Parse JSONL: one object per line, blank lines skipped; all bad lines reported."""
    items: list[DatasetItem] = []
    errors: list[LineError] = []
    for lineno, line in enumerate(_text(data).splitlines(), 1):
        if not line.strip():
            continue
        try:
            items.append(_validate(json.loads(line)))
        except json.JSONDecodeError as exc:
            errors.append(LineError(line=lineno, reason=f"not valid JSON ({exc.msg})"))
        except ValueError as exc:
            errors.append(LineError(line=lineno, reason=str(exc)))
    return _finish(items, errors, max_items)


def _rows(reader: Any) -> Iterator[list[str]]:
    """The reader's rows; a malformed row (a cell over the csv module's field limit, 128 KiB,
    or a stray quote) is a `DatasetError` naming its line, never an unhandled `csv.Error`."""
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise DatasetError(
                f"line {reader.line_num}: malformed CSV ({exc}); a cell may hold at most "
                f"{csv.field_size_limit()} characters"
            ) from None
        yield row


def parse_csv(data: bytes, *, max_items: int | None = None) -> list[DatasetItem]:
    """Parse CSV with a header naming `prompt`, `entity` or `text` (plus optional `id`,
    `alias`, `answer`)."""
    reader = csv.reader(io.StringIO(_text(data), newline=""))
    header = next(_rows(reader), None)
    if header is None or not any(h.strip() for h in header):
        raise DatasetError("empty dataset: no CSV header")
    columns = [h.strip().lower() for h in header]
    unknown = sorted(set(columns) - CSV_COLUMNS)
    if unknown or not set(KINDS) & set(columns):
        raise DatasetError(
            f"wrong CSV columns {columns}: expected 'prompt', 'entity' or 'text', optional "
            f"'id', 'alias' and 'answer'" + (f"; unknown {unknown}" if unknown else "")
        )
    if len(set(columns)) != len(columns):
        raise DatasetError(f"duplicate CSV columns in {columns}")
    items: list[DatasetItem] = []
    errors: list[LineError] = []
    for row in _rows(reader):
        lineno = reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(columns):
            errors.append(
                LineError(line=lineno, reason=f"{len(row)} fields, header has {len(columns)}")
            )
            continue
        record = {c: v for c, v in zip(columns, row, strict=True) if v != ""}
        try:
            items.append(_validate(record))
        except ValueError as exc:
            errors.append(LineError(line=lineno, reason=str(exc)))
    return _finish(items, errors, max_items)


def parse_dataset(
    data: bytes, *, fmt: Literal["jsonl", "csv"], max_items: int | None = None
) -> list[DatasetItem]:
    """Parse bytes in the given format."""
    return (parse_csv if fmt == "csv" else parse_jsonl)(data, max_items=max_items)


def format_of(name: str) -> Literal["jsonl", "csv"]:
    """Dataset format from a file name: `.csv` is CSV, `.jsonl`/`.ndjson`/`.json` is JSONL."""
    suffix = Path(name).suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in {".jsonl", ".ndjson", ".json", ""}:
        return "jsonl"
    raise DatasetError(f"unknown dataset format {suffix!r}: use .jsonl, .ndjson or .csv")


def resolve_under(root: Path, relative: str) -> Path:
    """`relative` resolved inside `root`; refuses absolute paths, `..` escapes and symlinks out."""
    if not relative or relative.strip() != relative:
        raise DatasetError("dataset path is empty or has surrounding spaces")
    rel = Path(relative)
    if rel.is_absolute() or ".." in rel.parts:
        raise DatasetError(f"dataset path {relative!r} must be relative to the data root")
    try:
        base = root.resolve()
        target = (base / rel).resolve()
        inside, found = target.is_relative_to(base), target.is_file()
    except (OSError, ValueError) as exc:  # NUL bytes, names too long, loops
        raise DatasetError(f"dataset path {relative!r} is not usable: {exc}") from None
    if not inside:
        raise DatasetError(f"dataset path {relative!r} leaves the data root")
    if not found:
        raise DatasetError(f"dataset {relative!r} not found under the data root")
    return target


def read_dataset_file(
    path: Path, *, max_bytes: int | None = None, max_items: int | None = None
) -> list[DatasetItem]:
    """Read and parse a dataset file (format from its suffix)."""
    fmt = format_of(path.name)
    try:
        size = path.stat().st_size
        if max_bytes is not None and size > max_bytes:
            raise TooLarge(f"dataset is {size} bytes; the limit is {max_bytes}")
        data = path.read_bytes()
    except OSError as exc:
        raise DatasetError(f"cannot read dataset {path}: {exc.strerror}") from None
    return parse_dataset(data, fmt=fmt, max_items=max_items)
