"""Issue 4's audit scenario and cross-run bank transfer, measured with a bank built beforehand.

``extra``: copy a finished RUN, add one more stage (`--extra-stage`) holding the never-trained
control entities' QA ("new") and one earlier stage's QA ("re-exposed"), and score every entity with
the BANK built on the run's stage_6, before (stage_6) and after (extra_1). Also trains
`--mixed-epochs N` on a second copy and scores the bank's stage 1 vs 6 probe on the mixed model.

``transfer``: RUN B shares RUN A's stage 0 but was finetuned with another `finetune_seed`; apply
BANK A to B's stage_6 (stage 1 vs 6 across runs) next to B's own bank, and the cosine between the
two banks' recency directions.

Banks are loaded as the service loads them (`ProbeBank.load` with the audited model): every file
hash is verified and each target model must share the bank's lineage (architecture config and
tokenizer); the relation found (`reference` / `descendant`) is recorded per model. A bank built
before lineage records existed audits only its reference and is refused here: rebuild it.
Records are the package's typed ones (`RunRecord`, `BankMetrics`), never read by string key.

Two kinds of numbers are reported. ``bank``: the bank's saved weights, as the service would use
them; they were refitted on *all* of the run's stage 1..6 and control entities, so on stage_6
itself (and on models close to it) they are in-sample. ``crossfit``: the same fitting procedure
(`probe_bank.fit.fit_probes`) on the stage_6 activations of 4/5 of the entities (entity-grouped,
stratified folds), applied to the held-out 1/5 on the target model: every entity is scored by
probes that never saw it. That is the honest number; ``bank`` shows what a deployed bank reports.

Usage (1 torch thread; OMP_NUM_THREADS=1 is set for the training subprocesses too)::

    python research/audit_scenario.py extra --run RUN --bank BANK --work DIR
    python research/audit_scenario.py transfer --run-a A/run --bank-a A/bank \
        --run-b B/run --bank-b B/bank
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import typer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from probe_bank.bank import ProbeBank  # noqa: E402
from probe_bank.estimator import RecencyProbes  # noqa: E402
from probe_bank.heldout.folds import ProbeData  # noqa: E402
from probe_bank.heldout.stats import interval  # noqa: E402
from probe_bank.records import RunRecord  # noqa: E402

S0 = ROOT / "artifacts/sweeps/small-seeds/small-s0"
OUT_DIR = ROOT / "research/scenario"
N_BOOT = 1000
N_NULL = 20  # label shuffles for the cosine null
SEED = 0

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False)


# ---------------------------------------------------------------- bank, activations, scores


HEADLINES = ("stage1_vs_stage6", "early_vs_late")


def load_bank(bank_dir: Path, models: Sequence[Path]) -> tuple[ProbeBank, dict[str, str]]:
    """The bank as the service loads it, checked against every model it will score: the
    relation of each (`reference` or `descendant`); another lineage is refused."""
    relations: dict[str, str] = {}
    bank = None
    for m in models:
        bank = ProbeBank.load(bank_dir, model_dir=m)
        relations[_rel(m)] = bank.relation
    if bank is None:
        raise typer.BadParameter("no model to score")
    return bank, relations


def headlines(bank: ProbeBank) -> dict[str, Any]:
    """The bank's own held-out headline figures (metrics.json, verified at load)."""
    if bank.metrics is None:
        raise typer.BadParameter(f"{bank.bank_dir} has no metrics.json")
    return {k: getattr(bank.metrics, k).model_dump() for k in HEADLINES}


def run_table(run_dir: Path) -> ProbeData:
    """The run's labelled probe prompts (classes 0..6) as rows, as the bank build used them."""
    from probe_bank.run_dir import load_run, probe_data

    return probe_data(load_run(run_dir, stage="stage_0"))


def activations(model_dir: Path, table: ProbeData, layer: int, position: str) -> np.ndarray:
    """[n_prompts, d] at the bank's cell, through probe_bank.capture (the one capture path)."""
    from probe_bank.capture import capture, hook_name
    from probe_bank.modeling import load_model

    model, tokenizer = load_model(model_dir)
    cap = capture(
        model,
        tokenizer,
        [p.prompt for p in table.probes],
        layers=[layer],
        positions=[position],
        alias_spans=[p.alias_char_span for p in table.probes],
    )
    return cap.acts[hook_name(layer)][position]


