"""Pool the pre-registered probe cell over every recorded pretrained run: is there a consistent
trace of training order at this scale, too small for any one run to show?

Why: each run reads its probe at chance within its own interval, yet several runs' label-
permutation tests sit at p = 0.02-0.08. One run cannot tell a weak effect from noise; the runs
together can. Every run recorded at the cell fixed in advance (block 22, last token) is pooled,
none chosen by its result: an inverse-variance mean (fixed effect, and DerSimonian-Laird random
effects across recipes and seeds), each run's standard error taken from its 95% bootstrap
interval, and Fisher's combination of the runs' permutation p-values (50 shuffles each, so every
p is at least 1/51). The scalar baselines and the statistic-balanced probes are pooled the same
way, so the probe's pooled figure can be read beside what familiarity alone gives.

    python research/pooled.py \
        research/sweeps/pretrained{,-s3,-warmup,-loss-all,-lr,-natural}.results.jsonl \
        --power research/power/pretrained-*.json --out research/power/pooled.json
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from pydantic import AliasChoices, BaseModel, ConfigDict, Field
from scipy.stats import combine_pvalues

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from probe_bank.heldout.stats import pooled  # noqa: E402
from probe_bank.schemas import Interval  # noqa: E402

#: each headline figure and its chance level (7-class: balanced accuracy over 7 classes)
TASKS = {
    "stage1_vs_stage6": 0.5,
    "early_vs_late": 0.5,
    "adjacent_mean": 0.5,
    "stage_accuracy": 1 / 7,
}
#: (baseline, task) pairs pooled beside the probe: familiarity alone, and the balanced probes
BASELINES = ("answer_loss", "balanced_answer_loss", "balanced_entropy", "balanced_norm")


class PermutationNull(BaseModel):
    model_config = ConfigDict(extra="ignore")
    observed: float
    p_value: float
    null_mean: float
    n_permutations: int


class Row(BaseModel):
    """The fields of a sweep results row (trainer/sweep.py) that pooling reads."""

    model_config = ConfigDict(extra="ignore")
    name: str
    layer: int
    position: str
    stage: str  # the checkpoint probed: the last stage, or "mixed" after mixed epochs
    stage1_vs_stage6: Interval
    early_vs_late: Interval
    adjacent_mean: Interval
    stage_accuracy: Interval
    baselines: dict[str, dict[str, Interval]] = Field(
        default_factory=dict,
        validation_alias=AliasChoices("baselines", "controls"),  # older rows
    )
    permutation: dict[str, PermutationNull] | None = None


class Reader(BaseModel):
    """One reader of `research/probe_power.py` on one task."""

    model_config = ConfigDict(extra="ignore")
    value: float
    ci95: tuple[float, float]
    p: float


class PowerTask(BaseModel):
    model_config = ConfigDict(extra="ignore")
    n_entities: int
    readers: dict[str, Reader]


class Power(BaseModel):
    """The fields of a `research/probe_power.py` record that pooling reads."""

    model_config = ConfigDict(extra="ignore")
    run: str
    layer: int
    position: str
    tasks: dict[str, PowerTask]


def summarise_readers(records: list[Power]) -> dict[str, object]:
    """Each other reader of the same cell pooled over the runs that have a probe_power record:
    does the pooled trace hold for readers other than the bank's probe?"""
    out: dict[str, object] = {"runs": [r.run for r in records]}
    for task in ("stage1_vs_stage6", "early_vs_late"):
        readers = sorted({name for r in records for name in r.tasks[task].readers})
        per: dict[str, object] = {}
        for name in readers:
            got = [(r.tasks[task].readers[name], r.tasks[task].n_entities) for r in records]
            entry = pool(
                [g.value for g, _ in got], [g.ci95 for g, _ in got], [n for _, n in got], 0.5
            )
            _, fisher = combine_pvalues([g.p for g, _ in got], method="fisher")
            entry["fisher_p"] = float(fisher)
            per[name] = entry
        out[task] = per
    return out


def recipe(name: str) -> str:
    """The run's recipe: its name less the seed (`pretrained-natural-s2`: `pretrained-natural`)."""
    return re.sub(r"-s\d+$", "", name) or name


def pool(
    values: list[float], cis: list[tuple[float, float]], ns: list[int], chance: float
) -> dict[str, object]:
    """`probe_bank.heldout.stats.pooled` as a rounded JSON record, with the runs above chance."""
    p = pooled(values, cis, ns)
    return {
        "runs": p.runs,
        "above_chance": sum(x > chance for x in values),
        "unweighted_mean": round(p.unweighted_mean, 4),
        "fixed": round(p.fixed, 4),
        "fixed_ci95": [round(x, 4) for x in p.fixed_ci95],
        "random": round(p.random, 4),
        "random_ci95": [round(x, 4) for x in p.random_ci95],
        "tau": round(p.tau, 4),
        "cochran_q": round(p.cochran_q, 3),
    }


