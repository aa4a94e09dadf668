"""Would the behaviour family order the reference's stages better if it kept more of what the
greedy answers say? The served family reads three numbers per entity: the mean over the bank's
six question templates of the greedy answer's mean log-probability, its minimum and the mean
entropy. This asks whether the per-template values, or richer per-answer statistics (the first
answer token's log-probability, entropy and top-1 margin, the answer's length), carry more of the
stage order, held out the same way (entity-grouped folds, multinomial L2 logistic regression over
classes 0..6, the bank's own figure definitions), on the reference alone (no implant needed).

For scale it also reads the column the product cannot have: each entity's true trained answers'
mean log-probability (teacher-forced), the ceiling of any answer-confidence statistic.

    python research/families/template_columns.py --bank BANK --run RUN [--per-class 60] \\
        --out research/families/NAME.templates.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from feature_aucs import true_answer_columns  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.model_selection import StratifiedGroupKFold  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from probe_bank.answers import _greedy  # noqa: E402
from probe_bank.build import per_class_sample  # noqa: E402
from probe_bank.capture import model_lock  # noqa: E402
from probe_bank.families import question_items  # noqa: E402
from probe_bank.heldout.families import reference_metrics  # noqa: E402
from probe_bank.records import split_label  # noqa: E402
from probe_bank.run_dir import load_run  # noqa: E402
from probe_bank.scoring import BankScorer  # noqa: E402

#: Per answer: mean / min token log-probability, mean entropy (the served three), then the first
#: token's log-probability, entropy and top-1 minus top-2 log-probability, and the token count.
STATS = ("logp_mean", "logp_min", "entropy_mean", "first_logp", "first_entropy", "margin", "length")


def answer_stats(scorer: BankScorer, aliases: list[str], batch_size: int) -> np.ndarray:
    """[E, templates, len(STATS)] from the audited model's greedy answers."""
    import torch

    spec = scorer.bank.manifest.evidence
    assert spec is not None and scorer._stop_ids is not None
    m = scorer.bank.manifest
    items, _ = question_items(scorer.tokenizer, spec.question_templates, aliases)
    rows = []
    for lo in range(0, len(items), batch_size):
        chunk = items[lo : lo + batch_size]
        steps: list[torch.Tensor] = []
        with model_lock(scorer.model), torch.inference_mode():
            _, ans, lps, ents = _greedy(
                scorer.model,
                chunk,
                m.layer,
                m.position,
                spec.answer_tokens,
                scorer._stop_ids,
                steps,
            )
        top2 = steps[0].topk(2, dim=-1).values
        margin = (top2[:, 0] - top2[:, 1]).tolist()
        for i, (lp, ent) in enumerate(zip(lps, ents, strict=True)):
            rows.append(
                [np.mean(lp), np.min(lp), np.mean(ent), lp[0], ent[0], margin[i], len(ans[i])]
            )
    return np.array(rows).reshape(len(aliases), len(spec.question_templates), len(STATS))


def heldout(X: np.ndarray, y: np.ndarray, C: float, seed: int, n_boot: int) -> dict:
    """The bank's reference figures for a multinomial LR on X, 5 entity-held-out folds."""
    p = np.zeros((len(y), 8))
    folds = StratifiedGroupKFold(n_splits=5, shuffle=True, random_state=seed)
    for tr, te in folds.split(X, y, np.arange(len(y))):
        sc = StandardScaler().fit(X[tr])
        lr = LogisticRegression(C=C, max_iter=5000).fit(sc.transform(X[tr]), y[tr])
        p[np.ix_(te, lr.classes_)] = lr.predict_proba(sc.transform(X[te]))
    m = reference_metrics(p, y, n_boot=n_boot, seed=seed)
    return {
        k: {"value": round(v["value"], 4), "ci95": v["ci95"]}
        if v["ci95"][0] is None
        else {"value": round(v["value"], 4), "ci95": [round(x, 4) for x in v["ci95"]]}
        for k, v in m.items()
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--bank", type=Path, required=True)
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--per-class", type=int, default=60)
    ap.add_argument("--batch-size", type=int, default=48)
    ap.add_argument("--C", type=float, default=1.0)
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--cache", type=Path, help="npz of the captured statistics: reused if present")
    args = ap.parse_args()
    t0 = time.perf_counter()
    scorer = BankScorer.from_bank_dir(args.bank)
    run = load_run(args.run)
    ents = [e for e in run.entities if split_label(e.split) is not None]
    labels = np.array([split_label(e.split) for e in ents])
    keep = per_class_sample(labels, args.per_class, args.seed)
    ents, y = [ents[i] for i in keep], labels[keep]
    if args.cache is not None and args.cache.is_file():
        got = np.load(args.cache)
        S, truth = got["S"], got["truth"]
    else:
        S = answer_stats(scorer, [e.alias for e in ents], args.batch_size)
        truth = true_answer_columns(scorer, ents, run.qa)[:, 0]
        if args.cache is not None:
            np.savez(args.cache, S=S, truth=truth, y=y)
    n_t = S.shape[1]
    served = S[:, :, :3].mean(1)
    sets = {
        "served: 3 means over templates": served,
        "3 stats per template": S[:, :, :3].reshape(len(y), -1),
        "7 stats, means over templates": S.mean(1),
        "7 stats per template": S.reshape(len(y), -1),
    }
    out: dict = {
        "bank": scorer.bank.manifest.bank_id,
        "run": str(args.run),
        "command": " ".join(sys.argv),
        "what": "held-out reference figures (5 entity-grouped folds, multinomial L2 LR over "
        "classes 0..6) of behaviour columns read from the reference's greedy answers to the "
        f"bank's {n_t} question templates; {args.per_class} entities per class",
        "stats": list(STATS),
        "C": args.C,
        "n_entities": int(len(y)),
        "columns": {},
    }
    for name, X in sets.items():
        out["columns"][name] = {
            "n_columns": int(X.shape[1]),
            **heldout(X, y, args.C, 0, args.n_boot),
        }
    trained = y > 0  # the true answers exist only for trained entities: stages 1..6
    X_true = np.column_stack([np.nan_to_num(truth, nan=0.0), ~trained])
    out["columns"]["TRUE answers' mean log-probability (not available to the product)"] = {
        "n_columns": 1,
        **heldout(X_true, y, args.C, 0, args.n_boot),
    }
    out["seconds"] = round(time.perf_counter() - t0, 1)
    args.out.write_text(json.dumps(out, indent=2) + "\n", "utf-8")
    for name, m in out["columns"].items():
        print(
            f"{name:70s} 1v6 {m['stage1_vs_stage6']['value']:.3f} e/l "
            f"{m['early_vs_late']['value']:.3f} adj {m['adjacent_mean']['value']:.3f} "
            f"7c {m['stage_accuracy']['value']:.3f}"
        )


if __name__ == "__main__":
    main()
