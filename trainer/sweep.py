"""`recency-audit sweep`: train and probe a list of recipes, one recorded row per configuration.

Issue 4 is research inside engineering: every claim about a recipe must be re-runnable. A sweep
spec names configurations (preset + seed + `TrainConfig` overrides); each is trained into
OUT/<name>/run, probed into OUT/<name>/bank, and summarised as one JSON line in OUT/results.jsonl.
Rerunning the same command skips configurations already recorded and resumes a half-done one
(training and bank building are both resumable or rebuilt from scratch).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from probe_bank.errors import UserError
from probe_bank.heldout.stats import pooled
from probe_bank.records import RunRecord
from probe_bank.schemas import HEADLINE as _HEADLINE

#: metrics.json keys copied into each results row (each {"value", "ci95", "n_entities"}).
HEADLINE = tuple(key for key, _ in _HEADLINE)


class SweepConfig(BaseModel):
    """One recipe to train and probe."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    preset: str = "small"
    seed: int = 0
    overrides: dict[str, Any] = Field(default_factory=dict)
    base_model: str | None = Field(
        None, description="registered base or HF dir; None = the preset's (from scratch if none)"
    )
    build: str = Field("default", description="named bank build config (probe_bank.build)")
    mixed_epochs: int = Field(
        0,
        ge=0,
        description="after stage 6, epochs on all stages mixed; a second row is then "
        "recorded (NAME-mixed) for the bank built on the mixed model (persistence)",
    )
    build_overrides: dict[str, Any] = Field(default_factory=dict)


class SweepSpec(BaseModel):
    """A file of configurations; `fast_bank` skips the nested selection and permutation nulls."""

    model_config = ConfigDict(extra="forbid")

    configs: list[SweepConfig]
    fast_bank: bool = False


def load_spec(path: Path) -> SweepSpec:
    """Read and validate a sweep spec (JSON)."""
    try:
        spec = SweepSpec.model_validate_json(path.read_text("utf-8"))
    except FileNotFoundError:
        raise UserError(f"sweep spec {path} does not exist") from None
    except ValidationError as exc:
        raise UserError(f"{path}: not a valid sweep spec: {exc.errors()[0]['msg']}") from None
    names = [c.name for c in spec.configs]
    if len(set(names)) != len(names):
        raise UserError(f"{path}: configuration names must be unique")
    return spec


def recorded(results: Path) -> set[str]:
    """Names of configurations already in results.jsonl."""
    if not results.is_file():
        return set()
    return {json.loads(line)["name"] for line in results.read_text("utf-8").splitlines() if line}


