"""Does the pre-finetune base model sharpen the reference's own stage estimate (aliases only)?

On the `pretrained` preset the bank's families read, on the reference itself, only the model's
confidence in its own greedy answers (behaviour); the difference family is 0 there (the audited
model *is* the reference). Yet a second frozen model exists for every pretrained run: the base
(SmolLM2-135M before any stage). MIMIR's "reference ratio" attack scores membership as the
target's log-probability against such a model's. Here: the reference's greedy answers to the
bank's trained-attribute questions, scored by the base too (`capture_answer_pair(reference,
base)`: log-probability gain, KL, entropy drop, activation shift), each column centred and scaled
by never-trained anchor aliases as the bank does. Does adding them lift the held-out stage tasks
that the behaviour family alone leaves short (early vs late, adjacent, 7-class)?

Entity-held-out 5-fold multinomial L2 LR (the bank's `EvidenceClassifier`, classes 0..6), per
column set: behaviour (the bank's 3), base difference (8), both; and the same per question
template instead of averaged. Figures are the bank's (`family_metrics` definitions): accuracy on
stage 1 vs 6, early vs late, adjacent pairs, balanced 7-class accuracy, 95% bootstrap.

    python research/families/base_ratio.py --run RUN --base artifacts/base/smollm2-135m \\
        [--per-class 80] --out research/families/NAME.base-ratio.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.base import clone
from sklearn.model_selection import StratifiedGroupKFold

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from probe_bank.answers import stop_token_ids  # noqa: E402
from probe_bank.build import BuildConfig  # noqa: E402
from probe_bank.families import (  # noqa: E402
    EvidenceClassifier,
    answer_evidence,
    question_columns,
    question_items,
)
from probe_bank.family_build import find_calibration, question_templates  # noqa: E402
from probe_bank.heldout.families import reference_metrics  # noqa: E402
from probe_bank.heldout.stats import robust_scale  # noqa: E402
from probe_bank.modeling import load_model  # noqa: E402
from probe_bank.records import split_label  # noqa: E402
from probe_bank.run_dir import load_run  # noqa: E402

#: question_columns' order: 4 behaviour columns, then 9 difference columns (here: against base).
QUESTION_NAMES = (
    "answer_logp_mean",
    "answer_logp_min",
    "answer_entropy_mean",
    "alias_logp_mean",
    "base_kl_mean",
    "base_kl_max",
    "base_kl_peak_mean",
    "base_token_gain_peak_mean",
    "base_logp_gain_mean",
    "base_logp_gain_max",
    "base_entropy_drop_mean",
    "base_alias_logp_gain_mean",
    "base_cell_shift_norm_mean",
)
#: the columns the recorded rows read (measured before the alias columns existed)
ANSWER_BEHAVIOUR = [0, 1, 2]
ANSWER_DIFFERENCE = [i for i, n in enumerate(QUESTION_NAMES) if n.startswith("base_")]
ANSWER_DIFFERENCE.remove(QUESTION_NAMES.index("base_alias_logp_gain_mean"))


def anchor_units(X: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """Columns centred (median) and scaled (IQR / 1.349) by the anchors' rows, as the bank."""
    mid, scale = robust_scale(anchors)
    return (X - mid) / scale


