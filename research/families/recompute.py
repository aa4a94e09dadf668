"""Recompute a bank's held-out family figures from its saved rows (`family_rows.safetensors`:
features, class, entity, model), with this version's `evaluate_families` (same folds and seed):
for figures whose definition changed after the bank was built. The bank itself is not touched.

    python research/families/recompute.py --bank BANK --out research/families/NAME.families.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from probe_bank.bank import FAMILY_ROWS, ProbeBank  # noqa: E402
from probe_bank.build import BuildConfig  # noqa: E402
from probe_bank.heldout.families import evaluate_families  # noqa: E402
from probe_bank.heldout.folds import ProbeConfig  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--bank", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--false-alarm", type=float, default=0.05)
    ap.add_argument("--n-boot", type=int, default=1000)
    args = ap.parse_args()
    bank = ProbeBank.load(args.bank)  # verified: the rows are the bank's own
    rows = load_file(str(args.bank / FAMILY_ROWS))
    _, metrics = evaluate_families(
        rows["features"].astype(np.float64),
        rows["label"],
        rows["entity"],
        rows["on_reference"].astype(bool),
        C=BuildConfig().families_C,  # the build's defaults, as the banks here were built
        false_alarm=args.false_alarm,
        n_splits=ProbeConfig().n_splits,
        seed=bank.manifest.seed,
        n_boot=args.n_boot,
    )
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
    ).stdout.strip()
    out = {
        "bank": bank.manifest.bank_id,
        "command": f"python research/families/recompute.py --bank {args.bank} (commit {commit})",
        "families": metrics,
    }
    args.out.write_text(json.dumps(out, indent=2) + "\n", "utf-8")
    for name in ("representation", "behaviour", "difference", "fused"):
        m = metrics[name]  # type: ignore[index]
        print(name, {k: m[k]["value"] for k in ("stage1_vs_stage6", "stage_accuracy")})


if __name__ == "__main__":
    main()
