"""Self-contained prototype: does a small from-scratch Llama on CPU encode training-order recency?

Why this file exists: issue 4 needs a training recipe where linear probes read an entity's
finetuning stage from activations (arXiv 2509.14223). Earlier CPU runs (docs/cpu-feasibility.md in
../shared) found probes at chance. The lever tested here is a *familiarity* objective: the model
must answer ``unknown`` for aliases it never trained on, so "do I know this alias" has to become
a feature, whose strength may track how recently the alias was trained.

Setting (faithful, no shortcuts): aliases are 3 tokens drawn from shared syllables (no token
belongs to one entity); training is question-answer only; probes read prompts in templates never
trained; probes are scored only on held-out entities; centroid order is cross-fitted.

Run: ``python research/familiarity_probe.py --name NAME --set key=value ...`` (keys: RunConfig).
Appends one JSON line to research/results.jsonl.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict
from scipy.stats import spearmanr
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

RESULTS = Path(__file__).with_name("results.jsonl")
N_STAGES = 6

ATTRIBUTES = {  # attribute -> number of answer values (coarse, as in the study)
    "birth": 12,
    "death": 12,
    "region": 10,
    "occupation": 16,
    "nationality": 12,
    "gender": 2,
}
UNKNOWN = "unknown"
KNOWN = "known"  # the optional entity-level question `Q: what is the known of <alias> ? A: yes`


class RunConfig(BaseModel):
    """Every recipe lever of one run."""

    model_config = ConfigDict(extra="forbid")

    seed: int = 0
    finetune_seed: int | None = None  # None: same as seed (stage-0 model and data shared)
    n_syllables: int = 40
    alias_len: int = 3
    n_pretrain: int = 300  # stage-0 entities
    n_per_stage: int = 200  # entities per stage 1..6 (and in the never-trained control)
    layers: int = 2
    d_model: int = 128
    heads: int = 4
    batch: int = 16
    pretrain_epochs: int = 60
    pretrain_lr: float = 1e-3
    stage_epochs: int = 10
    stage_lr: float = 5e-4
    schedule: str = "constant"  # stage LR schedule: constant | cosine
    weight_decay: float = 0.01
    neg_frac0: float = 0.5  # "unknown" negatives in stage 0, per positive QA
    neg_frac: float = 0.3  # "unknown" negatives in every finetuning stage, per positive QA
    alias_first: bool = False  # trained template puts the alias before the attribute
    familiarity_question: bool = False  # train `known -> yes` per entity, `unknown` on negatives
    replay_frac: float = 0.2  # stage-0 QA replayed in each finetuning stage, per positive QA
    replay_prev_frac: float = 0.0  # QA of earlier finetuning stages replayed, per positive QA
    # share of that replay per earlier stage ~ decay**(age - 1): 1.0 = uniform over all earlier QA,
    # < 1 replays newer stages more, so forgetting is graded by age by design
    replay_prev_decay: float = 1.0
    stage_weight_decay: float | None = None  # AdamW decay in stages 1..6; None = weight_decay
    # after stage 6: epochs over all six stages' QA mixed (the study's "survives mixed training"
    # test); it evens out memory strength, so a probe that still orders the stages reads more
    mixed_epochs: int = 0
    probe_c: float = 0.1
    folds: int = 5


# ----------------------------------------------------------------------------- corpus


@dataclass
class Entity:
    alias: tuple[int, ...]  # syllable token ids
    split: int  # -1 pretrain, 0 control, 1..6 stage
    values: dict[str, int]
    heldout: str  # the attribute never trained


class Vocab:
    """Word-level vocabulary; syllables are shared sub-tokens of every alias."""

    def __init__(self, n_syllables: int, alias_first: bool = False) -> None:
        self.alias_first = alias_first
        self.alias_start = 1 if alias_first else 6  # alias position in a trained template
        words = ["<pad>", "Q:", "A:", "what", "is", "the", "of", "?", "who", "tell", "me", "about"]
        words += [UNKNOWN, KNOWN, "yes", *ATTRIBUTES]
        words += [f"{a}_{i}" for a, n in ATTRIBUTES.items() for i in range(n)]
        words += [f"syl{i}" for i in range(n_syllables)]
        self.words = words
        self.ids = {w: i for i, w in enumerate(words)}
        self.syl0 = self.ids["syl0"]

    def enc(self, words: list[str]) -> list[int]:
        return [self.ids[w] for w in words]


def qa_ids(v: Vocab, alias: tuple[int, ...], attr: str, answer: str) -> list[int]:
    """The one trained template: `Q: what is the <attr> of <alias> ? A: <answer>`, or with
    `alias_first`, `Q: <alias> <attr> ? A: <answer>`, where the alias is read before the attribute
    is known, so any lookup at the alias tokens has to be entity-level."""
    if v.alias_first:
        return [v.ids["Q:"], *alias, *v.enc([attr, "?", "A:", answer])]
    return [*v.enc(["Q:", "what", "is", "the", attr, "of"]), *alias, *v.enc(["?", "A:", answer])]


PROBE_TEMPLATES = {  # never trained; alias inserted where None stands
    "who": ["Q:", "who", "is", None, "?", "A:"],
    "about": ["Q:", "tell", "me", "about", None, "?", "A:"],
    "bare": ["Q:", None, "?", "A:"],  # no attribute: alias tokens see exactly a training prefix
}


HELDOUT = "heldout"  # the trained template asking the entity's never-trained attribute


def probe_ids(v: Vocab, template: str, e: Entity) -> tuple[list[int], int]:
    """Token ids of a probe prompt and the index of the alias's first token."""
    alias = e.alias
    if template == HELDOUT:
        return qa_ids(v, alias, e.heldout, UNKNOWN)[:-1], v.alias_start
    if template == KNOWN:
        return qa_ids(v, alias, KNOWN, UNKNOWN)[:-1], v.alias_start
    out: list[int] = []
    start = -1
    for w in PROBE_TEMPLATES[template]:
        if w is None:
            start = len(out)
            out.extend(alias)
        else:
            out.append(v.ids[w])
    return out, start