@dataclass
class Scores:
    """Per-entity scores (mean over the entity's template prompts, as `score_entities`)."""

    recency: np.ndarray
    p_late: np.ndarray
    pair16: np.ndarray  # decision value of the stage 1 vs 6 probe (> 0: stage 6)

    @classmethod
    def empty(cls, n: int) -> Scores:
        return cls(np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan))


def score_rows(w: RecencyProbes, X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    pair = w.pair_decision(X)[:, list(w.pairs).index((1, 6))]
    return w.recency_score(X), w.p_late(X), pair


def entity_scores(w: RecencyProbes, X: np.ndarray, table: ProbeData) -> Scores:
    from probe_bank.heldout.folds import entity_mean

    n = len(table.entity_labels)
    return Scores(*(entity_mean(v, table.entity, n) for v in score_rows(w, X)))


def crossfit_scores(
    X_fit: np.ndarray, targets: Sequence[np.ndarray], table: ProbeData
) -> list[Scores]:
    """Bank-procedure probes fitted on X_fit of 4/5 of the entities, scoring the other 1/5 of
    each target (same rows as X_fit): every entity is scored by probes that never saw it."""
    from probe_bank.fit import fit_probes
    from probe_bank.heldout.folds import ProbeConfig, entity_folds, entity_mean

    cfg = ProbeConfig(seed=SEED)
    n = len(table.entity_labels)
    out = [Scores.empty(n) for _ in targets]
    for tr, te in entity_folds(table.y, table.entity, cfg):
        w = fit_probes(X_fit[tr], table.y[tr], table.entity[tr], cfg)
        held = np.unique(table.entity[te])
        for s, X in zip(out, targets, strict=True):
            rows = score_rows(w, X[te])
            for arr, v in zip((s.recency, s.p_late, s.pair16), rows, strict=True):
                arr[held] = entity_mean(v, table.entity[te], n)[held]
    return out


# ---------------------------------------------------------------- statistics (bootstrap 95%)


def boot(metric: Callable[[np.ndarray], float], strata: np.ndarray) -> dict[str, Any]:
    """probe_bank.heldout.stats.interval: entities resampled within each stratum."""
    return interval(metric, strata, len(strata), n_boot=N_BOOT, seed=SEED)


def mean_ci(v: np.ndarray) -> dict[str, Any]:
    return boot(lambda idx: float(np.mean(v[idx])), np.zeros(len(v), int))


def auc(truth: np.ndarray, score: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    if len(np.unique(truth)) < 2:
        return float("nan")
    return float(roc_auc_score(truth, score))


def separation(pos: np.ndarray, neg: np.ndarray, threshold: float | None = None) -> dict[str, Any]:
    """AUC of pos > neg, and accuracy at `threshold` (None: the pooled median, label-free)."""
    truth = np.r_[np.ones(len(pos), int), np.zeros(len(neg), int)]
    s = np.r_[pos, neg]

    def acc(idx: np.ndarray) -> float:
        t = float(np.median(s[idx])) if threshold is None else threshold
        return float(np.mean((s[idx] > t) == truth[idx].astype(bool)))

    return {
        "auc": boot(lambda idx: auc(truth[idx], s[idx]), truth),
        "accuracy": boot(acc, truth),
        "threshold": "pooled median" if threshold is None else threshold,
    }


def one_vs_six(s: Scores, labels: np.ndarray) -> dict[str, Any]:
    """Stage 1 vs 6 with the stage-pair probe (decision > 0 = stage 6) and early vs late."""
    late, early = s.p_late[labels >= 4], s.p_late[(labels >= 1) & (labels <= 3)]
    return {
        "stage1_vs_stage6": separation(s.pair16[labels == 6], s.pair16[labels == 1], 0.0),
        "early_vs_late": separation(late, early, 0.5),
        "recency_1v6": separation(s.recency[labels == 6], s.recency[labels == 1]),
    }


def by_stage(s: Scores, labels: np.ndarray) -> dict[str, Any]:
    names = {0: "control", **{k: f"stage_{k}" for k in range(1, 7)}}
    return {
        names[k]: {
            "recency": mean_ci(s.recency[labels == k]),
            "p_late": mean_ci(s.p_late[labels == k]),
        }
        for k in range(7)
    }


# ---------------------------------------------------------------- training through the CLI


def copy_run(src: Path, dst: Path) -> Path:
    """A full copy of a finished run (kept when it exists: training resumes there)."""
    if not (dst / "run.json").is_file():
        shutil.rmtree(dst, ignore_errors=True)
        shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".ckpt"))
    return dst


