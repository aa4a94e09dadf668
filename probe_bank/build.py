"""`bank build`: capture, scan layer x position, evaluate probes and scalar baselines, fit, save.

Held-out numbers come from entity-grouped folds; the probes saved in the bank are refitted on all
entities at the chosen layer and position.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import numpy as np
from pydantic import BaseModel, Field, PositiveFloat, ValidationError

from probe_bank.bank import (
    FAMILY_ROWS,
    FAMILY_WEIGHTS,
    FITTED_ENTITIES,
    fitted_entities_record,
    save_bank,
)
from probe_bank.capture import capture, hook_name
from probe_bank.errors import UserError
from probe_bank.families import families_to_tensors
from probe_bank.family_build import find_calibration, fit_families
from probe_bank.fingerprint import lineage_key, model_fingerprint, model_identity
from probe_bank.fit import fit_probes
from probe_bank.heldout.baselines import baseline_features, baseline_metrics
from probe_bank.heldout.folds import ProbeConfig, ProbeData
from probe_bank.heldout.metrics import (
    binary_metrics,
    binary_outcomes,
    binary_tasks,
    centroid_metrics,
    full_outcomes,
    stage_metrics,
)
from probe_bank.heldout.permutation import permutation_test
from probe_bank.heldout.selection import CellRule, choose_cell, nested_selection
from probe_bank.heldout.stats import interval
from probe_bank.modeling import load_model, n_layers
from probe_bank.run_dir import load_run, probe_data, templates_of
from probe_bank.schemas import AfterRule, ScanRow

log = logging.getLogger(__name__)


DEFAULT_POSITIONS = ("last", "alias_mean")


class BuildConfig(BaseModel):
    """What `bank build` scans and how it evaluates."""

    layers: list[int] | None = Field(default=None, description="blocks to scan; default all")
    layer_stride: int = Field(default=1, ge=1, description="with layers unset: every k-th block")
    positions: list[str] = Field(default_factory=lambda: list(DEFAULT_POSITIONS))
    cell_depth: float | None = Field(
        default=None,
        gt=0,
        lt=1,
        description="pre-registered headline block as a share of the model's blocks "
        "(int(depth * n_blocks)): no selection on the reported entities, the scan is then "
        "exploratory. None = the scan's best cell",
    )
    cell_position: str = Field(default="last", description="position of the pre-registered cell")
    cell_rule: CellRule = Field(
        default="one_se",
        description="how the scan picks the served cell without a pre-registered one: best = "
        "the highest score; one_se = the earliest block within one standard error of it (the "
        "blocks before the probed one run on every served prompt; `heldout.selection.CellRule`)",
    )
    scan_pairs: bool = Field(
        default=True, description="scan all 15 stage pairs (False: 1 vs 6 and early/late only)"
    )
    probe: ProbeConfig = Field(default_factory=ProbeConfig)
    n_boot: int = Field(default=1000, description="bootstrap resamples of the headline intervals")
    scan_n_boot: int = Field(default=200, description="resamples per cell of the layer scan")
    centroid_n_boot: int = Field(
        default=200, description="resamples of the centroid-order interval (each refits axes)"
    )
    balance_bins: int = 5
    batch_size: int = 32
    baselines: bool = Field(
        default=True, description="evaluate the scalar baselines (answer loss, entropy, ...)"
    )
    nested_selection: bool = True
    n_permutations: int = Field(default=100, ge=0, description="label shuffles for the null")
    families: bool = Field(
        default=True,
        description="fit the evidence families when RUN_DIR/calibration exists "
        "(`recency-audit calibrate`); without one the bank serves the probes alone",
    )
    families_C: float = Field(
        default=1.0, gt=0, description="L2 strength of the single-family classifiers"
    )
    families_fused_Cs: list[PositiveFloat] = Field(
        default=[0.1, 0.3, 1.0, 3.0, 10.0],
        min_length=1,
        description="the L2 strengths fused chooses among inside each training set (entity-"
        "grouped inner folds, least log-loss, with its column set); one value fixes it",
    )
    answer_tokens: int = Field(
        default=8, ge=1, description="greedy answer tokens the behaviour family reads per question"
    )
    families_questions: int | None = Field(
        default=None,
        ge=1,
        description="trained-attribute questions the behaviour and difference families ask per "
        "entity (the first k attributes in name order); None = one per attribute. Each question "
        "is a full forward and greedy answer on every scored entity, so this is the families' "
        "cost knob; the held-out figures are measured at the value the bank serves",
    )
    families_false_alarm: float | None = Field(
        default=0.01,
        gt=0,
        lt=1,
        description="the share of untouched entities on a later-finetuned model that may be "
        "classed 'after the bank' (its threshold is set on each calibration model's held-out "
        "rows); None = argmax over the 8 classes. A fifth of the 5% an auditor accepts: at 2.5% "
        "a finetune that re-exposed earlier data paid 5.7%, on that data's neighbours, which "
        "no calibration finetune shows; at 1% eight implants paid 0.1-1.3% (docs/RESULTS.md)",
    )
    families_after_rule: AfterRule = Field(
        default="calibration_and_anchors",
        description="how class 7's threshold is read on an audited model: calibration = the "
        "bank's threshold alone; calibration_and_anchors = also at least the (1 - false alarm) "
        "quantile of the never-trained anchors' P(class 7) on that model (`probe_bank.schemas."
        "AfterRule`); the held-out figures are read under the same rule",
    )
    families_entities_per_class: int | None = Field(
        default=None,
        ge=2,
        description="fit and evaluate the families on at most this many corpus entities per "
        "class (drawn with the probe seed); None = all. Bounds the build's cost on a large base",
    )


def per_class_sample(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Sorted indices of at most `n` entities of each class, drawn without replacement."""
    rng = np.random.default_rng(seed)
    keep = [
        rng.choice(idx, min(n, len(idx)), replace=False)
        for idx in (np.flatnonzero(labels == c) for c in np.unique(labels))
    ]
    return np.sort(np.concatenate(keep))


