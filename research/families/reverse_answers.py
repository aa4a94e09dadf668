"""Does the reverse direction find what the difference family misses: the *reference's* greedy
answers, scored by the audited model?

The served difference family scores the audited model's own greedy answers by the reference. On
the `small` model that loses most of the true answer's signal (new vs stage 6: 0.72-0.78 against
1.000 for the true answer's gain), because a later finetune moves every value of an attribute
for any alias about as much as it moves a new entity's true one. The reference's own greedy answer
to a trained question is, for a stage-6 entity, mostly the trained answer: its log-probability
under the audited model is then the stage's forgetting, which the true-answer statistics show is
what separates the groups. No ground truth is needed. Columns per entity (mean over the bank's
question templates; the audited model's answers and the reference's are each decoded greedily):

- rev_drop_mean / rev_drop_max: reference minus audited log-probability of the reference's answers;
- rev_kl_mean / rev_kl_peak: KL(reference || audited) over the reference's answer positions;
- rev_ref_logp: the reference's confidence in its own answers;
- agree: share of the questions where both models' greedy answers are the same tokens;

beside the served difference columns, for an implant made by `bench/implant_bench.py`; AUC new vs
stage 6 and vs every untouched split, and entity-grouped 5-fold logistic regression new vs stage
6 on the served difference columns alone and with the reverse columns added.

    python research/families/reverse_answers.py --bank BANK --work WORK --run RUN \\
        [--per-group 60] --out research/families/NAME.reverse.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from feature_aucs import column_aucs, implant_args, implant_groups, print_aucs  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.model_selection import StratifiedKFold  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from probe_bank.answers import capture_answer_pair  # noqa: E402
from probe_bank.families import COLUMNS, FEATURES, question_items  # noqa: E402
from probe_bank.heldout.families import auc_interval  # noqa: E402
from probe_bank.heldout.folds import entity_mean  # noqa: E402
from probe_bank.scoring import BankScorer  # noqa: E402

REVERSE = ("rev_drop_mean", "rev_drop_max", "rev_kl_mean", "rev_kl_peak", "rev_ref_logp", "agree")


def reverse_columns(scorer: BankScorer, aliases: list[str]) -> np.ndarray:
    """[E, len(REVERSE)] for a descendant (the scorer holds the reference)."""
    assert scorer.reference is not None and scorer._stop_ids is not None
    spec = scorer._spec()
    m = scorer.bank.manifest
    items, entity = question_items(scorer.tokenizer, spec.question_templates, aliases)
    how = {
        "layer": m.layer,
        "position": m.position,
        "max_new_tokens": spec.answer_tokens,
        "stop_ids": scorer._stop_ids,
        "batch_size": 64,
    }
    ref, aud, kl, kl_peak, _ = capture_answer_pair(scorer.reference, scorer.model, items, **how)
    mine, *_ = capture_answer_pair(scorer.model, scorer.reference, items, **how)
    drop = ref.logprob_mean - aud.logprob_mean
    agree = np.array([a == b for a, b in zip(ref.answers, mine.answers, strict=True)], float)
    n = len(aliases)
    per = entity_mean(np.column_stack([drop, kl, kl_peak, ref.logprob_mean, agree]), entity, n)
    most = np.full(n, -np.inf)
    np.maximum.at(most, entity, drop)
    return np.column_stack([per[:, 0], most, per[:, 1], per[:, 2], per[:, 3], per[:, 4]])


def cv_auc(X: np.ndarray, y: np.ndarray, seed: int = 0) -> dict[str, object]:
    """Held-out AUC of an L2 logistic regression, 5 stratified folds (one row per entity)."""
    p = np.zeros(len(y))
    for tr, te in StratifiedKFold(5, shuffle=True, random_state=seed).split(X, y):
        sc = StandardScaler().fit(X[tr])
        lr = LogisticRegression(max_iter=5000).fit(sc.transform(X[tr]), y[tr])
        p[te] = lr.predict_proba(sc.transform(X[te]))[:, 1]
    return auc_interval(p, y, 1000, 0)


def main() -> None:
    args = implant_args(__doc__, per_group=60)
    scorer = BankScorer.from_bank_dir(args.bank, model_dir=args.work / "run/extra_1")
    groups, untouched = implant_groups(args.run, args.work, args.reexposed, args.per_group)
    cols: dict[str, np.ndarray] = {}
    for name, ents in groups.items():
        aliases = [e.alias for e in ents]
        agg = scorer._entity_scores(aliases, 64, scorer.model)
        served = scorer._raw_features(aliases, agg, 64)[:, COLUMNS["difference"]]
        cols[name] = np.column_stack([served, reverse_columns(scorer, aliases)])
    names = [*(FEATURES[i] for i in COLUMNS["difference"]), *REVERSE]
    aucs = column_aucs(cols, names, untouched)
    y = np.r_[np.ones(len(cols["new"]), int), np.zeros(len(cols["stage_6"]), int)]
    X = np.vstack([cols["new"], cols["stage_6"]])
    k = len(COLUMNS["difference"])
    combined = {
        "served_difference": cv_auc(X[:, :k], y),
        "reverse": cv_auc(X[:, k:], y),
        "served_difference_and_reverse": cv_auc(X, y),
    }
    out: dict[str, object] = {
        "bank": scorer.bank_id,
        "model": str(args.work / "run/extra_1"),
        "per_group": args.per_group,
        "untouched": untouched,
        "what": "single-column AUCs of the served difference columns and the reverse-direction "
        "columns (the reference's greedy answers scored by the audited model); cv_new_vs_stage6: "
        "5-fold held-out AUC of an L2 logistic regression over each column set",
        **aucs,
        "cv_new_vs_stage6": combined,
    }
    args.out.write_text(json.dumps(out, indent=2) + "\n", "utf-8")
    print_aucs(aucs, names)
    for key, v in combined.items():
        print(f"cv new vs s6 {key:32s} {v['value']:.3f} {v['ci95']}")  # type: ignore[index]


if __name__ == "__main__":
    main()
