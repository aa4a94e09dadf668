"""The `pretrained` preset at the study's scale, in one prepared run for a lent GPU.

About 2,640 entities per stage (the study's count), seeds one after another, bf16 autocast on
CUDA (accelerate), the bank built with the `pretrained` build config. Runs, checkpoints and banks
go under WORK (gigabytes: never under the device's $OUT); OUT receives only what the device can
send back (a few small files): `results.jsonl`, one metrics row per seed copied there as soon as
that seed ends (`recency-audit sweep` machinery), and `progress.json` (each seed's seconds, the
deadline's decisions). A run cut short still leaves every finished seed recorded.

Batch size 64 instead of the CPU preset's 16 (the same number of epochs; 4x fewer optimizer
steps, which a GPU needs to be busy): the row records it. `--lean-build` keeps the bank build's
CPU side (scikit-learn) to the pre-registered cell and fewer label shuffles: at 2,640 entities per
stage the full exploratory scan alone is many minutes of CPU (`bench/build_cost.py` sizes it).
`--deadline-s` starts a seed only while the slowest seed so far would still fit.

    python research/pretrained_gpu.py --out "$OUT" --work /tmp/gpu-work --lean-build \
        --deadline-s 480 [--seeds 0 1 2] [--entities 2640] [--mixed-epochs 5] [--warmup 2640] \
        [--loss-on all] [--alias-style natural]

`--base-model PATH --entities 6 --seeds 0` is the CPU rehearsal on a tiny random model
(tests/trainer/test_pretrained_gpu.py), so the GPU minutes go to the measurement, not to a typo.
`research/gpu_science.sh` is the device-side command (the base carried as two parts).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any, get_args

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

#: The bank build on a GPU machine: the pre-registered cell only (block int(0.75 x blocks), last
#: token), no exploratory scan, 10 label shuffles; everything else the `pretrained` config's.
LEAN_BUILD: dict[str, Any] = {"layers": [], "positions": ["last"], "n_permutations": 10}
#: `--warmup N`: a format warm-up before stage 1 on N entities never probed (stage 0 on the base,
#: docs/RESULTS.md: stages 1-2 are under-learned at 5e-5 without one).
WARMUP: dict[str, Any] = {"warmup_on_base": True, "stage0_epochs": 5, "stage0_lr": 1e-4}
#: `--alias-style natural`: three adjectives and a noun, 5 tokens in SmolLM2's tokenizer (the
#: study's "exactly 5 tokens"); two adjectives give 13,248 aliases in all, fewer than 7 x 2,640.
NATURAL: dict[str, Any] = {"alias_style": "natural", "natural_adjectives": 3}


def spec(
    seeds: list[int],
    entities: int,
    batch_size: int,
    base_model: str | None,
    mixed_epochs: int,
    *,
    lean_build: bool = False,
    warmup: int = 0,
    loss_on: str = "answer",
    alias_style: str = "synthetic",
) -> dict:
    """The sweep spec: one configuration per seed (the recorded rows carry every setting)."""
    overrides: dict[str, Any] = {
        "entities_per_stage": entities,
        "control_entities": entities,
        "batch_size": batch_size,
        "checkpoint_every": 10_000,  # a GPU run is short: checkpoint at stage ends only
        "retention_max_questions": 400,
    }
    if warmup:
        overrides.update(WARMUP, pretrain_entities=warmup)
    tags = f"-w{warmup}" if warmup else ""
    if loss_on == "all":  # the study's mask (its `train_lm.py`: `labels = input_ids`)
        overrides["loss_on"] = loss_on
        tags += "-la"
    if alias_style == "natural":
        overrides.update(NATURAL)
        tags += "-na"
    build: dict[str, Any] = {"batch_size": 128, "probe": {"n_jobs": 8}}
    if lean_build:
        build.update(LEAN_BUILD)
    return {
        "configs": [
            {
                "name": f"pretrained-gpu-e{entities}{tags}-s{seed}",
                "preset": "pretrained",
                "seed": seed,
                "overrides": overrides,
                "base_model": base_model,
                "build": "pretrained",
                "build_overrides": build,
                "mixed_epochs": mixed_epochs,
            }
            for seed in seeds
        ]
    }


def fits(elapsed: float, durations: list[float], deadline: float | None) -> bool:
    """Whether another seed fits: the slowest seed so far, from now, ends before the deadline."""
    if deadline is None or not durations:
        return True
    return elapsed + max(durations) <= deadline


def main() -> None:
    from trainer.config import CorpusConfig, OptimConfig
    from trainer.sweep import SweepSpec, run_sweep

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="small files only (device $OUT)")
    parser.add_argument("--work", type=Path, default=None, help="runs and banks (default OUT)")
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
    parser.add_argument("--lean-build", action="store_true", help="the cell only (LEAN_BUILD)")
    parser.add_argument(
        "--warmup", type=int, default=0, help="entities of a format warm-up before stage 1 (WARMUP)"
    )
    parser.add_argument(
        "--loss-on",
        choices=get_args(OptimConfig.model_fields["loss_on"].annotation),
        default="answer",  # the preset's; `all` is every token of the QA text, as the study
        help="tokens that carry loss",
    )
    parser.add_argument(
        "--alias-style",
        choices=get_args(CorpusConfig.model_fields["alias_style"].annotation),
        default="synthetic",  # the preset's; `natural` as NATURAL
        help="how aliases look",
    )
    parser.add_argument("--deadline-s", type=float, default=None, help="start no seed past it")
    args = parser.parse_args()

    t0 = time.perf_counter()
    work = args.work or args.out
    args.out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    body = spec(
        args.seeds,
        args.entities,
        args.batch_size,
        args.base_model,
        args.mixed_epochs,
        lean_build=args.lean_build,
        warmup=args.warmup,
        loss_on=args.loss_on,
        alias_style=args.alias_style,
    )
    (args.out / "spec.json").write_text(json.dumps(body, indent=2) + "\n")
    progress: dict[str, Any] = {"deadline_s": args.deadline_s, "seeds": [], "skipped": []}
    durations: list[float] = []
    for config in body["configs"]:
        elapsed = time.perf_counter() - t0
        if not fits(elapsed, durations, args.deadline_s):
            progress["skipped"].append(config["name"])
            print(f"{config['name']}: skipped, {elapsed:.0f} s + {max(durations):.0f} s > deadline")
            continue
        start = time.perf_counter()
        results = run_sweep(SweepSpec.model_validate({"configs": [config]}), work)
        durations.append(time.perf_counter() - start)
        if results.resolve() != (args.out / "results.jsonl").resolve():
            shutil.copyfile(results, args.out / "results.jsonl")
        progress["seeds"].append({"name": config["name"], "seconds": round(durations[-1], 1)})
        (args.out / "progress.json").write_text(json.dumps(progress, indent=2) + "\n")
        print(f"{config['name']}: {durations[-1]:.0f} s", flush=True)
    (args.out / "progress.json").write_text(json.dumps(progress, indent=2) + "\n")
    print(f"{args.out / 'results.jsonl'} ({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
