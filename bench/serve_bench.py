"""Serving benchmark: the batched service against a naive baseline, both real servers on 127.0.0.1.

Each server runs `recency-audit serve` in its own process (the baseline with
RECENCY_AUDIT_NAIVE_BASELINE=1: one prompt per forward, full model, all hidden states, no batching)
and is driven in turn by 1, 8, 32 and 128 concurrent httpx clients, each request one prompt.
A level stops after `--requests` requests or `--seconds`, whichever comes first.

    python bench/serve_bench.py --tiny               # the test suite's tiny random bank
    python bench/serve_bench.py --tiny --layers 4 --width 256   # a larger random model
    python bench/serve_bench.py --bank BANK_DIR      # any built bank
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import statistics
import string
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
TEMPLATES = ("Q: Who is {alias}?\nA:", "Q: What does {alias} stand for?\nA:")


@dataclass
class LevelResult:
    clients: int
    requests: int
    errors: int
    seconds: float
    throughput: float  # successful requests per second
    p50_ms: float
    p99_ms: float


def build_tiny_bank(root: Path, layers: int, width: int) -> Path:
    """The test fixtures' random model + fake run + bank (seconds; no training). Throughput
    depends on the model's size, not on what its weights learned."""
    sys.path.insert(0, str(ROOT))
    from probe_bank.build import BuildConfig, build_bank
    from tests.fixtures_bank import make_fake_run
    from tests.fixtures_models import make_random_model_dir

    model = make_random_model_dir(root / "model", layers=layers, width=width)
    run = make_fake_run(root / "run", model)
    return build_bank(run, root / "bank", BuildConfig(n_boot=20))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(bank: Path, port: int, home: Path, *, naive: bool) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "RECENCY_AUDIT_HOME": str(home),
        "RECENCY_AUDIT_API_KEYS": "",
        "RECENCY_AUDIT_QUEUE_SIZE": "100000",
        "RECENCY_AUDIT_REQUEST_TIMEOUT_S": "300",
        "RECENCY_AUDIT_NAIVE_BASELINE": "1" if naive else "0",
    }
    cmd = [sys.executable, "-m", "recency_audit", "serve", "--bank", str(bank), "--port", str(port)]
    return subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 300) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            err = proc.stderr.read().decode() if proc.stderr else ""
            raise RuntimeError(f"server exited with {proc.returncode}:\n{err[-3000:]}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} never became ready")


def make_prompts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        alias = "<" + "".join(rng.choices(string.ascii_lowercase, k=5)) + ">"
        out.append(TEMPLATES[i % len(TEMPLATES)].replace("{alias}", alias))
    return out


async def drive(
    url: str, clients: int, total: int, seconds: float, prompts: list[str]
) -> LevelResult:
    """`clients` workers send one-prompt requests back to back until `total` or `seconds`."""
    latencies: list[float] = []
    errors = 0
    issued = 0
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=300) as client:
        start = time.perf_counter()

        async def worker() -> None:
            nonlocal issued, errors
            while issued < total and time.perf_counter() - start < seconds:
                prompt = prompts[issued % len(prompts)]
                issued += 1
                t0 = time.perf_counter()
                r = await client.post("/v1/score", json={"prompts": [prompt]})
                if r.status_code == 200:
                    latencies.append(time.perf_counter() - t0)
                else:
                    errors += 1

        await asyncio.gather(*(worker() for _ in range(clients)))
        elapsed = time.perf_counter() - start
    ms = sorted(x * 1000 for x in latencies) or [float("nan")]
    p99 = ms[min(len(ms) - 1, int(0.99 * len(ms)))]
    return LevelResult(
        clients,
        len(latencies),
        errors,
        elapsed,
        len(latencies) / elapsed,
        statistics.median(ms),
        p99,
    )


def bench_server(
    bank: Path, home: Path, *, naive: bool, levels: list[int], total: int, seconds: float
) -> list[LevelResult]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_server(bank, port, home, naive=naive)
    try:
        wait_ready(url, proc)
        prompts = make_prompts(512)
        asyncio.run(drive(url, 4, 32, 30, prompts))  # warm-up: connections, allocator, caches
        return [asyncio.run(drive(url, c, total, seconds, prompts)) for c in levels]
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def table(batched: list[LevelResult], naive: list[LevelResult]) -> str:
    head = (
        "| clients | batched req/s | p50 ms | p99 ms | naive req/s | p50 ms | p99 ms "
        "| throughput ratio |\n|---|---|---|---|---|---|---|---|"
    )
    rows = [
        f"| {b.clients} | {b.throughput:.1f} | {b.p50_ms:.1f} | {b.p99_ms:.1f} "
        f"| {n.throughput:.1f} | {n.p50_ms:.1f} | {n.p99_ms:.1f} "
        f"| {b.throughput / n.throughput:.2f}x |"
        for b, n in zip(batched, naive, strict=True)
    ]
    return "\n".join([head, *rows])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--bank", type=Path, help="BANK_DIR to serve")
    src.add_argument("--tiny", action="store_true", help="build and serve the tiny test bank")
    ap.add_argument("--layers", type=int, default=2, help="--tiny model: blocks")
    ap.add_argument("--width", type=int, default=64, help="--tiny model: d_model")
    ap.add_argument("--levels", default="1,8,32,128", help="concurrent clients per level")
    ap.add_argument("--requests", type=int, default=512, help="request cap per level")
    ap.add_argument("--seconds", type=float, default=20.0, help="time cap per level")
    ap.add_argument("--json", type=Path, help="also write the raw results here")
    args = ap.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    with tempfile.TemporaryDirectory(prefix="serve-bench-") as tmp:
        bank = args.bank or build_tiny_bank(Path(tmp) / "tiny", args.layers, args.width)
        kw = {"levels": levels, "total": args.requests, "seconds": args.seconds}
        batched = bench_server(bank, Path(tmp) / "home-b", naive=False, **kw)
        naive = bench_server(bank, Path(tmp) / "home-n", naive=True, **kw)
        manifest = json.loads((bank / "manifest.json").read_text("utf-8"))
    print(f"bank {manifest['bank_id']}: probe layer {manifest['layer']}, {manifest['position']}")
    print(table(batched, naive))
    for name, res in (("batched", batched), ("naive", naive)):
        failed = sum(r.errors for r in res)
        if failed:
            print(f"{name}: {failed} requests failed", file=sys.stderr)
    if args.json:
        args.json.write_text(
            json.dumps(
                {"batched": [asdict(r) for r in batched], "naive": [asdict(r) for r in naive]},
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
