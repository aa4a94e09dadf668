"""How fast does stage 0 memorise? Trains stage 0 only, reporting fit every 10 epochs.

Why: the first runs learned nothing (train accuracy at the answer prior); this isolates the
optimiser settings (LR, batch) that let a small model memorise aliased facts at all.
Usage: ``python research/memorise_check.py n_pretrain=200 pretrain_lr=1e-3 batch=16 ...``
(keys: familiarity_probe.RunConfig; pretrain_epochs is rounded down to a multiple of 10).
Prints only; the numbers quoted in README.md came from these invocations.
"""

from __future__ import annotations

import random
import sys
import time

import torch
from familiarity_probe import (
    UNKNOWN,
    RunConfig,
    Vocab,
    build_model,
    make_entities,
    negatives,
    qa_stats,
    train_stage,
    trained_qas,
)


def main() -> None:
    torch.set_num_threads(1)
    cfg = RunConfig.model_validate(dict(a.split("=", 1) for a in sys.argv[1:]), strict=False)
    rng = random.Random(cfg.seed)
    torch.manual_seed(cfg.seed)
    v = Vocab(cfg.n_syllables, cfg.alias_first)
    unk = v.ids[UNKNOWN]
    ents, taken = make_entities(cfg, v, rng)
    pre = [q for e in ents if e.split == -1 for q in trained_qas(cfg, v, e)]
    model = build_model(cfg, len(v.words))

    def make() -> list[list[int]]:
        return list(pre) + negatives(cfg, v, int(cfg.neg_frac0 * len(pre)), taken, rng)

    t = time.time()
    for chunk in range(cfg.pretrain_epochs // 10):
        train_stage(cfg, model, 10, cfg.pretrain_lr, make, rng)
        known = qa_stats(model, pre, unk)
        fresh = qa_stats(model, negatives(cfg, v, 500, taken, rng), unk)
        print(
            f"epoch {(chunk + 1) * 10}: train acc {known['correct'].mean():.2f}, "
            f"'unknown' on trained {known['unknown'].mean():.2f}, "
            f"on fresh aliases {fresh['unknown'].mean():.2f} ({time.time() - t:.0f}s)",
            flush=True,
        )


if __name__ == "__main__":
    main()
