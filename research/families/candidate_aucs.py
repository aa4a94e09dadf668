"""Does scoring an attribute's whole value domain recover the signal the greedy answer loses?

On the `small` model the audited model's confidence in its *own greedy answers* separates an
implant's new entities from stage 6 at about 0.70, while the *true* answer's gain over the
reference gives 1.00 (`feature_aucs.py`). Between the two: every value the corpus draws an
attribute from (a domain the bank could record, no per-entity answer needed), teacher-forced
under the audited model and the reference. Per entity, mean over the bank's question templates:

- cand_gain_max: the largest log-probability gain (audited - reference) over the domain;
- cand_top_p / cand_entropy: the audited model's distribution renormalised over the domain;
- cand_kl: KL(audited || reference) of those two domain distributions;
- cand_top_gain / cand_top_logp: gain and log-probability of the audited model's top value;
- cand_resid_max: the largest change of a value's (renormalised) log-probability, audited minus
  reference, after subtracting that value's mean change over anchor aliases (never-trained
  control entities not in any scored group): what this finetune did to *this* alias, not to all;
- cand_entropy_change: the domain distribution's entropy, audited minus reference (a finetune
  that taught the alias sharpens it; one that made the model forget it flattens it).

AUC of each, new vs stage 6 and new vs the untouched splits, as `feature_aucs.py`; then all
columns together (L2 logistic regression, 10-fold cross-validated, new vs stage 6 and new vs the
untouched), and the size of the noise a value's change carries: the mean change of the true
value (new entities) against the spread of every value's change on never-trained aliases.

    python research/families/candidate_aucs.py --bank BANK --work WORK --run RUN \\
        [--per-group 40] --out research/families/NAME.candidates.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from feature_aucs import column_aucs, implant_args, implant_groups, print_aucs  # noqa: E402

from probe_bank.answers import capture_answers  # noqa: E402
from probe_bank.capture import encode  # noqa: E402
from probe_bank.heldout.families import auc_interval  # noqa: E402
from probe_bank.records import EntityRecord, read_jsonl  # noqa: E402
from probe_bank.run_dir import fill_template  # noqa: E402
from probe_bank.scoring import BankScorer  # noqa: E402

#: The attribute each of the bank's question templates asks, in the manifest's order (checked).
ASKS = {
    "born": "birth_decade",
    "city": "city",
    "country": "country",
    "work?": "employer",
    "hobby": "hobby",
    "for a living": "occupation",
}
NAMES = (
    "cand_gain_max",
    "cand_top_p",
    "cand_entropy",
    "cand_kl",
    "cand_top_gain",
    "cand_top_logp",
    "cand_resid_max",
    "cand_entropy_change",
)


def attribute_of(template: str) -> str:
    hits = [a for key, a in ASKS.items() if key in template]
    if len(hits) != 1:
        raise SystemExit(f"cannot tell which attribute {template!r} asks")
    return hits[0]


def domain_changes(
    scorer: BankScorer, aliases: list[str], domains: dict[str, list[list[int]]]
) -> list[list[tuple[np.ndarray, np.ndarray]]]:
    """Per alias, per question template: the audited model's and the reference's log-probability
    of every domain value, each renormalised over the domain."""
    m = scorer.bank.manifest
    assert m.evidence is not None and scorer.reference is not None
    templates = m.evidence.question_templates
    prompts, spans, answers = [], [], []
    for alias in aliases:
        for t in templates:
            p, span = fill_template(t, alias)
            for ids in domains[attribute_of(t)]:
                prompts.append(p)
                spans.append(span)
                answers.append(ids)
    items = encode(scorer.tokenizer, prompts, spans)
    kw: dict[str, Any] = {
        "layer": m.layer,
        "position": m.position,
        "answers": answers,
        "batch_size": 128,
    }
    length = np.array([len(a) for a in answers])
    mine = capture_answers(scorer.model, items, **kw).logprob_mean * length  # sequence log-probs
    ref = capture_answers(scorer.reference, items, **kw).logprob_mean * length
    out, k = [], 0
    for _ in aliases:
        per = []
        for t in templates:
            n = len(domains[attribute_of(t)])
            a, r = mine[k : k + n], ref[k : k + n]
            k += n
            per.append((a - np.logaddexp.reduce(a), r - np.logaddexp.reduce(r)))
        out.append(per)
    return out


def anchor_change(anchors: list[list[tuple[np.ndarray, np.ndarray]]]) -> list[np.ndarray]:
    """Per template, each value's mean change (audited - reference) over the anchor aliases."""
    return [np.mean([e[t][0] - e[t][1] for e in anchors], 0) for t in range(len(anchors[0]))]


