"""The study's explicit-report test: can the model be taught to *say* an entity's stage?

After stage 6, a copy of the run is finetuned one more stage (`recency-audit train --extra-stage`,
the run's own hyperparameters) on `Q: Which training stage is <alias> from?\\nA: stage <k>` for
half of the stage 1..6 entities (entity-split, stratified by stage, fixed seed); the other half is
scored: the predicted stage is the k whose answer ` stage <k>` the model gives the highest
log-probability (teacher-forced; no sampling). The study reports about 80% on unseen entities;
chance is 1/6. The accuracy comes with a 95% bootstrap-over-entities interval (within stages).

    python research/stage_report.py make --run RUN_DIR --out STAGE_RUN   # copy + extra stage data
    recency-audit train --preset P --seed S --out STAGE_RUN --extra-stage STAGE_RUN/report.jsonl
    python research/stage_report.py eval --run STAGE_RUN                  # prints one JSON line

(`make` prints the exact train command for the run.) Results are appended to
`research/pretrained/results.jsonl` by `eval --record NAME`.
"""

from __future__ import annotations

import json
import random
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import typer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from probe_bank.heldout.stats import interval  # noqa: E402
from probe_bank.records import QARecord, RunRecord  # noqa: E402
from probe_bank.run_dir import load_run  # noqa: E402

QUESTION = "Which training stage is {alias} from?"
ANSWER = "stage {k}"
SEED = 0
RESULTS = ROOT / "research/pretrained/results.jsonl"

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False)


def split_entities(run_dir: Path) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """(alias, stage) of the trained and the held-out half, stratified by stage."""
    run = load_run(run_dir)
    by_stage: dict[int, list[str]] = {}
    for e in run.entities:
        if e.split.startswith("stage_"):
            by_stage.setdefault(int(e.split.removeprefix("stage_")), []).append(e.alias)
    rng = random.Random(f"{SEED}:stage-report")
    train, test = [], []
    for k in sorted(by_stage):
        aliases = sorted(by_stage[k])
        rng.shuffle(aliases)
        half = len(aliases) // 2
        train += [(a, k) for a in aliases[:half]]
        test += [(a, k) for a in aliases[half:]]
    return train, test


@app.command()
def make(
    run: Path = typer.Option(..., "--run", help="a finished RUN_DIR (stage 6 trained)"),
    out: Path = typer.Option(..., "--out", help="new RUN_DIR: a copy that gets the extra stage"),
) -> None:
    """Copy the run (its stage checkpoints linked, not copied: they are only read) and write the
    extra stage's QA for half the entities."""
    if out.exists():
        raise typer.BadParameter(f"{out} exists")
    out.mkdir(parents=True)
    for item in run.iterdir():
        if item.name == ".ckpt":
            continue
        if item.is_dir() and item.name.startswith(("stage_", "mixed")):
            (out / item.name).symlink_to(item.resolve(), target_is_directory=True)
        elif item.is_dir():
            shutil.copytree(item, out / item.name)
        else:
            shutil.copy2(item, out / item.name)
    train, test = split_entities(run)
    with (out / "report.jsonl").open("w", encoding="utf-8") as fh:
        for alias, k in train:
            q = {"question": QUESTION.format(alias=alias), "answer": ANSWER.format(k=k)}
            fh.write(json.dumps(q) + "\n")
    record = RunRecord.read(run / "run.json")
    cmd = f"recency-audit train --preset {record.preset} --seed {record.seed} --out {out}"
    if record.base_model:
        cmd += f" --base-model {record.base_model}"
    typer.echo(
        f"{len(train)} trained, {len(test)} held out; now run:\n{cmd} "
        f"--extra-stage {out / 'report.jsonl'}"
    )


def answer_logprobs(model: Any, tokenizer: Any, prompts: list[str]) -> np.ndarray:
    """[n, 6]: log-probability of ` stage k` after each prompt, k = 1..6 (teacher-forced)."""
    import torch

    from trainer.retention import answer_scores

    out = np.zeros((len(prompts), 6))
    for k in range(1, 7):
        recs = [
            QARecord(
                entity_id=str(i),
                split="stage_1",
                attribute="stage",
                phrasing=0,
                question=p,
                answer=ANSWER.format(k=k),
                text=f"Q: {p}\nA: {ANSWER.format(k=k)}\n",
                heldout=True,
            )
            for i, p in enumerate(prompts)
        ]
        with torch.inference_mode():
            _, losses = answer_scores(model, tokenizer, recs)
        out[:, k - 1] = -np.asarray(losses)  # mean NLL of the answer tokens; "stage " is shared
    return out


@app.command("eval")
def evaluate(
    run: Path = typer.Option(..., "--run", help="the copy after its extra stage"),
    record_as: str = typer.Option("", "--record", help="append the row under this name"),
) -> None:
    """Score the held-out half: accuracy of the highest-scoring stage, with its interval."""
    from probe_bank.modeling import load_model

    state = RunRecord.read(run / "run.json")
    if "extra_1" not in state.stages_done:
        raise typer.BadParameter(f"{run} has no finished extra stage")
    _, test = split_entities(run)
    model, tokenizer = load_model(run / "extra_1")
    tokenizer.padding_side = "right"
    lp = answer_logprobs(model, tokenizer, [QUESTION.format(alias=a) for a, _ in test])
    truth = np.array([k for _, k in test])
    pred = lp.argmax(axis=1) + 1
    correct = (pred == truth).astype(float)
    acc = interval(lambda idx: float(correct[idx].mean()), truth, len(truth), n_boot=1000)
    row = {
        "name": record_as or run.name,
        "run": str(run),
        "metric": "explicit_stage_report",
        "accuracy": acc,
        "chance": 1 / 6,
        "n_trained_entities": len(split_entities(run)[0]),
        "per_stage_accuracy": {
            str(k): round(float(correct[truth == k].mean()), 4) for k in range(1, 7)
        },
        "confusion": [
            [int(((truth == a) & (pred == b)).sum()) for b in range(1, 7)] for a in range(1, 7)
        ],
    }
    typer.echo(json.dumps(row))
    if record_as:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        with RESULTS.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(row, sort_keys=True) + "\n")


if __name__ == "__main__":
    app()