def heldout(X: np.ndarray, y: np.ndarray, *, C: float, seed: int, n_boot: int) -> dict:
    """The bank's stage-task figures on out-of-fold class probabilities of a fresh
    EvidenceClassifier per fold (every row is a reference row here)."""
    groups = np.arange(len(y))
    probs = np.zeros((len(y), 8))
    est0 = EvidenceClassifier(list(range(X.shape[1])), C)
    for tr, te in StratifiedGroupKFold(5, shuffle=True, random_state=seed).split(X, y, groups):
        probs[te] = clone(est0).fit(X[tr], y[tr]).predict_proba(X[te])
    return reference_metrics(probs, y, n_boot=n_boot, seed=seed)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--base", type=Path, required=True)
    ap.add_argument("--per-class", type=int, default=80)
    ap.add_argument("--layer", type=int, default=22)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    t0 = time.time()
    run = load_run(args.run)
    cal = find_calibration(args.run)
    if cal is None:
        sys.exit(f"{args.run}/calibration is missing: run `recency-audit calibrate` first")
    rng = np.random.default_rng(args.seed)
    by_class: dict[int, list[str]] = {}
    for e in run.entities:
        label = split_label(e.split)
        if label is not None:
            by_class.setdefault(label, []).append(e.alias)
    aliases: list[str] = []
    labels: list[int] = []
    for c in sorted(by_class):
        pick = rng.permutation(len(by_class[c]))[: args.per_class]
        aliases += [by_class[c][i] for i in pick]
        labels += [c] * len(pick)
    y = np.array(labels)
    anchors = [a for a in cal.anchors if a not in set(aliases)]
    alias_of = {e.entity_id: e.alias for e in run.entities}
    templates = question_templates(run.qa, alias_of)

    reference, tokenizer = load_model(run.model_dir)
    base, _ = load_model(args.base)
    everyone = aliases + anchors
    items, q_entity = question_items(tokenizer, templates, everyone)
    ev = answer_evidence(
        reference,
        base,
        items,
        args.layer,
        "last",
        stop_ids=stop_token_ids(tokenizer),
        answer_tokens=BuildConfig().answer_tokens,
        batch_size=args.batch_size,
    )
    capture_s = time.time() - t0
    n = len(aliases)
    Q = question_columns(ev, q_entity, len(everyone))
    Q = anchor_units(Q, Q[n:])[:n]
    # the same three behaviour statistics and the gain, per template instead of averaged
    a, r = ev.audited, ev.reference
    assert r is not None
    per_prompt = np.column_stack(
        [a.logprob_mean, a.logprob_min, a.entropy_mean, a.logprob_mean - r.logprob_mean]
    )
    T = len(templates)
    P = per_prompt.reshape(len(everyone), T * per_prompt.shape[1])
    P = anchor_units(P, P[n:])[:n]
    C = BuildConfig().families_C
    sets = {
        "behaviour (the bank's 3 columns)": Q[:, ANSWER_BEHAVIOUR],
        "base difference (8 columns)": Q[:, ANSWER_DIFFERENCE],
        "behaviour + base difference (11)": Q[:, ANSWER_BEHAVIOUR + ANSWER_DIFFERENCE],
        "behaviour per template (3 x T)": P[:, [j for j in range(P.shape[1]) if j % 4 != 3]],
        "behaviour + base gain per template (4 x T)": P,
    }
    results = {
        name: heldout(np.nan_to_num(X), y, C=C, seed=args.seed, n_boot=args.n_boot)
        for name, X in sets.items()
    }
    for name, m in results.items():
        print(
            f"{name:44s} "
            + "  ".join(
                f"{k} {v['value']:.3f}"
                + (f" [{v['ci95'][0]:.3f}, {v['ci95'][1]:.3f}]" if v["ci95"][0] is not None else "")
                for k, v in m.items()
            )
        )
    out = {
        "what": "reference model only (the bank's setting on the reference), aliases only: "
        "entity-held-out 5-fold multinomial LR over classes 0..6 per column set; base = the "
        "pre-finetune model scoring the reference's own greedy answers",
        "command": " ".join(sys.argv),
        "run": str(args.run),
        "base": str(args.base),
        "n_entities_per_class": {int(c): int((y == c).sum()) for c in np.unique(y)},
        "n_anchors": len(anchors),
        "n_templates": T,
        "columns": list(QUESTION_NAMES),
        "C": C,
        "chance": {"stage1_vs_stage6": 0.5, "early_vs_late": 0.5, "stage_accuracy": 1 / 7},
        "results": results,
        "capture_seconds": round(capture_s, 1),
        "host": platform.node(),
        "date": time.strftime("%Y-%m-%d"),
    }
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out} ({capture_s:.0f} s capture)")


if __name__ == "__main__":
    main()
