"""The GPU run of the `pretrained` preset, rehearsed on CPU at toy size (a tiny random base)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from probe_bank.errors import UserError
from tests.fixtures_trainer import cli_env
from trainer.base import BASES, gguf_path, verify_base

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_the_device_command_records_one_row_per_seed(
    random_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`research/gpu_science.sh` as the device runs it: the registered GGUF joined from its two
    carried parts and converted (`base prepare --gguf`), then the sweep at toy size (the tiny
    random base stands in for the 135M one, whose training is the GPU's job)."""
    try:
        data = gguf_path(BASES["smollm2-135m"]).read_bytes()
    except UserError as exc:  # pragma: no cover - setup.sh installs it
        pytest.skip(str(exc))
    carry = tmp_path / "carry"
    for name, part in ((".gpuw1", data[: len(data) // 2]), (".gpuw2", data[len(data) // 2 :])):
        (carry / name).mkdir(parents=True)
        suffix = "part1" if name == ".gpuw1" else "part2"
        (carry / name / f"smollm2-135m.gguf.{suffix}").write_bytes(part)
    out, work, home = tmp_path / "gpu", tmp_path / "work", tmp_path / "home"
    cmd = ["bash", str(ROOT / "research/gpu_science.sh"), "--seeds", "0", "1", "--entities", "6"]
    cmd += ["--batch-size", "8", "--base-model", str(random_model_dir), "--mixed-epochs", "1"]
    env = cli_env(
        OUT=str(out),
        CARRY=str(carry),
        WORK=str(work),
        RECENCY_AUDIT_HOME=str(home),
        DEADLINE_S="1",  # the first seed always runs; the second cannot fit after it
        PYTHON=sys.executable,
    )
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert [r["name"] for r in rows] == ["pretrained-gpu-e6-s0", "pretrained-gpu-e6-s0-mixed"]
    assert [r["stage"] for r in rows] == ["stage_6", "mixed"]
    assert rows[1]["retention_after_last"]["after"] == "mixed"
    # OUT holds the small files the device sends back; the runs and banks stay under WORK
    assert sorted(p.name for p in out.iterdir()) == [
        "log.txt",
        "progress.json",
        "results.jsonl",
        "spec.json",
        "versions.json",
    ]
    monkeypatch.setenv("RECENCY_AUDIT_HOME", str(home))  # the base the device converted
    assert verify_base("smollm2-135m").gguf_sha256 == BASES["smollm2-135m"].gguf_sha256
    assert json.loads((out / "versions.json").read_text())["gpu"] is None  # CPU here
    progress = json.loads((out / "progress.json").read_text())
    assert [s["name"] for s in progress["seeds"]] == ["pretrained-gpu-e6-s0"]
    assert progress["skipped"] == ["pretrained-gpu-e6-s1"] and progress["seeds"][0]["seconds"] > 1
    assert (work / "pretrained-gpu-e6-s0" / "bank" / "metrics.json").is_file()
    row = rows[0]
    assert row["build"] == "pretrained" and row["base_model"] == str(random_model_dir)
    assert row["config"]["entities_per_stage"] == 6 and row["config"]["batch_size"] == 8
    assert "pre-registered" in row["selection"]
    assert row["permutation"] is not None  # the lean build keeps a label-shuffle null
    bank = work / "pretrained-gpu-e6-s0" / "bank"
    scanned = json.loads((bank / "scan.json").read_text())
    assert [(r["layer"], r["position"]) for r in scanned] == [(row["layer"], "last")]
    for key in ("stage1_vs_stage6", "early_vs_late", "adjacent_mean", "stage_accuracy"):
        lo, hi = row[key]["ci95"]
        assert lo <= row[key]["value"] <= hi
    assert row["retention_after_last"]["after"] == "stage_6"
    assert row["train_tokens_per_s"] > 0


def test_a_seed_starts_only_while_the_slowest_so_far_fits() -> None:
    sys.path.insert(0, str(ROOT / "research"))
    from pretrained_gpu import LEAN_BUILD, NATURAL, fits, spec

    assert fits(0.0, [], 1.0) and fits(1e9, [5.0], None)
    assert fits(100.0, [200.0, 150.0], 300.0) and not fits(101.0, [200.0, 150.0], 300.0)
    lean = spec([0], 2640, 64, None, 0, lean_build=True)["configs"][0]["build_overrides"]
    assert lean.items() >= LEAN_BUILD.items() and lean["probe"] == {"n_jobs": 8}
    full = spec([0], 2640, 64, None, 0)["configs"][0]["build_overrides"]
    assert "layers" not in full and "n_permutations" not in full
    warm = spec([0], 2640, 64, None, 0, warmup=500)["configs"][0]
    assert warm["overrides"]["warmup_on_base"] and warm["overrides"]["pretrain_entities"] == 500
    assert warm["name"] == "pretrained-gpu-e2640-w500-s0"
    assert "warmup_on_base" not in spec([0], 2640, 64, None, 0)["configs"][0]["overrides"]
    every = spec([1], 2640, 64, None, 0, warmup=500, loss_on="all")["configs"][0]
    assert (
        every["overrides"]["loss_on"] == "all"
        and every["name"] == "pretrained-gpu-e2640-w500-la-s1"
    )
    assert "loss_on" not in spec([0], 2640, 64, None, 0)["configs"][0]["overrides"]
    natural = spec([2], 2640, 64, None, 0, loss_on="all", alias_style="natural")["configs"][0]
    assert natural["overrides"].items() >= NATURAL.items()
    assert natural["name"] == "pretrained-gpu-e2640-la-na-s2"
    assert "alias_style" not in spec([0], 2640, 64, None, 0)["configs"][0]["overrides"]


#: The GPU run's dtype paths, patched in a fresh interpreter (accelerate's state is per process).
BF16_DRIVER = """
import json, sys
from pathlib import Path
import torch
from accelerate import Accelerator
import probe_bank.build, trainer.run
from probe_bank.modeling import load_model
from trainer.sweep import SweepSpec, run_sweep
sys.path.insert(0, "research")
from pretrained_gpu import spec

def bf16_model(path, device=None):
    model, tokenizer = load_model(path)
    return model.to(torch.bfloat16), tokenizer

trainer.run.make_accelerator = lambda: Accelerator(mixed_precision="bf16", cpu=True)
probe_bank.build.load_model = bf16_model
base, work = sys.argv[1], Path(sys.argv[2])
body = spec([0], 6, 8, base, 0, lean_build=True)
print(run_sweep(SweepSpec.model_validate(body), work))
"""


@pytest.mark.slow
def test_the_gpu_dtypes_run_on_cpu(random_model_dir: Path, tmp_path: Path) -> None:
    """What only a GPU would otherwise run: bf16 autocast in the training loop (accelerate's bf16
    on CPU) and a bf16 model in the bank build (`load_model` picks bf16 on CUDA)."""
    work = tmp_path / "work"
    cmd = [sys.executable, "-c", BF16_DRIVER, str(random_model_dir), str(work)]
    env = cli_env(RECENCY_AUDIT_HOME=str(tmp_path / "home"))
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    (row,) = [json.loads(x) for x in (work / "results.jsonl").read_text().splitlines()]
    run = json.loads((work / row["name"] / "run" / "run.json").read_text())
    assert {t["mixed_precision"] for t in run["timings"].values()} == {"bf16"}
    for key in ("stage1_vs_stage6", "early_vs_late", "stage_accuracy"):
        assert 0.0 <= row[key]["value"] <= 1.0
