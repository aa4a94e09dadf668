"""Evidence-family serving benchmark: entity requests to a families bank through real
`recency-audit serve` processes on 127.0.0.1, driven by `hey`, in one run.

Servers, all on the same bank and audited model:
- `probes`: RECENCY_AUDIT_FAMILIES=0, the probes-only path (the issue's reference rate);
- `families`: as shipped, every evidence family on, entities' evidence passes batched across
  requests (up to MAX_BATCH_ENTITIES);
- `per-entity`: the same with MAX_BATCH_ENTITIES=1 (each entity's pass alone);
- `--baseline REF` adds `baseline`: the code at git REF in a temporary worktree (e.g. the commit
  before evidence passes joined the queue, which ran one pass per request);
- `--also NAME=BANK` (repeatable) adds `NAME`: `families` on another bank of the same model and
  probe cell, e.g. one built with fewer `--families-questions` (the families' cost knob);
- `--servers` keeps only the listed servers of the three above (`probes` always runs).
Each at every client level, for one-entity and eight-entity requests: entities/s, p50, p99 and
errors per level, and each server's rate as a share of `probes`. With `--rounds N` the servers
run N times, in a rotated order each round (so no server always runs last), and the table gives
each figure's median over the rounds.

    python bench/evidence_bench.py --bank artifacts/banks/default-texts [--model DESCENDANT] \\
        [--baseline 7947a55] --json bench/results/evidence.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_bench import (  # noqa: E402  (a sibling script, not a package)
    ROOT,
    LevelResult,
    aliases,
    free_port,
    run_hey,
    start_server,
    stop_server,
    wait_ready,
)

SIZES = {"entity1": 1, "entities8": 8}


def drive(
    bank: Path,
    home: Path,
    *,
    model: Path | None,
    env: dict[str, str],
    cwd: Path,
    levels: dict[str, list[int]],
    per_client: int,
    min_requests: int,
) -> dict[str, list[LevelResult]]:
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1/entities/score"
    proc = start_server(bank, port, home, naive=False, model=model, env_extra=env, cwd=cwd)
    out: dict[str, list[LevelResult]] = {}
    try:
        wait_ready(url.rsplit("/v1", 1)[0], proc)
        for kind, clients in levels.items():
            payload = {"entities": aliases(SIZES[kind], seed=7)}
            check = httpx.post(url, json=payload, timeout=300).json()["results"][0]
            want_families = env.get("RECENCY_AUDIT_FAMILIES") != "0"
            assert (check.get("families") is not None) == want_families, check
            run_hey(url, 4, 8, payload)  # warm-up: allocator, kernels
            out[kind] = [
                run_hey(url, c, max(min_requests, per_client * c), payload) for c in clients
            ]
        return out
    finally:
        stop_server(proc)


def medians(rounds: list[dict[str, list[dict]]]) -> dict[str, list[dict]]:
    """Per kind and level, each figure's median over the rounds (errors: summed)."""
    out: dict[str, list[dict]] = {}
    for kind, levels in rounds[0].items():
        out[kind] = []
        for i, level in enumerate(levels):
            runs = [r[kind][i] for r in rounds]
            row = {
                k: statistics.median(x[k] for x in runs) for k in ("throughput", "p50_ms", "p99_ms")
            }
            out[kind].append(
                {**row, "clients": level["clients"], "errors": sum(x["errors"] for x in runs)}
            )
    return out


def tables(result: dict) -> str:
    """Markdown: per request kind and level, every server's entities/s, p50, p99 (medians over
    the rounds) and share of the probes-only rate."""
    med = {s: medians(rounds) for s, rounds in result["servers"].items()}
    servers = list(med)
    lines: list[str] = [f"medians over {result['rounds']} round(s)"]
    for kind in SIZES:
        if kind not in med["probes"]:
            continue
        n = SIZES[kind]
        head = " | ".join(f"{s} ent/s | p50 ms | p99 ms" for s in servers)
        shares = " | ".join(f"{s} / probes" for s in servers if s != "probes")
        lines += [
            "",
            f"{kind} ({n} entit{'y' if n == 1 else 'ies'} per request):",
            f"| clients | {head} | {shares} |",
            "|---|" + "---|" * (3 * len(servers) + len(servers) - 1),
        ]
        rows = zip(*(med[s][kind] for s in servers), strict=True)
        for per_server in rows:
            cells = [str(per_server[0]["clients"])]
            rates = [r["throughput"] * n for r in per_server]
            for r, rate in zip(per_server, rates, strict=True):
                err = f" ({r['errors']} errors)" if r["errors"] else ""
                cells += [f"{rate:.1f}{err}", f"{r['p50_ms']:.0f}", f"{r['p99_ms']:.0f}"]
            cells += [f"{rate / rates[0]:.3f}" for rate in rates[1:]]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


