"""What one served forward costs, in wall time and in CPU time, per batch size and thread count.

The serving benchmark's compute bound is a rate on full batches; on 2 cores shared with the
event loop and `hey`, what the service pays is the forward's *CPU* time (a second intra-op thread
that spins or syncs takes a core the event loop needed), and at small batches its fixed cost per
call. This measures both, in process, on the bank's own `BankScorer.forward` (capture, probe,
calibration: the worker thread's whole call), for each `--threads` value in one run so the
ratios share the machine's state. Each (threads, batch) cell runs `--seconds` after a warm-up;
CPU time is the process's (`time.process_time`, every thread).

    OMP_NUM_THREADS=2 python bench/forward_cost.py --bank artifacts/banks/default \
        --threads 1 2 --batches 1 4 16 32 [--json OUT.json]

Threads are set with `torch.set_num_threads` between cells (the OpenMP pool is sized by
OMP_NUM_THREADS at start; fewer threads than that are a subset of it).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from serve_bench import TEMPLATES, aliases  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bank", type=Path, required=True)
    parser.add_argument("--model", type=Path, default=None, help="audit this model instead")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4, 16, 32])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    import torch

    from probe_bank.scoring import BankScorer

    scorer = BankScorer.from_bank_dir(args.bank, model_dir=args.model)
    names = aliases(max(args.batches))
    rows = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        for batch in args.batches:
            chosen = names[:batch]
            items = scorer.prepare([TEMPLATES[0].replace("{alias}", a) for a in chosen], chosen)
            with torch.inference_mode():
                for _ in range(10):
                    scorer.forward(items)
                calls, wall0, cpu0 = 0, time.perf_counter(), time.process_time()
                while time.perf_counter() - wall0 < args.seconds:
                    scorer.forward(items)
                    calls += 1
                wall = (time.perf_counter() - wall0) / calls
                cpu = (time.process_time() - cpu0) / calls
            rows.append(
                {
                    "threads": threads,
                    "batch": batch,
                    "calls": calls,
                    "wall_ms": round(1e3 * wall, 3),
                    "cpu_ms": round(1e3 * cpu, 3),
                    "prompts_per_s": round(batch / wall, 1),
                    "cpu_ms_per_prompt": round(1e3 * cpu / batch, 3),
                }
            )
    print("| threads | batch | wall ms / call | CPU ms / call | prompts/s | CPU ms / prompt |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['threads']} | {r['batch']} | {r['wall_ms']:.2f} | {r['cpu_ms']:.2f} | "
            f"{r['prompts_per_s']:,.0f} | {r['cpu_ms_per_prompt']:.3f} |"
        )
    if args.json is not None:
        result = {"bank": str(args.bank), "model": str(args.model) if args.model else None}
        args.json.write_text(json.dumps({**result, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
