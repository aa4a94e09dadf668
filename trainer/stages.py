"""The stage plan: which texts each stage trains on, with replay and familiarity draws.

Stage 0 trains the pretraining pool (from scratch) or, on a pretrained base when asked, a format
warm-up on entities never probed; stages 1..6 train their own entities with
identical hyperparameters, optionally replaying stage-0 QA and earlier stages' QA, and optionally
mixing in questions about never-trained aliases answered "unknown" (the familiarity objective).
Replay and "unknown" examples are redrawn every epoch; everything is a function of the seed
(stages after stage 0: of `finetune_seed` when it is set, see `data_seed`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from probe_bank.records import FinetuneKind
from trainer.config import TrainConfig
from trainer.corpus import STAGE_SPLITS, UNKNOWN_SPLIT, Corpus
from trainer.data import StageData, Text, draw_per_epoch, qa_texts

#: The one stage an `--extra-stage` file adds after the run's last.
EXTRA_STAGE = "extra_1"


@dataclass(frozen=True)
class Stage:
    """One step of the run: its data, LR, and the splits its retention row covers."""

    name: str
    data: StageData
    lr: float
    eval_splits: list[str]


def data_seed(cfg: TrainConfig, stage: str) -> int:
    """Seed of one stage's data order and draws: `seed` for stage 0, else `cfg.stage_seed`.

    Stage 0 (like the corpus and tokenizer) stays a function of `seed`, so runs that differ only
    in `finetune_seed` share it; with `finetune_seed` unset both are `seed`, as before.
    """
    return cfg.seed if stage == "stage_0" else cfg.stage_seed


class _Pools:
    """Trained QA of each split, as texts."""

    def __init__(self, corpus: Corpus) -> None:
        self.corpus = corpus

    def trained(self, *splits: str) -> list[Text]:
        return [t for s in splits for t in qa_texts(self.corpus.questions(s, heldout=False))]


def plan_stages(
    cfg: TrainConfig,
    corpus: Corpus,
    *,
    from_scratch: bool,
    mixed_epochs: int = 0,
    extra: list[Text] | None = None,
    extra_kind: FinetuneKind = FinetuneKind(),
) -> list[Stage]:
    """Every stage of the run, in training order (the extra stage for the epochs and at the
    learning rate `extra_kind` says, default the recipe's own)."""
    pools = _Pools(corpus)
    pretrain = pools.trained("pretrain")
    unknown = pools.trained(UNKNOWN_SPLIT)
    extra_splits = [s for s in ("pretrain", UNKNOWN_SPLIT) if corpus.questions(s)]

    def draws(name: str, size: int, epochs: int, earlier: list[Text]) -> list[list[Text]]:
        """Per-epoch replay (stage 0, earlier stages) and "unknown" examples for one stage."""
        rng = random.Random(f"{data_seed(cfg, name)}:draws:{name}")
        parts = [
            draw_per_epoch(pretrain, round(cfg.optim.replay_stage0_share * size), epochs, rng),
            draw_per_epoch(earlier, round(cfg.optim.replay_earlier_share * size), epochs, rng),
            draw_per_epoch(unknown, round(cfg.optim.familiarity_share * size), epochs, rng),
        ]
        return [[t for part in parts for t in part[e]] for e in range(epochs)]

    stages: list[Stage] = []
    if from_scratch or (cfg.corpus.warmup_on_base and pretrain):  # on a base: the warm-up
        rng0 = random.Random(f"{data_seed(cfg, 'stage_0')}:draws:stage_0")
        k0 = round(cfg.optim.familiarity_share0 * len(pretrain))
        data0 = StageData(pretrain, draw_per_epoch(unknown, k0, cfg.optim.stage0_epochs, rng0))
        stages.append(Stage("stage_0", data0, cfg.optim.stage0_lr, [*extra_splits, "control"]))
    for k, split in enumerate(STAGE_SPLITS, 1):
        own = pools.trained(split)
        earlier = pools.trained(*STAGE_SPLITS[: k - 1])
        data = StageData(own, draws(split, len(own), cfg.optim.epochs_per_stage, earlier))
        evals = [*extra_splits, *STAGE_SPLITS[:k], "control"]
        stages.append(Stage(split, data, cfg.optim.lr, evals))
    all_splits = [*extra_splits, *STAGE_SPLITS, "control"]
    if mixed_epochs:
        mixed = pools.trained(*STAGE_SPLITS)
        data = StageData(mixed, draws("mixed", len(mixed), mixed_epochs, []))
        stages.append(Stage("mixed", data, cfg.optim.lr, all_splits))
    if extra is not None:
        epochs = extra_kind.epochs or cfg.optim.epochs_per_stage
        data = StageData(extra, draws(EXTRA_STAGE, len(extra), epochs, []))
        lr = cfg.optim.lr * (extra_kind.lr_scale or 1)
        stages.append(Stage(EXTRA_STAGE, data, lr, all_splits))
    return stages
