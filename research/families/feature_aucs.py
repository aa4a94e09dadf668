"""Which single evidence column separates an implant's new entities from the untouched ones.

For an implant made by `bench/implant_bench.py` (WORK holds the pool and the finetuned model):
every family column the product computes (`probe_bank.families.FEATURES`, raw, through the
bank's own `BankScorer`), and, for scale, two columns the product cannot have because they need
each entity's true answers: the audited model's mean log-probability of the trained answers and
its gain over the reference on them ("answer NLL" and "its drop against the reference" in issue
12). AUC of each column, new entities against stage 6 and against the untouched stages 1, 3..5
and the control, on `--per-group` entities of each.

    python research/families/feature_aucs.py --bank BANK --work WORK --run RUN \\
        [--reexposed 2] [--per-group 60] --out research/families/NAME.features.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from probe_bank.answers import capture_answers  # noqa: E402
from probe_bank.capture import encode  # noqa: E402
from probe_bank.families import FEATURES  # noqa: E402
from probe_bank.heldout.families import auc_interval  # noqa: E402
from probe_bank.records import EntityRecord, QARecord, read_jsonl  # noqa: E402
from probe_bank.scoring import BankScorer  # noqa: E402

TRUE = ("TRUE_answer_logp", "TRUE_answer_gain")


def true_answer_columns(
    scorer: BankScorer, entities: list[EntityRecord], qa: list[QARecord]
) -> np.ndarray:
    """[E, 2] (one column when the audited model is the reference): mean over the entity's
    trained questions of the audited model's mean answer-token log-probability, and of its gain
    over the reference (teacher-forced, answer + newline); NaN for an entity with none."""
    ids = {e.entity_id: i for i, e in enumerate(entities)}
    alias = {e.entity_id: e.alias for e in entities}
    rows = [q for q in qa if q.entity_id in ids and not q.heldout]
    prompts = [q.text[: q.text.rindex(q.answer)].rstrip(" ") for q in rows]
    spans = []
    for q, p in zip(rows, prompts, strict=True):
        at = p.index(alias[q.entity_id])
        spans.append((at, at + len(alias[q.entity_id])))
    items = encode(scorer.tokenizer, prompts, spans)
    answers = [
        scorer.tokenizer(" " + q.answer + "\n", add_special_tokens=False)["input_ids"] for q in rows
    ]
    m = scorer.bank.manifest
    kw: dict[str, Any] = {
        "layer": m.layer,
        "position": m.position,
        "answers": answers,
        "batch_size": 64,
    }
    mine = capture_answers(scorer.model, items, **kw).logprob_mean
    entity = np.array([ids[q.entity_id] for q in rows])
    per_entity = [mine]
    if scorer.reference is not None:
        per_entity.append(mine - capture_answers(scorer.reference, items, **kw).logprob_mean)
    return np.column_stack(
        [
            [v[entity == i].mean() if (entity == i).any() else np.nan for i in range(len(entities))]
            for v in per_entity
        ]
    )


def implant_args(doc: str | None, per_group: int) -> argparse.Namespace:
    """The command line both column scripts take: an implant bench's WORK, its RUN and BANK."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--bank", type=Path, required=True)
    ap.add_argument("--work", type=Path, required=True, help="the implant bench's WORK dir")
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--reexposed", type=int, default=2, help="the stage the implant re-exposed")
    ap.add_argument("--per-group", type=int, default=per_group)
    ap.add_argument("--out", type=Path, required=True)
    return ap.parse_args()


def implant_groups(
    run: Path, work: Path, reexposed: int, per_group: int
) -> tuple[dict[str, list[EntityRecord]], list[str]]:
    """The implant's new entities and `per_group` of each split the implant did not touch (the
    control and every stage but the re-exposed one), with those splits' names."""
    corpus = read_jsonl(run / "corpus/entities.jsonl", EntityRecord)
    pool = read_jsonl(work / "pool/entities.jsonl", EntityRecord)
    untouched = ["control", *(f"stage_{k}" for k in range(1, 7) if k != reexposed)]
    groups = {"new": pool[:per_group]}
    for split in untouched:
        groups[split] = [e for e in corpus if e.split == split][:per_group]
    return groups, untouched


def column_aucs(
    cols: dict[str, np.ndarray], names: list[str], untouched: list[str]
) -> dict[str, dict[str, object]]:
    """Per column, AUC of new entities against stage 6 and against every untouched split."""
    rest = np.vstack([cols[s] for s in untouched])
    out: dict[str, dict[str, object]] = {"auc_new_vs_stage6": {}, "auc_new_vs_untouched": {}}
    for j, name in enumerate(names):
        for key, neg in (("auc_new_vs_stage6", cols["stage_6"]), ("auc_new_vs_untouched", rest)):
            x = np.r_[cols["new"][:, j], neg[:, j]]
            y = np.r_[np.ones(len(cols["new"]), int), np.zeros(len(neg), int)]
            if np.isfinite(x).all() and x.std() > 0:
                out[key][name] = auc_interval(x, y, 1000, 0)
    return out


def print_aucs(aucs: dict[str, dict[str, object]], names: list[str]) -> None:
    for name in names:
        a, b = aucs["auc_new_vs_stage6"].get(name), aucs["auc_new_vs_untouched"].get(name)
        if a and b:
            print(f"{name:30s} new vs s6 {a['value']:.3f}  new vs untouched {b['value']:.3f}")  # type: ignore[index]


def main() -> None:
    args = implant_args(__doc__, per_group=60)

    scorer = BankScorer.from_bank_dir(args.bank, model_dir=args.work / "run/extra_1")
    qa = read_jsonl(args.run / "corpus/qa.jsonl", QARecord)
    qa += read_jsonl(args.work / "pool/qa.jsonl", QARecord)
    groups, untouched = implant_groups(args.run, args.work, args.reexposed, args.per_group)
    cols: dict[str, np.ndarray] = {}
    for name, ents in groups.items():
        aliases = [e.alias for e in ents]
        agg = scorer._entity_scores(aliases, 64, scorer.model)
        F = scorer._raw_features(aliases, agg, 64)
        cols[name] = np.column_stack([F, true_answer_columns(scorer, ents, qa)])
    names = [*FEATURES, *TRUE]
    aucs = column_aucs(cols, names, untouched)
    out: dict[str, object] = {
        "bank": scorer.bank_id,
        "model": str(args.work / "run/extra_1"),
        "per_group": args.per_group,
        "untouched": untouched,
        "note": "TRUE_* need each entity's trained answers: outside the product, for scale",
        **aucs,
    }
    args.out.write_text(json.dumps(out, indent=2) + "\n", "utf-8")
    print_aucs(aucs, names)


if __name__ == "__main__":
    main()
