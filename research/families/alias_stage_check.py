"""Does a run's training teach the alias's own tokens? Between two checkpoints of one run, the
entities trained in between against ones trained before and never trained: each entity's mean
log-probability of its alias tokens over the run's trained question templates (the served
`alias_logp_mean`, through `answers.capture_answers`), on the later checkpoint and as its gain over
the earlier one, with AUCs. A `loss_on = "answer"` run (the `pretrained` preset) never makes the
alias a training target; this says whether the alias columns can carry anything there.

    python research/families/alias_stage_check.py --run RUN --later stage_2 --earlier stage_1 \\
        [--per-group 50] --out research/families/NAME.alias-stage.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from probe_bank.answers import capture_answers  # noqa: E402
from probe_bank.families import question_items  # noqa: E402
from probe_bank.heldout.families import auc_interval  # noqa: E402
from probe_bank.heldout.folds import entity_mean  # noqa: E402
from probe_bank.modeling import load_model  # noqa: E402
from probe_bank.records import EntityRecord, QARecord, read_jsonl  # noqa: E402


def templates(run: Path, n: int = 6) -> list[str]:
    """The trained question phrasings of the corpus's first entity, as {alias} templates."""
    ents = read_jsonl(run / "corpus/entities.jsonl", EntityRecord)
    first = ents[0]
    out: list[str] = []
    for q in read_jsonl(run / "corpus/qa.jsonl", QARecord):
        if q.entity_id == first.entity_id and not q.heldout:
            t = "Q: " + q.question.replace(first.alias, "{alias}") + "\nA:"
            if t not in out:
                out.append(t)
    return out[:n]


def alias_logp(model_dir: Path, aliases: list[str], temps: list[str]) -> np.ndarray:
    """Each alias's mean over the templates of the served column's per-prompt value, through
    the product's capture path (one greedy step: only the prompt pass is read)."""
    model, tok = load_model(model_dir, "cpu")
    items, entity = question_items(tok, temps, aliases)
    cap = capture_answers(model, items, layer=0, position="last", max_new_tokens=1)
    return entity_mean(cap.alias_logprob, entity, len(aliases))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--later", required=True, help="a stage dir of RUN, e.g. stage_2")
    ap.add_argument("--earlier", required=True, help="the stage dir before it, e.g. stage_1")
    ap.add_argument("--per-group", type=int, default=50)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()

    ents = read_jsonl(args.run / "corpus/entities.jsonl", EntityRecord)
    splits = ("control", args.earlier, args.later)
    groups = {g: [e.alias for e in ents if e.split == g][: args.per_group] for g in splits}
    temps = templates(args.run)
    later = {g: alias_logp(args.run / args.later, a, temps) for g, a in groups.items()}
    earlier = {g: alias_logp(args.run / args.earlier, a, temps) for g, a in groups.items()}
    gain = {g: later[g] - earlier[g] for g in groups}

    def auc(pos: np.ndarray, neg: np.ndarray) -> dict:
        y = np.r_[np.ones(len(pos), int), np.zeros(len(neg), int)]
        return auc_interval(np.r_[pos, neg], y, 1000, 0)

    new = args.later
    out = {
        "run": str(args.run),
        "later": args.later,
        "earlier": args.earlier,
        "templates": temps,
        "per_group": args.per_group,
        "mean_alias_logp": {
            g: {"later": float(later[g].mean()), "earlier": float(earlier[g].mean())}
            for g in groups
        },
        "auc_later_model": {
            f"{new} vs {args.earlier}": auc(later[new], later[args.earlier]),
            f"{new} vs control": auc(later[new], later["control"]),
        },
        "auc_gain": {
            f"{new} vs {args.earlier}": auc(gain[new], gain[args.earlier]),
            f"{new} vs control": auc(gain[new], gain["control"]),
        },
    }
    args.out.write_text(json.dumps(out, indent=2) + "\n", "utf-8")
    for key in ("auc_later_model", "auc_gain"):
        for name, v in out[key].items():  # type: ignore[attr-defined]
            print(f"{key:16s} {name:24s} {v['value']:.3f} [{v['ci95'][0]:.3f}, {v['ci95'][1]:.3f}]")


if __name__ == "__main__":
    main()
