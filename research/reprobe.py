"""Re-probe the activations a run saved, without retraining (other C, other cells).

Why: training is the slow part; probe choices (regularisation, cell, balanced classes) can be
checked on the saved activations in seconds. Prints, per layer, stage 1 vs 6 and trained vs
never-trained (balanced) at the last token, the alias mean and the best single position.
Usage: ``python research/reprobe.py NAME [--template who] [--c 0.1]``.
"""

from __future__ import annotations

import argparse

import numpy as np
from familiarity_probe import ACTS, RunConfig, balanced, pair_acc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("name")
    ap.add_argument("--template", default="who")
    ap.add_argument("--c", type=float, default=0.1)
    ap.add_argument("--alias-start", type=int, default=3)
    ap.add_argument("--alias-len", type=int, default=3)
    args = ap.parse_args()
    data = np.load(ACTS / f"{args.name}.{args.template}.npz")
    acts, lab = data["acts"].astype(np.float32), data["labels"]
    cfg = RunConfig(probe_c=args.c)
    sl = slice(args.alias_start, args.alias_start + args.alias_len)
    for layer in range(acts.shape[1]):
        cells = {"last": acts[:, layer, -1], "alias_mean": acts[:, layer, sl].mean(1)}
        row = []
        for cname, x in cells.items():
            s16 = pair_acc(x, lab, [1], [6], cfg).mean()
            row.append(f"{cname} 1v6 {s16:.2f} tvc {balanced(x, lab, cfg):.2f}")
        print(f"L{layer}: " + " | ".join(row))


if __name__ == "__main__":
    main()
