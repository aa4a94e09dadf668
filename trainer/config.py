"""The training recipe: one pydantic model holding every lever, and named presets as plain data.

The recipe that shows the recency effect is researched separately (issue 4); keeping every knob a
field (and presets as dicts) lets that work change values without touching code.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    model_serializer,
    model_validator,
)

from probe_bank.errors import UserError


class _Group(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CorpusConfig(_Group):
    """The aliased-entity corpus: how aliases look, how many entities each split holds, and how
    many questions each entity gets (and keeps held out)."""

    alias_style: Literal["synthetic", "natural"] = "synthetic"
    synthetic_letters: int = Field(default=5, ge=2, le=12, description="letters inside `<...>`")
    synthetic_delimiters: tuple[str, str] = ("<", ">")
    natural_adjectives: int = Field(default=2, ge=1, le=4, description="adjectives before the noun")
    alias_tokens: int | None = Field(
        default=None, ge=2, description="token count every alias must have; None = the most common"
    )
    entities_per_stage: int = Field(default=100, ge=2)
    control_entities: int = Field(default=100, ge=2, description="never-trained entities (class 0)")
    pretrain_entities: int = Field(
        default=200, ge=0, description="stage-0 pool (from scratch; on a base see warmup_on_base)"
    )
    warmup_on_base: bool = Field(
        default=False,
        description="on a pretrained base, also train the stage-0 pool first: a format warm-up "
        "on entities never probed (stage0_epochs at stage0_lr)",
    )
    familiarity_entities: int = Field(
        default=0,
        ge=0,
        description="pool of aliases trained to answer 'unknown' (never probed); 0 = off",
    )
    phrasings_per_attribute: int = Field(default=2, ge=1, le=3)
    heldout_per_entity: int = Field(
        default=2, ge=0, description="questions per entity never trained"
    )


class ArchConfig(_Group):
    """The tokenizer and transformer trained from scratch (unused on a pretrained base, except
    `block_size`, the longest training sequence)."""

    vocab_size: int = Field(default=1024, ge=300)
    n_layers: int = Field(default=4, ge=1)
    d_model: int = Field(default=256, ge=8)
    n_heads: int = Field(default=4, ge=1)
    d_ff: int = Field(default=1024, ge=8)
    block_size: int = Field(default=64, ge=16, description="max tokens per training sequence")


class OptimConfig(_Group):
    """How each stage is trained: epochs, learning rates and schedule, the optimiser, what
    carries loss, and what earlier data is replayed."""

    stage0_epochs: int = Field(default=8, ge=0)
    stage0_lr: float = Field(default=2e-3, gt=0)
    epochs_per_stage: int = Field(default=5, ge=1)
    lr: float = Field(default=3e-4, gt=0, description="stage 1..6 (and extras) learning rate")
    lr_schedule: Literal["constant", "cosine", "linear"] = "constant"
    warmup_steps: int = Field(default=10, ge=0)
    batch_size: int = Field(default=32, ge=1, description="global batch (split over processes)")
    weight_decay: float = Field(default=0.0, ge=0)
    adam_betas: tuple[float, float] = (0.9, 0.98)
    grad_clip: float = Field(default=1.0, ge=0, description="0 = no clipping")
    lora_rank: int | None = Field(
        default=None,
        ge=1,
        description="train LoRA adapters of this rank on every linear layer of the blocks, merged "
        "into the weights at the end of each stage (None = full finetuning, the study's default)",
    )
    lora_alpha: int | None = Field(
        default=None, gt=0, description="LoRA scale numerator; None = 2 x rank"
    )
    adam_foreach: bool | None = Field(
        default=None,
        description="torch's multi-tensor AdamW kernel (same maths, fewer kernel launches); "
        "None = torch's choice, which is the single-tensor loop on CPU",
    )
    loss_on: Literal["all", "answer"] = Field(default="all", description="tokens that carry loss")
    replay_stage0_share: float = Field(
        default=0.0,
        ge=0,
        description="stage-0 QA redrawn each epoch of later stages, share of its size",
    )
    replay_earlier_share: float = Field(
        default=0.0,
        ge=0,
        description="earlier stages' QA redrawn each epoch, share of the stage's size",
    )
    familiarity_share0: float = Field(
        default=0.0,
        ge=0,
        description="'unknown' examples per stage-0 epoch, share of stage 0's size",
    )
    familiarity_share: float = Field(
        default=0.0,
        ge=0,
        description="'unknown' examples per epoch of every later stage, share of size",
    )
    max_steps_per_stage: int | None = Field(
        default=None, ge=1, description="cap (tests, smoke runs)"
    )


#: The groups of a recipe, by field name of TrainConfig.
GROUPS: dict[str, type[_Group]] = {"corpus": CorpusConfig, "arch": ArchConfig, "optim": OptimConfig}
#: Which group each setting lives in: settings are named alone (`lr=...`) in presets, `--set`
#: and the run.json of runs written before the groups existed.
GROUP_OF: dict[str, str] = {f: g for g, cls in GROUPS.items() for f in cls.model_fields}


class TrainConfig(BaseModel):
    """One run's recipe (all stages share it), grouped by concern as litgpt's args are:
    `corpus`, `arch`, `optim`, then the run's own bookkeeping and seeds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    corpus: CorpusConfig = CorpusConfig()
    arch: ArchConfig = ArchConfig()
    optim: OptimConfig = OptimConfig()

    checkpoint_every: int = Field(50, ge=1, description="mid-stage checkpoint every N steps")
    retention_max_questions: int = Field(400, ge=1, description="per split and kind, for speed")
    seed: int = 0
    finetune_seed: int | None = Field(
        None,
        description="batch order and replay/unknown draws of stages 1..6 (and extras); None = seed."
        " Corpus, tokenizer and stage 0 stay a function of `seed`, so runs can share stage 0",
    )

    @property
    def stage_seed(self) -> int:
        """Seed of the finetuning stages' data order (`finetune_seed`, else `seed`)."""
        return self.seed if self.finetune_seed is None else self.finetune_seed

    @model_validator(mode="before")
    @classmethod
    def _grouped(cls, data: Any) -> Any:
        """Settings named alone (`lr`) or dotted (`optim.lr`) go into their group; a later key
        wins over an earlier one for the same setting."""
        if not isinstance(data, dict):
            return data
        out: dict[str, Any] = {}
        nested: dict[str, dict[str, Any]] = {}
        for key, value in data.items():
            group, dot, name = key.partition(".")
            if key in GROUPS and isinstance(value, BaseModel | dict):
                items = value.model_dump() if isinstance(value, BaseModel) else value
                nested.setdefault(key, {}).update(items)
            elif dot and group in GROUPS:
                nested.setdefault(group, {})[name] = value
            elif not dot and key in GROUP_OF:
                nested.setdefault(GROUP_OF[key], {})[key] = value
            else:
                out[key] = value  # a bookkeeping field, or unknown (refused: extra="forbid")
        return {**out, **nested}

    def flat(self) -> dict[str, Any]:
        """Every setting by its own name (JSON values): the view presets, `--set` and the resume
        key use, the same before and after the groups existed."""
        dumped = json.loads(self.model_dump_json())
        out = {k: v for k, v in dumped.items() if k not in GROUPS}
        for group in GROUPS:
            out.update(dumped[group])
        return out

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # An unset finetune_seed is left out, so run.json (and the resume check against it) of
        # runs made before the field existed stays the same.
        data: dict[str, Any] = handler(self)
        if self.finetune_seed is None:
            data.pop("finetune_seed", None)
        return data

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        a, c, o = self.arch, self.corpus, self.optim
        if a.d_model % a.n_heads:
            raise ValueError(f"d_model {a.d_model} is not divisible by n_heads {a.n_heads}")
        total = len(_attributes()) * c.phrasings_per_attribute
        if c.heldout_per_entity >= total:
            raise ValueError(f"heldout_per_entity must be < {total} questions per entity")
        if (o.familiarity_share0 or o.familiarity_share) and not c.familiarity_entities:
            raise ValueError("familiarity_share0/familiarity_share need familiarity_entities > 0")
        return self


