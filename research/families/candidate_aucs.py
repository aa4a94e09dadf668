"""Does scoring an attribute's whole value domain recover the signal the greedy answer loses?

On the `small` model the audited model's confidence in its *own greedy answers* separates an
implant's new entities from stage 6 at about 0.70, while the *true* answer's gain over the
reference gives 1.00 (`feature_aucs.py`). Between the two: every value the corpus draws an
attribute from (a domain the bank could record, no per-entity answer needed), teacher-forced
under the audited model and the reference. Per entity, mean over the bank's question templates:

- cand_gain_max: the largest log-probability gain (audited - reference) over the domain;
- cand_top_p / cand_entropy: the audited model's distribution renormalised over the domain;
- cand_kl: KL(audited || reference) of those two domain distributions;
- cand_top_gain / cand_top_logp: gain and log-probability of the audited model's top value.

AUC of each, new vs stage 6 and new vs the untouched splits, as `feature_aucs.py`:

    python research/families/candidate_aucs.py --bank BANK --work WORK --run RUN \\
        [--per-group 40] --out research/families/NAME.candidates.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from feature_aucs import column_aucs, implant_args, implant_groups, print_aucs  # noqa: E402

from probe_bank.capture import capture_answers, encode  # noqa: E402
from probe_bank.records import EntityRecord, read_jsonl  # noqa: E402
from probe_bank.run_dir import fill_template  # noqa: E402
from probe_bank.scoring import BankScorer  # noqa: E402

#: The attribute each of the bank's question templates asks, in the manifest's order (checked).
ASKS = {
    "born": "birth_decade",
    "city": "city",
    "country": "country",
    "work?": "employer",
    "hobby": "hobby",
    "for a living": "occupation",
}
NAMES = ("cand_gain_max", "cand_top_p", "cand_entropy", "cand_kl", "cand_top_gain", "cand_top_logp")


def attribute_of(template: str) -> str:
    hits = [a for key, a in ASKS.items() if key in template]
    if len(hits) != 1:
        raise SystemExit(f"cannot tell which attribute {template!r} asks")
    return hits[0]


def domain_columns(
    scorer: BankScorer, aliases: list[str], domains: dict[str, list[list[int]]]
) -> np.ndarray:
    """[E, len(NAMES)] per entity, mean over the bank's question templates."""
    m = scorer.bank.manifest
    assert m.evidence is not None and scorer.reference is not None
    templates = m.evidence.question_templates
    prompts, spans, answers = [], [], []
    for alias in aliases:
        for t in templates:
            p, span = fill_template(t, alias)
            for ids in domains[attribute_of(t)]:
                prompts.append(p)
                spans.append(span)
                answers.append(ids)
    items = encode(scorer.tokenizer, prompts, spans)
    kw: dict[str, Any] = {
        "layer": m.layer,
        "position": m.position,
        "answers": answers,
        "batch_size": 128,
    }
    length = np.array([len(a) for a in answers])
    mine = capture_answers(scorer.model, items, **kw).logprob_mean * length  # sequence log-probs
    ref = capture_answers(scorer.reference, items, **kw).logprob_mean * length
    out, k = np.zeros((len(aliases), len(NAMES))), 0
    for i in range(len(aliases)):
        rows = []
        for t in templates:
            n = len(domains[attribute_of(t)])
            a, r = mine[k : k + n], ref[k : k + n]
            k += n
            pa, pr = np.exp(a - a.max()), np.exp(r - r.max())
            pa, pr = pa / pa.sum(), pr / pr.sum()
            top = int(a.argmax())
            rows.append(
                [
                    (a - r).max(),
                    pa.max(),
                    -(pa * np.log(pa)).sum(),
                    (pa * (np.log(pa) - np.log(pr))).sum(),
                    (a - r)[top],
                    a.max(),
                ]
            )
        out[i] = np.mean(rows, 0)
    return out


def main() -> None:
    args = implant_args(__doc__, per_group=40)

    scorer = BankScorer.from_bank_dir(args.bank, model_dir=args.work / "run/extra_1")
    corpus = read_jsonl(args.run / "corpus/entities.jsonl", EntityRecord)
    values = {a: sorted({e.attributes[a] for e in corpus}) for a in ASKS.values()}
    tok = scorer.tokenizer
    domains = {
        a: [tok(" " + v + "\n", add_special_tokens=False)["input_ids"] for v in vs]
        for a, vs in values.items()
    }
    groups, untouched = implant_groups(args.run, args.work, args.reexposed, args.per_group)
    cols = {
        g: domain_columns(scorer, [e.alias for e in ents], domains) for g, ents in groups.items()
    }
    aucs = column_aucs(cols, list(NAMES), untouched)
    out: dict[str, object] = {
        "bank": scorer.bank_id,
        "model": str(args.work / "run/extra_1"),
        "per_group": args.per_group,
        "untouched": untouched,
        "domain_sizes": {a: len(v) for a, v in values.items()},
        **aucs,
    }
    args.out.write_text(json.dumps(out, indent=2) + "\n", "utf-8")
    print_aucs(aucs, list(NAMES))


if __name__ == "__main__":
    main()
