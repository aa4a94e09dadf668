"""Pydantic models shared by the bank (writer/loader) and the scorer (consumer)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = 1
#: Probe classes: 0 = never trained, k = stage_k.
CLASSES = (0, 1, 2, 3, 4, 5, 6)


class StageScore(BaseModel):
    """The estimated training stage of one prompt or entity: the one result type, from the
    bank's `predict` through the engine and jobs to the HTTP response."""

    stage_probabilities: list[float] = Field(description="classes 0..6, calibrated, sum to 1")
    estimated_stage: int = Field(description="argmax class (0 = never trained)")
    recency_score: float = Field(description="regression onto stage 1..6: higher = more recent")
    p_late: float = Field(description="probability of stages 4-6 vs 1-3 (early/late probe)")
    n_tokens: int = Field(description="prompt tokens (summed over templates for an entity)")
    in_bank_sample: bool | None = Field(
        None,
        description="true: the bank's probes were fitted on this alias (the entity, or the "
        "prompt's `aliases` entry), so the score is in-sample and reads better than the bank's "
        "held-out `evidence`; false: an alias the bank was not built on; null: unknown (no alias "
        "given, or a bank built before this was recorded)",
    )
    model_id: str = Field(description="the scored model (run/stage directory names)")
    bank_id: str = Field(description="digest of the bank's manifest")


class BankManifest(BaseModel):
    """BANK_DIR/manifest.json: what the bank is, what it was fitted on, and every file's hash."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = SCHEMA_VERSION
    bank_id: str
    model_fingerprint: str = Field(description="sha256 over the model's weight files")
    model_path: str = Field(description="absolute path of the model directory at build time")
    run_path: str
    layer: int
    position: str
    hook: str
    d_model: int
    classes: list[int] = Field(default_factory=lambda: list(CLASSES))
    templates: list[str] = Field(description="probe templates with '{alias}' placeholders")
    max_tokens: int
    seed: int
    created_at: str
    corpus: dict[str, str] = Field(description="corpus file name -> sha256")
    files: dict[str, str] = Field(description="every other BANK_DIR file -> sha256")
