"""Throughput of audits: offline with 1 and 2 processes, and the service's batch-job path.

    python bench/jobs_bench.py [--bank BANK_DIR] [--items 512] [--batch-size 32]

Without --bank it builds a bank over a random Llama (default 4 layers, d=256, about the size of
the trainer's small from-scratch models) in a temp dir with the test corpus; throughput depends on
model size, not on what the weights learned. Offline
items/s exclude model loading (timed from the first batch to the merged result); the job path is
timed from POST /v1/jobs to `succeeded` on a warm server. Prints one markdown table row per path.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.jobs.server import ServiceProcess, free_port, wait_job  # noqa: E402
from tests.jobs.test_offline import write_dataset  # noqa: E402


def _env(threads: int) -> dict[str, str]:
    return {
        **os.environ,
        "OMP_NUM_THREADS": str(threads),
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONPATH": str(ROOT),
    }


def random_bank(root: Path, layers: int, width: int) -> Path:
    """A bank over a random Llama built like the tests' tiny bank (same corpus and builder)."""
    import torch

    from probe_bank.build import BuildConfig, build_bank
    from tests.fixtures_bank import make_fake_run
    from tests.fixtures_models import make_random_model_dir

    torch.set_num_threads(1)
    model = make_random_model_dir(root / "model", layers=layers, width=width)
    run = make_fake_run(root / "run", model)
    return build_bank(run, root / "bank", BuildConfig(n_boot=20))


def offline(bank: Path, dataset: Path, out: Path, processes: int, batch: int) -> float:
    """items/s reported by `audit` (scoring only) with 1 process or N accelerate processes."""
    args = [str(dataset), "--bank", str(bank), "--out", str(out), "--batch-size", str(batch)]
    args.append("--no-progress")
    if processes == 1:
        cmd = [sys.executable, "-m", "audit_service.offline", *args]
    else:
        cmd = [
            sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
            "--num_processes", str(processes), "--num_machines", "1", "--mixed_precision", "no",
            "--dynamo_backend", "no", "--main_process_port", str(free_port()),
            "-m", "audit_service.offline", *args,
        ]  # fmt: skip
    r = subprocess.run(cmd, env=_env(1), capture_output=True, text=True, timeout=1800)
    if r.returncode != 0:
        raise RuntimeError(r.stderr[-3000:])
    m = re.search(r"on (\d+) process\(es\) in [\d.]+s \(([\d.]+) items/s\)", r.stdout)
    if m is None or int(m.group(1)) != processes:
        raise RuntimeError(f"unexpected output: {r.stdout}")
    return float(m.group(2))


def service_job(bank: Path, dataset: Path, tmp: Path, chunk: int) -> float:
    """items/s of one job through a warm server (submit -> succeeded)."""
    env = {
        "OMP_NUM_THREADS": "1",
        "RECENCY_AUDIT_BANK_DIR": str(bank),
        "RECENCY_AUDIT_STATE_DIR": str(tmp / "state"),
        "RECENCY_AUDIT_DATA_DIR": str(tmp / "data"),
        "RECENCY_AUDIT_JOBS_CHUNK_SIZE": str(chunk),
    }
    n = sum(1 for _ in dataset.open())
    with (
        ServiceProcess(env, tmp / "server.log") as service,
        httpx.Client(base_url=service.url, timeout=60) as client,
    ):
        start = time.perf_counter()
        job = client.post(
            "/v1/jobs",
            content=dataset.read_bytes(),
            headers={"Content-Type": "application/x-ndjson"},
        ).json()
        status = wait_job(client, job["id"], timeout=1800)
        seconds = time.perf_counter() - start
    if status["state"] != "succeeded":
        raise RuntimeError(str(status))
    return n / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bank", type=Path, default=None)
    parser.add_argument("--items", type=int, default=512)
    parser.add_argument("--layers", type=int, default=4, help="random model (without --bank)")
    parser.add_argument("--width", type=int, default=256, help="random model (without --bank)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2, help="best of N for each path")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="jobs-bench-") as d:
        tmp = Path(d)
        bank = args.bank or random_bank(tmp / "random", args.layers, args.width)
        dataset = write_dataset(bank, tmp / "dataset.jsonl", args.items)
        b = args.batch_size
        paths = {
            "offline, 1 process": lambda i: offline(bank, dataset, tmp / f"o1-{i}.jsonl", 1, b),
            "offline, 2 processes (accelerate)": lambda i: offline(
                bank, dataset, tmp / f"o2-{i}.jsonl", 2, b
            ),
            "service job (POST /v1/jobs -> succeeded)": lambda i: service_job(
                bank, dataset, tmp / f"svc-{i}", b
            ),
        }
        rows = []
        for label, run in paths.items():
            best = max(run(i) for i in range(args.repeats))
            rows.append((label, best))
            print(f"| {label} | {best:.1f} |", flush=True)
        identical = (tmp / "o1-0.jsonl").read_bytes() == (tmp / "o2-0.jsonl").read_bytes()
        print(
            json.dumps(
                {
                    "items": args.items,
                    "batch_size": args.batch_size,
                    "bank": str(args.bank or f"random Llama {args.layers}x{args.width}"),
                    "load_avg_1m": os.getloadavg()[0],
                    "cpu_count": os.cpu_count(),
                    "offline_1_vs_2_identical": identical,
                    "items_per_s": dict(rows),
                }
            )
        )


if __name__ == "__main__":
    main()
