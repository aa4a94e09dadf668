"""Serving benchmark: real `recency-audit serve` processes on 127.0.0.1 driven by `hey`.

For one bank, in one run (so the ratios share the machine's state):
1. the compute bound: the bank's truncated forward alone, in process, on batches of the shape the
   batcher forms at saturation (MAX_BATCH_SIZE one-prompt items), in prompts/s;
2. the batched service as shipped and the naive baseline (RECENCY_AUDIT_NAIVE_BASELINE=1: one
   prompt per forward, the full model with every hidden state, no batching; it scores
   identically), each at every client level, for single-prompt requests (`POST /v1/score`) and
   for 8-entity requests (`POST /v1/entities/score`): req/s, p50, p99 and errors per level;
3. the stack's own ceilings: the same requests to a server with RECENCY_AUDIT_NULL_MODEL=1 (the
   whole served path, validation to serialisation, with each forward replaced by one fixed
   result: the ceiling for that endpoint), and the batched server's `GET /healthz` (no work).
Levels run back to back, each `--per-client` requests per client (at least `--min-requests`).

    python bench/serve_bench.py --tiny                       # the test suite's tiny random bank
    python bench/serve_bench.py --bank BANK_DIR --json out.json [--model DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import socket
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
KINDS = ("prompt", "entities8")


@dataclass
class LevelResult:
    clients: int
    requests: int  # answered 200
    errors: int  # any other status, and transport errors
    seconds: float
    throughput: float  # 200s per second
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


def start_server(
    bank: Path,
    port: int,
    home: Path,
    *,
    naive: bool,
    model: Path | None = None,
    null: bool = False,
    env_extra: dict[str, str] | None = None,
    cwd: Path = ROOT,
) -> subprocess.Popen[bytes]:
    """A `recency-audit serve` process; `cwd` another checkout runs that checkout's code."""
    env = {
        **os.environ,
        "RECENCY_AUDIT_HOME": str(home),
        "RECENCY_AUDIT_API_KEYS": "",
        "RECENCY_AUDIT_QUEUE_SIZE": "100000",
        "RECENCY_AUDIT_REQUEST_TIMEOUT_S": "300",
        "RECENCY_AUDIT_NAIVE_BASELINE": "1" if naive else "0",
        "RECENCY_AUDIT_NULL_MODEL": "1" if null else "0",
        **(env_extra or {}),
    }
    cmd = [sys.executable, "-m", "recency_audit", "serve", "--bank", str(bank), "--port", str(port)]
    if model is not None:
        cmd += ["--model", str(model)]
    return subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


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


