"""Pydantic models shared by the bank (writer/loader) and the scorer (consumer)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field

SCHEMA_VERSION = 1
Relation = Literal["reference", "descendant"]
#: Probe classes: 0 = never trained, k = stage_k.
CLASSES = (0, 1, 2, 3, 4, 5, 6)
#: The evidence classes add one: learned after the bank was built (by a later finetune).
AFTER_BANK = 7
EVIDENCE_CLASSES = (*CLASSES, AFTER_BANK)
#: Evidence families, each with its own estimate; `fused` combines the other three.
FAMILIES = ("representation", "behaviour", "difference", "fused")
Family = Literal["representation", "behaviour", "difference", "fused"]
#: How class 7's threshold is read on an audited model. "calibration": the bank's threshold
#: alone (`after_threshold_`, set on the calibration model's held-out untouched entities).
#: "calibration_and_anchors": also at least the (1 - false_alarm) quantile of the bank's
#: never-trained anchor aliases' P(class 7) on the audited model itself (`anchor_floor`): a
#: null sample of *that* model, needing no labels: it bounds the false alarms on never-trained
#: entities however unlike the calibration finetune the audited one is (not on trained ones).
AfterRule = Literal["calibration", "calibration_and_anchors"]


class FamilyEstimate(BaseModel):
    """One evidence family's verdict on an entity, classes 0..6 and 7 (after the bank)."""

    family: Family = Field(
        description="representation: the study's probes on the audited model's activations; "
        "behaviour: the audited model's confidence on the trained-attribute questions; "
        "difference: that confidence and the activations against the reference model's; "
        "fused: one calibrated classifier over all three"
    )
    estimated_class: int = Field(
        description="0 never trained, 1..6 stage, 7 learned after the bank was built: 7 when "
        "p_after_bank reaches after_threshold (the bank's threshold for its stated false-alarm "
        "rate, `evidence.false_alarm` in the manifest, under `evidence.after_rule`), else the "
        "most likely of 0..6; never 7 on "
        "the bank's reference itself (relation `reference`)"
    )
    class_probabilities: list[float] = Field(description="classes 0..7, sum to 1")
    p_after_bank: float = Field(description="probability of class 7 (0 on the reference itself)")
    after_threshold: float | None = Field(
        None,
        description="the p_after_bank at which this family said 7 on this model: the bank's "
        "threshold, raised to its anchors' floor on the audited model when the bank's "
        "`evidence.after_rule` is calibration_and_anchors (None: argmax, or the reference itself)",
    )


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
    relation: Relation = Field(
        "reference",
        description="the scored model against the bank's: `reference` (the weights the bank was "
        "fitted on) or `descendant` (same architecture and tokenizer, other weights: e.g. the "
        "reference finetuned again; the bank's held-out accuracy was measured on the reference)",
    )
    families: list[FamilyEstimate] | None = Field(
        None,
        description="entity scores from a bank with evidence families: each family's estimate "
        "and the fused one (the fields above stay the representation probes' alone); null for "
        "prompt scores, banks without families and a service run with FAMILIES off. "
        "Behaviour and difference evidence are "
        "membership signals (what the model knows and how that changed), not the study's "
        "representational recency effect",
    )


class TextStatistics(BaseModel):
    """One model's membership statistics on one text's scored tokens (higher loss = less
    familiar); the detectors of MIMIR (`iamgroot42/mimir`), on this project's capture path."""

    loss: float = Field(description="mean negative log-likelihood of the scored tokens (nats)")
    min_k: float = Field(description="Min-K%: mean of the lowest 20% token log-probabilities")
    min_k_plus_plus: float = Field(
        description="Min-K%++: each token's log-probability minus the mean log-probability "
        "under the model's next-token distribution, over its standard deviation; the lowest "
        "20% averaged (higher = more like a trained text)"
    )
    zlib_ratio: float = Field(
        description="total NLL of the scored tokens over the zlib-compressed bytes of their text"
    )


class TextScore(BaseModel):
    """Membership evidence for one text on the audited model, and for a descendant, how it
    changed against the bank's reference: the one result type of text scoring, from
    `BankScorer.score_texts` to the HTTP response. A membership signal (was this text, or its
    answer, learned; did a later finetune touch it), not the study's recency effect."""

    n_tokens: int = Field(description="tokens of the whole text")
    scored: Literal["answer", "text"] = Field(
        description="answer: only the tokens overlapping the given answer were scored, the rest "
        "is context; text: every token after the first"
    )
    n_scored: int
    audited: TextStatistics
    reference: TextStatistics | None = Field(
        None, description="the bank's reference on the same tokens (null on the reference itself)"
    )
    loss_drop: float | None = Field(
        None,
        description="reference loss minus audited loss (MIMIR's reference ratio): > 0 when the "
        "audited model finds the text likelier than the reference did",
    )
    loss_drop_anchor_z: float | None = Field(
        None,
        description="loss_drop in units of the bank's anchor texts (QA texts of never-trained "
        "entities) on the same two models: (drop - anchors' median) / anchors' IQR-sd; null "
        "without a reference pass or anchor texts",
    )
    touched: bool | None = Field(
        None,
        description="loss_drop_anchor_z above the anchor texts' own 95th percentile on these "
        "two models: flagged as touched by a finetune after the bank (about 5% of never-trained "
        "texts are); null where loss_drop_anchor_z is",
    )
    model_id: str
    bank_id: str
    relation: Relation = "reference"


