"""Print recorded retention logs as one Markdown table: each stage right after its own stage,
and every split after the last stage.

Why: docs/RESULTS.md's reading of the pretrained runs (stage 1 barely learned at 5e-5 without a
warm-up, learned with one) rests on the `rows` after each stage in `retention.json`; this prints
them from the recorded files rather than by hand.

    python research/retention_table.py research/pretrained/s*.retention.json \
        research/pretrained/warmup-s0.retention.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pydantic import TypeAdapter

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from trainer.retention import RetentionEntry  # noqa: E402

STAGES = [f"stage_{k}" for k in range(1, 7)]
_LOG = TypeAdapter(list[RetentionEntry])


def _acc(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def table(paths: list[Path]) -> str:
    """One row per file: own-stage exact match (stages 1..6), then after the last stage."""
    head = [
        "| run | " + " | ".join(f"{s} right after" for s in STAGES) + " | after the last: "
        "stages 1..6 | control |",
        "|---|" + "---|" * (len(STAGES) + 2),
    ]
    rows = []
    for path in paths:
        log = _LOG.validate_json(path.read_bytes())
        own = {e.after: r.train_acc for e in log for r in e.rows if r.split == e.after}
        last = {r.split: r.train_acc for r in log[-1].rows}
        rows.append(
            f"| {path.name.removesuffix('.retention.json')} | "
            + " | ".join(_acc(own.get(s)) for s in STAGES)
            + f" | {' / '.join(_acc(last.get(s)) for s in STAGES)} | {_acc(last.get('control'))} |"
        )
    return "\n".join(head + rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("logs", type=Path, nargs="+", help="retention.json files")
    print(table(parser.parse_args().logs))


if __name__ == "__main__":
    main()