def aliases(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return ["<" + "".join(rng.choices(string.ascii_lowercase, k=5)) + ">" for _ in range(n)]


def body(kind: str) -> dict[str, list[str]]:
    """The request every client sends (hey repeats one body; nothing in the service caches).
    A prompt names its alias: a bank that reads the alias tokens (`alias_mean`) refuses one
    without, and every other bank is given the same body."""
    if kind == "prompt":
        alias = aliases(1)[0]
        return {"prompts": [TEMPLATES[0].replace("{alias}", alias)], "aliases": [alias]}
    return {"entities": aliases(8, seed=1)}


def parse_hey_csv(out: str, clients: int, sent: int) -> LevelResult:
    """hey's per-request CSV (`-o csv`): one row per response with its latency, status and start
    offset; requests that got no response (transport errors) have no row."""
    rows = [line.split(",") for line in out.strip().splitlines()[1:] if line]
    latency = [float(r[0]) for r in rows]
    status = [int(r[6]) for r in rows]
    start = [float(r[7]) for r in rows]
    ok = sorted(1000 * t for t, c in zip(latency, status, strict=True) if c == 200)
    seconds = max((a + t for a, t in zip(start, latency, strict=True)), default=0.0)
    return LevelResult(
        clients=clients,
        requests=len(ok),
        errors=sent - len(ok),
        seconds=seconds,
        throughput=len(ok) / seconds if seconds > 0 else float("nan"),
        p50_ms=_quantile(ok, 0.50),
        p99_ms=_quantile(ok, 0.99),
    )


def _quantile(sorted_ms: list[float], q: float) -> float:
    if not sorted_ms:
        return float("nan")
    return sorted_ms[min(len(sorted_ms) - 1, int(q * len(sorted_ms)))]


def run_hey(
    url: str, clients: int, total: int, payload: dict[str, list[str]] | None
) -> LevelResult:
    exe = os.environ.get("HEY") or shutil.which("hey")  # HEY: a carried binary (GPU runs)
    if exe is None:
        raise SystemExit("hey is not installed (apt-get install hey; scripts/setup.sh does it)")
    sent = max(total, clients)
    cmd = [exe, "-n", str(sent), "-c", str(clients), "-t", "300", "-o", "csv"]
    if payload is not None:
        cmd += ["-m", "POST", "-T", "application/json", "-d", json.dumps(payload)]
    done = subprocess.run([*cmd, url], capture_output=True, text=True, timeout=3600, check=True)
    return parse_hey_csv(done.stdout, clients, sent)


def compute_bound(bank: Path, model: Path | None, batch: int, seconds: float) -> float:
    """Prompts/s of the bank's truncated forward alone on full batches of one-prompt items."""
    sys.path.insert(0, str(ROOT))
    import torch

    from probe_bank.scoring import BankScorer

    threads = os.environ.get("OMP_NUM_THREADS", "")
    if threads.isdigit():
        torch.set_num_threads(int(threads))
    scorer = BankScorer.from_bank_dir(bank, model_dir=model)
    alias = aliases(1)[0]
    items = scorer.prepare([TEMPLATES[0].replace("{alias}", alias)] * batch, [alias] * batch)
    with torch.inference_mode():
        scorer.forward(items)  # warm-up
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds or n < 3 * batch:
            scorer.forward(items)
            n += batch
    rate = n / (time.perf_counter() - start)
    del scorer
    return rate


def bench_server(
    bank: Path,
    home: Path,
    *,
    naive: bool,
    model: Path | None,
    levels: list[int],
    per_client: int,
    min_requests: int,
    ceiling: bool,
    kinds: tuple[str, ...] = KINDS,
    null: bool = False,
) -> dict[str, list[LevelResult]]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_server(bank, port, home, naive=naive, model=model, null=null)
    out: dict[str, list[LevelResult]] = {}
    try:
        wait_ready(url, proc)
        paths = {"prompt": "/v1/score", "entities8": "/v1/entities/score"}
        for kind in kinds:
            run_hey(url + paths[kind], 4, 16, body(kind))  # warm-up: allocator, kernels
            out[kind] = [
                run_hey(url + paths[kind], c, max(min_requests, per_client * c), body(kind))
                for c in levels
            ]
        if ceiling:
            out["healthz"] = [
                run_hey(url + "/healthz", c, max(4 * min_requests, 8 * per_client * c), None)
                for c in levels
            ]
        return out
    finally:
        stop_server(proc)


def _fmt(x: float) -> str:
    return f"{x:.1f}"


def _ratio(a: float, b: float) -> str:
    """a / b, or "-" when b answered nothing (its errors column says why)."""
    return f"{a / b:.2f}" if b > 0 else "-"


def tables(result: dict) -> str:
    """Markdown: per request kind, batched vs naive per level; the ceiling and compute bound."""
    bound = result["compute_bound_prompts_per_s"]
    lines = [
        f"compute bound (truncated forward alone, batches of {result['max_batch_size']}): "
        f"{bound:.1f} prompts/s"
    ]
    ceiling = {r["clients"]: r for r in result["batched"].get("healthz", [])}
    for kind in [k for k in KINDS if k in result["batched"]]:
        lines += [
            "",
            f"{kind}:",
            "| clients | batched req/s | p50 ms | p99 ms | errors | naive req/s | p50 ms "
            "| p99 ms | errors | batched / naive | batched / bound | null-model req/s "
            "| batched / null | /healthz req/s |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        nulls = result.get("null", {}).get(kind) or [None] * len(result["batched"][kind])
        for b, n, z in zip(result["batched"][kind], result["naive"][kind], nulls, strict=True):
            per_req = 1 if kind == "prompt" else 8 * result["templates"]
            share = b["throughput"] * per_req / bound
            ceil = ceiling.get(b["clients"], {}).get("throughput", float("nan"))
            z_rate = z["throughput"] if z else float("nan")
            lines.append(
                f"| {b['clients']} | {_fmt(b['throughput'])} | {_fmt(b['p50_ms'])} "
                f"| {_fmt(b['p99_ms'])} | {b['errors']} | {_fmt(n['throughput'])} "
                f"| {_fmt(n['p50_ms'])} | {_fmt(n['p99_ms'])} | {n['errors']} "
                f"| {_ratio(b['throughput'], n['throughput'])}x | {share:.2f} | {_fmt(z_rate)} "
                f"| {_ratio(b['throughput'], z_rate)} | {_fmt(ceil)} |"
            )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--bank", type=Path, help="BANK_DIR to serve")
    src.add_argument("--tiny", action="store_true", help="build and serve the tiny test bank")
    ap.add_argument("--model", type=Path, help="model to audit (default: the bank's reference)")
    ap.add_argument("--layers", type=int, default=2, help="--tiny model: blocks")
    ap.add_argument("--width", type=int, default=64, help="--tiny model: d_model")
    ap.add_argument("--levels", default="1,8,32,64,128", help="concurrent clients per level")
    ap.add_argument("--per-client", type=int, default=4, help="requests per client per level")
    ap.add_argument("--min-requests", type=int, default=64, help="requests per level at least")
    ap.add_argument("--bound-seconds", type=float, default=10.0, help="compute-bound run time")
    ap.add_argument("--kinds", default=",".join(KINDS), help="request kinds to drive")
    ap.add_argument("--json", type=Path, help="also write the raw results here")
    args = ap.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    sys.path.insert(0, str(ROOT))
    from audit_service.settings import ServiceSettings

    batch = ServiceSettings().max_batch_size
    with tempfile.TemporaryDirectory(prefix="serve-bench-") as tmp:
        bank = args.bank or build_tiny_bank(Path(tmp) / "tiny", args.layers, args.width)
        manifest = json.loads((bank / "manifest.json").read_text("utf-8"))
        bound = compute_bound(bank, args.model, batch, args.bound_seconds)
        kw = {
            "model": args.model,
            "levels": levels,
            "per_client": args.per_client,
            "min_requests": args.min_requests,
            "kinds": tuple(args.kinds.split(",")),
        }
        batched = bench_server(bank, Path(tmp) / "home-b", naive=False, ceiling=True, **kw)
        naive = bench_server(bank, Path(tmp) / "home-n", naive=True, ceiling=False, **kw)
        null = bench_server(bank, Path(tmp) / "home-z", naive=False, ceiling=False, null=True, **kw)
    result = {
        "bank": manifest["bank_id"],
        "layer": manifest["layer"],
        "position": manifest["position"],
        "templates": len(manifest["templates"]),
        "max_batch_size": batch,
        "omp_threads": os.environ.get("OMP_NUM_THREADS"),
        "compute_bound_prompts_per_s": bound,
        "batched": {k: [asdict(r) for r in v] for k, v in batched.items()},
        "naive": {k: [asdict(r) for r in v] for k, v in naive.items()},
        "null": {k: [asdict(r) for r in v] for k, v in null.items()},
    }
    print(f"bank {manifest['bank_id']}: probe layer {manifest['layer']}, {manifest['position']}")
    print(tables(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n", "utf-8")


if __name__ == "__main__":
    main()