def run_config(cfg: SweepConfig, out: Path, *, fast_bank: bool) -> list[dict[str, Any]]:
    """Train (resumable), build the bank(s) afresh, and return the row(s) to record: one for the
    model after stage 6, and one for the mixed model when `mixed_epochs` is set."""
    from probe_bank.build import build_bank, build_config
    from trainer.base import resolve_base_model
    from trainer.config import PRESET_BASES, resolve_config
    from trainer.run import RunOptions, train_run

    run_dir = out / cfg.name / "run"
    train_cfg = resolve_config(cfg.preset, seed=cfg.seed, overrides=cfg.overrides)
    base = cfg.base_model or PRESET_BASES.get(cfg.preset)
    base_dir = resolve_base_model(Path(base)) if base is not None else None
    opts = RunOptions(
        preset=cfg.preset, out=run_dir, base_model=base_dir, mixed_epochs=cfg.mixed_epochs
    )
    record = RunRecord.model_validate(train_run(train_cfg, opts))
    fast = {"nested_selection": False, "n_permutations": 0} if fast_bank else {}
    build = build_config(cfg.build, **{**cfg.build_overrides, **fast})
    retention = {e["after"]: e for e in json.loads((run_dir / "retention.json").read_text())}
    stages = ["stage_6", "mixed"] if cfg.mixed_epochs else [record.final or "stage_6"]
    rows = []
    for stage in stages:
        suffix = "-mixed" if stage == "mixed" else ""
        bank_dir = out / cfg.name / f"bank{suffix}"
        shutil.rmtree(bank_dir, ignore_errors=True)  # a half-built bank is not resumable
        build_bank(run_dir, bank_dir, build, stage=stage)
        metrics = json.loads((bank_dir / "metrics.json").read_text("utf-8"))
        rows.append(
            {
                "name": cfg.name + suffix,
                "preset": cfg.preset,
                "seed": cfg.seed,
                "overrides": cfg.overrides,
                "config": train_cfg.flat(),  # settings by name, as rows recorded before
                "base_model": base,
                "build": cfg.build,
                "stage": stage,
                "mixed_epochs": cfg.mixed_epochs,
                "train_seconds": record.train_seconds(),
                "train_tokens_per_s": record.train_tokens_per_s(),
                "layer": metrics["layer"],
                "position": metrics["position"],
                **{k: metrics[k] for k in HEADLINE},
                "baselines": {
                    name: {
                        k: v for k, v in ctl.items() if k in ("stage1_vs_stage6", "early_vs_late")
                    }
                    for name, ctl in metrics.get("baselines", {}).items()
                },
                "permutation": metrics.get("permutation"),
                "selection": metrics.get("selection"),
                "retention_after_last": retention.get(stage),
                "bank": str(bank_dir),
            }
        )
    return rows


def run_sweep(spec: SweepSpec, out: Path) -> Path:
    """Run every configuration not yet recorded; returns OUT/results.jsonl."""
    out.mkdir(parents=True, exist_ok=True)
    results = out / "results.jsonl"
    done = recorded(results)
    for cfg in spec.configs:
        if cfg.name in done:
            continue
        rows = run_config(cfg, out, fast_bank=spec.fast_bank)
        with results.open("a", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row, sort_keys=True) + "\n")
    return results


def _cell(metric: dict[str, Any]) -> str:
    return f"{metric['value']:.3f} [{metric['ci95'][0]:.3f}, {metric['ci95'][1]:.3f}]"


def results_table(results: Path) -> str:
    """A Markdown table of every recorded configuration, then the runs pooled (random effects,
    `probe_bank.heldout.stats.pooled`) with a 95% interval, where a bare mean would have none."""
    rows = [json.loads(line) for line in results.read_text("utf-8").splitlines() if line]
    cols = ("stage1_vs_stage6", "early_vs_late", "adjacent_mean", "stage_accuracy")
    head = "| config | seed | " + " | ".join(cols) + " | centroid rho | best baseline 1v6 |"
    lines = [head, "|" + "---|" * (len(cols) + 4)]
    for r in rows:
        ctl = max(
            (
                (n, c["stage1_vs_stage6"]["value"])
                for n, c in r.get("baselines", r.get("controls", {})).items()  # older rows
                if not n.startswith("balanced_")
                and c.get("stage1_vs_stage6", {}).get("value") is not None
            ),
            key=lambda t: t[1],
            default=("-", float("nan")),
        )
        cells = " | ".join(_cell(r[c]) for c in cols)
        rho = r["centroid_order_spearman"]["value"]
        lines.append(f"| {r['name']} | {r['seed']} | {cells} | {rho:.2f} | {ctl[0]} {ctl[1]:.2f} |")
    if len(rows) > 1:  # the runs pooled (random effects), with the interval the mean lacks
        pooled_cells = []
        for c in cols:
            p = pooled(
                [r[c]["value"] for r in rows],
                [tuple(r[c]["ci95"]) for r in rows],
                [r[c]["n_entities"] for r in rows],
            )
            pooled_cells.append(_cell({"value": p.random, "ci95": p.random_ci95}))
        lines.append(f"| {len(rows)} pooled | | {' | '.join(pooled_cells)} | | |")
    return "\n".join(lines)
