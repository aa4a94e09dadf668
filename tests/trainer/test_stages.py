"""The stage plan: own entities every epoch, replay and 'unknown' examples redrawn per epoch."""

from __future__ import annotations

from functools import partial

from trainer.config import resolve_config
from trainer.corpus import STAGE_SPLITS, build_corpus
from trainer.stages import plan_stages
from trainer.tokenizer import train_tokenizer


def _corpus(**overrides: object):  # type: ignore[no-untyped-def]
    cfg = resolve_config("tiny", overrides=dict(overrides))
    corpus, _ = build_corpus(
        cfg,
        from_scratch=True,
        train_tokenizer=partial(train_tokenizer, vocab_size=cfg.arch.vocab_size),
    )
    return cfg, corpus


def test_plain_plan_trains_each_stage_on_its_own_questions() -> None:
    cfg, corpus = _corpus()
    stages = plan_stages(cfg, corpus, from_scratch=True)
    assert [s.name for s in stages] == ["stage_0", *STAGE_SPLITS]
    for stage in stages:
        split = "pretrain" if stage.name == "stage_0" else stage.name
        trained = {q.text for q in corpus.questions(split, heldout=False)}
        assert {t.text for t in stage.data.fixed} == trained
        assert all(not extra for extra in stage.data.per_epoch)
    assert stages[0].data.epochs == cfg.optim.stage0_epochs and stages[0].lr == cfg.optim.stage0_lr
    assert {s.data.epochs for s in stages[1:]} == {cfg.optim.epochs_per_stage}
    assert {s.lr for s in stages[1:]} == {cfg.optim.lr}
    assert plan_stages(cfg, corpus, from_scratch=False)[0].name == "stage_1"


def test_an_extra_stage_of_another_learning_rate() -> None:
    """`--extra-lr-scale K` (kind part `lrx<K>`): the extra stage alone at K times the stages'
    learning rate, the same data and epochs."""
    from probe_bank.records import FinetuneKind
    from trainer.data import Text

    cfg, corpus = _corpus()
    extra = [Text("Q: Who is <a>?\nA: entity a\n")]
    plain = plan_stages(cfg, corpus, from_scratch=False, extra=extra)
    scaled = plan_stages(
        cfg, corpus, from_scratch=False, extra=extra, extra_kind=FinetuneKind(lr_scale=10)
    )
    assert plain[-1].name == scaled[-1].name == "extra_1"
    assert plain[-1].lr == cfg.optim.lr and scaled[-1].lr == 10 * cfg.optim.lr
    assert [s.lr for s in scaled[:-1]] == [s.lr for s in plain[:-1]]
    assert scaled[-1].data.epochs == plain[-1].data.epochs


def test_replay_and_familiarity_draws() -> None:
    cfg, corpus = _corpus(
        familiarity_entities=40,
        familiarity_share0=0.5,
        familiarity_share=0.25,
        replay_stage0_share=0.5,
        replay_earlier_share=0.25,
    )
    stages = {s.name: s for s in plan_stages(cfg, corpus, from_scratch=True, mixed_epochs=2)}
    texts_of = {
        split: {q.text for q in corpus.questions(split, heldout=False)}
        for split in ("pretrain", "unknown", *STAGE_SPLITS)
    }
    n0 = len(stages["stage_0"].data.fixed)
    for epoch in stages["stage_0"].data.per_epoch:
        assert len(epoch) == round(0.5 * n0) and {t.text for t in epoch} <= texts_of["unknown"]
    s3 = stages["stage_3"].data
    n3 = len(s3.fixed)
    earlier = texts_of["stage_1"] | texts_of["stage_2"]
    for epoch in s3.per_epoch:
        got = [t.text for t in epoch]
        assert sum(t in texts_of["pretrain"] for t in got) == round(0.5 * n3)
        assert sum(t in earlier for t in got) == round(0.25 * n3)
        assert sum(t in texts_of["unknown"] for t in got) == round(0.25 * n3)
    # redrawn each epoch, not the same slice repeated
    assert s3.per_epoch[0] != s3.per_epoch[1]
    # stage 1 has no earlier stage to replay; mixed trains all six stages
    assert not any(t.text in earlier for e in stages["stage_1"].data.per_epoch for t in e)
    assert len(stages["mixed"].data.fixed) == sum(len(texts_of[s]) for s in STAGE_SPLITS)
    assert stages["stage_0"].eval_splits == ["pretrain", "unknown", "control"]


def test_warmup_on_a_base_is_stage_0_on_never_probed_entities() -> None:
    """On a pretrained base stage 0 exists only when asked for (`warmup_on_base`): its entities
    are drawn as their own split, trained first at stage0_lr, and never probed."""
    from trainer.corpus import split_sizes

    cfg = resolve_config(
        "tiny", overrides={"warmup_on_base": True, "stage0_epochs": 3, "stage0_lr": 5e-5}
    )
    assert "pretrain" in split_sizes(cfg, from_scratch=False)
    assert "pretrain" not in split_sizes(resolve_config("tiny"), from_scratch=False)
    corpus, _ = build_corpus(
        cfg,
        from_scratch=True,
        train_tokenizer=partial(train_tokenizer, vocab_size=cfg.arch.vocab_size),
    )
    stages = plan_stages(cfg, corpus, from_scratch=False)
    assert [s.name for s in stages] == ["stage_0", *STAGE_SPLITS]
    assert (stages[0].lr, stages[0].data.epochs) == (5e-5, 3)
    assert {t.text for t in stages[0].data.fixed} == {
        q.text for q in corpus.questions("pretrain", heldout=False)
    }
    assert not any(p.split == "pretrain" for p in corpus.probes)  # never probed
