"""Audit datasets for tests and the benchmark, built from a bank's own corpus aliases."""

from __future__ import annotations

import json
from pathlib import Path


def write_dataset(bank_dir: Path, out: Path, n: int) -> Path:
    """`n` lines alternating prompts (int id, with alias) and entities (str id), corpus aliases."""
    manifest = json.loads((bank_dir / "manifest.json").read_text())
    entities = Path(manifest["run_path"]) / "corpus" / "entities.jsonl"
    aliases = [json.loads(x)["alias"] for x in entities.read_text().splitlines()]
    lines = []
    for i in range(n):
        alias = aliases[i % len(aliases)]
        if i % 2:
            lines.append({"id": f"e{i}", "entity": alias})
        else:
            lines.append({"id": i, "prompt": f"Q: Who is {alias}?\nA:", "alias": alias})
    out.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return out
