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

from tests.jobs.data import write_dataset  # noqa: E402
from tests.jobs.server import ServiceProcess, free_port, wait_job  # noqa: E402


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


def _submit(client: httpx.Client, dataset: Path) -> str:
    r = client.post(
        "/v1/jobs", content=dataset.read_bytes(), headers={"Content-Type": "application/x-ndjson"}
    )
    r.raise_for_status()
    return str(r.json()["id"])


def _live_latencies(client: httpx.Client, n: int) -> list[float]:
    """Seconds of `n` sequential one-prompt POST /v1/score requests."""
    out = []
    for i in range(n):
        start = time.perf_counter()
        r = client.post("/v1/score", json={"prompts": [f"Q: Who is <live{i}>?\nA:"]})
        r.raise_for_status()
        out.append(time.perf_counter() - start)
    return out


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def service_job(bank: Path, dataset: Path, tmp: Path, chunk: int) -> dict[str, float]:
    """Job items/s on a warm server (submit -> succeeded), and live-request latency while idle
    and while a second job runs (the job is at batch priority; live requests go first)."""
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
        status = wait_job(client, _submit(client, dataset), timeout=1800)
        seconds = time.perf_counter() - start
        if status["state"] != "succeeded":
            raise RuntimeError(str(status))
        idle = _live_latencies(client, 30)
        second = _submit(client, dataset)
        time.sleep(0.2)
        loaded = _live_latencies(client, 30)
        during = client.get(f"/v1/jobs/{second}").json()
        wait_job(client, second, timeout=1800)
    return {
        "items_per_s": n / seconds,
        "live_p50_idle_ms": 1000 * _pct(idle, 0.5),
        "live_p95_idle_ms": 1000 * _pct(idle, 0.95),
        "live_p50_during_job_ms": 1000 * _pct(loaded, 0.5),
        "live_p95_during_job_ms": 1000 * _pct(loaded, 0.95),
        "job_still_running_after_live_probe": float(during["state"] == "running"),
    }


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
        offline_paths = {
            "offline, 1 process": lambda i: offline(bank, dataset, tmp / f"o1-{i}.jsonl", 1, b),
            "offline, 2 processes (accelerate)": lambda i: offline(
                bank, dataset, tmp / f"o2-{i}.jsonl", 2, b
            ),
        }
        rows: dict[str, float] = {}
        for label, run in offline_paths.items():
            rows[label] = max(run(i) for i in range(args.repeats))
            print(f"| {label} | {rows[label]:.1f} |", flush=True)
        runs = [service_job(bank, dataset, tmp / f"svc-{i}", b) for i in range(args.repeats)]
        service = max(runs, key=lambda r: r["items_per_s"])
        rows["service job (POST /v1/jobs -> succeeded)"] = service["items_per_s"]
        print(f"| service job | {service['items_per_s']:.1f} |", flush=True)
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
                    "items_per_s": rows,
                    "service_best_run": service,
                }
            )
        )


if __name__ == "__main__":
    main()
