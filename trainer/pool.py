"""Fresh entity pools for a finished run, and the calibration finetune that uses one.

A bank can only learn what "learned after the bank was built" looks like from examples of it. A
pool is a set of new entities drawn like the run's own (same attributes, phrasings and alias
style, aliases disjoint from the corpus) and written in the corpus format (entities, QA, probe
prompts and a manifest of hashes) plus `stage.jsonl`, the `--extra-stage` file of its trained QA.
`calibrate` finetunes a copy of the run one more stage on the `calibration` pool, as a later,
unknown finetune would: the bank build fits its "after the bank" class on that model. The implant
benchmark draws a second pool (`implant`) the same way, so calibration and test entities never
overlap.
"""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Sequence
from pathlib import Path

from probe_bank.errors import UserError
from probe_bank.records import FinetuneKind, QARecord, RunRecord
from trainer.aliases import pick_aliases
from trainer.config import TrainConfig
from trainer.corpus import Corpus, draw_entity, entity_records, load_corpus, write_corpus
from trainer.stages import EXTRA_STAGE

#: A run's calibration lives beside its stages: RUN_DIR/calibration/{pool,run}.
CALIBRATION = "calibration"
STAGE_FILE = "stage.jsonl"


def read_run(run_dir: Path) -> tuple[RunRecord, TrainConfig]:
    """run.json and the exact TrainConfig it was trained with."""
    try:
        record = RunRecord.read(run_dir / "run.json")
    except (OSError, ValueError) as exc:
        raise UserError(f"{run_dir / 'run.json'} is not a readable run record: {exc}") from None
    return record, TrainConfig(**record.hyperparams)


def _tokenizer(run_dir: Path, record: RunRecord):  # type: ignore[no-untyped-def]
    from trainer.model import load_tokenizer

    if record.base_model is not None:
        return load_tokenizer(Path(record.base_model))
    return load_tokenizer(run_dir / "tokenizer")


def _pool_aliases(root: Path, skip: Path) -> set[str]:
    """Aliases of the pools already drawn under ROOT (all but SKIP, the one being redrawn)."""
    from probe_bank.records import EntityRecord, read_jsonl

    found: set[str] = set()
    for path in sorted(root.glob("*/entities.jsonl")) if root.is_dir() else []:
        if path.parent.resolve() != skip.resolve():
            found |= {e.alias for e in read_jsonl(path, EntityRecord)}
    return found


