"""bench/evidence_bench.py's reduction: medians over rounds and the share of the probes rate."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from evidence_bench import medians, server_table, tables  # noqa: E402


def _level(clients: int, rate: float, p50: float, errors: int = 0) -> dict:
    return {
        "clients": clients,
        "throughput": rate,
        "p50_ms": p50,
        "p99_ms": 2 * p50,
        "errors": errors,
    }


def test_medians_over_rounds_and_shares_of_the_probes_rate() -> None:
    rounds = {
        "probes": [{"entity1": [_level(1, r, 5)]} for r in (100.0, 300.0, 200.0)],
        "families": [
            {"entity1": [_level(1, r, 50, e)]} for r, e in ((10.0, 0), (50.0, 1), (40.0, 0))
        ],
    }
    med = medians(rounds["families"])
    assert med["entity1"][0]["throughput"] == 40.0 and med["entity1"][0]["errors"] == 1
    text = tables({"rounds": 3, "servers": rounds})
    row = next(line for line in text.splitlines() if line.startswith("| 1 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == "200.0" and cells[4] == "40.0 (1 errors)"
    assert cells[-1] == "0.200"  # 40 / 200: medians, not the mean of per-round ratios


def test_server_table_keeps_probes_and_adds_one_families_server_per_bank(tmp_path: Path) -> None:
    import pytest

    bank, other = tmp_path / "bank", tmp_path / "k1"
    servers = server_table(bank, ["families"], [f"q1={other}"])
    assert list(servers) == ["probes", "families", "q1"]
    assert servers["probes"][0] == {"RECENCY_AUDIT_FAMILIES": "0"} and servers["probes"][2] == bank
    assert servers["q1"] == ({}, servers["families"][1], other.resolve())
    with pytest.raises(SystemExit):  # an unknown built-in server
        server_table(bank, ["q1"], [])
    for bad in ("q1", f"probes={other}", f"={other}"):  # no path, a built-in's name, no name
        with pytest.raises(SystemExit):
            server_table(bank, [], [bad])
