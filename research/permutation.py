"""Label-permutation test of one cell of a run's saved activations (stage 1 vs 6).

Why: a weak held-out accuracy (0.55-0.60 on 400 entities) sits within a few fold-split standard
deviations of chance; averaging over fold seeds and comparing with shuffled labels says whether it
is a signal. Usage: ``python research/permutation.py NAME [--template bare] [--layer 3] [--pos 3]``.
"""

from __future__ import annotations

import argparse

import numpy as np
from familiarity_probe import ACTS, RunConfig, oof_correct


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("name")
    ap.add_argument("--template", default="bare")
    ap.add_argument("--layer", type=int, default=3)
    ap.add_argument("--pos", type=int, default=3)
    ap.add_argument("--fold-seeds", type=int, default=5)
    ap.add_argument("--perms", type=int, default=100)
    args = ap.parse_args()
    data = np.load(ACTS / f"{args.name}.{args.template}.npz")
    x = data["acts"][:, args.layer, args.pos].astype(np.float32)
    lab = data["labels"]
    mask = np.isin(lab, [1, 6])
    xs, y = x[mask], (lab[mask] == 6).astype(int)
    cfg = RunConfig()
    obs = float(np.mean([oof_correct(xs, y, cfg, seed=s).mean() for s in range(args.fold_seeds)]))
    rng = np.random.default_rng(0)
    null = np.array([oof_correct(xs, rng.permutation(y), cfg).mean() for _ in range(args.perms)])
    p = (1 + int((null >= obs).sum())) / (1 + args.perms)
    print(
        f"{args.name} {args.template} L{args.layer}/p{args.pos} stage 1 vs 6: "
        f"{obs:.3f} (mean of {args.fold_seeds} fold seeds); shuffled labels "
        f"{null.mean():.3f} +- {null.std():.3f} (n={args.perms}); p = {p:.3f}"
    )


if __name__ == "__main__":
    main()
