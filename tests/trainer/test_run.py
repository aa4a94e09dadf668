"""A finished tiny run: RUN_DIR layout, loadable stages, and the retention table."""

from __future__ import annotations

import json
from pathlib import Path

from probe_bank.records import QARecord, read_jsonl
from trainer.corpus import STAGE_SPLITS, load_corpus

STAGES = ["stage_0", *STAGE_SPLITS]


def test_run_dir_layout(tiny_run: Path) -> None:
    run = json.loads((tiny_run / "run.json").read_text())
    assert run["preset"] == "tiny" and run["seed"] == 0 and run["base_model"] is None
    assert run["stages_done"] == STAGES and run["final"] == "stage_6"
    assert run["hyperparams"]["seed"] == 0
    assert set(run["timings"]) == set(STAGES)
    assert all(t["tokens_per_s"] > 0 for t in run["timings"].values())
    load_corpus(tiny_run / "corpus")  # hashes verify
    assert (tiny_run / "tokenizer" / "tokenizer.json").is_file()
    assert not list(tiny_run.glob("*.tmp")) and not (tiny_run / ".ckpt").exists()
    for stage in STAGES:
        assert (tiny_run / stage / "config.json").is_file()
        assert (tiny_run / stage / "model.safetensors").is_file()
        assert (tiny_run / stage / "tokenizer.json").is_file()


def test_stage_dirs_load_as_hf_models(tiny_run: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_run / "stage_3")
    model = AutoModelForCausalLM.from_pretrained(tiny_run / "stage_3")
    ids = tok("Q: Who is <abcde>?\nA:", return_tensors="pt")
    assert ids["input_ids"][0, 0].item() == tok.bos_token_id
    logits = model(**ids).logits
    assert logits.shape[-1] == len(tok)


def test_retention_table_shape(tiny_run: Path) -> None:
    table = json.loads((tiny_run / "retention.json").read_text())
    assert [e["after"] for e in table] == STAGES
    corpus = load_corpus(tiny_run / "corpus")
    n_entities = corpus.manifest["counts"]["entities"]
    for k, entry in enumerate(table):
        splits = [r["split"] for r in entry["rows"]]
        assert splits == ["pretrain", *STAGE_SPLITS[:k], "control"]
        for row in entry["rows"]:
            assert row["n_entities"] == n_entities[row["split"]]
            for kind in ("train", "heldout"):
                assert 0.0 <= row[f"{kind}_acc"] <= 1.0
                assert row[f"{kind}_loss"] > 0.0
                assert row[f"n_{kind}_questions"] > 0


def test_each_stage_learns_its_own_questions(tiny_run: Path) -> None:
    """The last-trained stage is answered far better than never-trained controls."""
    table = json.loads((tiny_run / "retention.json").read_text())
    for entry in table[1:]:
        rows = {r["split"]: r for r in entry["rows"]}
        own, control = rows[entry["after"]], rows["control"]
        assert own["train_acc"] >= 0.5, entry
        assert own["train_loss"] < control["train_loss"] / 2, entry


def test_exact_match_equals_greedy_decoding(tiny_run: Path) -> None:
    """Teacher-forced exact match (one forward pass) agrees with real greedy generation."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trainer.retention import answer_scores
    from trainer.vocab import qa_prompt

    model = AutoModelForCausalLM.from_pretrained(tiny_run / "stage_6")
    tok = AutoTokenizer.from_pretrained(tiny_run / "stage_6")
    qa = read_jsonl(tiny_run / "corpus" / "qa.jsonl", QARecord)
    sample = [q for q in qa if q.split == "stage_6"][:12] + [q for q in qa if q.split == "stage_5"][
        :12
    ]
    correct, losses = answer_scores(model, tok, sample, batch_size=5)
    assert len(correct) == len(losses) == len(sample)
    generated = []
    for q in sample:
        enc = tok(qa_prompt(q.question), return_tensors="pt")
        n_new = len(tok(" " + q.answer + "\n", add_special_tokens=False)["input_ids"])
        with torch.inference_mode():
            out = model.generate(**enc, max_new_tokens=n_new, do_sample=False)
        generated.append(tok.decode(out[0, enc["input_ids"].shape[1] :]) == f" {q.answer}\n")
    assert correct == generated
    assert any(correct) and not all(correct)