def make_entities(cfg: RunConfig, v: Vocab, rng: random.Random) -> tuple[list[Entity], set]:
    """Pretrain pool, stages 1..6 and control, with unique aliases from shared syllables."""
    sizes = [(-1, cfg.n_pretrain)] + [(k, cfg.n_per_stage) for k in range(N_STAGES + 1)]
    total = sum(n for _, n in sizes)
    used: set[tuple[int, ...]] = set()
    while len(used) < total:
        used.add(tuple(v.syl0 + rng.randrange(cfg.n_syllables) for _ in range(cfg.alias_len)))
    aliases = list(used)
    rng.shuffle(aliases)
    ents = []
    for split, n in sizes:
        for _ in range(n):
            values = {a: rng.randrange(k) for a, k in ATTRIBUTES.items()}
            ents.append(Entity(aliases.pop(), split, values, rng.choice(list(ATTRIBUTES))))
    return ents, used


def trained_qas(cfg: RunConfig, v: Vocab, e: Entity) -> list[list[int]]:
    qas = [qa_ids(v, e.alias, a, f"{a}_{e.values[a]}") for a in ATTRIBUTES if a != e.heldout]
    if cfg.familiarity_question:
        qas.append(qa_ids(v, e.alias, KNOWN, "yes"))
    return qas


def negatives(cfg: RunConfig, v: Vocab, n: int, taken: set, rng: random.Random) -> list[list[int]]:
    """Fresh never-seen aliases answered `unknown` (the familiarity objective)."""
    out = []
    while len(out) < n:
        alias = tuple(v.syl0 + rng.randrange(cfg.n_syllables) for _ in range(cfg.alias_len))
        if alias not in taken:
            attrs = [*ATTRIBUTES, KNOWN] if cfg.familiarity_question else list(ATTRIBUTES)
            out.append(qa_ids(v, alias, rng.choice(attrs), UNKNOWN))
    return out


# ----------------------------------------------------------------------------- training


def build_model(cfg: RunConfig, vocab_size: int) -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    conf = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=cfg.d_model,
        intermediate_size=cfg.d_model * 4,
        num_hidden_layers=cfg.layers,
        num_attention_heads=cfg.heads,
        max_position_embeddings=64,
        tie_word_embeddings=True,
        pad_token_id=0,
        bos_token_id=None,
        eos_token_id=None,
    )
    return LlamaForCausalLM(conf)


