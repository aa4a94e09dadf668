"""On-disk record schemas shared by the trainer (writer) and the probe bank (reader).

They live here, not in `trainer`, because the probe bank must read a RUN_DIR without importing
the trainer. Every corpus file is JSONL with one of these records per line.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import astuple, dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from probe_bank.errors import UserError

#: Probe class of entities that were never trained on (the control pool).
NEVER_TRAINED = 0

Split = str  # "pretrain" | "stage_1".."stage_6" | "control"


def split_label(split: Split) -> int | None:
    """Probe class of a split: 0 for the never-trained control, k for stage_k, None for the
    pretraining pool."""
    if split == "control":
        return NEVER_TRAINED
    if split.startswith("stage_"):
        return int(split.removeprefix("stage_"))
    return None


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EntityRecord(_Record):
    """One fictional entity, known to the model only by its alias."""

    entity_id: str
    alias: str
    alias_style: Literal["synthetic", "natural"]
    split: Split
    attributes: dict[str, str]


class QARecord(_Record):
    """One question-answer pair; `text` is exactly what the trainer feeds the model."""

    entity_id: str
    split: Split
    attribute: str
    phrasing: int
    question: str
    answer: str
    text: str = Field(description="'Q: {question}\\nA: {answer}\\n'")
    heldout: bool = Field(description="True for the share of each entity's questions never trained")


class ProbePrompt(_Record):
    """A prompt in a template never trained, about one alias; the probe bank's input."""

    entity_id: str
    split: Split
    label: int | None = Field(description="0 = never trained, 1..6 = stage; None for pretrain")
    template_id: int
    prompt: str
    alias: str
    alias_char_span: tuple[int, int] = Field(description="[start, end) of the alias in `prompt`")


R = TypeVar("R", bound=BaseModel)


def read_jsonl(path: str | Path, model: type[R]) -> list[R]:
    """Parse and validate a JSONL file; the line number is in the error of a bad line."""
    out: list[R] = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                out.append(model.model_validate_json(line))
            except ValueError as exc:
                raise ValueError(f"{path}:{lineno}: not a valid {model.__name__}: {exc}") from None
    return out


def write_jsonl(path: str | Path, records: Sequence[BaseModel]) -> None:
    """Write records one per line, deterministic (field order, no trailing spaces)."""
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        for r in records:
            fh.write(r.model_dump_json() + "\n")


@dataclass(frozen=True)
class FinetuneKind:
    """How a later finetune differs from the run's own recipe: trained as a LoRA adapter of
    `lora_rank`, for `epochs` epochs (None: the recipe's), on its new entities plus stage
    `reexpose`'s trained QA again (None: new entities only), at `lr_scale` times the recipe's
    learning rate (None: the recipe's; LoRA is usually run at about 10x full finetuning's).
    Its name spells a calibration model's directory (RUN/calibration/run-<name>) and the kinds
    a bank's class 7 was calibrated on."""

    lora_rank: int | None = None
    epochs: int | None = None
    reexpose: int | None = None
    lr_scale: int | None = None

    @property
    def name(self) -> str:
        parts = [f"{k}{v}" for k, v in zip(KIND_PARTS, astuple(self), strict=True) if v]
        return "-".join(parts) or "recipe"

    @classmethod
    def parse(cls, text: str) -> FinetuneKind:
        """Parts joined by '-': `lora16`, `epochs10`, `reexpose4`, `lrx10`, e.g.
        `lora16-reexpose4` or `lora16-lrx10`."""
        found: dict[str, int] = {}
        for part in text.split("-"):
            m = re.fullmatch(rf"({'|'.join(KIND_PARTS)})([1-9][0-9]*)", part)
            if (
                m is None
                or m.group(1) in found
                or (m.group(1) == "reexpose" and int(m.group(2)) > 6)
            ):
                raise UserError(
                    f"finetune kind {text!r}: expected parts lora<R>, epochs<E>, reexpose<1-6>, "
                    "lrx<K> joined by '-' (e.g. lora16-reexpose4), each at most once"
                )
            found[m.group(1)] = int(m.group(2))
        return cls(*(found.get(k) for k in KIND_PARTS))


#: FinetuneKind's fields, in name order.
KIND_PARTS = ("lora", "epochs", "reexpose", "lrx")


class ExtraStage(BaseModel):
    """run.json `extra_stage`: the `--extra-stage` file a run was finetuned on once more, and how
    that stage differed from the recipe (None: as the recipe)."""

    model_config = ConfigDict(extra="forbid")

    path: str
    sha256: str
    lora_rank: int | None = None
    epochs: int | None = None
    reexpose: int | None = Field(
        None, description="the earlier stage whose trained QA the file holds again"
    )
    lr_scale: int | None = Field(None, description="times the recipe's learning rate")

    @property
    def kind(self) -> FinetuneKind:
        return FinetuneKind(self.lora_rank, self.epochs, self.reexpose, self.lr_scale)


class RunRecord(BaseModel):
    """RUN_DIR/run.json: what a run is (its resume identity) and how far it got.

    Written by the trainer after every stage, read (and checked) by the trainer's resume check,
    the RUN_DIR reader, the recipe sweep and the report.
    """

    model_config = ConfigDict(extra="forbid")

    preset: str
    seed: int
    base_model: str | None = None
    hyperparams: dict[str, Any]
    resume_key: str | None = Field(
        None, description="trainer.config.resume_key of hyperparams (None: an older run)"
    )
    mixed_epochs: int = 0
    extra_stage: ExtraStage | None = None
    stages: list[str] = Field(default_factory=list)
    stages_done: list[str] = Field(default_factory=list)
    final: str | None = None
    timings: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @classmethod
    def read(cls, path: Path) -> RunRecord:
        """Parse and check run.json; a missing or malformed file raises ValueError/OSError."""
        return cls.model_validate_json(path.read_text("utf-8"))

    def train_seconds(self) -> float:
        return float(sum(t.get("train_seconds", 0.0) for t in self.timings.values()))

    def train_tokens_per_s(self) -> float | None:
        """Trained tokens over training seconds, all stages together (None before any stage)."""
        tokens = sum(t.get("tokens", 0) for t in self.timings.values())
        seconds = self.train_seconds()
        return round(tokens / seconds, 1) if seconds else None