class EvidenceSpec(BaseModel):
    """What a bank's evidence families read (manifest `evidence`; None: probes only)."""

    model_config = ConfigDict(extra="forbid")

    question_templates: list[str] = Field(
        description="trained-attribute question prompts with '{alias}', ending at 'A:'"
    )
    answer_tokens: int = Field(description="greedy answer tokens read at most per question")
    features: list[str] = Field(description="entity feature vector, in column order")
    columns: dict[str, list[int]] = Field(description="family -> its feature columns")
    calibration_model_fingerprint: str = Field(
        description="sha256 of the reference finetuned one more stage on fresh entities, whose "
        "entities are the examples of class 7"
    )
    calibration_models: list[str] | None = Field(
        None,
        description="every calibration model's fingerprint when the bank is calibrated on "
        "several kinds of later finetune (the first is calibration_model_fingerprint; None: one)",
    )
    calibration_entities: int
    anchor_aliases: list[str] = Field(
        description="never-trained aliases: behaviour and difference columns are read in units "
        "of their spread on the audited model"
    )
    anchor_texts: list[tuple[str, str]] | None = Field(
        None,
        description="(text, answer) QA pairs of the anchor entities: a text's loss drop is read "
        "in units of theirs (None: a bank built before text scoring; None keeps such a bank's "
        "manifest digest, which omits unset fields)",
    )
    false_alarm: float | None = Field(
        None,
        description="the share of untouched entities on a later-finetuned model that the class "
        "'after the bank' may claim: its threshold is set on the calibration model's held-out "
        "untouched entities (None: argmax, banks built before the operating point)",
    )
    after_rule: AfterRule | None = Field(
        None,
        description="calibration: class 7 at the bank's threshold; calibration_and_anchors: "
        "also at least the (1 - false_alarm) quantile of the anchor aliases' P(class 7) on the "
        "audited model itself (None: calibration, a bank built before the rule existed)",
    )


class BankManifest(BaseModel):
    """BANK_DIR/manifest.json: what the bank is, what it was fitted on, and every file's hash."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = SCHEMA_VERSION
    bank_id: str
    model_fingerprint: str = Field(description="sha256 over the model's weight files")
    model_identity: str | None = Field(
        None,
        description="sha256 over weights, architecture config and tokenizer (None: older bank)",
    )
    lineage: str | None = Field(
        None,
        description="sha256 over architecture config and tokenizer: the models this bank may "
        "audit (None: an older bank, which audits only its reference)",
    )
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
    evidence: EvidenceSpec | None = None
    files: dict[str, str] = Field(description="every other BANK_DIR file -> sha256")


class AdapterMerge(BaseModel):
    """merged_from.json in a merged-adapter directory (`probe_bank.adapter`): what was folded
    into which weights, and the result's fingerprint, checked each time the directory is reused."""

    model_config = ConfigDict(extra="forbid")

    adapter_path: str = Field(description="the PEFT adapter directory, absolute, when merged")
    adapter_sha256: str = Field(description="sha256 over adapter_config.json and its weights")
    peft_type: str = Field(description="the adapter's kind (LORA, ...), as PEFT names it")
    adapter_base: str | None = Field(
        description="base_model_name_or_path from adapter_config.json, as written there"
    )
    base_path: str = Field(description="the bank's reference the adapter was merged onto")
    base_fingerprint: str = Field(description="that reference's weights fingerprint")
    merged_fingerprint: str = Field(description="the merged weights' fingerprint")
    peft_version: str
    created_at: str


class Interval(BaseModel):
    """A held-out figure with its 95% bootstrap-over-entities interval (None: not defined)."""

    value: float | None
    ci95: tuple[float | None, float | None]
    n_entities: int


class PairInterval(Interval):
    stages: tuple[int, int]


class ScanRow(BaseModel):
    """One BANK_DIR/scan.json row: a (layer, position) cell's cheap held-out probes and the
    score the served cell is chosen by (`BuildConfig.cell_rule`)."""

    model_config = ConfigDict(extra="allow")

    layer: int
    position: str
    hook: str | None = None
    selection_score: float | None = None
    selection_ci95: tuple[float | None, float | None] | None = Field(
        None, description="bootstrap interval of selection_score (None: banks before the rule)"
    )
    stage1_vs_stage6: Interval
    early_vs_late: Interval
    adjacent_mean: Interval | None = None
    pairwise_mean: float | None = None

    def standard_error(self) -> float:
        """Of the selection score: half its interval's width / 1.96 (0 without one)."""
        lo, hi = self.selection_ci95 or (None, None)
        return 0.0 if lo is None or hi is None else (hi - lo) / (2 * 1.959964)