def train_cmd(run_dir: Path, *extra: str) -> list[str]:
    """`recency-audit train` with the run's own preset, seed and every hyperparameter."""
    run = RunRecord.read(run_dir / "run.json")
    sets = [f"{k}={json.dumps(v)}" for k, v in recipe(run).flat().items()]
    cmd = [str(Path(sys.executable).with_name("recency-audit")), "train", "--out", str(run_dir)]
    cmd += ["--preset", run.preset, "--seed", str(run.seed)]
    return cmd + [a for s in sets for a in ("--set", s)] + list(extra)


def train(run_dir: Path, *extra: str) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    cmd = train_cmd(run_dir, *extra)
    typer.echo("$ " + " ".join(cmd[:8]) + " ... " + " ".join(extra), err=True)
    subprocess.run(cmd, check=True, env=env)


def write_extra_stage(run_dir: Path, reexposed: str, path: Path) -> dict[str, int]:
    """Control entities' trained-style QA (they become "new") + one earlier stage's trained QA."""
    from trainer.corpus import load_corpus

    corpus = load_corpus(run_dir / "corpus")
    rows = [q for s in ("control", reexposed) for q in corpus.questions(s, heldout=False)]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for q in rows:
            fh.write(json.dumps({"question": q.question, "answer": q.answer}) + "\n")
    return {s: len(corpus.questions(s, heldout=False)) for s in ("control", reexposed)}


# ---------------------------------------------------------------- `extra`


def scenario_shift(
    before: Scores, after: Scores, labels: np.ndarray, reexposed: int
) -> dict[str, Any]:
    """New vs stage 6 (after), and the re-exposed stage after vs before (and vs other stages)."""
    shift = after.recency - before.recency
    staged = labels > 0
    re = labels == reexposed
    lab = labels[staged]

    def did(idx: np.ndarray) -> float:
        d, lb = shift[staged][idx], lab[idx]
        return float(d[lb == reexposed].mean() - d[lb != reexposed].mean())

    late_shift = after.p_late - before.p_late
    return {
        "new_vs_stage6_recency": separation(after.recency[labels == 0], after.recency[labels == 6]),
        "new_vs_stage6_p_late": separation(after.p_late[labels == 0], after.p_late[labels == 6]),
        "control_vs_stage6_before_recency": separation(
            before.recency[labels == 0], before.recency[labels == 6]
        ),
        "reexposed_after_vs_before_recency": separation(after.recency[re], before.recency[re]),
        "reexposed_after_vs_before_p_late": separation(after.p_late[re], before.p_late[re]),
        "reexposed_mean_shift": mean_ci(shift[re]),
        "reexposed_share_moved_up": mean_ci((shift[re] > 0).astype(float)),
        "reexposed_p_late_shift": mean_ci(late_shift[re]),
        "others_mean_shift": mean_ci(shift[staged & ~re]),
        "reexposed_minus_others_shift": boot(did, lab),
    }


def extra_result(bank: ProbeBank, copy: Path, mixed: Path | None, reexposed: int) -> dict[str, Any]:
    table = run_table(copy)
    labels = table.entity_labels
    cell = (bank.manifest.layer, bank.manifest.position)
    X = {name: activations(copy / name, table, *cell) for name in ("stage_6", "extra_1")}
    if mixed is not None:
        X["mixed"] = activations(mixed / "mixed", table, *cell)
    names = list(X)
    cross = dict(
        zip(names, crossfit_scores(X["stage_6"], [X[n] for n in names], table), strict=True)
    )
    kinds = {
        "bank": {n: entity_scores(bank.probes, X[n], table) for n in names},
        "crossfit": cross,
    }
    out: dict[str, Any] = {}
    for kind, s in kinds.items():
        out[kind] = {
            "scenario": scenario_shift(s["stage_6"], s["extra_1"], labels, reexposed),
            "groups": {n: by_stage(s[n], labels) for n in names},
            "one_vs_six": {n: one_vs_six(s[n], labels) for n in names},
        }
    return out


