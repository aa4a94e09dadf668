"""How wide is the gap between new and untouched entities on an implanted model, and where would
each false-alarm budget put class 7's threshold in it? Reads an implant benchmark's served
scores (`WORK/audit_new.jsonl`, audited by BANK) and the bank's own held-out rows
(`family_rows.safetensors`: each calibration model's untouched and class-7 rows, scored out of
fold), then prints, for one family, P(after the bank) by group on the implanted model and, for
each budget B, the threshold the bank's rule would set (the (1 - B) quantile of the untouched
held-out rows, the strictest calibration model kept, before the audited model's anchor floor;
read here on the saved out-of-fold scores, where the fit reads its own inner folds, so the two can
differ a little),
the held-out recall there, and what the implant would have paid: new entities classed "after"
and false alarms on the untouched (every group but the new and the re-exposed).

    python research/families/after_margin.py --work artifacts/implant/small-s2-lora16 \\
        --run artifacts/runs/small-s2-2k --bank artifacts/banks/small-s2-2k-b0.01 [--reexpose 2]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from pydantic import BaseModel
from safetensors.numpy import load_file

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from probe_bank.families import budget_threshold  # noqa: E402
from probe_bank.heldout.families import untouched_rows  # noqa: E402
from probe_bank.records import EntityRecord, read_jsonl  # noqa: E402
from probe_bank.schemas import AFTER_BANK, FamilyEstimate  # noqa: E402


class AuditRow(BaseModel):
    """What this reads of one `recency-audit audit` output line (an entity with families)."""

    input: str
    families: list[FamilyEstimate]


def groups_of(work: Path, run: Path, aliases: list[str]) -> np.ndarray:
    """Each audited alias's group: 'implant' (the pool's new entities) or its corpus split."""
    new = {e.alias for e in read_jsonl(work / "pool" / "entities.jsonl", EntityRecord)}
    split = {e.alias: e.split for e in read_jsonl(run / "corpus" / "entities.jsonl", EntityRecord)}
    return np.array(["implant" if a in new else split[a] for a in aliases])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, required=True, help="an implant benchmark's --work")
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--bank", type=Path, required=True, help="the bank that audited it")
    ap.add_argument("--reexpose", type=int, default=2)
    ap.add_argument("--family", default="fused")
    ap.add_argument("--budgets", default="0.05,0.025,0.01,0.005")
    args = ap.parse_args()

    lines = (args.work / "audit_new.jsonl").read_text("utf-8").splitlines()
    rows = [AuditRow.model_validate_json(line) for line in lines if line]
    fam = [next(f for f in r.families if f.family == args.family) for r in rows]
    p = np.array([f.p_after_bank for f in fam])
    g = groups_of(args.work, args.run, [r.input for r in rows])
    print(f"served threshold (with the anchor floor): {fam[0].after_threshold:.4f}")
    print("group      n    q05     median  q95     max")
    for k in ["implant", "control", *(f"stage_{s}" for s in range(1, 7))]:
        q = p[g == k]
        print(
            f"{k:9s} {len(q):4d}  {np.quantile(q, 0.05):.4f}  {np.median(q):.4f}  "
            f"{np.quantile(q, 0.95):.4f}  {q.max():.4f}"
        )

    t = load_file(str(args.bank / "family_rows.safetensors"))
    held = t[f"oof_{args.family}"][:, AFTER_BANK].astype(np.float64)
    y, model = t["label"], t["model"]
    cals = [k for k in np.unique(model) if k > 0]
    untouched = ~np.isin(g, ["implant", f"stage_{args.reexpose}"])
    print("budget  threshold  held-out recall  implant: new 'after'  false alarms")
    for b in (float(x) for x in args.budgets.split(",")):
        thr = budget_threshold(held, untouched_rows(y, model == 0, model), b)
        recall = min(float((held[(model == k) & (y == AFTER_BANK)] >= thr).mean()) for k in cals)
        print(
            f"{b:<7} {thr:9.4f}  {recall:15.3f}  {(p[g == 'implant'] >= thr).mean():20.3f}  "
            f"{(p[untouched] >= thr).mean():12.3f}"
        )


if __name__ == "__main__":
    main()