Server = tuple[dict[str, str], Path, Path]  # (environment, checkout to run in, bank)


def server_table(bank: Path, builtin: list[str], also: list[str]) -> dict[str, Server]:
    """The servers to drive: `probes` always (every share is of its rate), the listed built-in
    ones, and one `families` server per `NAME=BANK` of `--also`."""
    table: dict[str, Server] = {
        "probes": ({"RECENCY_AUDIT_FAMILIES": "0"}, ROOT, bank),
        "families": ({}, ROOT, bank),
        "per-entity": ({"RECENCY_AUDIT_MAX_BATCH_ENTITIES": "1"}, ROOT, bank),
    }
    unknown = set(builtin) - set(table)
    if unknown:
        raise SystemExit(f"--servers: unknown {sorted(unknown)}; choose among {list(table)}")
    servers = {name: v for name, v in table.items() if name in {"probes", *builtin}}
    for spec in also:
        name, _, path = spec.partition("=")
        if not name or not path or name in table:
            raise SystemExit(f"--also takes NAME=BANK with a new name, got {spec!r}")
        servers[name] = ({}, ROOT, Path(path).resolve())
    return servers


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--bank", type=Path, required=True, help="a families BANK_DIR")
    ap.add_argument("--model", type=Path, help="model to audit (default: the bank's reference)")
    ap.add_argument("--baseline", help="git ref whose code serves as `baseline` (a worktree)")
    ap.add_argument("--levels", default="1,8,32", help="clients, one-entity requests")
    ap.add_argument("--levels8", default="1,8", help="clients, eight-entity requests")
    ap.add_argument("--per-client", type=int, default=4, help="requests per client per level")
    ap.add_argument("--min-requests", type=int, default=16, help="requests per level at least")
    ap.add_argument("--rounds", type=int, default=1, help="runs of every server, rotated order")
    ap.add_argument("--json", type=Path, help="also write the raw results here")
    ap.add_argument(
        "--also", action="append", default=[], help="NAME=BANK: families on another bank"
    )
    ap.add_argument(
        "--servers", default="probes,families,per-entity", help="which built-in servers run"
    )
    args = ap.parse_args()
    args.bank = args.bank.resolve()  # servers of another checkout run in its directory
    args.model = args.model.resolve() if args.model else None
    levels = {
        "entity1": [int(x) for x in args.levels.split(",")],
        "entities8": [int(x) for x in args.levels8.split(",")],
    }
    manifest = json.loads((args.bank / "manifest.json").read_text("utf-8"))
    if manifest.get("evidence") is None:
        raise SystemExit(f"{args.bank} has no evidence families (built without calibration)")
    servers = server_table(args.bank, args.servers.split(","), args.also)
    results: dict[str, list[dict[str, list[LevelResult]]]] = {}
    with tempfile.TemporaryDirectory(prefix="evidence-bench-") as tmp:
        if args.baseline:
            tree = Path(tmp) / "baseline"
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), args.baseline],
                check=True,
                capture_output=True,
            )
            servers["baseline"] = ({}, tree, args.bank)
        try:
            names = list(servers)
            for r in range(args.rounds):
                for name in names[r % len(names) :] + names[: r % len(names)]:
                    print(f"== round {r + 1}: {name}", flush=True)
                    env, cwd, bank = servers[name]
                    results.setdefault(name, []).append(
                        drive(
                            bank,
                            Path(tmp) / f"home-{name}-{r}",
                            model=args.model,
                            env=env,
                            cwd=cwd,
                            levels=levels,
                            per_client=args.per_client,
                            min_requests=args.min_requests,
                        )
                    )
        finally:
            if args.baseline:
                subprocess.run(
                    ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)],
                    check=False,
                )
    result = {
        "bank": manifest["bank_id"],
        "banks": {name: str(bank) for name, (_, _, bank) in servers.items()},
        "model": str(args.model) if args.model else manifest["model_path"],
        "baseline": args.baseline,
        "rounds": args.rounds,
        "servers": {
            s: [{k: [asdict(x) for x in v] for k, v in one.items()} for one in rounds]
            for s, rounds in results.items()
        },
    }
    print(tables(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n", "utf-8")


if __name__ == "__main__":
    main()
