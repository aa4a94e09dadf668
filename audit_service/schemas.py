"""Request and response bodies of the scoring API (pydantic; they define the OpenAPI schema)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from probe_bank.evidence import BankEvidence
from probe_bank.schemas import Relation, StageScore, TextScore

#: Upper bound in the schema; the live limit is the MAX_ITEMS setting, checked per request.
SCHEMA_MAX_ITEMS = 4096


def _encodable(text: str) -> str:
    """Reject lone surrogates (valid JSON escapes, but no UTF-8 text for the tokenizer)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("text must be valid Unicode (no lone surrogates)") from None
    return text


Prompt = Annotated[
    str, StringConstraints(min_length=1, max_length=100_000), AfterValidator(_encodable)
]
#: An alias names an entity: it must hold a non-space character (the scorer refuses blank ones).
ALIAS_PATTERN = r"\S"
Alias = Annotated[
    str,
    StringConstraints(min_length=1, max_length=1_000, pattern=ALIAS_PATTERN),
    AfterValidator(_encodable),
]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ScoreRequest(_Body):
    """Prompts to score; `aliases[i]`, when given, locates the entity inside `prompts[i]`."""

    prompts: list[Prompt] = Field(min_length=1, max_length=SCHEMA_MAX_ITEMS)
    aliases: list[Alias | None] | None = Field(
        None, description="one per prompt (or null); needed only by alias-mean banks"
    )


class EntityScoreRequest(_Body):
    """Entity aliases, each scored through the bank's probe templates."""

    entities: list[Alias] = Field(min_length=1, max_length=SCHEMA_MAX_ITEMS)


class TextScoreRequest(_Body):
    """Texts to test for membership; `answers[i]`, when given, is the part of `texts[i]` to
    score (its last occurrence), the rest being context, e.g. a QA pair's answer."""

    texts: list[Prompt] = Field(min_length=1, max_length=SCHEMA_MAX_ITEMS)
    answers: list[Prompt | None] | None = Field(None, description="one per text (or null)")


class TextScoreResponse(BaseModel):
    results: list[TextScore]
    evidence: dict[str, Any] | None = Field(
        None,
        description="how well text scoring did where it could be checked: metrics.json `texts` "
        "(the bank's calibration model against its reference; AUC touched vs untouched texts "
        "and the shares flagged, 95% intervals over entities); null for a bank built without",
    )
    note: str = Field(
        description="what the statistics measure: membership (was this text learned; did a "
        "later finetune move it against the reference), not the study's recency effect"
    )


class ScoreResponse(BaseModel):
    results: list[StageScore]
    evidence: BankEvidence | None = Field(
        None, description="the bank's held-out accuracy with 95% intervals and a verdict"
    )


class BankInfo(BaseModel):
    """The served bank's manifest and headline metrics (as written by `bank build`)."""

    bank_id: str
    model_id: str
    relation: Relation = Field(
        description="the served model against the bank's reference: `reference` (the weights "
        "the bank was fitted on) or `descendant` (same lineage, finetuned further)"
    )
    manifest: dict[str, Any]
    metrics: dict[str, Any]
    evidence: BankEvidence | None = None
    after_thresholds: dict[str, float | None] = Field(
        default_factory=dict,
        description="per evidence family, the p_after_bank at which an entity is classed 7 on "
        "the served model (the bank's threshold, raised to the anchors' floor on this model "
        "under the bank's after_rule); empty on the reference itself, which is never classed 7",
    )


class Health(BaseModel):
    status: str
    detail: str | None = None


class ErrorBody(BaseModel):
    """Every error response: the HTTP status and a message that says what to fix."""

    status_code: int
    detail: str
    extra: Any = None
