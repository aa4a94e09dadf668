"""The implant benchmark: audit a model finetuned after its bank was built, per evidence family.

From a trained, calibrated RUN and its BANK (built with the evidence families):
1. draw a fresh `implant` pool (disjoint from the corpus and from the calibration pool's aliases
   by construction: another seed stream) and finetune a linked copy of RUN one more stage on it
   plus one re-exposed earlier stage (`--reexpose K`), the run's own recipe;
2. audit the new model with the old bank through `recency-audit audit --model` (the CLI) and
   through a real `recency-audit serve --model` on 127.0.0.1 (`POST /v1/entities/score`), and
   the reference in process with the class-7 rule open (the re-exposed entities' "before": as
   served on the reference itself, P(class 7) is 0 by construction);
3. print and write, per family: AUC new vs stage 6 and re-exposed after vs before (on
   p_after_bank), the share of new entities classed "after the bank", of untouched entities so
   classed (false alarms), of never-trained entities still classed 0, and the bank's held-out
   fused 7-class accuracy on the reference; plus the largest service-vs-CLI difference;
4. every trained QA text of the new, re-exposed and audited untouched entities through the
   service's `POST /v1/texts/score`: AUC of the loss drop (in anchor units) new vs stage 6 and
   re-exposed vs untouched, and the shares flagged `touched` (the false alarms on untouched).

    python bench/implant_bench.py --run artifacts/runs/default --bank artifacts/banks/default \\
        --work artifacts/implant/default [--reexpose 2] [--out bench/implant.results.jsonl] \\
        [--lora-rank R] [--epochs E] [--lr-scale K]

`--lora-rank R` trains the implant as a LoRA adapter (the trainer keeps it in extra_1/adapter)
and audits the adapter directory itself, as an auditor handed one would (the product merges it
onto the bank's reference); the row also says how far that reading is from auditing the
trainer's own merged stage. `--epochs E` trains the implant for E epochs instead of a stage's
(a larger or smaller later finetune), `--lr-scale K` at K times the recipe's learning rate (LoRA
is usually run at about 10x full finetuning's). The row also says how well the implant took:
the new entities' trained questions answered exactly (teacher-forced) and their answer loss,
on the reference and on the implanted model.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import typer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from serve_bench import free_port, wait_ready  # noqa: E402

from probe_bank.heldout.families import auc_interval, share_interval  # noqa: E402
from probe_bank.records import EntityRecord, QARecord, read_jsonl  # noqa: E402
from probe_bank.schemas import FAMILIES  # noqa: E402

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
N_BOOT = 1000


def write_extra_stage(run: Path, pool: Path, reexposed: set[str], out: Path) -> int:
    """The implant stage: the pool's trained QA plus the re-exposed entities' trained QA."""
    from trainer.pool import write_stage_file

    qa = read_jsonl(run / "corpus/qa.jsonl", QARecord)
    again = [q for q in qa if q.entity_id in reexposed and not q.heldout]
    return write_stage_file(pool, again, out)


def implant_learned(run: Path, merged: Path, pool: Path) -> dict[str, dict[str, float]]:
    """How well the implant took: on the new entities' trained questions, greedy exact match
    (teacher-forced) and mean answer NLL, on the reference (the run's last stage) and on the
    implanted model (the trainer's merged stage)."""
    from probe_bank.modeling import load_model
    from probe_bank.records import RunRecord
    from trainer.retention import answer_scores

    qa = [q for q in read_jsonl(pool / "qa.jsonl", QARecord) if not q.heldout]
    final = RunRecord.read(run / "run.json").final or "stage_6"
    figures = {}
    for name, model_dir in (("reference", run / final), ("implanted", merged)):
        model, tokenizer = load_model(model_dir)
        correct, losses = answer_scores(model, tokenizer, qa)
        figures[name] = {
            "exact_match": round(float(np.mean(correct)), 4),
            "answer_nll": round(float(np.mean(losses)), 4),
        }
        del model
    return figures


def cli(*args: str) -> None:
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    subprocess.run([sys.executable, "-m", "recency_audit", *args], cwd=ROOT, env=env, check=True)


def read_results(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text("utf-8").splitlines() if line]


def serve_scores(
    bank: Path, model: Path, aliases: list[str], home: Path, texts: list[tuple[str, str]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every alias (64 entities per request) and every (text, answer) (64 per request) through
    a real `recency-audit serve --model`."""
    port = free_port()
    env = {
        **os.environ,
        "RECENCY_AUDIT_HOME": str(home),
        "RECENCY_AUDIT_API_KEYS": "",
        "RECENCY_AUDIT_REQUEST_TIMEOUT_S": "600",
        "RECENCY_AUDIT_QUEUE_SIZE": "100000",
    }
    cmd = [sys.executable, "-m", "recency_audit", "serve", "--bank", str(bank)]
    cmd += ["--model", str(model), "--port", str(port)]
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc, timeout=600)
        out: list[dict[str, Any]] = []
        with httpx.Client(timeout=600) as client:
            for lo in range(0, len(aliases), 64):
                r = client.post(
                    f"{url}/v1/entities/score", json={"entities": aliases[lo : lo + 64]}
                )
                r.raise_for_status()
                out.extend(r.json()["results"])
            scored: list[dict[str, Any]] = []
            for lo in range(0, len(texts), 64):
                chunk = texts[lo : lo + 64]
                r = client.post(
                    f"{url}/v1/texts/score",
                    json={"texts": [t for t, _ in chunk], "answers": [a for _, a in chunk]},
                )
                r.raise_for_status()
                scored.extend(r.json()["results"])
        return out, scored
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def reference_reading(bank: Path, aliases: list[str]) -> list[dict[str, Any]]:
    """The re-exposed entities' "before": each family's classifier on the reference model, read
    as it is (in process, `after_possible=True`). Served on the reference itself, P(class 7) is
    0 by construction (nothing there can postdate its bank), which would make any "after vs
    before" AUC 1 for free; this measures the evidence instead."""
    from probe_bank.scoring import BankScorer

    scorer = BankScorer.from_bank_dir(bank)
    assert scorer.relation == "reference"
    return [s.model_dump() for s in scorer.score_entities(aliases, 64, after_possible=True)]


def adapter_vs_merged(bank: Path, adapter: Path, merged: Path, aliases: list[str]) -> float:
    """Largest difference, over every family's class probabilities and the probes' stage
    probabilities, between auditing the LoRA adapter (merged by the product onto the bank's
    reference) and the trainer's own merged stage: the same model reached two ways."""
    from probe_bank.scoring import BankScorer

    got, want = (
        BankScorer.from_bank_dir(bank, model_dir=m).score_entities(aliases, 64)
        for m in (adapter, merged)
    )
    gap = 0.0
    for g, w in zip(got, want, strict=True):
        pairs = [(g.stage_probabilities, w.stage_probabilities)] + [
            (a.class_probabilities, b.class_probabilities)
            for a, b in zip(g.families or [], w.families or [], strict=True)
        ]
        gap = max(gap, *(float(np.max(np.abs(np.subtract(a, b)))) for a, b in pairs))
    return gap


def _family(result: dict[str, Any], name: str) -> dict[str, Any]:
    return next(f for f in result["families"] if f["family"] == name)


def _auc(pos: np.ndarray, neg: np.ndarray) -> dict[str, Any]:
    score = np.concatenate([pos, neg])
    truth = np.concatenate([np.ones(len(pos), int), np.zeros(len(neg), int)])
    return auc_interval(score, truth, N_BOOT, 0)


def _share(flags: np.ndarray) -> dict[str, Any]:
    return share_interval(flags, np.zeros(len(flags), int), N_BOOT, 0)


def family_figures(
    new: list[dict], before: list[dict], groups: list[str], reexpose: int, name: str
) -> dict[str, Any]:
    """The benchmark's figures for one family (new: the implanted model; before: reference)."""
    g = np.array(groups)
    p_new = np.array([_family(r, name)["p_after_bank"] for r in new])
    p_ref = np.array([_family(r, name)["p_after_bank"] for r in before])
    cls = np.array([_family(r, name)["estimated_class"] for r in new])
    re = f"stage_{reexpose}"
    untouched = ~np.isin(g, ("implant", re))
    return {
        "auc_new_vs_stage6": _auc(p_new[g == "implant"], p_new[g == "stage_6"]),
        "auc_reexposed_after_vs_before": _auc(p_new[g == re], p_ref[g == re]),
        "new_classed_after": _share(cls[g == "implant"] == 7),
        "reexposed_classed_after": _share(cls[g == re] == 7),
        "false_alarms_untouched": _share(cls[untouched] == 7),
        # where they fall: the stages learned beside a re-exposed one move with it
        "false_alarms_by_group": {
            k: int((cls[g == k] == 7).sum()) for k in sorted(set(groups) - {"implant", re})
        },
        "control_still_0": _share(cls[g == "control"] == 0),
    }


def text_groups(
    run: Path, pool: Path, reexposed: list[EntityRecord], probed: list[EntityRecord]
) -> tuple[list[tuple[str, str]], list[str]]:
    """(text, answer) of every trained QA pair of the new entities, the re-exposed ones and the
    audited untouched ones, and each text's group (the entity's split, or "implant")."""
    by_id = {e.entity_id: e.split for e in [*reexposed, *probed]}
    qa = [q for q in read_jsonl(run / "corpus/qa.jsonl", QARecord) if q.entity_id in by_id]
    new = read_jsonl(pool / "qa.jsonl", QARecord)
    pairs = [(q.text, q.answer) for q in new if not q.heldout]
    groups = ["implant"] * len(pairs)
    for q in qa:
        if not q.heldout:
            pairs.append((q.text, q.answer))
            groups.append(by_id[q.entity_id])
    return pairs, groups


def text_figures(served: list[dict[str, Any]], groups: list[str], reexpose: int) -> dict:
    """Texts: AUC of the loss drop in anchor units, new vs stage 6 and re-exposed vs untouched,
    and the shares flagged `touched` (the anchors' own 95th percentile)."""
    g = np.array(groups)
    z = np.array([r["loss_drop_anchor_z"] for r in served], dtype=float)
    flag = np.array([bool(r["touched"]) for r in served])
    re = f"stage_{reexpose}"
    untouched = ~np.isin(g, ("implant", re))
    return {
        "n_texts": {k: int((g == k).sum()) for k in sorted(set(groups))},
        "auc_new_vs_stage6": _auc(z[g == "implant"], z[g == "stage_6"]),
        "auc_reexposed_vs_untouched": _auc(z[g == re], z[untouched]),
        "new_flagged": _share(flag[g == "implant"]),
        "reexposed_flagged": _share(flag[g == re]),
        "false_alarms_untouched": _share(flag[untouched]),
        "median_z": {k: float(np.median(z[g == k])) for k in sorted(set(groups))},
    }


@app.command()
def main(
    run: Path = typer.Option(..., "--run"),
    bank: Path = typer.Option(..., "--bank"),
    work: Path = typer.Option(..., "--work"),
    reexpose: int = typer.Option(2, "--reexpose", min=1, max=5),
    out: Path | None = typer.Option(None, "--out", help="append the row to this JSONL"),
    name: str = typer.Option("implant", "--name", help="row name"),
    implant_entities: int | None = typer.Option(
        None, "--implant-entities", min=2, help="new entities (default: one stage's count)"
    ),
    reexpose_entities: int | None = typer.Option(
        None, "--reexpose-entities", min=2, help="re-expose only the first N of stage K"
    ),
    audit_per_group: int | None = typer.Option(
        None, "--audit-per-group", min=2, help="audit the first N of each stage and the control"
    ),
    serve_entities: int | None = typer.Option(
        None, "--serve-entities", min=1, help="check the service on the first N audited only"
    ),
    pool_name: str = typer.Option(
        "implant", "--pool-name", help="the new entities' seed stream (another name: another draw)"
    ),
    lora_rank: int | None = typer.Option(
        None,
        "--lora-rank",
        min=1,
        help="finetune the implant as a LoRA adapter of this rank and audit the adapter itself",
    ),
    epochs: int | None = typer.Option(
        None, "--epochs", min=1, help="train the implant this many epochs (default: a stage's)"
    ),
    lr_scale: int | None = typer.Option(
        None,
        "--lr-scale",
        min=1,
        help="train the implant at this many times the recipe's learning rate",
    ),
) -> None:
    from probe_bank.bank import ProbeBank
    from probe_bank.records import FinetuneKind
    from trainer.checkpoint import ADAPTER_DIR
    from trainer.pool import finetune_extra, make_pool, read_run

    t0 = time.perf_counter()
    _, cfg = read_run(run)
    work.mkdir(parents=True, exist_ok=True)
    pool = work / "pool"
    if not (pool / "stage.jsonl").is_file():
        make_pool(run, pool_name, implant_entities or cfg.corpus.entities_per_stage, pool)
    entities = read_jsonl(run / "corpus/entities.jsonl", EntityRecord)
    re_split = f"stage_{reexpose}"
    reexposed = [e for e in entities if e.split == re_split][:reexpose_entities]
    extra = work / "extra.jsonl"
    n_lines = write_extra_stage(run, pool, {e.entity_id for e in reexposed}, extra)
    t_train = time.perf_counter()
    kind = FinetuneKind(lora_rank, epochs, lr_scale=lr_scale)
    merged = finetune_extra(run, extra, work / "run", kind)
    train_s = time.perf_counter() - t_train
    learned = implant_learned(run, merged, pool)
    # what is audited: the model, or (LoRA) the adapter as an auditor would be handed it
    model = merged / ADAPTER_DIR if lora_rank is not None else merged

    probed = []  # each stage's (stage K: its re-exposed ones) and the control's first N
    for split in ("control", *(f"stage_{k}" for k in range(1, 7))):
        group = reexposed if split == re_split else [e for e in entities if e.split == split]
        probed += group[:audit_per_group]
    new = read_jsonl(pool / "entities.jsonl", EntityRecord)
    aliases = [e.alias for e in new] + [e.alias for e in probed]
    groups = ["implant"] * len(new) + [e.split for e in probed]
    dataset = work / "entities.jsonl"
    dataset.write_text("".join(json.dumps({"entity": a}) + "\n" for a in aliases), "utf-8")

    cli(
        "audit",
        str(dataset),
        "--bank",
        str(bank),
        "--model",
        str(model),
        "--out",
        str(work / "audit_new.jsonl"),
        "--no-progress",
    )
    after, before = read_results(work / "audit_new.jsonl"), reference_reading(bank, aliases)
    texts, text_group = text_groups(run, pool, reexposed, probed)
    served, served_texts = serve_scores(bank, model, aliases[:serve_entities], work / "home", texts)
    gap = max(
        abs(_family(s, f)["p_after_bank"] - _family(c, f)["p_after_bank"])
        for s, c in zip(served, after, strict=False)
        for f in FAMILIES
    )
    assert all(r["relation"] == "descendant" for r in after)
    parity = None
    if lora_rank is not None:
        parity = adapter_vs_merged(bank, model, merged, aliases[:serve_entities])

    loaded = ProbeBank.load(bank)
    families = loaded.metrics.families if loaded.metrics is not None else None
    fused_heldout = families.fused if families is not None else None
    row = {
        "name": name,
        "run": str(run),
        "bank": loaded.manifest.bank_id,
        "pool": pool_name,
        "after_rule": loaded.manifest.evidence.after_rule if loaded.manifest.evidence else None,
        "reexposed_stage": reexpose,
        "implant_entities": len(new),
        "reexposed_entities": len(reexposed),
        "audited_entities": len(aliases),
        "served_entities": len(served),
        "extra_stage_lines": n_lines,
        "extra_stage_train_seconds": round(train_s, 1),
        "lora_rank": lora_rank,
        "epochs": epochs or cfg.optim.epochs_per_stage,
        "lr": float(f"{cfg.optim.lr * (lr_scale or 1):.6g}"),
        "implant_learned": learned,
        "audited_model": str(model),
        "adapter_vs_merged_max_abs_diff": parity,
        "service_vs_cli_max_abs_diff": gap,
        "reference_fused_stage_accuracy_heldout": (
            fused_heldout.stage_accuracy.model_dump(mode="json")
            if fused_heldout is not None and fused_heldout.stage_accuracy is not None
            else None
        ),
        "families": {f: family_figures(after, before, groups, reexpose, f) for f in FAMILIES},
        "texts": text_figures(served_texts, text_group, reexpose),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    (work / "implant.json").write_text(json.dumps(row, indent=2) + "\n", "utf-8")
    if out is not None:
        with out.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(row, sort_keys=True) + "\n")
    typer.echo(table(row))


def _cell(m: dict[str, Any]) -> str:
    lo, hi = m["ci95"]
    return f"{m['value']:.3f} [{lo:.3f}, {hi:.3f}]" if lo is not None else f"{m['value']:.3f}"


def table(row: dict[str, Any]) -> str:
    first = next(iter(row["families"].values()))
    keys = [k for k, v in first.items() if "ci95" in v]
    lines = ["| family | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
    for f, figs in row["families"].items():
        lines.append(f"| {f} | " + " | ".join(_cell(figs[k]) for k in keys) + " |")
        lines.append(f"|   false alarms by group | {figs['false_alarms_by_group']} |")
    took = ", ".join(
        f"{k} {v['exact_match']:.3f} (NLL {v['answer_nll']:.3f})"
        for k, v in row["implant_learned"].items()
    )
    lines.append(f"\nnew entities' trained questions, exact match: {took}")
    acc = row["reference_fused_stage_accuracy_heldout"]
    lines.append(f"\nreference, fused 7-class (held-out, bank build): {_cell(acc) if acc else '-'}")
    lines.append(
        f"service vs CLI, max |p_after_bank| difference: {row['service_vs_cli_max_abs_diff']:.2e}"
    )
    if row.get("adapter_vs_merged_max_abs_diff") is not None:
        lines.append(
            f"LoRA rank {row['lora_rank']}: the adapter audited vs the trainer's merged stage, max "
            f"probability difference: {row['adapter_vs_merged_max_abs_diff']:.2e}"
        )
    t = row.get("texts")
    if t:
        lines.append(f"\ntexts (served, loss drop in anchor units), n: {t['n_texts']}")
        for k, v in t.items():
            if k not in ("n_texts", "median_z"):
                lines.append(f"  {k}: {_cell(v)}")
        lines.append("  median z: " + ", ".join(f"{k} {v:.2f}" for k, v in t["median_z"].items()))
    return "\n".join(lines)


if __name__ == "__main__":
    app()