def _attributes() -> tuple[str, ...]:
    from trainer.vocab import ATTRIBUTES

    return tuple(ATTRIBUTES)


#: Presets as plain data (issue 4 tunes these values).
PRESETS: dict[str, dict[str, Any]] = {
    # Whole train well under ~90 s on 2 shared cores: for tests.
    "tiny": {
        "entities_per_stage": 8,
        "control_entities": 8,
        "pretrain_entities": 16,
        "familiarity_entities": 0,
        "phrasings_per_attribute": 2,
        "heldout_per_entity": 2,
        "vocab_size": 400,
        "n_layers": 2,
        "d_model": 64,
        "n_heads": 4,
        "d_ff": 128,
        "block_size": 48,
        "stage0_epochs": 20,
        "stage0_lr": 3e-3,
        "epochs_per_stage": 10,
        "lr": 2e-3,
        "warmup_steps": 2,
        "batch_size": 16,
        "checkpoint_every": 10,
        "retention_max_questions": 64,
    },
    # The default: within 15 minutes on 2 cores.
    "small": {
        "entities_per_stage": 120,
        "control_entities": 120,
        "pretrain_entities": 300,
        "familiarity_entities": 0,
        "phrasings_per_attribute": 2,
        "heldout_per_entity": 2,
        "vocab_size": 1024,
        "n_layers": 4,
        "d_model": 192,
        "n_heads": 4,
        "d_ff": 768,
        "block_size": 64,
        "stage0_epochs": 6,
        "stage0_lr": 2e-3,
        "epochs_per_stage": 5,
        "lr": 3e-4,
        "warmup_steps": 10,
        "batch_size": 32,
        "replay_stage0_share": 0.3,
        "checkpoint_every": 50,
        "retention_max_questions": 300,
    },
    # The study's regime on a pretrained base (`--base-model smollm2-135m`): no stage 0, QA only,
    # `<|xxxxx|>` aliases, 5 of 6 questions trained, full finetuning with AdamW at the HF default
    # LR, 5 epochs per equal stage, answer-only loss. Sized for a ~90-minute run on 2 CPU cores.
    "pretrained": {
        "alias_style": "synthetic",
        "synthetic_delimiters": ["<|", "|>"],
        "synthetic_letters": 5,
        "entities_per_stage": 250,
        "control_entities": 250,
        "pretrain_entities": 0,
        "familiarity_entities": 0,
        "phrasings_per_attribute": 1,
        "heldout_per_entity": 1,
        "block_size": 48,
        "epochs_per_stage": 5,
        "lr": 5e-5,
        "lr_schedule": "linear",
        "warmup_steps": 0,
        "batch_size": 16,
        "weight_decay": 0.0,
        "adam_betas": [0.9, 0.999],
        "grad_clip": 1.0,
        "loss_on": "answer",
        "checkpoint_every": 100,
        "retention_max_questions": 100,
    },
}


