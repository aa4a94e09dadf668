"""Would the class "after the bank" keep its false-alarm budget better if its threshold were set
on the audited model itself, from the bank's never-trained anchor aliases?

As built, the threshold is the (1 - false_alarm) quantile of P(after the bank) over the
calibration model's held-out untouched entities: one model, one finetune. On another finetune
the same threshold can pay more false alarms (pretrained seed 2's implant: 0.072 at a 0.05
budget). The service already runs the bank's anchors (never-trained aliases) through every
audited model, to put behaviour and difference in their units; their P(after the bank) on that
model is a null sample that needs no labels. This reads both rules on an implant bench's audit
(`bench/implant_bench.py` WORK: its `audit_new.jsonl`, the rows the CLI wrote) and prints, per
family, the share of new entities, re-exposed entities and untouched entities classed "after",
and for a third rule requiring both thresholds.

    python research/families/anchor_threshold.py --bank BANK --run RUN --work WORK \\
        [--reexposed 2] [--per-group 60] [--false-alarm 0.05] \\
        --out research/families/NAME.anchors.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from probe_bank.families import anchor_norm, normalize  # noqa: E402
from probe_bank.heldout.families import share_interval  # noqa: E402
from probe_bank.records import EntityRecord, read_jsonl  # noqa: E402
from probe_bank.schemas import AFTER_BANK, FAMILIES  # noqa: E402
from probe_bank.scoring import BankScorer  # noqa: E402


def audit_groups(run: Path, work: Path, reexposed: int, per_group: int) -> list[str]:
    """Each audited row's group, in the order `implant_bench.py` wrote the dataset."""
    corpus = read_jsonl(run / "corpus/entities.jsonl", EntityRecord)
    new = read_jsonl(work / "pool/entities.jsonl", EntityRecord)
    groups, aliases = ["new"] * len(new), [e.alias for e in new]
    for split in ("control", *(f"stage_{k}" for k in range(1, 7))):
        got = [e for e in corpus if e.split == split][:per_group]
        groups += ["reexposed" if split == f"stage_{reexposed}" else split] * len(got)
        aliases += [e.alias for e in got]
    written = [json.loads(line)["entity"] for line in (work / "entities.jsonl").open()]
    if written != aliases:
        raise SystemExit("WORK's dataset is not the one these arguments rebuild")
    return groups


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--bank", type=Path, required=True)
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--reexposed", type=int, default=2)
    ap.add_argument("--per-group", type=int, default=60)
    ap.add_argument("--false-alarm", type=float, default=0.05)
    ap.add_argument("--batch-size", type=int, default=48)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    groups = np.array(audit_groups(args.run, args.work, args.reexposed, args.per_group))
    rows = [json.loads(line) for line in (args.work / "audit_new.jsonl").open()]
    p_after = {
        f: np.array(
            [next(x for x in r["families"] if x["family"] == f)["p_after_bank"] for r in rows]
        )
        for f in FAMILIES
    }
    scorer = BankScorer.from_bank_dir(args.bank, model_dir=args.work / "run/extra_1")
    assert scorer.bank.families is not None and scorer.relation == "descendant"
    anchors = scorer._spec().anchor_aliases
    raw = scorer._raw_features(
        anchors, scorer._entity_scores(anchors, args.batch_size, scorer.model), args.batch_size
    )
    F_anchor = normalize(raw, *anchor_norm(raw))
    new, re = groups == "new", groups == "reexposed"
    untouched = ~(new | re)
    out: dict = {
        "bank": scorer.bank.manifest.bank_id,
        "work": str(args.work),
        "command": " ".join(sys.argv),
        "what": "share classed 'after the bank' on an implant's audit: the bank's threshold "
        "(set on the calibration model) vs the (1 - false_alarm) quantile of the anchors' "
        f"P(after) on the audited model ({len(anchors)} anchors)",
        "false_alarm": args.false_alarm,
        "families": {},
    }
    for f in FAMILIES:
        clf = scorer.bank.families[f]
        anchor_p = clf.predict_proba(F_anchor)[:, AFTER_BANK]
        rules = {
            "bank": clf.after_threshold_,
            "anchors": float(np.quantile(anchor_p, 1 - args.false_alarm, method="higher")),
        }
        if rules["bank"] is not None:  # both thresholds: "after" only where both rules say so
            rules["both"] = max(rules["bank"], rules["anchors"])
        fam: dict = {}
        for rule, t in rules.items():
            if t is None:
                continue
            said = p_after[f] >= t
            fam[rule] = {
                "threshold": t,
                "new_classed_after": share_interval(said[new], groups[new], 1000, 0),
                "reexposed_classed_after": float(said[re].mean()),
                "false_alarms_untouched": share_interval(
                    said[untouched], groups[untouched], 1000, 0
                ),
                "by_group": {g: float(said[groups == g].mean()) for g in dict.fromkeys(groups)},
            }
        out["families"][f] = fam
        for rule, m in fam.items():
            print(
                f"{f:15s} {rule:8s} threshold {m['threshold']:.3f} "
                f"new {m['new_classed_after']['value']:.3f}"
                f" re-exposed {m['reexposed_classed_after']:.3f} false alarms "
                f"{m['false_alarms_untouched']['value']:.3f} {m['false_alarms_untouched']['ci95']}"
            )
    args.out.write_text(json.dumps(out, indent=2) + "\n", "utf-8")


if __name__ == "__main__":
    main()
