"""Training throughput on the pretrained base: each lever as a ratio measured in one run.

Same model (the prepared SmolLM2-135M), same data (the `pretrained` preset's stage-1 QA, answer-
only loss), same batch size and optimizer (AdamW, lr 5e-5), `--steps` optimizer steps per variant
after one warm-up step:

- `hf_trainer`: a plain `transformers.Trainer` loop (the model's own loss, logits everywhere);
- `loop_full_head`: our loop (trainer/loop.py) with the model's own loss;
- `loop_answer_head`: our loop as shipped, the LM head only at labelled positions (`answer_loss`);
- `loop_answer_head_foreach`: the same with torch's multi-tensor AdamW (`adam_foreach`);
- `loop_answer_head_bucketed`: the same examples in length-sorted batches (padding lever);
- `loop_answer_head_lora32`: LoRA rank 32 on every block linear (`lora_rank`), base frozen;
- `padding`: share of padded positions in our batches (our batch plan, no bucketing), and what
  length-bucketing the same examples would leave, measured by counting (no training).

Prints one JSON object; `bench/RESULTS.md` keeps the command and the table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _data(n: int) -> tuple[Any, list[Any]]:
    from trainer.base import prepare_base
    from trainer.config import resolve_config
    from trainer.corpus import build_corpus
    from trainer.data import encode, qa_texts
    from trainer.model import load_tokenizer

    cfg = resolve_config("pretrained")
    tok = load_tokenizer(prepare_base("smollm2-135m"))
    corpus, _ = build_corpus(cfg, from_scratch=False, tokenizer=tok)
    texts = qa_texts(corpus.questions("stage_1", heldout=False))[:n]
    return tok, encode(tok, texts, block_size=cfg.arch.block_size, loss_on=cfg.optim.loss_on)


def _model() -> Any:
    from trainer.base import prepare_base
    from trainer.model import load_for_training

    model = load_for_training(prepare_base("smollm2-135m"))
    model.train()
    return model


def _our_loop(
    examples: list[Any],
    pad_id: int,
    steps: int,
    batch: int,
    answer: bool,
    *,
    foreach: bool | None = None,
    bucketed: bool = False,
    lora_rank: int | None = None,
) -> dict:
    import torch

    from trainer.config import resolve_config
    from trainer.data import collate
    from trainer.loop import answer_loss, lora_wrap

    model = _model()
    if lora_rank is not None:
        model = lora_wrap(model, resolve_config("pretrained", overrides={"lora_rank": lora_rank}))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=5e-5, foreach=foreach)
    if bucketed:  # the same examples, batches of similar length (order of batches kept)
        examples = sorted(examples, key=lambda e: len(e.input_ids))
    tokens, t0 = 0, 0.0
    for step in range(steps + 1):  # step 0 is warm-up, not timed
        if step == 1:
            t0 = time.perf_counter()
        chunk = examples[(step * batch) % len(examples) :][:batch]
        inputs = collate(chunk, pad_id)
        loss = answer_loss(model, inputs) if answer else model(**inputs).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step:
            tokens += sum(len(e.input_ids) for e in chunk)
    seconds = time.perf_counter() - t0
    return {"tokens": tokens, "seconds": round(seconds, 2), "tokens_per_s": tokens / seconds}


def _hf_trainer(examples: list[Any], pad_id: int, steps: int, batch: int) -> dict:
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from trainer.data import collate

    class Timer(TrainerCallback):
        t0 = 0.0
        t1 = 0.0

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if state.global_step == 1:
                Timer.t0 = time.perf_counter()  # after the warm-up step
            Timer.t1 = time.perf_counter()

    class Rows:
        def __len__(self) -> int:
            return len(examples)

        def __getitem__(self, i: int) -> Any:
            return examples[i]

    args = TrainingArguments(
        output_dir="/tmp/recency-audit-train-bench",
        per_device_train_batch_size=batch,
        max_steps=steps + 1,
        learning_rate=5e-5,
        max_grad_norm=1.0,
        lr_scheduler_type="constant",
        report_to=[],
        save_strategy="no",
        logging_strategy="no",
        use_cpu=True,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    trainer = Trainer(
        model=_model(),
        args=args,
        train_dataset=Rows(),  # type: ignore[arg-type]
        data_collator=lambda rows: collate(rows, pad_id),
        callbacks=[Timer()],
    )
    trainer.train()
    seconds = Timer.t1 - Timer.t0
    # the sampler shuffles; the mean length times the batch is the tokens it trained per step
    mean = sum(len(e.input_ids) for e in examples) / len(examples)
    tokens = int(mean * batch * steps)
    return {"tokens": tokens, "seconds": round(seconds, 2), "tokens_per_s": tokens / seconds}


def _padding(examples: list[Any], batch: int) -> dict:
    def waste(batches: list[list[int]]) -> float:
        real = sum(sum(b) for b in batches)
        padded = sum(len(b) * max(b) for b in batches)
        return 1 - real / padded

    lengths = [len(e.input_ids) for e in examples]
    plain = [lengths[i : i + batch] for i in range(0, len(lengths), batch)]
    ordered = sorted(lengths)
    bucketed = [ordered[i : i + batch] for i in range(0, len(ordered), batch)]
    return {
        "padded_share": round(waste(plain), 4),
        "padded_share_if_bucketed": round(waste(bucketed), 4),
        "mean_tokens": round(sum(lengths) / len(lengths), 2),
        "max_tokens": max(lengths),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    import torch

    tok, examples = _data(args.batch_size * (args.steps + 1))
    pad = tok.pad_token_id
    out: dict[str, Any] = {
        "threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "batch_size": args.batch_size,
        "steps": args.steps,
        "padding": _padding(examples, args.batch_size),
    }
    out["hf_trainer"] = _hf_trainer(examples, pad, args.steps, args.batch_size)
    out["loop_full_head"] = _our_loop(examples, pad, args.steps, args.batch_size, answer=False)
    out["loop_answer_head"] = _our_loop(examples, pad, args.steps, args.batch_size, answer=True)
    levers = {
        "foreach": {"foreach": True},
        "bucketed": {"bucketed": True},
        "lora32": {"lora_rank": 32},
    }
    for name, kw in levers.items():
        out[f"loop_answer_head_{name}"] = _our_loop(
            examples,
            pad,
            args.steps,
            args.batch_size,
            answer=True,
            **kw,  # type: ignore[arg-type]
        )
    base = out["hf_trainer"]["tokens_per_s"]
    variants = ["loop_full_head", "loop_answer_head", *(f"loop_answer_head_{n}" for n in levers)]
    out["ratio_vs_hf_trainer"] = {k: round(out[k]["tokens_per_s"] / base, 3) for k in variants}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