@app.command()
def extra(
    run: Path = typer.Option(S0 / "run", help="finished RUN_DIR (read only)"),
    bank: Path = typer.Option(S0 / "bank", help="BANK_DIR built on RUN's stage_6"),
    work: Path = typer.Option(ROOT / "artifacts/scenario/extra", help="copies are trained here"),
    reexposed: int = typer.Option(2, min=1, max=5, help="earlier stage re-exposed in extra_1"),
    mixed_epochs: int = typer.Option(2, min=0, help="--mixed-epochs on a second copy; 0 = skip"),
    out: Path = typer.Option(OUT_DIR / "extra.json", help="result JSON"),
) -> None:
    """Train extra_1 (new + re-exposed entities) and mixed on copies; score with the old bank."""
    _one_thread()
    copy = copy_run(run, work / "extra_run")
    stage_file = work / "extra_stage.jsonl"
    counts = write_extra_stage(copy, f"stage_{reexposed}", stage_file)
    train(copy, "--extra-stage", str(stage_file))
    mixed = None
    if mixed_epochs:
        mixed = copy_run(run, work / "mixed_run")
        train(mixed, "--mixed-epochs", str(mixed_epochs))
    targets = [copy / "stage_6", copy / "extra_1"] + ([mixed / "mixed"] if mixed else [])
    b, relations = load_bank(bank, targets)
    result = {
        "command": "extra",
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "run": _rel(run),
        "bank": _rel(bank),
        "bank_id": b.manifest.bank_id,
        "cell": {"layer": b.manifest.layer, "position": b.manifest.position},
        "relations": relations,
        "reexposed_stage": reexposed,
        "extra_stage_questions": counts,
        "mixed_epochs": mixed_epochs,
        "bank_heldout": headlines(b),
        "n_boot": N_BOOT,
        **extra_result(b, copy, mixed, reexposed),
    }
    _write(out, result)
    typer.echo(extra_markdown(result))


# ---------------------------------------------------------------- `transfer`


def _cos(u: np.ndarray, v: np.ndarray) -> float:
    return float(u @ v / (np.linalg.norm(u) * np.linalg.norm(v)))


def direction(w: RecencyProbes) -> np.ndarray:
    """The recency probe's direction in raw activation space (standardisation folded in)."""
    return np.asarray(w.recency_coef_ / w.scale_)


def refit(X: np.ndarray, table: ProbeData, entity_labels: np.ndarray) -> RecencyProbes:
    """The bank's own final fit (`fit_probes`, all entities) with the given entity classes."""
    from probe_bank.fit import fit_probes
    from probe_bank.heldout.folds import ProbeConfig

    return fit_probes(X, entity_labels[table.entity], table.entity, ProbeConfig(seed=SEED))


def cell_cosine(XA: np.ndarray, XB: np.ndarray, table: ProbeData) -> dict[str, Any]:
    """Recency directions fitted (bank procedure) on A and on B at one cell: their cosine, and a
    null where one shuffle of the stage labels among staged entities is used for both runs (what
    the shared entities and shared stage 0 give without any order information)."""
    lab = table.entity_labels
    real = _cos(direction(refit(XA, table, lab)), direction(refit(XB, table, lab)))
    rng = np.random.default_rng(SEED)
    staged = np.flatnonzero(lab > 0)
    null = []
    for _ in range(N_NULL):
        perm = lab.copy()
        perm[staged] = rng.permutation(lab[staged])
        null.append(_cos(direction(refit(XA, table, perm)), direction(refit(XB, table, perm))))
    nul = np.array(null)
    return {
        "cosine": round(real, 6),
        "null_mean": round(float(nul.mean()), 6),
        "null_q95": round(float(np.percentile(nul, 95)), 6),
        "null_n": N_NULL,
        "p_value": round(float((1 + (nul >= real).sum()) / (1 + N_NULL)), 6),
    }


