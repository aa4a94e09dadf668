"""Print research/results.jsonl as a Markdown table (one row per run and probe template).

Why: the README's run table is generated from the recorded runs, never typed by hand.
Usage: ``python research/table.py [--cell last|alias_mean|best]``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

RESULTS = Path(__file__).with_name("results.jsonl")

#: Runs recorded before `trained_vs_control` used class weights: with 1 control per 6 trained
#: entities their unweighted probe mostly predicted "trained", so the balanced accuracy read ~0.50
#: by construction. The value is shown as n/a for them.
TVC_UNWEIGHTED = {"F1-default", "F2-syl200-lr1e-3", "F3-replay-prev0.2"}
TVC_UNWEIGHTED |= {"F4-lr5e-4-ep20-replayprev", "F5-knownq-lr5e-4"}

COLUMNS = (
    "| run | seed | template | cell | 1v6 [95% CI] | early/late | adjacent | 7-class | rho (exact)"
    " | trained vs ctl | best ctl 1v6 | L0 max 1v6 | retention acc s1..s6 (ctl unk) | time |"
)


def cell_row(rec: dict, tpl: str, cname: str, m: dict) -> str:
    s16 = m["stage1_vs_stage6"]
    ctl = m["controls_1v6"]
    best_ctl = max(ctl, key=ctl.get)
    ret = rec["retention_after_6"]
    scan = rec["probes"][tpl]["scan_1v6"]
    l0 = max(v for k, v in scan.items() if k.startswith("L0/"))
    co = m["centroid_order"]
    tvc = "n/a" if rec["name"] in TVC_UNWEIGHTED else f"{m['trained_vs_control']:.2f}"
    kept = " ".join(f"{ret[str(s)]['acc']:.2f}" for s in range(1, 7))
    return (
        f"| {rec['name']} | {rec['config']['seed']} | {tpl} | {cname} "
        f"| {s16['value']:.2f} [{s16['ci95'][0]:.2f}, {s16['ci95'][1]:.2f}] "
        f"| {m['early_vs_late']['value']:.2f} | {m['adjacent_mean']:.2f} "
        f"| {m['stage_accuracy_7']['value']:.2f} | {co['mean']:.2f} ({co['frac_exact']:.2f}) "
        f"| {tvc} | {best_ctl} {ctl[best_ctl]:.2f} | {l0:.2f} "
        f"| {kept} "
        f"({ret['0']['unknown_rate']:.2f}) | {rec['total_seconds']:.0f}s |"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cell", default="last", choices=["last", "alias_mean", "best", "all"])
    args = ap.parse_args()
    print(COLUMNS)
    print("|" + "---|" * COLUMNS.count(" |"))
    for line in RESULTS.read_text().splitlines():
        rec = json.loads(line)
        for tpl, res in rec["probes"].items():
            for cname, m in res.items():
                if not isinstance(m, dict) or "stage1_vs_stage6" not in m:
                    continue
                kind = "best" if cname.startswith("best") else cname
                if args.cell in ("all", kind):
                    print(cell_row(rec, tpl, cname, m))


if __name__ == "__main__":
    main()