def domain_columns(
    changes: list[list[tuple[np.ndarray, np.ndarray]]], mean_change: list[np.ndarray]
) -> np.ndarray:
    """[E, len(NAMES)] per entity, mean over the bank's question templates."""
    out = np.zeros((len(changes), len(NAMES)))
    for i, per in enumerate(changes):
        rows = []
        for t, (a, r) in enumerate(per):
            pa, pr = np.exp(a), np.exp(r)
            top = int(a.argmax())
            rows.append(
                [
                    (a - r).max(),
                    pa.max(),
                    -(pa * a).sum(),
                    (pa * (a - r)).sum(),
                    (a - r)[top],
                    a.max(),
                    (a - r - mean_change[t]).max(),
                    (pr * r).sum() - (pa * a).sum(),
                ]
            )
        out[i] = np.mean(rows, 0)
    return out


def combined_aucs(
    cols: dict[str, np.ndarray], untouched: list[str]
) -> dict[str, dict[str, object]]:
    """Every column at once: held-out (10-fold) logistic-regression scores' AUC."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    out: dict[str, dict[str, object]] = {}
    for key, neg in (("new_vs_stage6", ["stage_6"]), ("new_vs_untouched", untouched)):
        X = np.vstack([cols["new"], *(cols[g] for g in neg)])
        y = np.r_[np.ones(len(cols["new"]), int), np.zeros(len(X) - len(cols["new"]), int)]
        lr = make_pipeline(StandardScaler(), LogisticRegression(C=0.3, max_iter=2000))
        folds = StratifiedKFold(10, shuffle=True, random_state=0)
        p = cross_val_predict(lr, X, y, cv=folds, method="predict_proba")[:, 1]
        out[key] = auc_interval(p, y, 1000, 0)
    return out


def change_noise(
    changes: list[list[tuple[np.ndarray, np.ndarray]]],
    truth: list[list[int]],
    anchors: list[list[tuple[np.ndarray, np.ndarray]]],
    mean_change: list[np.ndarray],
) -> dict[str, float]:
    """Nats: the true value's mean residual change on these entities, and the standard deviation
    of every value's residual change on the anchors (what a value-domain test must beat)."""
    true = [
        (a - r - mean_change[t])[truth[i][t]]
        for i, per in enumerate(changes)
        for t, (a, r) in enumerate(per)
    ]
    spread = [a - r - mean_change[t] for e in anchors for t, (a, r) in enumerate(e)]
    return {
        "true_value_change_mean": round(float(np.mean(true)), 4),
        "true_value_change_sd": round(float(np.std(true)), 4),
        "anchor_value_change_sd": round(float(np.std(np.concatenate(spread))), 4),
    }


def main() -> None:
    args = implant_args(__doc__, per_group=40)

    scorer = BankScorer.from_bank_dir(args.bank, model_dir=args.work / "run/extra_1")
    corpus = read_jsonl(args.run / "corpus/entities.jsonl", EntityRecord)
    values = {a: sorted({e.attributes[a] for e in corpus}) for a in ASKS.values()}
    tok = scorer.tokenizer
    domains = {
        a: [tok(" " + v + "\n", add_special_tokens=False)["input_ids"] for v in vs]
        for a, vs in values.items()
    }
    groups, untouched = implant_groups(args.run, args.work, args.reexposed, args.per_group)
    chosen = {e.entity_id for ents in groups.values() for e in ents}
    anchor_ents = [e for e in corpus if e.split == "control" and e.entity_id not in chosen]
    anchors = domain_changes(scorer, [e.alias for e in anchor_ents[: args.per_group]], domains)
    mean_change = anchor_change(anchors)
    templates = scorer.bank.manifest.evidence.question_templates  # type: ignore[union-attr]
    changes = {
        g: domain_changes(scorer, [e.alias for e in ents], domains) for g, ents in groups.items()
    }
    cols = {g: domain_columns(c, mean_change) for g, c in changes.items()}
    truth = [
        [values[attribute_of(t)].index(e.attributes[attribute_of(t)]) for t in templates]
        for e in groups["new"]
    ]
    aucs = column_aucs(cols, list(NAMES), untouched)
    out: dict[str, object] = {
        "bank": scorer.bank_id,
        "model": str(args.work / "run/extra_1"),
        "per_group": args.per_group,
        "anchors": len(anchors),
        "untouched": untouched,
        "domain_sizes": {a: len(v) for a, v in values.items()},
        **aucs,
        "all_columns_cv": combined_aucs(cols, untouched),
        "noise_nats": change_noise(changes["new"], truth, anchors, mean_change),
    }
    args.out.write_text(json.dumps(out, indent=2) + "\n", "utf-8")
    print_aucs(aucs, list(NAMES))
    print("all columns, cross-validated:", out["all_columns_cv"])
    print("noise (nats):", out["noise_nats"])


if __name__ == "__main__":
    main()
