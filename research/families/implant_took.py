"""How well did each recorded implant take? For the rows of `bench/implant.results.jsonl` named
by a suffix, the new entities' trained questions answered exactly (teacher-forced greedy) and
their mean answer NLL, on the reference and on the implanted model, with the same function the
implant benchmark now records in every new row (`implant_learned`). Rows recorded before it
existed lack the figure; this fills it in from their saved work directories.

    python research/families/implant_took.py --suffix budget-0.01 \\
        --out research/families/small-implants.took.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

from implant_bench import implant_learned  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=Path, default=ROOT / "bench/implant.results.jsonl")
    ap.add_argument("--suffix", required=True, help="take the rows whose name ends so")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    took = {}
    for line in args.rows.read_text("utf-8").splitlines():
        row = json.loads(line)
        if not row["name"].endswith(args.suffix):
            continue
        work = ROOT / row["audited_model"].split("/run/extra_1")[0]  # the bench's --work
        took[row["name"]] = {
            "lora_rank": row["lora_rank"],
            **implant_learned(ROOT / row["run"], work / "run/extra_1", work / "pool"),
        }
        print(row["name"], took[row["name"]], flush=True)
    args.out.write_text(json.dumps(took, indent=2) + "\n", "utf-8")


if __name__ == "__main__":
    main()