def transfer_result(ra: Path, a: ProbeBank, rb: Path, b: ProbeBank) -> dict[str, Any]:
    table = run_table(ra)
    if run_table(rb).ids != table.ids:
        raise typer.BadParameter("runs A and B do not share a corpus (entity ids differ)")
    labels = table.entity_labels
    cells = {(bk.manifest.layer, bk.manifest.position) for bk in (a, b)}
    X = {(r, c): activations(r / "stage_6", table, *c) for r in (ra, rb) for c in sorted(cells)}
    out: dict[str, Any] = {}
    for tag, bank, src, dst in (("A_to_B", a, ra, rb), ("B_to_A", b, rb, ra)):
        cell = (bank.manifest.layer, bank.manifest.position)
        Xs, Xd = X[(src, cell)], X[(dst, cell)]
        cs = crossfit_scores(Xs, [Xs, Xd], table)
        s = {
            "bank_on_own": entity_scores(bank.probes, Xs, table),
            "bank_on_other": entity_scores(bank.probes, Xd, table),
            "crossfit_on_own": cs[0],
            "crossfit_on_other": cs[1],
        }
        out[tag] = {
            "cell": {"layer": cell[0], "position": cell[1]},
            "one_vs_six": {k: one_vs_six(v, labels) for k, v in s.items()},
            "groups": {k: by_stage(v, labels) for k, v in s.items()},
        }
    same = (a.manifest.layer, a.manifest.position) == (b.manifest.layer, b.manifest.position)
    out["bank_cosine"] = _cos(direction(a.probes), direction(b.probes)) if same else None
    out["bank_cosine_note"] = (
        "both banks read the same cell"
        if same
        else "the banks read different cells, so their own directions are not comparable; "
        "cell_cosine refits the bank procedure on A and on B at each bank's cell"
    )
    out["cell_cosine"] = {
        f"layer {c[0]} {c[1]}": cell_cosine(X[(ra, c)], X[(rb, c)], table) for c in sorted(cells)
    }
    return out


@app.command()
def transfer(
    run_a: Path = typer.Option(S0 / "run", help="RUN A (finished)"),
    bank_a: Path = typer.Option(S0 / "bank", help="BANK A, on A's stage_6"),
    run_b: Path = typer.Option(ROOT / "artifacts/scenario/transfer/B/run", help="RUN B"),
    bank_b: Path = typer.Option(ROOT / "artifacts/scenario/transfer/B/bank", help="BANK B"),
    out: Path = typer.Option(OUT_DIR / "transfer.json", help="result JSON"),
) -> None:
    """Apply each run's bank to the other run's stage_6 (shared stage 0, other finetune_seed)."""
    _one_thread()
    targets = [run_a / "stage_6", run_b / "stage_6"]
    (a, rel_a), (b, rel_b) = load_bank(bank_a, targets), load_bank(bank_b, targets)
    runs = {k: RunRecord.read(r / "run.json") for k, r in (("A", run_a), ("B", run_b))}
    result = {
        "command": "transfer",
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "runs": {k: _rel(r) for k, r in (("A", run_a), ("B", run_b))},
        "banks": {k: _rel(p) for k, p in (("A", bank_a), ("B", bank_b))},
        "seeds": {k: _seeds(v) for k, v in runs.items()},
        "stage0_identical": _same_files(run_a / "stage_0", run_b / "stage_0"),
        "relations": {"A": rel_a, "B": rel_b},
        "bank_heldout": {k: headlines(bk) for k, bk in (("A", a), ("B", b))},
        "bank_cells": {
            k: {"layer": bk.manifest.layer, "position": bk.manifest.position}
            for k, bk in (("A", a), ("B", b))
        },
        "n_boot": N_BOOT,
        **transfer_result(run_a, a, run_b, b),
    }
    _write(out, result)
    typer.echo(transfer_markdown(result))


# ---------------------------------------------------------------- tables and files


def fmt(m: dict[str, Any] | None) -> str:
    if not m or m.get("value") is None:
        return "n/a"
    lo, hi = m["ci95"]
    return f"{m['value']:.3f} [{lo:.3f}, {hi:.3f}]"