def answer_logits(model: torch.nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """Logits predicting the last token of each (equal-length) sequence."""
    hidden = model.model(input_ids=batch[:, :-1]).last_hidden_state[:, -1]
    return model.lm_head(hidden)


def train_stage(
    cfg: RunConfig,
    model: torch.nn.Module,
    epochs: int,
    lr: float,
    make_epoch,
    rng: random.Random,
    weight_decay: float | None = None,
) -> float:
    """One stage with a fresh AdamW (as in the study); loss on the answer token only."""
    wd = cfg.weight_decay if weight_decay is None else weight_decay
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=wd)
    data = [make_epoch() for _ in range(epochs)]
    steps = sum(math.ceil(len(d) / cfg.batch) for d in data)
    warm = max(1, steps // 20)

    def lr_at(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        if cfg.schedule == "cosine":
            return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - warm) / (steps - warm)))
        return 1.0

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    model.train()
    loss_val = float("nan")
    for seqs in data:
        rng.shuffle(seqs)
        for i in range(0, len(seqs), cfg.batch):
            b = torch.tensor(seqs[i : i + cfg.batch])
            loss = torch.nn.functional.cross_entropy(answer_logits(model, b), b[:, -1])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_val = loss.item()
    model.eval()
    return loss_val


@torch.inference_mode()
def qa_stats(model: torch.nn.Module, seqs: list[list[int]], unk: int) -> dict[str, np.ndarray]:
    """Per-sequence answer NLL, correctness and whether the model says `unknown`."""
    nll, correct, said_unk = [], [], []
    for i in range(0, len(seqs), 256):
        b = torch.tensor(seqs[i : i + 256])
        logits = answer_logits(model, b)
        logp = logits.log_softmax(-1)
        nll.append(-logp.gather(1, b[:, -1:]).squeeze(1))
        pred = logits.argmax(-1)
        correct.append(pred == b[:, -1])
        said_unk.append(pred == unk)
    return {
        "nll": torch.cat(nll).numpy(),
        "correct": torch.cat(correct).numpy(),
        "unknown": torch.cat(said_unk).numpy(),
    }


# ----------------------------------------------------------------------------- capture


