"""Text scoring's held-out figures on an existing bank, without rebuilding it.

Banks built before text scoring have no metrics.json `texts`; this computes them exactly as the
bank build does (`family_build.validate_texts`: the calibration model against the reference,
its extra stage's QA texts as touched, the corpus entities' QA texts as untouched, the first 3
trained texts per entity, loss drop in units of the calibration's anchor texts), over the
corpus entities of stages 1..6 and the control (every one, or the first N of each split), and
writes them to OUT.

    python research/families/texts_validation.py --run RUN --bank BANK --out OUT.json \\
        [--per-split N]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from probe_bank.bank import ProbeBank  # noqa: E402
from probe_bank.family_build import find_calibration, validate_texts  # noqa: E402
from probe_bank.modeling import load_model  # noqa: E402
from probe_bank.run_dir import load_run  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--bank", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument(
        "--per-split", type=int, default=None, help="only the first N entities of each split"
    )
    args = ap.parse_args()
    run, cal = load_run(args.run), find_calibration(args.run)
    if cal is None:
        sys.exit(f"{args.run}/calibration is missing: run `recency-audit calibrate` first")
    bank = ProbeBank.load(args.bank)
    reference, tokenizer = load_model(run.model_dir)
    calibration, _ = load_model(cal.model_dir)
    keep: dict[str, list[str]] = {}
    for e in run.entities:
        if e.split.startswith("stage_") or e.split == "control":
            keep.setdefault(e.split, []).append(e.entity_id)
    ids = {i for group in keep.values() for i in group[: args.per_split]}
    untouched = [q for q in run.qa if q.entity_id in ids]
    figures = validate_texts(
        calibration,
        reference,
        tokenizer,
        cal.anchor_texts,
        cal.pool_qa,
        untouched,
        layer=bank.manifest.layer,
        n_boot=args.n_boot,
        seed=0,
    )
    out = {"command": " ".join(sys.argv), "bank": bank.manifest.bank_id, "texts": figures}
    args.out.write_text(json.dumps(out, indent=1) + "\n", "utf-8")
    print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
