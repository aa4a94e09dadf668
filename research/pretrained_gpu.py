"""The `pretrained` preset at the study's scale, in one prepared run for a lent GPU.

About 2,640 entities per stage (the study's count), 3 seeds, bf16 autocast on CUDA (accelerate),
the bank built with the `pretrained` build config; one metrics row per seed is appended to
OUT/results.jsonl as soon as that seed ends (`recency-audit sweep` machinery), so a run cut short
still leaves every finished seed recorded. Batch size 64 instead of the CPU preset's 16 (the same
number of epochs; 4x fewer optimizer steps, which a GPU needs to be busy): the row records it.

    python research/pretrained_gpu.py --out "$OUT" [--seeds 0 1 2] [--entities 2640] \
        [--mixed-epochs 5]

`--base-model PATH --entities 6 --seeds 0` is the CPU rehearsal on a tiny random model
(tests/trainer/test_pretrained_gpu.py), so the GPU minutes go to the measurement, not to a typo.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def spec(
    seeds: list[int], entities: int, batch_size: int, base_model: str | None, mixed_epochs: int
) -> dict:
    """The sweep spec: one configuration per seed (the recorded rows carry every setting)."""
    overrides = {
        "entities_per_stage": entities,
        "control_entities": entities,
        "batch_size": batch_size,
        "checkpoint_every": 10_000,  # a GPU run is short: checkpoint at stage ends only
        "retention_max_questions": 400,
    }
    return {
        "configs": [
            {
                "name": f"pretrained-gpu-e{entities}-s{seed}",
                "preset": "pretrained",
                "seed": seed,
                "overrides": overrides,
                "base_model": base_model,
                "build": "pretrained",
                "build_overrides": {"batch_size": 128, "probe": {"n_jobs": 8}},
                "mixed_epochs": mixed_epochs,
            }
            for seed in seeds
        ]
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--entities", type=int, default=2640)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--base-model", default=None, help="default: the preset's (smollm2-135m)")
    parser.add_argument(
        "--mixed-epochs",
        type=int,
        default=0,
        help="then epochs on all six stages mixed, and a second row per seed (persistence)",
    )
    args = parser.parse_args()

    from trainer.sweep import SweepSpec, run_sweep

    args.out.mkdir(parents=True, exist_ok=True)
    body = spec(args.seeds, args.entities, args.batch_size, args.base_model, args.mixed_epochs)
    (args.out / "spec.json").write_text(json.dumps(body, indent=2) + "\n")
    t0 = time.perf_counter()
    results = run_sweep(SweepSpec.model_validate(body), args.out)
    print(f"{results} ({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