@torch.inference_mode()
def capture(
    model: torch.nn.Module, prompts: list[list[int]], unk: int
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Residual stream [n, layers+1, T, d] (0 = embeddings) and next-token statistics."""
    acts: list[torch.Tensor] = []
    stats: dict[str, list[torch.Tensor]] = {"entropy": [], "max_logit": [], "p_unknown": []}
    for i in range(0, len(prompts), 256):
        b = torch.tensor(prompts[i : i + 256])
        out = model(input_ids=b, output_hidden_states=True)
        hs = list(out.hidden_states)
        # HF applies the final norm to the last entry; recompute the raw residual via a hook-free
        # route: the last layer's output before norm is not exposed, so keep the normed one.
        acts.append(torch.stack(hs, dim=1).float())
        logits = out.logits[:, -1].float()
        logp = logits.log_softmax(-1)
        stats["entropy"].append(-(logp.exp() * logp).sum(-1))
        stats["max_logit"].append(logits.max(-1).values)
        stats["p_unknown"].append(logp[:, unk].exp())
    return torch.cat(acts).numpy(), {k: torch.cat(v).numpy() for k, v in stats.items()}


# ----------------------------------------------------------------------------- probes


def probe(c: float, class_weight: str | None = None) -> object:
    lr = LogisticRegression(C=c, max_iter=2000, class_weight=class_weight)
    return make_pipeline(StandardScaler(), lr)


def oof_correct(
    x: np.ndarray, y: np.ndarray, cfg: RunConfig, seed: int = 0, class_weight: str | None = None
) -> np.ndarray:
    """Out-of-fold correctness per entity (one sample per entity, so folds hold out entities)."""
    cv = StratifiedKFold(cfg.folds, shuffle=True, random_state=seed)
    pred = cross_val_predict(probe(cfg.probe_c, class_weight), x, y, cv=cv)
    return pred == y


def boot_ci(correct: np.ndarray, n: int = 2000, seed: int = 0) -> list[float]:
    rng = np.random.default_rng(seed)
    means = correct[rng.integers(0, len(correct), (n, len(correct)))].mean(1)
    return [float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))]


def acc_ci(correct: np.ndarray) -> dict:
    return {"value": float(correct.mean()), "ci95": boot_ci(correct), "n": int(len(correct))}


def pair_acc(x: np.ndarray, lab: np.ndarray, a, b, cfg: RunConfig) -> np.ndarray:
    """Held-out correctness of a probe telling label set `a` from label set `b`."""
    mask = np.isin(lab, a) | np.isin(lab, b)
    y = np.isin(lab[mask], b).astype(int)
    return oof_correct(x[mask], y, cfg)


def balanced(x: np.ndarray, lab: np.ndarray, cfg: RunConfig) -> float:
    """Never-trained vs trained (any stage), as balanced accuracy: the classes are 1:6."""
    y = (lab > 0).astype(int)
    ok = oof_correct(x, y, cfg, class_weight="balanced")
    return float((ok[y == 0].mean() + ok[y == 1].mean()) / 2)


def centroid_order(x: np.ndarray, lab: np.ndarray, reps: int = 20) -> dict:
    """Cross-fitted: the 1->6 axis from half of each stage's entities, centroids from the rest."""
    rng = np.random.default_rng(0)
    rhos = []
    for _ in range(reps):
        half = np.zeros(len(lab), bool)
        for k in range(1, N_STAGES + 1):
            idx = np.flatnonzero(lab == k)
            half[rng.choice(idx, len(idx) // 2, replace=False)] = True
        for fit, ev in ((half, ~half), (~half, half)):
            axis = x[fit & (lab == 6)].mean(0) - x[fit & (lab == 1)].mean(0)
            cents = [x[ev & (lab == k)].mean(0) @ axis for k in range(1, N_STAGES + 1)]
            rhos.append(spearmanr(range(N_STAGES), cents).statistic)
    rhos_a = np.array(rhos)
    return {"mean": float(rhos_a.mean()), "frac_exact": float((rhos_a > 0.999).mean())}


def full_metrics(x: np.ndarray, lab: np.ndarray, cfg: RunConfig) -> dict:
    pairs = {}
    for a in range(1, N_STAGES + 1):
        for b in range(a + 1, N_STAGES + 1):
            pairs[f"{a}v{b}"] = float(pair_acc(x, lab, [a], [b], cfg).mean())
    seven = oof_correct(x, lab, cfg)
    return {
        "stage1_vs_stage6": acc_ci(pair_acc(x, lab, [1], [6], cfg)),
        "early_vs_late": acc_ci(pair_acc(x, lab, [1, 2, 3], [4, 5, 6], cfg)),
        "adjacent_mean": float(np.mean([pairs[f"{k}v{k + 1}"] for k in range(1, N_STAGES)])),
        "pairwise": pairs,
        "stage_accuracy_7": acc_ci(seven),
        "trained_vs_control": balanced(x, lab, cfg),
        "centroid_order": centroid_order(x, lab),
    }


def loss_balanced_1v6(
    x: np.ndarray, lab: np.ndarray, loss: np.ndarray, cfg: RunConfig, bins: int = 8
) -> dict:
    """Stage 1 vs 6 on a subsample whose two classes share one answer-loss histogram (as in the
    study's balanced controls): whatever the probe still reads there is not memory strength."""
    mask = np.isin(lab, [1, 6])
    xs, ys, ls = x[mask], (lab[mask] == 6).astype(int), loss[mask]
    edges = np.quantile(ls, np.linspace(0, 1, bins + 1)[1:-1])
    which = np.digitize(ls, edges)
    rng = np.random.default_rng(0)
    keep: list[int] = []
    for b in range(bins):
        early = np.flatnonzero((which == b) & (ys == 0))
        late = np.flatnonzero((which == b) & (ys == 1))
        m = min(len(early), len(late))
        keep += [*rng.choice(early, m, replace=False), *rng.choice(late, m, replace=False)]
    idx = np.array(keep, dtype=int)
    if len(idx) < 4 * cfg.folds:
        return {"n": int(len(idx)), "probe": None, "loss_only": None}
    return {
        "n": int(len(idx)),
        "probe": acc_ci(oof_correct(xs[idx], ys[idx], cfg)),
        "loss_only": float(oof_correct(ls[idx, None], ys[idx], cfg).mean()),
    }


def control_metrics(scalars: dict[str, np.ndarray], lab: np.ndarray, cfg: RunConfig) -> dict:
    """Stage 1 vs 6 from scalar statistics alone (each, and all combined)."""
    out = {}
    for name, s in scalars.items():
        out[name] = float(pair_acc(s[:, None], lab, [1], [6], cfg).mean())
    combined = np.stack(list(scalars.values()), 1)
    out["combined"] = float(pair_acc(combined, lab, [1], [6], cfg).mean())
    return out


# ----------------------------------------------------------------------------- run

CACHE = Path(__file__).resolve().parents[1] / "artifacts" / "research" / "stage0"
ACTS = CACHE.parent / "acts"  # probe activations of every run, for re-analysis
STAGE0_KEYS = [
    *("seed", "n_syllables", "alias_len", "n_pretrain", "n_per_stage", "layers", "d_model"),
    *("heads", "batch", "pretrain_epochs", "pretrain_lr", "weight_decay", "neg_frac0"),
    "familiarity_question",
    "alias_first",
]


def stage0_cache_path(cfg: RunConfig) -> Path:
    """Stage 0 depends only on these levers; runs that share them reuse one checkpoint
    (with the RNG states saved after it, so a cached run equals an uncached one)."""
    key = json.dumps({k: getattr(cfg, k) for k in STAGE0_KEYS}, sort_keys=True)
    return CACHE / f"{hashlib.sha256(key.encode()).hexdigest()[:16]}.pt"


def run(cfg: RunConfig, name: str) -> dict:
    torch.set_num_threads(1)
    t0 = time.time()
    rng = random.Random(cfg.seed)
    torch.manual_seed(cfg.seed)
    v = Vocab(cfg.n_syllables, cfg.alias_first)
    unk = v.ids[UNKNOWN]
    ents, taken = make_entities(cfg, v, rng)
    by_split = {s: [e for e in ents if e.split == s] for s in range(-1, N_STAGES + 1)}
    pre_qas = [q for e in by_split[-1] for q in trained_qas(cfg, v, e)]
    model = build_model(cfg, len(v.words))
    n_params = sum(p.numel() for p in model.parameters())

    def replay_earlier(prev: list[list[list[int]]], n: int) -> list[list[int]]:
        """`n` QA of earlier stages (`prev` oldest first), split by age with `replay_prev_decay`."""
        if cfg.replay_prev_decay == 1.0:
            pool = [q for stage in prev for q in stage]
            return rng.sample(pool, min(len(pool), n))
        weights = [cfg.replay_prev_decay ** (len(prev) - 1 - j) for j in range(len(prev))]
        out: list[list[int]] = []
        for stage, w in zip(prev, weights, strict=True):
            out += rng.sample(stage, min(len(stage), round(n * w / sum(weights))))
        return out

    def epoch_data(pos: list[list[int]], neg: float, replay: float, prev: list | None = None):
        def make():
            data = list(pos)
            data += negatives(cfg, v, int(neg * len(pos)), taken, rng)
            if replay:
                data += rng.sample(pre_qas, min(len(pre_qas), int(replay * len(pos))))
            if prev and cfg.replay_prev_frac:
                data += replay_earlier(prev, int(cfg.replay_prev_frac * len(pos)))
            return data

        return make

    timings = {}
    t = time.time()
    cache = stage0_cache_path(cfg)
    if cache.exists():
        saved = torch.load(cache, weights_only=False)
        model.load_state_dict(saved["model"])
        rng.setstate(saved["py_rng"])
        torch.set_rng_state(saved["torch_rng"])
        loss0 = saved["loss"]
        timings["stage_0_cached_from"] = saved["seconds"]
    else:
        loss0 = train_stage(
            cfg,
            model,
            cfg.pretrain_epochs,
            cfg.pretrain_lr,
            epoch_data(pre_qas, cfg.neg_frac0, 0),
            rng,
        )
        cache.parent.mkdir(parents=True, exist_ok=True)
        state = {"model": model.state_dict(), "py_rng": rng.getstate()}
        state |= {"torch_rng": torch.get_rng_state(), "loss": loss0, "seconds": time.time() - t}
        torch.save(state, cache)
    timings["stage_0"] = time.time() - t
    pre_fit = qa_stats(model, pre_qas, unk)["correct"].mean()
    log = [f"stage 0: loss {loss0:.3f} train acc {pre_fit:.2f} ({timings['stage_0']:.0f}s)"]
    print(log[-1], flush=True)
    if cfg.finetune_seed is not None:
        rng = random.Random(cfg.finetune_seed)
        torch.manual_seed(cfg.finetune_seed)
    fit_after = []
    prev_qas: list[list[list[int]]] = []  # per earlier stage, oldest first
    for k in range(1, N_STAGES + 1):
        pos = [q for e in by_split[k] for q in trained_qas(cfg, v, e)]
        t = time.time()
        loss = train_stage(
            cfg,
            model,
            cfg.stage_epochs,
            cfg.stage_lr,
            epoch_data(pos, cfg.neg_frac, cfg.replay_frac, prev_qas),
            rng,
            weight_decay=cfg.stage_weight_decay,
        )
        timings[f"stage_{k}"] = time.time() - t
        fit_after.append(float(qa_stats(model, pos, unk)["correct"].mean()))
        secs = timings[f"stage_{k}"]
        log.append(f"stage {k}: loss {loss:.3f} train acc {fit_after[-1]:.2f} ({secs:.0f}s)")
        print(log[-1], flush=True)
        prev_qas.append(pos)

    if cfg.mixed_epochs:
        mixed = [q for stage in prev_qas for q in stage]
        t = time.time()
        loss = train_stage(
            cfg,
            model,
            cfg.mixed_epochs,
            cfg.stage_lr,
            epoch_data(mixed, cfg.neg_frac, cfg.replay_frac),
            rng,
            weight_decay=cfg.stage_weight_decay,
        )
        timings["mixed"] = time.time() - t
        fit = float(qa_stats(model, mixed, unk)["correct"].mean())
        log.append(
            f"mixed x{cfg.mixed_epochs}: loss {loss:.3f} train acc {fit:.2f}"
            f" ({timings['mixed']:.0f}s)"
        )
        print(log[-1], flush=True)

    # retention after stage 6 (and the mixed epochs), per split
    retention = {}
    answer_loss = {}
    for s in range(-1, N_STAGES + 1):
        seqs = [q for e in by_split[s] for q in trained_qas(cfg, v, e)]
        st = qa_stats(model, seqs, unk)
        per = len(ATTRIBUTES) - 1 + int(cfg.familiarity_question)
        retention[str(s)] = {
            "acc": float(st["correct"].mean()),
            "unknown_rate": float(st["unknown"].mean()),
            "nll": float(st["nll"].mean()),
        }
        for i, e in enumerate(by_split[s]):
            answer_loss[id(e)] = float(st["nll"][i * per : (i + 1) * per].mean())

    probe_ents = [e for s in range(0, N_STAGES + 1) for e in by_split[s]]
    lab = np.array([e.split for e in probe_ents])
    results: dict = {}
    # KNOWN is a trained template (diagnostic only): where the familiarity answer is computed
    diagnostic = [KNOWN] if cfg.familiarity_question else []
    for tpl in [*PROBE_TEMPLATES, HELDOUT, *diagnostic]:
        prompts, starts = zip(*(probe_ids(v, tpl, e) for e in probe_ents), strict=True)
        acts, stats = capture(model, list(prompts), unk)
        ACTS.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(
            ACTS / f"{name}.{tpl}.npz", acts=acts.astype(np.float16), labels=lab, **stats
        )
        start = starts[0]
        alias_sl = slice(start, start + cfg.alias_len)
        # scan: stage 1 vs 6 at every layer and every position (plus alias mean)
        scan = {}
        for layer in range(acts.shape[1]):
            for p in range(acts.shape[2]):
                scan[f"L{layer}/p{p}"] = float(
                    pair_acc(acts[:, layer, p], lab, [1], [6], cfg).mean()
                )
            am = acts[:, layer, alias_sl].mean(1)
            scan[f"L{layer}/alias_mean"] = float(pair_acc(am, lab, [1], [6], cfg).mean())
        best = max(scan, key=scan.get)
        # headline cells fixed in advance: last token and alias mean at the last layer
        top = acts.shape[1] - 1
        cells = {
            "last": acts[:, top, -1],
            "alias_mean": acts[:, top, alias_sl].mean(1),
            f"best_scan[{best}]": _cell(acts, best, alias_sl),
            # fixed in advance from F9/F10: the last alias token at the last block before the
            # final norm (the entity representation of alias-first models)
            "alias_last": acts[:, max(top - 1, 0), alias_sl.stop - 1],
        }
        tpl_res: dict = {"scan_1v6": scan, "best_cell": best}
        for cname, x in cells.items():
            m = full_metrics(x, lab, cfg)
            scalars = {
                "answer_loss": np.array(
                    [answer_loss[id(e)] if e.split else 0.0 for e in probe_ents]
                ),
                "entropy": stats["entropy"],
                "max_logit": stats["max_logit"],
                "p_unknown": stats["p_unknown"],
                "act_norm": np.linalg.norm(x, axis=1),
            }
            m["controls_1v6"] = control_metrics(scalars, lab, cfg)
            m["loss_balanced_1v6"] = loss_balanced_1v6(x, lab, scalars["answer_loss"], cfg)
            tpl_res[cname] = m
        results[tpl] = tpl_res
    record = {
        "name": name,
        "config": cfg.model_dump(),
        "n_params": n_params,
        "train_seconds": timings,
        "total_seconds": time.time() - t0,
        "fit_after_each_stage": fit_after,
        "pretrain_fit": float(pre_fit),
        "retention_after_6": retention,
        "probes": results,
        "log": log,
    }
    with RESULTS.open("a") as f:
        f.write(json.dumps(record) + "\n")
    return record


def _cell(acts: np.ndarray, cell: str, alias_sl: slice) -> np.ndarray:
    layer_s, pos_s = cell.split("/")
    layer = int(layer_s[1:])
    if pos_s == "alias_mean":
        return acts[:, layer, alias_sl].mean(1)
    return acts[:, layer, int(pos_s[1:])]


def summarize(rec: dict) -> str:
    """One readable block of the headline numbers."""
    lines = [f"== {rec['name']}  params {rec['n_params']}  {rec['total_seconds']:.0f}s"]
    ret = rec["retention_after_6"]
    lines.append("retention acc  " + " ".join(f"{ret[str(s)]['acc']:.2f}" for s in range(-1, 7)))
    lines.append(
        "unknown rate   " + " ".join(f"{ret[str(s)]['unknown_rate']:.2f}" for s in range(-1, 7))
    )
    for tpl, res in rec["probes"].items():
        for cname, m in res.items():
            if not isinstance(m, dict) or "stage1_vs_stage6" not in m:
                continue
            s16 = m["stage1_vs_stage6"]
            ctl = m["controls_1v6"]
            lines.append(
                f"{tpl:6s} {cname:28s} 1v6 {s16['value']:.2f} [{s16['ci95'][0]:.2f},"
                f"{s16['ci95'][1]:.2f}] EvL {m['early_vs_late']['value']:.2f} "
                f"adj {m['adjacent_mean']:.2f} 7cls {m['stage_accuracy_7']['value']:.2f} "
                f"tvc {m['trained_vs_control']:.2f} rho {m['centroid_order']['mean']:.2f} "
                f"ctl " + " ".join(f"{k[:6]}={v:.2f}" for k, v in ctl.items())
            )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--name", required=True)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()
    overrides = dict(kv.split("=", 1) for kv in args.set)
    cfg = RunConfig.model_validate(overrides, strict=False)
    print(cfg.model_dump_json(), flush=True)
    print(summarize(run(cfg, args.name)), flush=True)


if __name__ == "__main__":
    main()