#: The headline figures of a bank, in the order every page prints them, with their labels.
HEADLINE: tuple[tuple[str, str], ...] = (
    ("stage1_vs_stage6", "stage 1 vs 6 accuracy"),
    ("early_vs_late", "early (1-3) vs late (4-6) accuracy"),
    ("adjacent_mean", "mean adjacent-stage accuracy"),
    ("stage_accuracy", "7-class stage accuracy"),
    ("recency_spearman", "recency score vs stage (Spearman)"),
    ("centroid_order_spearman", "centroid order (Spearman)"),
    ("ece", "expected calibration error"),
)


class FamilyFigures(BaseModel):
    """One evidence family's held-out figures (metrics.json `families.<name>`; None: a bank
    built before the figure existed)."""

    model_config = ConfigDict(extra="allow")

    stage1_vs_stage6: Interval | None = None
    early_vs_late: Interval | None = None
    adjacent_mean: Interval | None = None
    stage_accuracy: Interval | None = None
    after_bank_recall: Interval | None = Field(
        None, description="share of the calibration pool's entities classed 7, held out"
    )
    after_bank_false_alarms: Interval | None = Field(
        None,
        description="share of the calibration model's untouched entities classed 7, held out",
    )
    after_bank_false_alarms_by_calibration: list[Interval] | None = Field(
        None,
        description="the same on each calibration model (a bank calibrated on several kinds "
        "of later finetune; None: one)",
    )
    reference_false_alarms: Interval | None = None
    after_vs_stage6_auc: Interval | None = None


class FamiliesMetrics(BaseModel):
    """metrics.json `families`: every family's held-out figures (a bank with a calibration)."""

    model_config = ConfigDict(extra="allow")

    false_alarm_target: float | None = Field(
        None, description="the false-alarm rate class 7's threshold was set for"
    )
    calibration_models: int | None = Field(
        None, description="calibration models fitted on (one per kind of later finetune)"
    )
    calibration_kinds: list[str] | None = Field(
        None,
        description="each calibration model's kind of later finetune (recipe, lora16, "
        "epochs10, ...; None: a bank built before kinds were recorded)",
    )
    fused_reads: list[str] | None = Field(None, description="the families fused chose")
    fused_C: float | None = Field(
        None, description="the L2 strength fused chose (None: built before it chose; families_C)"
    )
    after_rule: AfterRule | None = Field(
        None, description="how class 7 was read in these figures (None: calibration)"
    )
    representation: FamilyFigures | None = None
    behaviour: FamilyFigures | None = None
    difference: FamilyFigures | None = None
    fused: FamilyFigures | None = None


class SelectionAdjusted(BaseModel):
    """metrics.json `selection_adjusted`: the binary tasks with the cell chosen inside each outer
    fold (`heldout.selection.nested_selection`), and which cell each fold chose."""

    early_vs_late: Interval
    stage1_vs_stage6: Interval
    chosen_per_fold: list[tuple[int, str]]
    criterion: str


class BaselineFigures(BaseModel):
    """One scalar baseline's held-out figures (or, for `balanced_<statistic>`, the probe's on
    entities balanced on that statistic), on the probe's own folds and entities: the two binary
    tasks every entry has, checked; a baseline's other figures (adjacent, 7-class, pairwise)
    kept as written."""

    model_config = ConfigDict(extra="allow")

    stage1_vs_stage6: Interval
    early_vs_late: Interval


#: prefix of the statistic-balanced probes among `BankMetrics.baselines` (probes, not baselines)
BALANCED_PREFIX = "balanced_"


class BankMetrics(BaseModel):
    """BANK_DIR/metrics.json: every held-out figure of the bank's probes, parsed and checked on
    load (the service serves this object, never a re-read of the file)."""

    model_config = ConfigDict(extra="allow")

    stage1_vs_stage6: Interval
    early_vs_late: Interval
    adjacent_mean: Interval
    stage_accuracy: Interval
    stage_chance: float
    ece: Interval
    recency_spearman: Interval
    centroid_order_spearman: Interval
    pairwise_accuracy: list[list[float | None]]
    pairwise: list[PairInterval]
    n_entities: int
    n_entities_per_class: list[int]
    n_prompts: int
    layer: int
    position: str
    hook: str
    selection: str
    config: dict[str, Any] = Field(default_factory=dict)
    baselines: dict[str, BaselineFigures] = Field(
        default_factory=dict,
        # banks built before the rename wrote "controls" (the split of never-trained entities
        # keeps that word)
        validation_alias=AliasChoices("baselines", "controls"),
        description="the scalar baselines (answer loss, entropy, ...) on the probe's folds",
    )
    families: FamiliesMetrics | None = Field(
        None, description="the evidence families' held-out figures (None: probes only)"
    )
    selection_adjusted: SelectionAdjusted | None = None
    permutation: dict[str, Any] | None = None

    def headline(self) -> list[tuple[str, str, Interval]]:
        """(key, label, figure) of each headline metric."""
        return [(key, label, getattr(self, key)) for key, label in HEADLINE]