def scan(
    acts: dict[str, dict[str, np.ndarray]], table: ProbeData, cfg: BuildConfig
) -> list[ScanRow]:
    """Cheap probes at every (layer, position); each row records its held-out accuracies and
    its selection score (the mean of its parts' accuracies) with a bootstrap interval."""
    rows = []
    for name, per in acts.items():
        for pos, X in per.items():
            data = table.with_features(X)
            if cfg.scan_pairs:
                o = binary_outcomes(data, cfg.probe)
                m = binary_metrics(o, n_boot=cfg.scan_n_boot, seed=cfg.probe.seed)
                parts = [o.pairwise, o.early_late]
                keys = ("stage1_vs_stage6", "early_vs_late", "adjacent_mean")
                row = {k: m[k] for k in keys}
                row["pairwise_mean"] = round(float(np.nanmean(o.pairwise)), 6)
            else:
                row, correct = binary_tasks(data, cfg.probe, n_boot=cfg.scan_n_boot)
                parts = [correct["stage1_vs_stage6"], correct["early_vs_late"]]
            score = interval(
                partial(_score_at, parts),
                table.entity_labels,
                len(table.entity_labels),
                n_boot=cfg.scan_n_boot,
                seed=cfg.probe.seed,
            )
            rows.append(
                ScanRow.model_validate(
                    {
                        "layer": int(name.split(".")[1]),
                        "position": pos,
                        "hook": name,
                        "selection_score": score["value"],
                        "selection_ci95": score["ci95"],
                        **row,
                    }
                )
            )
            log.info("scan %s %s: %.3f", name, pos, score["value"])
    return rows


def _score_at(parts: list[np.ndarray], idx: np.ndarray) -> float:
    """The scan's score on entities `idx`: the mean of each part's mean accuracy (a part is
    [E] or [tasks, E] per-entity correctness)."""
    return float(np.mean([np.nanmean(np.atleast_2d(p)[:, idx]) for p in parts]))


def choose_scanned_cell(rows: Sequence[ScanRow], rule: CellRule) -> tuple[int, str]:
    """The served (layer, position) under `rule`."""
    return choose_cell(
        {(r.layer, r.position): (r.selection_score or 0.0, r.standard_error()) for r in rows},
        rule,
    )