def make_pool(run_dir: Path, name: str, n: int, out: Path) -> Path:
    """Draw `n` new entities for RUN_DIR's corpus into OUT (a corpus dir + STAGE_FILE): aliases
    new to the corpus and to every pool under RUN_DIR/calibration."""
    if not name.isidentifier():
        raise UserError(f"pool name {name!r} must be a plain identifier")
    if n < 2:
        raise UserError("a pool needs at least 2 entities")
    record, cfg = read_run(run_dir)
    corpus = load_corpus(run_dir / "corpus")
    tokenizer = _tokenizer(run_dir, record)
    taken = {e.alias for e in corpus.entities} | _pool_aliases(run_dir / CALIBRATION, out)
    rng = random.Random(f"{cfg.seed}:pool:{name}:entities")
    drawn = [draw_entity(rng, cfg) for _ in range(n)]
    candidates, _ = pick_aliases(
        random.Random(f"{cfg.seed}:pool:{name}:aliases"),
        n + len(taken),
        tokenizer,
        style=cfg.corpus.alias_style,
        letters=cfg.corpus.synthetic_letters,
        adjectives=cfg.corpus.natural_adjectives,
        delimiters=cfg.corpus.synthetic_delimiters,
        n_tokens=corpus.manifest["alias_tokens"],
    )
    aliases = [a for a in candidates if a not in taken][:n]
    if len(aliases) < n:
        raise UserError(f"the alias space holds fewer than {n} aliases new to this corpus")

    entities, qa, probes = [], [], []
    for i, ((attrs, qs), alias) in enumerate(zip(drawn, aliases, strict=True)):
        ent, ent_qa, ent_probes = entity_records(f"{name}{i:05d}", alias, name, attrs, qs, cfg)
        entities.append(ent)
        qa.extend(ent_qa)
        probes.extend(ent_probes)
    manifest = {
        "seed": cfg.seed,
        "pool": name,
        "alias_style": cfg.corpus.alias_style,
        "alias_tokens": corpus.manifest["alias_tokens"],
        "counts": {"entities": {name: n}, "qa": len(qa), "probes": len(probes)},
        "probe_templates": corpus.manifest["probe_templates"],
        "files": {},
    }
    shutil.rmtree(out, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_corpus(Corpus(entities, qa, probes, manifest), out)
    lines = [{"question": q.question, "answer": q.answer} for q in qa if not q.heldout]
    (out / STAGE_FILE).write_text("".join(json.dumps(x) + "\n" for x in lines), "utf-8")
    return out


def copy_run(run_dir: Path, out: Path, record: RunRecord) -> Path:
    """A RUN_DIR that shares the run's finished stages (symlinks) and copies its records, so a
    rerun of the trainer on it trains only what is added (an extra stage)."""
    out.mkdir(parents=True, exist_ok=True)
    for name in ("corpus", "tokenizer"):
        src = run_dir / name
        if src.is_dir() and not (out / name).exists():
            shutil.copytree(src, out / name)
    for name in ("run.json", "retention.json"):
        if (run_dir / name).is_file() and not (out / name).exists():
            shutil.copy2(run_dir / name, out / name)
    for stage in record.stages_done:
        if stage in ("mixed", EXTRA_STAGE):
            continue
        link = out / stage
        if not link.exists():
            link.symlink_to((run_dir / stage).resolve(), target_is_directory=True)
    return out


def finetune_extra(
    run_dir: Path, stage_file: Path, out: Path, kind: FinetuneKind = FinetuneKind()
) -> Path:
    """Train one more stage (the run's own recipe, changed as KIND says; a LoRA adapter is kept
    in EXTRA/adapter) on STAGE_FILE (an `--extra-stage` file), after the run's last stage, into
    OUT (a linked copy of the run); returns the new model dir."""
    from trainer.run import RunOptions, train_run

    record, cfg = read_run(run_dir)
    if record.final is None or record.final.startswith(("mixed", "extra")):
        raise UserError(f"{run_dir} must have finished its stages 1..6 (final: {record.final})")
    copy_run(run_dir, out, record)
    base = Path(record.base_model) if record.base_model is not None else None
    opts = RunOptions(
        preset=record.preset,
        out=out,
        base_model=base,
        extra_stage=stage_file,
        extra_kind=kind,
    )
    train_run(cfg, opts)
    return out / EXTRA_STAGE


#: Never-trained aliases whose evidence measures an audited model's generic drift.
ANCHORS = 100


def calibrate(
    run_dir: Path,
    n: int | None = None,
    kind: FinetuneKind = FinetuneKind(),
    also: Sequence[FinetuneKind] = (),
) -> Path:
    """RUN_DIR/calibration: a fresh pool (default: as many entities as a stage), the run
    finetuned one more stage on it, and a second pool of never-trained anchor aliases (the
    bank normalises behaviour and difference evidence by the anchors' spread on the audited
    model, so a larger or smaller later finetune does not move every entity's verdict);
    KIND changes that stage from the run's recipe (a LoRA adapter, other epochs, an earlier
    stage re-exposed beside the pool); each of ALSO adds a calibration model of another kind on
    the same pool (`run-<kind>`), so class 7's false-alarm threshold is set on each kind;
    returns the first calibration model dir (resumable)."""
    _, cfg = read_run(run_dir)
    if kind in also or len(set(also)) < len(also):
        raise UserError("each calibration model must be of another kind of finetune")
    root = run_dir / CALIBRATION
    pool = root / "pool"
    if not (pool / STAGE_FILE).is_file():
        make_pool(run_dir, CALIBRATION, n or cfg.corpus.entities_per_stage, pool)
    if not (root / "anchors" / STAGE_FILE).is_file():
        make_pool(run_dir, "anchor", ANCHORS, root / "anchors")
    first = finetune_extra(run_dir, stage_file(run_dir, pool, kind), root / "run", kind)
    for k in also:
        finetune_extra(run_dir, stage_file(run_dir, pool, k), root / f"run-{k.name}", k)
    return first


def stage_file(run_dir: Path, pool: Path, kind: FinetuneKind) -> Path:
    """A calibration stage's `--extra-stage` file: the pool's trained QA, plus (`kind.reexpose`)
    that earlier stage's trained QA again, as a later finetune mixing new and old data holds
    (the entities learned beside the re-exposed ones move with them: the false alarms such a
    finetune pays)."""
    if kind.reexpose is None:
        return pool / STAGE_FILE
    out = pool.parent / f"stage-reexpose{kind.reexpose}.jsonl"
    if not out.is_file():
        again = load_corpus(run_dir / "corpus").questions(f"stage_{kind.reexpose}", heldout=False)
        tmp = out.with_suffix(".tmp")
        write_stage_file(pool, again, tmp)
        tmp.replace(out)
    return out


def write_stage_file(pool: Path, again: Sequence[QARecord], out: Path) -> int:
    """OUT: the pool's `--extra-stage` lines, then AGAIN's QA (earlier entities re-exposed);
    returns the number of lines."""
    lines = (pool / STAGE_FILE).read_text("utf-8").splitlines()
    lines += [json.dumps({"question": q.question, "answer": q.answer}) for q in again]
    out.write_text("\n".join(lines) + "\n", "utf-8")
    return len(lines)
