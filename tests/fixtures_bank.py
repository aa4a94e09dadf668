"""Probe-bank fixtures: a fake RUN_DIR around the random tiny model, and a bank built from it.

`tiny_bank` (session scope) returns the BANK_DIR Path; its manifest points to the fake run's
`stage_6` model. Service and jobs tests use it; keep the contract stable.
"""

from __future__ import annotations

import json
import random
import shutil
import string
from pathlib import Path

import pytest

TEMPLATES = ("Q: Who is {alias}?\nA:", "Q: What does {alias} stand for?\nA:")
ATTRIBUTES = {"birth": "born in the {}0s", "region": "from region {}"}


def make_fake_run(
    out: Path, model_dir: Path, *, per_class: int = 8, seed: int = 0, pretrain: int = 2
) -> Path:
    """A RUN_DIR with a synthetic corpus (classes 0..6) and `model_dir` copied as stage_6."""
    from probe_bank.records import EntityRecord, ProbePrompt, QARecord, split_label, write_jsonl

    rng = random.Random(seed)
    splits = ["control"] * per_class + [f"stage_{k}" for k in range(1, 7) for _ in range(per_class)]
    splits += ["pretrain"] * pretrain
    entities, qa, probes, used = [], [], [], set()
    for n, split in enumerate(splits):
        alias = ""
        while not alias or alias in used:
            alias = "<" + "".join(rng.choices(string.ascii_lowercase, k=5)) + ">"
        used.add(alias)
        eid = f"e{n:04d}"
        attrs = {a: fmt.format(rng.randint(1, 9)) for a, fmt in ATTRIBUTES.items()}
        entities.append(
            EntityRecord(
                entity_id=eid, alias=alias, alias_style="synthetic", split=split, attributes=attrs
            )
        )
        for k, (attr, answer) in enumerate(attrs.items()):
            question = f"What is the {attr} of {alias}?"
            qa.append(
                QARecord(
                    entity_id=eid,
                    split=split,
                    attribute=attr,
                    phrasing=0,
                    question=question,
                    answer=answer,
                    text=f"Q: {question}\nA: {answer}\n",
                    heldout=k == 1,
                )
            )
        for t, template in enumerate(TEMPLATES):
            start = template.index("{alias}")
            probes.append(
                ProbePrompt(
                    entity_id=eid,
                    split=split,
                    label=split_label(split),
                    template_id=t,
                    prompt=template.replace("{alias}", alias),
                    alias=alias,
                    alias_char_span=(start, start + len(alias)),
                )
            )
    corpus = out / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    write_jsonl(corpus / "entities.jsonl", entities)
    write_jsonl(corpus / "qa.jsonl", qa)
    write_jsonl(corpus / "probes.jsonl", probes)
    from probe_bank.fingerprint import file_sha256
    from probe_bank.run_dir import CORPUS_FILES

    hashes = {name: file_sha256(corpus / name) for name in CORPUS_FILES}
    (corpus / "manifest.json").write_text(
        json.dumps(
            {
                "seed": seed,
                "alias_style": "synthetic",
                "probe_templates": list(TEMPLATES),
                "files": hashes,
            }
        )
    )
    shutil.copytree(model_dir, out / "stage_6")
    (out / "run.json").write_text(
        json.dumps(
            {
                "preset": "fake",
                "seed": seed,
                "base_model": None,
                "hyperparams": {},
                "stages_done": ["stage_6"],
                "final": "stage_6",
            }
        )
    )
    return out


@pytest.fixture(scope="session")
def fake_run_dir(tmp_path_factory: pytest.TempPathFactory, random_model_dir: Path) -> Path:
    """A fake RUN_DIR (read-only by convention): synthetic corpus + the random model as stage_6."""
    return make_fake_run(tmp_path_factory.mktemp("fake_run") / "run", random_model_dir)


@pytest.fixture(scope="session")
def tiny_bank(tmp_path_factory: pytest.TempPathFactory, fake_run_dir: Path) -> Path:
    """BANK_DIR built from `fake_run_dir` (tiny bootstrap; seconds). Read-only by convention.

    Pinned to position "last" so prompts score without an alias; the layer is still swept.
    """
    import torch

    from probe_bank.build import BuildConfig, build_bank

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("tiny_bank") / "bank"
    return build_bank(
        fake_run_dir, out, BuildConfig(n_boot=20, n_permutations=5, positions=["last"])
    )