#: Named build configs (`bank build --config NAME`); explicit flags override their fields.
BUILD_PRESETS: dict[str, dict[str, object]] = {
    "default": {},
    # The study's probe plan on a pretrained base: every second block, the last 8 positions and
    # the alias mean swept (exploratory); the headline cell fixed in advance at the study's
    # depth (layer 12 of 16 = 0.75 of the blocks; block 22 of SmolLM2-135M's 30), last token.
    "pretrained": {
        "layer_stride": 2,
        "positions": ["last", *(f"last-{k}" for k in range(1, 8)), "alias_mean"],
        "cell_depth": 0.75,
        "cell_position": "last",
        "scan_pairs": False,
        "nested_selection": False,
        "n_permutations": 50,
        # greedy answers of 135M on two models for every corpus entity would be ~1 h on 2 cores
        "families_entities_per_class": 60,
        # 60 a class leave 420 untouched rows per calibration model: at the default 1% class 7's
        # threshold would rest on 4 of them, at 2.5% on 10 (this base's implants were measured
        # at 5%: false alarms 0.003-0.031 with the anchor floor, docs/RESULTS.md)
        "families_false_alarm": 0.025,
    },
}


def build_config(preset: str = "default", **overrides: object) -> BuildConfig:
    """A named build config with explicit overrides (None values are ignored)."""
    if preset not in BUILD_PRESETS:
        choices = ", ".join(BUILD_PRESETS)
        raise UserError(f"unknown build config {preset!r}; choose one of {choices}")
    values = {**BUILD_PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None}}
    try:
        return BuildConfig.model_validate(values)
    except ValidationError as exc:
        bad = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise UserError(f"invalid build config: {bad}") from None


def headline_metrics(data: ProbeData, cfg: BuildConfig) -> tuple[dict, dict]:
    """Every probe at the chosen cell (held-out, with intervals) and the centroids.json content."""
    o = full_outcomes(data, cfg.probe)
    centroid_rho, centroids = centroid_metrics(data, cfg.centroid_n_boot, cfg.probe.seed)
    metrics = {
        **binary_metrics(o, cfg.n_boot, cfg.probe.seed),
        **stage_metrics(o, cfg.n_boot, cfg.probe.seed),
        "centroid_order_spearman": centroid_rho,
        "n_entities": data.n_entities,
        "n_entities_per_class": [int((data.entity_labels == c).sum()) for c in range(7)],
        "n_prompts": len(data.y),
    }
    return metrics, centroids


def _cells(acts: dict[str, dict[str, np.ndarray]]) -> dict[tuple[int, str], np.ndarray]:
    return {(int(n.split(".")[1]), pos): X for n, per in acts.items() for pos, X in per.items()}


