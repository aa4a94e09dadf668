"""Recompute a bank's held-out family figures from its saved rows (`family_rows.safetensors`:
features, class, entity, model), with this version's `evaluate_families` (same folds and seed):
for figures whose definition changed after the bank was built. The bank itself is not touched.
An existing OUT keeps its other keys (how the bank was built, its figures as built); `families`
and `recomputed` (this command and `--why`) are replaced.

    python research/families/recompute.py --bank BANK --out research/families/NAME.families.json \
        --why "what changed"
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any, get_args

import numpy as np
from safetensors.numpy import load_file

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from probe_bank.bank import FAMILY_ROWS, ProbeBank  # noqa: E402
from probe_bank.build import BuildConfig  # noqa: E402
from probe_bank.families import families_read  # noqa: E402
from probe_bank.heldout.families import (  # noqa: E402
    evaluate_families,
    family_classifier,
    saved_kinds,
    untouched_rows,
)
from probe_bank.heldout.folds import ProbeConfig  # noqa: E402
from probe_bank.schemas import AfterRule  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--bank", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--false-alarm", type=float, default=0.05)
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--replace", action="store_true", help="OUT records another bank: replace")
    ap.add_argument("--why", required=True, help="which definitions changed since the build")
    ap.add_argument(
        "--after-rule",
        choices=get_args(AfterRule),
        help="read class 7 under this rule (default: the bank's own, evidence.after_rule)",
    )
    args = ap.parse_args()
    bank = ProbeBank.load(args.bank)  # verified: the rows are the bank's own
    rows = load_file(str(args.bank / FAMILY_ROWS))
    spec = bank.manifest.evidence
    rule = args.after_rule or (spec.after_rule if spec is not None else None)
    kind, saved_anchors = saved_kinds(rows)
    # the anchors' rows are saved with the rule
    anchors = saved_anchors if rule == "calibration_and_anchors" else None
    build = BuildConfig()  # this version's defaults, as a rebuilt bank would be fitted
    _, metrics = evaluate_families(
        rows["features"].astype(np.float64),
        rows["label"],
        rows["entity"],
        rows["on_reference"].astype(bool),
        C=build.families_C,
        false_alarm=args.false_alarm,
        n_splits=ProbeConfig().n_splits,
        seed=bank.manifest.seed,
        n_boot=args.n_boot,
        after_rule=rule,
        anchors=anchors,
        fused_Cs=build.families_fused_Cs,
        kind=kind,
    )
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
    ).stdout.strip()
    out = json.loads(args.out.read_text("utf-8")) if args.out.is_file() else {}
    if out.get("bank", bank.manifest.bank_id) != bank.manifest.bank_id:
        if not args.replace:
            raise SystemExit(
                f"{args.out} records bank {out['bank']}, not {bank.manifest.bank_id} "
                "(--replace to start it anew from this bank)"
            )
        out = {k: v for k, v in out.items() if k in ("run", "command")}  # how banks are built
    out["bank"] = bank.manifest.bank_id
    built = bank.metrics.families if bank.metrics is not None else None
    # metrics.json's own, as the bank serves
    out["families_as_built"] = built.model_dump(mode="json") if built is not None else None
    F, y, groups = rows["features"].astype(np.float64), rows["label"], rows["entity"]
    untouched = untouched_rows(y, rows["on_reference"].astype(bool), kind)
    fused = family_classifier(
        "fused",
        build.families_C,
        args.false_alarm,
        ProbeConfig().n_splits,
        bank.manifest.seed,
        build.families_fused_Cs,
    ).fit(F, y, groups, untouched)
    metrics["fused_reads"] = families_read(fused.columns_)  # as a rebuilt bank would serve
    metrics["fused_C"] = fused.C_
    out["families"] = metrics
    out["recomputed"] = (
        f"python research/families/recompute.py --bank {args.bank}"
        f"{' --after-rule ' + args.after_rule if args.after_rule else ''} (commit {commit}): "
        f"{args.why}"
    )
    args.out.write_text(json.dumps(out, indent=2) + "\n", "utf-8")
    for name in ("representation", "behaviour", "difference", "fused"):
        m: dict[str, Any] = metrics[name]  # type: ignore[assignment]
        keys = (
            "stage1_vs_stage6",
            "stage_accuracy",
            "after_bank_recall",
            "after_bank_false_alarms",
        )
        print(name, {k: m[k]["value"] for k in keys})


if __name__ == "__main__":
    main()