def pool_defined(figures: list[Interval | None], chance: float) -> dict[str, object] | None:
    """`pool` over the figures that are defined (a balanced probe with too few entities has
    none); None when no run has one."""
    kept = [
        (f.value, (f.ci95[0], f.ci95[1]), f.n_entities)
        for f in figures
        if f is not None and f.value is not None and f.ci95[0] is not None and f.ci95[1] is not None
    ]
    if not kept:
        return None
    return pool([v for v, _, _ in kept], [c for _, c, _ in kept], [n for _, _, n in kept], chance)


def summarise(rows: list[Row]) -> dict[str, object]:
    out: dict[str, object] = {"runs": [r.name for r in rows]}
    probe: dict[str, object] = {}
    for task, chance in TASKS.items():
        entry = pool_defined([getattr(r, task) for r in rows], chance)
        if entry is None:
            continue
        nulls = [r.permutation[task] for r in rows if r.permutation and task in r.permutation]
        if nulls:
            stat, p = combine_pvalues([n.p_value for n in nulls], method="fisher")
            entry["permutation"] = {
                "runs": len(nulls),
                "p_values": [round(n.p_value, 4) for n in nulls],
                "fisher_chi2": round(float(stat), 3),
                "fisher_p": float(p),
                "mean_null": round(sum(n.null_mean for n in nulls) / len(nulls), 4),
                "mean_observed": round(sum(n.observed for n in nulls) / len(nulls), 4),
            }
        probe[task] = entry
    out["probe"] = probe
    by_recipe: dict[str, list[Row]] = {}
    for r in rows:
        by_recipe.setdefault(recipe(r.name), []).append(r)
    out["probe_by_recipe"] = {
        name: {
            task: pool_defined([getattr(r, task) for r in group], TASKS[task])
            for task in ("stage1_vs_stage6", "early_vs_late")
        }
        for name, group in by_recipe.items()
    }
    baselines: dict[str, object] = {}
    for name in BASELINES:
        for task in ("stage1_vs_stage6", "early_vs_late"):
            entry = pool_defined([r.baselines.get(name, {}).get(task) for r in rows], 0.5)
            if entry is not None:
                baselines[f"{name}/{task}"] = entry
    out["baselines"] = baselines
    return out


def markdown(summary: dict[str, object]) -> str:
    lines = [
        "| figure | runs | above chance | mean | fixed effect [95%] | random effects [95%] | tau "
        "| Fisher p (permutations) |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def row(label: str, e: dict[str, object]) -> None:
        perm = e.get("permutation")
        fisher_p = perm["fisher_p"] if isinstance(perm, dict) else e.get("fisher_p")
        fisher = f"{fisher_p:.3g}" if isinstance(fisher_p, float) else "-"
        fc, rc = e["fixed_ci95"], e["random_ci95"]
        assert isinstance(fc, list) and isinstance(rc, list)
        lines.append(
            f"| {label} | {e['runs']} | {e['above_chance']} | {e['unweighted_mean']:.3f} "
            f"| {e['fixed']:.3f} [{fc[0]:.3f}, {fc[1]:.3f}] "
            f"| {e['random']:.3f} [{rc[0]:.3f}, {rc[1]:.3f}] | {e['tau']:.3f} | {fisher} |"
        )

    probe = summary["probe"]
    assert isinstance(probe, dict)
    for task, e in probe.items():
        row(f"probe {task}", e)
    baselines = summary["baselines"]
    assert isinstance(baselines, dict)
    for key, e in baselines.items():
        row(key, e)
    readers = summary.get("readers", {})
    assert isinstance(readers, dict)
    for task in ("stage1_vs_stage6", "early_vs_late"):
        for name, e in readers.get(task, {}).items():
            row(f"reader {name}/{task}", e)
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("results", type=Path, nargs="+", help="sweep results.jsonl files")
    ap.add_argument("--layer", type=int, default=22, help="the cell fixed in advance: block")
    ap.add_argument("--position", default="last", help="the cell fixed in advance: position")
    ap.add_argument(
        "--power", type=Path, nargs="*", default=[], help="probe_power.py records of those runs"
    )
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    rows = [
        Row.model_validate_json(line)
        for path in args.results
        for line in path.read_text("utf-8").splitlines()
        if line.strip()
    ]
    cell = (args.layer, args.position)
    rows = [r for r in rows if (r.layer, r.position) == cell and r.stage != "mixed"]
    if not rows:
        ap.error(f"no run recorded at block {args.layer}, {args.position}")
    summary = summarise(rows)
    summary["cell"] = {"layer": args.layer, "position": args.position}
    summary["sources"] = [str(p) for p in args.results]
    power = [Power.model_validate_json(p.read_text("utf-8")) for p in args.power]
    names = {f"/{r.name}/" for r in rows}  # only records of the runs pooled above
    power = [r for r in power if (r.layer, r.position) == cell and any(n in r.run for n in names)]
    if power:
        summary["readers"] = summarise_readers(power)
    print(markdown(summary))
    if args.out:
        args.out.write_text(json.dumps(summary, indent=2) + "\n", "utf-8")


if __name__ == "__main__":
    main()
