"""What a bank build costs on the CPU at a given entity count, with the model taken out.

The GPU run of the `pretrained` preset at the study's scale (2,640 entities per stage) spends its
GPU minutes on training; the bank build after it is scikit-learn on the machine's CPU cores, and
its cost grows with the entities. This times the build's CPU steps on synthetic activations of the
real shape (d_model 576, 4 probe templates per entity, 7 classes) with the same functions and
build config the bank uses, so the GPU script can be sized here (`research/pretrained_gpu.py
--lean-build`):

    OMP_NUM_THREADS=2 python bench/build_cost.py --entities 250 2640 --json OUT.json

Activations are Gaussian noise: fit time depends on the shapes and the solver's iterations, and
noise is the case the pretrained banks measured (probes at chance), not a faster one.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from probe_bank.build import build_config, headline_metrics, scan  # noqa: E402
from probe_bank.heldout.baselines import baseline_metrics  # noqa: E402
from probe_bank.heldout.folds import ProbeData  # noqa: E402
from probe_bank.heldout.permutation import permutation_test  # noqa: E402


def synthetic(entities_per_class: int, templates: int, d: int, seed: int) -> ProbeData:
    """Seven classes of entities, `templates` noise rows each."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(7), entities_per_class)
    entity = np.repeat(np.arange(len(labels)), templates)
    X = rng.standard_normal((len(entity), d)).astype(np.float32)
    return ProbeData(X, labels[entity], entity, labels)


def timed(fn: Callable[..., object], *args: object) -> float:
    t0 = time.perf_counter()
    fn(*args)
    return round(time.perf_counter() - t0, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entities", type=int, nargs="+", default=[250, 2640])
    parser.add_argument("--templates", type=int, default=4)
    parser.add_argument("--d-model", type=int, default=576)
    parser.add_argument("--permutations", type=int, default=2, help="timed shuffles (x each)")
    parser.add_argument("--statistics", type=int, default=7, help="scalar baselines (7 built)")
    parser.add_argument("--n-jobs", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    cfg = build_config("pretrained", probe={"n_jobs": args.n_jobs})
    rows = []
    for n in args.entities:
        data = synthetic(n, args.templates, args.d_model, seed=0)
        rng = np.random.default_rng(1)
        feats = {f"stat{i}": rng.standard_normal(len(data.y)) for i in range(args.statistics)}
        cell = {"blocks.22.hook_resid_post": {"last": data.X}}
        row = {
            "entities_per_class": n,
            "rows": len(data.y),
            "scan_one_cell_s": timed(scan, cell, data, cfg),
            "headline_s": timed(headline_metrics, data, cfg),
            "baselines_s": timed(
                partial(
                    baseline_metrics,
                    feats,
                    data,
                    cfg.probe,
                    n_boot=cfg.n_boot,
                    n_bins=cfg.balance_bins,
                )
            ),
            "permutation_each_s": round(
                timed(permutation_test, data, cfg.probe, args.permutations) / args.permutations,
                2,
            ),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"args": vars(args) | {"json": None}, "rows": rows}) + "\n")


if __name__ == "__main__":
    main()
