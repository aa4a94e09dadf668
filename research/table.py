"""Print research/results.jsonl as a Markdown table (one row per run and probe template).

Why: the README's run table is generated from the recorded runs, never typed by hand.
Usage: ``python research/table.py [--cell last|alias_mean|alias_last|best|all]``, or
``--summary`` for one row per run at the two cells fixed in advance.
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


SUMMARY_COLUMNS = (
    "| run | seed | who, last token: 1v6 | entity cell 1v6 [95% CI] | early/late | adjacent"
    " | 7-class | rho | best ctl 1v6 | loss-balanced probe (n) | retention s1..s6 |"
)


def entity_cell(rec: dict) -> tuple[str, dict] | None:
    """The entity cell fixed in advance (F10 on): the last alias token, last block before the
    final norm, of the untrained `bare` prompt; recorded from F13 on as `alias_last`."""
    bare = rec["probes"].get("bare", {})
    if "alias_last" in bare:
        return "bare/alias_last", bare["alias_last"]
    return None


def summary_row(rec: dict) -> str:
    ret = rec["retention_after_6"]
    kept = " ".join(f"{ret[str(s)]['acc']:.2f}" for s in range(1, 7))
    who = rec["probes"]["who"]["last"]["stage1_vs_stage6"]["value"]
    cell = entity_cell(rec)
    if cell is None:
        return f"| {rec['name']} | {rec['config']['seed']} | {who:.2f} | n/a |||||||| {kept} |"
    _, m = cell
    s16 = m["stage1_vs_stage6"]
    ctl = m["controls_1v6"]
    best_ctl = max(ctl, key=ctl.get)
    lb = m.get("loss_balanced_1v6") or {}
    lbp = lb.get("probe")
    lbs = f"{lbp['value']:.2f} (loss alone {lb['loss_only']:.2f}, n={lb['n']})" if lbp else "n/a"
    return (
        f"| {rec['name']} | {rec['config']['seed']} | {who:.2f} "
        f"| {s16['value']:.2f} [{s16['ci95'][0]:.2f}, {s16['ci95'][1]:.2f}] "
        f"| {m['early_vs_late']['value']:.2f} | {m['adjacent_mean']:.2f} "
        f"| {m['stage_accuracy_7']['value']:.2f} | {m['centroid_order']['mean']:.2f} "
        f"| {best_ctl} {ctl[best_ctl]:.2f} | {lbs} | {kept} |"
    )


def print_summary() -> None:
    print(SUMMARY_COLUMNS)
    print("|" + "---|" * SUMMARY_COLUMNS.count(" |"))
    for line in RESULTS.read_text().splitlines():
        print(summary_row(json.loads(line)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--cell", default="last", choices=["last", "alias_mean", "alias_last", "best", "all"]
    )
    ap.add_argument("--summary", action="store_true", help="one row per run, fixed cells")
    args = ap.parse_args()
    if args.summary:
        print_summary()
        return
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
