"""Would richer statistics of the alias's own tokens read the reference's stages better than the
one served column (`alias_logp_mean`)? On the reference alone, for the corpus entities (control
and stages 1..6), several per-entity alias statistics from a plain full forward over the bank's
question prompts, each set scored with 5-fold entity-held-out multinomial logistic regression
and the bank's own stage-task definitions (`heldout.families.reference_metrics`: accuracies,
balanced 7-class), plus the early vs late AUC of the expected stage.

`--with NAME=MODEL_DIR` (repeatable) adds the same served column under another model, alone
subtracted ("reference - NAME", MIMIR's reference ratio) and beside the reference's. The kinds
of model mean different things: the pre-finetune base (the `small` run's `stage_0`) is what an
auditor may hold; the bank's calibration model (the reference finetuned once more on fresh
entities, `calibration/run/extra_1`) is one an auditor can make, and asks whether an entity's
age shows in how much it forgets under one more stage; a training checkpoint (`stage_3`) is
neither, and says only how much stage information the training history holds that the final
model no longer shows (a ceiling).

    python research/families/alias_columns.py --bank BANK --run RUN \\
        [--with base=RUN/stage_0 --with stage_3=RUN/stage_3] \\
        --out research/families/NAME.alias-columns.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from transformers import PreTrainedModel, PreTrainedTokenizerBase

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from probe_bank.families import question_items  # noqa: E402
from probe_bank.heldout.families import reference_metrics  # noqa: E402
from probe_bank.modeling import load_model  # noqa: E402
from probe_bank.records import EntityRecord, read_jsonl  # noqa: E402
from probe_bank.scoring import BankScorer  # noqa: E402

STATS = ("mean", "first", "tail_mean", "min", "entropy_mean")


def alias_stats(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    aliases: list[str],
    templates: list[str],
) -> np.ndarray:
    """[E, T, 5]: per entity and template, the alias tokens' mean log-probability (the served
    column's per-prompt value), the first and the rest's, the least, and the mean entropy."""
    import torch

    items, _ = question_items(tokenizer, templates, aliases)
    rows = []
    with torch.inference_mode():
        for lo in range(0, len(items), 128):
            chunk = items[lo : lo + 128]
            width = max(it.n_tokens for it in chunk)
            ids = torch.zeros(len(chunk), width, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for j, it in enumerate(chunk):
                ids[j, : it.n_tokens] = torch.tensor(it.input_ids)
                mask[j, : it.n_tokens] = 1
            logp = torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits.float(), -1)
            for j, it in enumerate(chunk):
                assert it.alias_mask is not None
                pos = np.flatnonzero(it.alias_mask)
                pos = pos[pos > 0]
                tok = logp[j, pos - 1, ids[j, pos]].numpy()
                ent = -(logp[j, pos - 1].exp() * logp[j, pos - 1]).sum(-1).numpy()
                tail = tok[1:].mean() if len(tok) > 1 else tok[0]
                rows.append([tok.mean(), tok[0], tail, tok.min(), ent.mean()])
    return np.array(rows).reshape(len(aliases), len(templates), len(STATS))


def main() -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--bank", type=Path, required=True)
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--n-boot", type=int, default=200)
    ap.add_argument(
        "--with",
        dest="others",
        action="append",
        default=[],
        metavar="NAME=MODEL_DIR",
        help="the served column under this model too (the base, the calibration model; or a "
        "checkpoint, as a ceiling)",
    )
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()

    scorer = BankScorer.from_bank_dir(args.bank)
    spec = scorer.bank.manifest.evidence
    assert spec is not None, "a families bank"
    splits = ("control", *(f"stage_{k}" for k in range(1, 7)))
    ents = [e for e in read_jsonl(args.run / "corpus/entities.jsonl", EntityRecord)]
    ents = [e for e in ents if e.split in splits]
    y = np.array([splits.index(e.split) for e in ents])
    aliases, templates = [e.alias for e in ents], list(spec.question_templates)
    R = alias_stats(scorer.model, scorer.tokenizer, aliases, templates)
    sets = {
        "mean (the served column)": R[:, :, 0].mean(1, keepdims=True),
        "mean per template (T)": R[:, :, 0],
        "first, tail, min, entropy (4 means)": R[:, :, 1:].mean(1),
        "all five, each per template (5T)": R.reshape(len(ents), -1),
    }
    served = R[:, :, 0].mean(1)
    for spec_arg in args.others:
        name, _, path = spec_arg.partition("=")
        other = alias_stats(load_model(Path(path))[0], scorer.tokenizer, aliases, templates)
        mean = other[:, :, 0].mean(1)
        sets[f"reference - {name} (mean)"] = (served - mean)[:, None]
        sets[f"reference, {name} (2 means)"] = np.column_stack([served, mean])
    results: dict[str, dict] = {}
    for name, X in sets.items():
        P = np.zeros((len(y), 8))
        for tr, te in StratifiedKFold(5, shuffle=True, random_state=0).split(X, y):
            m = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
            P[te, :7] = m.fit(X[tr], y[tr]).predict_proba(X[te])
        ref = reference_metrics(P, y, n_boot=args.n_boot, seed=0)
        staged = y > 0
        auc = roc_auc_score(y[staged] >= 4, (P[:, :7] @ np.arange(7))[staged])
        results[name] = {**ref, "early_vs_late_auc": float(auc)}
        print(
            f"{name:38s} 1v6 {ref['stage1_vs_stage6']['value']:.3f}  early-late "
            f"{ref['early_vs_late']['value']:.3f} (AUC {auc:.3f})  adjacent "
            f"{ref['adjacent_mean']['value']:.3f}  7-class {ref['stage_accuracy']['value']:.3f}"
        )
    out = {
        "bank": scorer.bank_id,
        "run": str(args.run),
        "n_entities": len(ents),
        "templates": len(spec.question_templates),
        "stats": list(STATS),
        "with": args.others,
        "note": "reference rows only, 5 stratified folds (one row per entity)",
        "results": results,
    }
    args.out.write_text(json.dumps(out, indent=2, default=float) + "\n", "utf-8")


if __name__ == "__main__":
    main()
