"""Is the probe at chance because it is starved of samples? Three readers of one cell, compared.

The bank's probe is an L2 logistic regression on per-prompt rows (C = 0.1 on `pretrained`). At 250
entities per stage the stage 1 vs 6 task fits it on about 400 entities in d = 576, where the study
had about 4,200 in d = 2,048. If a weak direction were there, a reader that needs fewer samples
would find it first: the difference of the two classes' means (one direction, no fit beyond two
centroids), or a logistic regression on the top principal components. Each reader sees each entity
as the mean of its probe prompts' activations at the cell, entity-grouped 5-fold (every fold
refits everything, PCA included), 95% bootstrap over entities, and a label-permutation null for
each reader (the same folds, labels shuffled across entities) so that three readers times two
tasks do not pass for a finding. Exploration: nothing here is served.

    python research/probe_power.py --run RUN --layer 22 --position last --out OUT.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sklearn.decomposition import PCA  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.model_selection import StratifiedKFold  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

Reader = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
TASKS = {"stage1_vs_stage6": ((1,), (6,)), "early_vs_late": ((1, 2, 3), (4, 5, 6))}


def mean_difference(X: np.ndarray, y: np.ndarray, X_test: np.ndarray) -> np.ndarray:
    """Project on the difference of the class means; threshold halfway between them."""
    mu0, mu1 = X[y == 0].mean(0), X[y == 1].mean(0)
    w = mu1 - mu0
    return ((X_test - (mu0 + mu1) / 2) @ w > 0).astype(int)


def logistic(C: float, components: int | None = None) -> Reader:
    def read(X: np.ndarray, y: np.ndarray, X_test: np.ndarray) -> np.ndarray:
        steps: list = [StandardScaler()]
        if components is not None:
            steps.append(PCA(n_components=min(components, len(X) - 1), random_state=0))
        steps.append(LogisticRegression(C=C, max_iter=5000))
        return make_pipeline(*steps).fit(X, y).predict(X_test)

    return read


def cross_validated(
    read: Reader, X: np.ndarray, y: np.ndarray, seed: int, fraction: float = 1.0
) -> np.ndarray:
    """Per entity: 1 where the held-out prediction is right. `fraction` < 1 fits each fold on
    that share of its training entities (per class, drawn with `seed`): the learning curve."""
    rng = np.random.default_rng(seed)
    correct = np.zeros(len(y))
    for tr, te in StratifiedKFold(5, shuffle=True, random_state=seed).split(X, y):
        if fraction < 1.0:
            tr = np.concatenate(
                [
                    rng.choice(tr[y[tr] == c], max(2, int(fraction * (y[tr] == c).sum())), False)
                    for c in (0, 1)
                ]
            )
        correct[te] = read(X[tr], y[tr], X[te]) == y[te]
    return correct


def bootstrap(correct: np.ndarray, y: np.ndarray, n_boot: int, seed: int) -> list[float]:
    rng = np.random.default_rng(seed)
    idx = [np.flatnonzero(y == c) for c in (0, 1)]
    means = [
        correct[np.concatenate([rng.choice(i, len(i)) for i in idx])].mean() for _ in range(n_boot)
    ]
    return [round(float(np.quantile(means, q)), 4) for q in (0.025, 0.975)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--stage", default=None, help="stage dir (default: the run's final)")
    parser.add_argument("--layer", type=int, required=True)
    parser.add_argument("--position", default="last")
    parser.add_argument("--C", type=float, default=0.1)
    parser.add_argument("--components", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--permutations", type=int, default=50)
    parser.add_argument("--n-boot", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--curve",
        type=float,
        nargs="*",
        default=[0.25, 0.5, 1.0],
        help="training-entity shares for the learning curve of each reader (10 draws each; the "
        "full share is the observed value)",
    )
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    from probe_bank.capture import capture
    from probe_bank.heldout.folds import entity_mean
    from probe_bank.modeling import load_model
    from probe_bank.run_dir import load_run, probe_data

    start = time.time()
    run = load_run(args.run, stage=args.stage)
    probes = run.labelled_probes
    model, tokenizer = load_model(run.model_dir)
    cap = capture(
        model,
        tokenizer,
        [p.prompt for p in probes],
        layers=[args.layer],
        positions=[args.position],
        alias_spans=[p.alias_char_span for p in probes],
        batch_size=args.batch_size,
    )
    (acts,) = (v[args.position] for v in cap.acts.values())
    table = probe_data(run)  # its rows are `run.labelled_probes`, in that order
    ids, label = table.ids, table.entity_labels
    X = entity_mean(acts, table.entity, len(ids))

    readers: dict[str, Reader] = {
        "logistic_C": logistic(args.C),
        "mean_difference": mean_difference,
        **{f"pca{k}_logistic": logistic(1.0, k) for k in args.components},
    }
    out: dict = {
        "run": str(args.run),
        "model_dir": str(run.model_dir),
        "layer": args.layer,
        "position": args.position,
        "C": args.C,
        "entities": len(ids),
        "d_model": int(X.shape[1]),
        "what": "held-out accuracy per entity (mean of its probe prompts' activations), "
        "entity 5-fold; 95% bootstrap over entities; permutation null on the same folds; "
        "curve: mean accuracy over 10 fold draws with each fold fitted on that share of its "
        "training entities (a reader starved of samples rises along it)",
        "tasks": {},
    }
    for task, (neg, pos) in TASKS.items():
        keep = np.isin(label, neg + pos)
        Xt, yt = X[keep], np.isin(label[keep], pos).astype(int)
        rng = np.random.default_rng(1)
        results = {}
        for name, read in readers.items():
            correct = cross_validated(read, Xt, yt, seed=0)
            observed = float(correct.mean())
            null = [
                float(cross_validated(read, Xt, rng.permutation(yt), seed=0).mean())
                for _ in range(args.permutations)
            ]
            curve = {
                f"{f:g}": round(
                    float(np.mean([cross_validated(read, Xt, yt, s, f).mean() for s in range(10)])),
                    4,
                )
                for f in args.curve
            }
            results[name] = {
                "value": round(observed, 4),
                "curve": curve,
                "ci95": bootstrap(correct, yt, args.n_boot, seed=0),
                "null_95th": round(float(np.quantile(null, 0.95)), 4) if null else None,
                "p": round((1 + sum(n >= observed for n in null)) / (1 + len(null)), 4)
                if null
                else None,
            }
            print(task, name, json.dumps(results[name]), flush=True)
        out["tasks"][task] = {"n_entities": int(keep.sum()), "readers": results}
    out["seconds"] = round(time.time() - start, 1)
    args.out.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
