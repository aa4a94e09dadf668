"""Would per-question order statistics lift the behaviour family's stage figures?

The behaviour columns average each statistic over the entity's question prompts, one of which
asks the attribute that was never trained (heldout_per_entity); sorting the per-question values
instead (max..min) keeps "five trained answers and one untrained" apart from a uniform middle.
Entity-grouped 5-fold logistic regression on the reference's rows, the same folds for both
feature sets; 95% bootstrap over entities. Exploration only: nothing here is served.

    python research/families/order_stats.py --run artifacts/runs/default \\
        --out research/families/small-s0.order-stats.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from probe_bank.answers import stop_token_ids
from probe_bank.families import ANSWER_TOKENS, answer_evidence, question_columns, question_items
from probe_bank.family_build import question_templates
from probe_bank.modeling import load_model
from probe_bank.run_dir import load_run, probe_data


def per_question(values: np.ndarray, entity: np.ndarray, n: int, k: int) -> np.ndarray:
    """[n, k] each entity's k per-question values, sorted descending."""
    out = np.full((n, k), np.nan)
    for e in range(n):
        out[e] = np.sort(values[entity == e])[::-1]
    return out


def oof(X: np.ndarray, y: np.ndarray, C: float, seed: int) -> np.ndarray:
    p = np.zeros((len(y), len(np.unique(y))))
    folds = StratifiedGroupKFold(5, shuffle=True, random_state=seed)
    for tr, te in folds.split(X, y, groups=np.arange(len(y))):
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000))
        p[te] = clf.fit(X[tr], y[tr]).predict_proba(X[te])
    return p


def figures(
    p: np.ndarray, late_p: np.ndarray, y: np.ndarray, rng: np.random.Generator, n_boot: int
) -> dict:
    """The product's figures from the 7-class posterior (early vs late and adjacent: the summed
    classes' mass, as `heldout.families.reference_metrics`), early vs late from a dedicated
    binary head (`late_p`, NaN off stages 1..6), and the AUC of the expected stage."""
    stage = p[:, 1:] @ np.arange(1, 7) / np.clip(p[:, 1:].sum(1), 1e-12, None)

    def binary(sel: np.ndarray, neg: list[int], pos: list[int]) -> float:
        s = sel[np.isin(y[sel], neg + pos)]
        said = p[s][:, pos].sum(1) > p[s][:, neg].sum(1)
        return float((said == np.isin(y[s], pos)).mean())

    def auc(a: np.ndarray, b: np.ndarray) -> float:
        sa, sb = stage[a], stage[b]
        return float((sa[:, None] < sb[None, :]).mean() + 0.5 * (sa[:, None] == sb[None, :]).mean())

    def all_figs(sel: np.ndarray) -> dict:
        ys = y[sel]
        staged = sel[ys >= 1]
        return {
            "stage1_vs_stage6": binary(sel, [1], [6]),
            "early_vs_late": binary(sel, [1, 2, 3], [4, 5, 6]),
            "early_vs_late_dedicated_head": float(
                ((late_p[staged] > 0.5) == (y[staged] >= 4)).mean()
            ),
            "adjacent_mean": float(np.mean([binary(sel, [k], [k + 1]) for k in range(1, 6)])),
            "stage_accuracy_balanced": float(
                np.mean([(p[sel][ys == c].argmax(1) == c).mean() for c in np.unique(ys)])
            ),
            "early_vs_late_auc_expected_stage": auc(sel[(ys >= 1) & (ys <= 3)], sel[ys >= 4]),
        }

    point = all_figs(np.arange(len(y)))
    boots = []
    for _ in range(n_boot):
        sel = np.concatenate(
            [rng.choice(np.flatnonzero(y == c), (y == c).sum()) for c in np.unique(y)]
        )
        boots.append(all_figs(sel))
    return {
        k: {
            "value": round(v, 4),
            "ci95": [
                round(float(np.quantile([b[k] for b in boots], q)), 4) for q in (0.025, 0.975)
            ],
        }
        for k, v in point.items()
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--C", type=float, default=1.0)
    ap.add_argument("--n-boot", type=int, default=200)
    args = ap.parse_args()
    torch.set_num_threads(1)
    run = load_run(args.run)
    table = probe_data(run)
    alias_of = {e.entity_id: e.alias for e in run.entities}
    aliases = [alias_of[i] for i in table.ids]
    model, tokenizer = load_model(args.run / "stage_6")
    templates = question_templates(run.qa, alias_of)
    items, entity = question_items(tokenizer, templates, aliases)
    ev = answer_evidence(
        model,
        None,
        items,
        0,
        "last",
        stop_ids=stop_token_ids(tokenizer),
        answer_tokens=ANSWER_TOKENS,
        batch_size=64,
    )
    a = ev.audited
    n, k = len(aliases), len(templates)

    y = table.entity_labels
    # the behaviour columns as served: question_columns' first four (answer logprob mean and
    # min, entropy, alias logprob; the rest are the difference columns, zero on the reference)
    served = question_columns(ev, entity, n)[:, :4]
    ordered = np.column_stack(
        [
            per_question(a.logprob_mean, entity, n, k),
            per_question(a.logprob_min, entity, n, k),
            per_question(-a.entropy_mean, entity, n, k),
            served[:, 3],
        ]
    )
    out = {"run": str(args.run), "entities": int(n), "questions_per_entity": k, "C": args.C}
    for name, X in (
        ("served_means", served),
        ("order_statistics", ordered),
        ("both", np.hstack([served, ordered])),
    ):
        rng = np.random.default_rng(0)
        staged = y >= 1
        late_p = np.full(len(y), np.nan)
        late_p[staged] = oof(X[staged], (y[staged] >= 4).astype(int), args.C, 0)[:, 1]
        out[name] = figures(oof(X, y, args.C, 0), late_p, y, rng, args.n_boot)
        print(name, json.dumps(out[name]))
    args.out.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