#: Presets that finetune a pretrained base: the registered base used when `--base-model` is unset.
PRESET_BASES: dict[str, str] = {"pretrained": "smollm2-135m"}


def parse_override(item: str) -> tuple[str, Any]:
    """`key=value` from the command line; the value is parsed as JSON when it can be."""
    import json

    key, sep, raw = item.partition("=")
    if not sep or not key:
        raise UserError(f"--set expects KEY=VALUE, got {item!r}")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.strip(), value


def resolve_config(
    preset: str, *, seed: int | None = None, overrides: dict[str, Any] | None = None
) -> TrainConfig:
    """Preset values, then explicit overrides; bad names or values become a `UserError`."""
    if preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    values = {**PRESETS[preset], **(overrides or {})}
    if seed is not None:
        values["seed"] = seed
    try:
        return TrainConfig(**values)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "config"
        raise UserError(f"invalid setting {where}: {first['msg']}") from None


#: Fields that change how a run is carried out but not what it trains: a rerun that changes only
#: these still resumes (mid-stage checkpoint cadence, the optimiser's kernel choice).
RESUME_EXEMPT = frozenset({"checkpoint_every", "adam_foreach"})


def resume_key(hyperparams: dict[str, Any]) -> str:
    """A recipe's resume identity: SHA-256 of every field but RESUME_EXEMPT, defaults filled
    in, so a run recorded before a field existed (at its default) still resumes. A recorded
    recipe this version cannot read gets a key no current recipe has."""
    try:
        cfg = TrainConfig(**hyperparams)
    except ValidationError:
        return (
            "unreadable:"
            + hashlib.sha256(
                json.dumps(hyperparams, sort_keys=True, default=str).encode()
            ).hexdigest()
        )
    body = {k: v for k, v in cfg.flat().items() if k not in RESUME_EXEMPT}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
