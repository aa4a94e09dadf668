"""Service settings, read from `RECENCY_AUDIT_*` environment variables (pydantic-settings).

`RECENCY_AUDIT_API_KEYS` is a comma-separated list of keys, each optionally followed by its scopes:
`alice,bob:score,ci:score+jobs,ops:admin`. A bare key gets every scope; `admin` implies all scopes.
Scopes: `score` (scoring and bank endpoints), `jobs` (batch jobs), `admin` (metrics and health when
they are closed, plus everything else). With no keys configured, authentication is off (local use).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

#: Scopes a key can hold; `admin` implies the others.
SCOPES = frozenset({"score", "jobs", "admin"})


def parse_api_keys(raw: str | dict[str, frozenset[str]] | None) -> dict[str, frozenset[str]]:
    """Parse `key[:scope+scope],...` into {key: scopes}; a bare key gets every scope."""
    if raw is None:
        return {}
    if isinstance(raw, dict):
        return {str(k): frozenset(v) for k, v in raw.items()}
    keys: dict[str, frozenset[str]] = {}
    for entry in raw.split(","):
        entry = entry.strip()
        if not entry:
            continue
        key, _, scope_text = entry.partition(":")
        key = key.strip()
        scopes = frozenset(s.strip() for s in scope_text.split("+") if s.strip()) or SCOPES
        unknown = scopes - SCOPES
        if not key:
            raise ValueError("an API key is empty")
        if unknown:
            raise ValueError(f"unknown API key scope(s) {sorted(unknown)}; known: {sorted(SCOPES)}")
        keys[key] = SCOPES if "admin" in scopes else scopes
    return keys


class JobsConfig(BaseSettings):
    """Batch-job knobs from `RECENCY_AUDIT_JOBS_*` (data and state roots are service settings)."""

    model_config = SettingsConfigDict(env_prefix="RECENCY_AUDIT_JOBS_", extra="ignore")

    chunk_size: int = Field(default=64, ge=1, description="inputs per committed chunk")
    chunk_pause_s: float = Field(
        default=0.0, ge=0, description="sleep after each chunk (tests, throttling)"
    )
    max_upload_bytes: int = Field(
        default=64 * 1024 * 1024, ge=1, description="dataset size limit -> 413"
    )
    max_items: int = Field(default=1_000_000, ge=1, description="inputs per job")
    retries: int = Field(default=3, ge=0, description="retries of a chunk the engine failed")
    synchronous: str = Field(
        default="FULL", pattern="^(FULL|NORMAL|EXTRA)$", description="SQLite fsync mode"
    )


class ServiceSettings(BaseSettings):
    """Everything the service reads from its environment; see the module docstring for API_KEYS."""

    model_config = SettingsConfigDict(env_prefix="RECENCY_AUDIT_", extra="ignore")

    home: Path = Field(
        default=Path("artifacts"), description="where the embedded default run and bank live"
    )
    bank_dir: Path | None = Field(
        default=None, description="bank to serve; default HOME/banks/default"
    )
    model_dir: Path | None = Field(
        default=None,
        description="model to audit: a model directory or a PEFT adapter directory (merged "
        "onto the bank's reference under HOME/merged); default the bank's model_path",
    )
    expected_bank_id: str | None = Field(
        default=None,
        description="pin the bank: serve only this bank id (the digest of its manifest, which "
        "lists every file's SHA-256); anything else fails to load (/readyz 503)",
    )
    api_keys: Annotated[dict[str, frozenset[str]], NoDecode] = Field(
        default_factory=dict,
        description="comma-separated `key[:scope+scope]`; empty = auth off",
        repr=False,
    )
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    max_batch_size: int = Field(default=32, ge=1, description="items per forward pass")
    max_batch_tokens: int = Field(default=8192, ge=1, description="padded tokens per forward pass")
    max_batch_entities: int = Field(
        default=32,
        ge=1,
        description="entities per evidence-family pass (each runs the bank's question prompts "
        "through the audited model, and through the reference for a descendant)",
    )
    max_wait_ms: float = Field(
        default=2.0,
        ge=0,
        description="how long a batch waits to fill up (0: batch only what queued)",
    )
    adaptive_wait: bool = Field(
        default=True,
        description="wait MAX_WAIT_MS only under load (the last batch held several requests' "
        "items, or several requests' are queued); a lone request is forwarded at once",
    )
    queue_size: int = Field(
        default=1024, ge=1, description="items waiting per priority; more -> 429"
    )
    request_timeout_s: float = Field(
        default=30.0, gt=0, description="live request deadline; past it -> 504"
    )
    max_items: int = Field(default=64, ge=1, description="prompts or entities per request")
    max_body_bytes: int = Field(
        default=1_000_000, ge=1, description="request body limit; more -> 413"
    )
    read_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="a request's headers and body must arrive within this; else the connection "
        "is closed (slow clients)",
    )
    keep_alive_s: float = Field(default=5.0, gt=0, description="idle keep-alive connections close")
    http_parser: Literal["auto", "httptools", "h11"] = Field(
        default="auto",
        description="HTTP/1.1 parser: httptools (C) when installed, else h11 (pure Python)",
    )
    event_loop: Literal["auto", "uvloop", "asyncio"] = Field(
        default="auto",
        description="the server's event loop: uvloop (libuv, C) when installed, else asyncio's",
    )
    max_connections: int = Field(
        default=1000, ge=1, description="concurrent connections and tasks; more -> 503"
    )
    open_health: bool = Field(default=True, description="/healthz and /readyz without a key")
    open_metrics: bool = Field(default=True, description="/metrics without a key")
    state_dir: Path | None = Field(default=None, description="batch job state; default HOME/state")
    data_dir: Path | None = Field(
        default=None, description="batch job inputs/outputs; default HOME/data"
    )
    naive_baseline: bool = Field(
        default=False,
        description="benchmark only: one prompt per forward, full model, all hidden states",
    )
    null_model: bool = Field(
        default=False,
        description="benchmark only: every request takes the served path (validation, "
        "tokenization, queue, batching, the worker hop, serialisation) but each forward returns "
        "one fixed result: the stack's own ceiling for a scoring endpoint",
    )
    torch_threads: int | None = Field(
        default=None,
        ge=1,
        description="intra-op threads of the model's forward (None: torch's default, i.e. "
        "OMP_NUM_THREADS or every core); fewer leaves a core to the event loop, which favours "
        "small models (bench/RESULTS.md)",
    )
    warmup: bool = Field(default=True, description="run one forward pass before reporting ready")
    families: bool = Field(
        default=True,
        description="entity scores carry the bank's evidence families when it has them (off: "
        "probes only, the cheap path: no question prompts, no reference pass)",
    )
    gc_freeze: bool = Field(
        default=True,
        description="once loaded, move every object so far (model, tokenizer, app) to the "
        "collector's permanent generation, so full collections stop walking them",
    )
    jobs: JobsConfig = Field(
        default_factory=JobsConfig, description="batch jobs (`RECENCY_AUDIT_JOBS_*`)"
    )

    @field_validator("api_keys", mode="before")
    @classmethod
    def _parse_keys(cls, value: object) -> dict[str, frozenset[str]]:
        if value is None or isinstance(value, str | dict):
            return parse_api_keys(value)
        raise ValueError("API_KEYS must be a comma-separated string")

    @property
    def resolved_bank_dir(self) -> Path:
        """The bank to serve: BANK_DIR, else the embedded default under HOME."""
        return self.bank_dir if self.bank_dir is not None else self.home / "banks" / "default"

    @property
    def resolved_state_dir(self) -> Path:
        return self.state_dir if self.state_dir is not None else self.home / "state"

    @property
    def resolved_data_dir(self) -> Path:
        return self.data_dir if self.data_dir is not None else self.home / "data"

    @property
    def auth_enabled(self) -> bool:
        return bool(self.api_keys)