def build_bank(
    run_dir: str | Path,
    bank_dir: str | Path,
    cfg: BuildConfig | None = None,
    *,
    stage: str | None = None,
) -> Path:
    """Build BANK_DIR from RUN_DIR's final model (or `stage`'s); returns BANK_DIR."""
    cfg = cfg or BuildConfig()
    run = load_run(run_dir, stage=stage)
    out = Path(bank_dir)
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out} exists and is not empty; choose a new --out")
    model, tokenizer = load_model(run.model_dir)
    depth = n_layers(model)
    layers = cfg.layers if cfg.layers is not None else list(range(0, depth, cfg.layer_stride))
    cell = None
    if cfg.cell_depth is not None:
        cell = (int(cfg.cell_depth * depth), cfg.cell_position)
        if cell[1] not in cfg.positions:
            raise UserError(f"the pre-registered position {cell[1]!r} is not scanned")
        layers = sorted({*layers, cell[0]})
    table = probe_data(run)
    log.info("capturing %d prompts of %d entities at %s", len(table.y), len(table.ids), layers)
    cap = capture(
        model,
        tokenizer,
        [p.prompt for p in table.probes],
        layers=layers,
        positions=cfg.positions,
        alias_spans=[p.alias_char_span for p in table.probes],
        batch_size=cfg.batch_size,
    )
    scan_rows = scan(cap.acts, table, cfg)
    if cell is not None:
        layer, position = cell
        selection = (
            f"layer and position pre-registered in the build config (block = int({cfg.cell_depth}"
            f" x {depth} blocks), position {position}) before these entities were seen: no "
            "selection optimism; scan.json is exploratory"
        )
    else:
        layer, position = choose_scanned_cell(scan_rows, cfg.cell_rule)
        rule = {
            "best": "maximise the held-out scan score",
            "one_se": "are the earliest block within one standard error of the best held-out "
            "scan score",
        }[cfg.cell_rule]
        selection = (
            f"layer and position {rule} on these same entities (cell rule {cfg.cell_rule}), "
            "so headline numbers carry a small selection optimism; selection_adjusted "
            "repeats the choice inside each outer fold (see scan.json)"
        )
    X = cap.acts[hook_name(layer)][position]
    metrics, centroids = headline_metrics(table.with_features(X), cfg)
    metrics.update(
        layer=layer,
        position=position,
        hook=hook_name(layer),
        selection=selection,
        config=cfg.model_dump(),
        baselines={},
    )
    if cfg.nested_selection:
        metrics["selection_adjusted"] = nested_selection(
            _cells(cap.acts),
            table.y,
            table.entity,
            table.entity_labels,
            cfg.probe,
            n_boot=cfg.n_boot,
            rule=cfg.cell_rule,
        )
    if cfg.n_permutations:
        metrics["permutation"] = permutation_test(
            table.with_features(X), cfg.probe, cfg.n_permutations
        )
    if cfg.baselines:
        feats = baseline_features(run, model, tokenizer, table, X, cfg.batch_size)
        metrics["baselines"] = baseline_metrics(
            feats, table.with_features(X), cfg.probe, n_boot=cfg.n_boot, n_bins=cfg.balance_bins
        )
    extra: dict[str, object] = {
        "metrics.json": metrics,
        "scan.json": [r.model_dump(mode="json") for r in scan_rows],
        "centroids.json": centroids,
        # the saved probes are refitted on every one of these: scoring them again is in-sample
        FITTED_ENTITIES: fitted_entities_record(p.alias for p in table.probes),
    }
    retention = run.run_dir / "retention.json"
    if retention.is_file():
        extra["retention.json"] = json.loads(retention.read_text("utf-8"))
    fields = {
        "model_fingerprint": model_fingerprint(run.model_dir),
        "model_identity": model_identity(run.model_dir),
        "lineage": lineage_key(run.model_dir),
        "model_path": str(run.model_dir.resolve()),
        "run_path": str(run.run_dir.resolve()),
        "layer": layer,
        "position": position,
        "hook": hook_name(layer),
        "d_model": int(X.shape[1]),
        "templates": templates_of(table.probes),
        "max_tokens": int(getattr(model.config, "max_position_embeddings", 2048)),
        "seed": cfg.probe.seed,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "corpus": run.corpus_hashes,
    }
    probes = fit_probes(X, table.y, table.entity, cfg.probe)
    tensors = {}
    calibration = find_calibration(run.run_dir) if cfg.families else None
    if calibration is not None:
        if run.model_dir.name != (run.run.final or "stage_6"):
            raise UserError(
                f"the calibration model continues {run.run.final}; build the bank on that stage"
            )
        family_table = table.with_features(X)
        if cfg.families_entities_per_class is not None:
            family_table = family_table.entities(
                per_class_sample(
                    table.entity_labels, cfg.families_entities_per_class, cfg.probe.seed
                )
            )
        classifiers, family_metrics, spec, rows = fit_families(
            run,
            calibration,
            model,
            tokenizer,
            family_table,
            family_table.X,
            probes,
            layer=layer,
            position=position,
            templates=templates_of(table.probes),
            probe_cfg=cfg.probe,
            C=cfg.families_C,
            fused_Cs=cfg.families_fused_Cs,
            n_boot=cfg.n_boot,
            batch_size=cfg.batch_size,
            answer_tokens=cfg.answer_tokens,
            questions=cfg.families_questions,
            false_alarm=cfg.families_false_alarm,
            after_rule=cfg.families_after_rule,
        )
        metrics["texts"] = family_metrics.pop("texts")  # text scoring's own held-out figures
        metrics["families"] = family_metrics
        fields["evidence"] = spec
        tensors[FAMILY_WEIGHTS] = families_to_tensors(classifiers)
        tensors[FAMILY_ROWS] = rows
    save_bank(out, probes, fields, extra, tensors)
    return out
