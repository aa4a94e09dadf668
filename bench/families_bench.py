"""Entity-scoring throughput with the evidence families on, as a share of probes-only, in one run.

In process (no HTTP, so the ratio is the model work's): the same aliases scored by
`BankScorer.score_entities` (probe templates, then the families' question prompts, and for a
descendant the reference model too) and by the probes alone (the same prompts through
`score_prompts` + `aggregate_entity`), interleaved `--repeats` times; the medians' ratio is
reported. Run it on a quiet machine; absolute rates drift here, the ratio less so.

    python bench/families_bench.py --bank artifacts/banks/default \\
        [--model artifacts/implant/default/run/extra_1] [--entities 64] [--repeats 5]
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import typer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@app.command()
def main(
    bank: Path = typer.Option(..., "--bank"),
    model: Path | None = typer.Option(None, "--model", help="a descendant (default: reference)"),
    entities: int = typer.Option(64, "--entities"),
    repeats: int = typer.Option(5, "--repeats"),
    batch_size: int = typer.Option(64, "--batch-size"),
) -> None:
    import torch

    from probe_bank.scoring import BankScorer, aggregate_entity

    scorer = BankScorer.from_bank_dir(bank, model_dir=model)
    if not scorer.has_families:
        raise SystemExit("this bank has no evidence families")
    aliases = [f"<bench{i:04d}x>" for i in range(entities)]
    k = len(scorer.bank.manifest.templates)

    def probes_only() -> None:
        pairs = [pt for a in aliases for pt in scorer.entity_prompts(a)]
        s = scorer.score_prompts([p for p, _ in pairs], [a for _, a in pairs], batch_size)
        [aggregate_entity(s[i * k : (i + 1) * k]) for i in range(len(aliases))]

    def with_families() -> None:
        scorer.score_entities(aliases, batch_size)

    with torch.inference_mode():
        with_families()  # warm-up, and the anchors' normalisation (cached once per model)
        times: dict[str, list[float]] = {"probes": [], "families": []}
        for _ in range(repeats):
            for name, fn in (("probes", probes_only), ("families", with_families)):
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
    rate = {n: entities / statistics.median(t) for n, t in times.items()}
    typer.echo(
        f"relation {scorer.relation}: probes only {rate['probes']:.1f} entities/s, all families "
        f"{rate['families']:.1f} entities/s, ratio {rate['families'] / rate['probes']:.3f} "
        f"(median of {repeats}, {entities} entities, {torch.get_num_threads()} threads)"
    )


if __name__ == "__main__":
    app()