def extra_markdown(r: dict[str, Any]) -> str:
    k = r["reexposed_stage"]
    lines = [f"### extra: bank {r['bank_id']} at {r['cell']}; re-exposed stage {k}", ""]
    for kind in ("bank", "crossfit"):
        sc = r[kind]["scenario"]
        lines += [
            f"**{kind}** weights",
            "",
            "| target | AUC [95% CI] | accuracy [95% CI] |",
            "|---|---|---|",
        ]
        for key, label in (
            ("new_vs_stage6_recency", "new > stage 6 (recency score, after extra_1)"),
            ("new_vs_stage6_p_late", "new > stage 6 (p_late)"),
            ("control_vs_stage6_before_recency", "same, before extra_1 (still never trained)"),
            ("reexposed_after_vs_before_recency", f"stage {k} after > before (recency)"),
            ("reexposed_after_vs_before_p_late", f"stage {k} after > before (p_late)"),
        ):
            lines.append(f"| {label} | {fmt(sc[key]['auc'])} | {fmt(sc[key]['accuracy'])} |")
        lines += [
            "",
            f"stage {k} mean recency shift {fmt(sc['reexposed_mean_shift'])}; other stages "
            f"{fmt(sc['others_mean_shift'])}; "
            f"difference {fmt(sc['reexposed_minus_others_shift'])}; "
            f"share of stage-{k} entities moved up {fmt(sc['reexposed_share_moved_up'])}",
            "",
            "| group | " + " | ".join(f"recency on {m}" for m in r[kind]["groups"]) + " |",
            "|---|" + "---|" * len(r[kind]["groups"]),
        ]
        groups = r[kind]["groups"]
        for g in next(iter(groups.values())):
            name = "control (= new in extra_1)" if g == "control" else g
            lines.append(
                f"| {name} | " + " | ".join(fmt(groups[m][g]["recency"]) for m in groups) + " |"
            )
        lines += [
            "",
            "| model | stage 1 vs 6 acc | stage 1 vs 6 AUC | early/late acc |",
            "|---|---|---|---|",
        ]
        for m, v in r[kind]["one_vs_six"].items():
            p, el = v["stage1_vs_stage6"], v["early_vs_late"]
            lines.append(
                f"| {m} | {fmt(p['accuracy'])} | {fmt(p['auc'])} | {fmt(el['accuracy'])} |"
            )
        lines.append("")
    h = r["bank_heldout"]
    lines.append(
        f"bank's own held-out numbers (metrics.json): stage 1 vs 6 {fmt(h['stage1_vs_stage6'])}, "
        f"early vs late {fmt(h['early_vs_late'])}"
    )
    return "\n".join(lines)


def transfer_markdown(r: dict[str, Any]) -> str:
    lines = [
        "### transfer: stage 1 vs 6 of each bank on its own and on the other run's stage_6",
        "",
        f"seeds {r['seeds']}; stage_0 identical: {r['stage0_identical']}; cells {r['bank_cells']}",
        "",
        "| bank -> model | weights | stage 1 vs 6 acc | stage 1 vs 6 AUC | early/late acc |",
        "|---|---|---|---|---|",
    ]
    for tag in ("A_to_B", "B_to_A"):
        src, dst = tag.split("_to_")
        for key, v in r[tag]["one_vs_six"].items():
            kind, _, where = key.partition("_on_")
            model = src if where == "own" else dst
            p, el = v["stage1_vs_stage6"], v["early_vs_late"]
            lines.append(
                f"| {src} -> {model} | {kind} | {fmt(p['accuracy'])} | {fmt(p['auc'])} | "
                f"{fmt(el['accuracy'])} |"
            )
    h = r["bank_heldout"]
    lines += [
        "",
        "banks' own held-out stage 1 vs 6 (metrics.json): "
        + ", ".join(f"{k} {fmt(v['stage1_vs_stage6'])}" for k, v in h.items()),
        f"banks' recency-direction cosine: {r['bank_cosine']} ({r['bank_cosine_note']})",
        "",
        "| cell | cosine A vs B (refit) | null mean | null 95th pct | p |",
        "|---|---|---|---|---|",
        *(
            f"| {c} | {v['cosine']:.3f} | {v['null_mean']:.3f} | {v['null_q95']:.3f} | "
            f"{v['p_value']:.3f} |"
            for c, v in r["cell_cosine"].items()
        ),
    ]
    return "\n".join(lines)


def _seeds(run: RunRecord) -> dict[str, Any]:
    cfg = recipe(run)
    return {"seed": cfg.seed, "finetune_seed": cfg.finetune_seed}


def recipe(run: RunRecord) -> Any:
    """The run's TrainConfig (typed; run.json of any vintage, flat or grouped)."""
    from trainer.config import TrainConfig

    return TrainConfig.model_validate(run.hyperparams)


def _same_files(a: Path, b: Path) -> bool:
    from probe_bank.fingerprint import model_fingerprint

    return model_fingerprint(a) == model_fingerprint(b)


def _rel(p: Path) -> str:
    p = p.resolve()
    return str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(p)


def _write(path: Path, obj: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1, sort_keys=False) + "\n", "utf-8")
    typer.echo(f"wrote {path}", err=True)


def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)


if __name__ == "__main__":
    app()
