"""The serving benchmark at the 135M model's shape, in one prepared run for a lent GPU.

Serving speed depends on the model's shape, not on what its weights learned, and the 135M
weights (a 98 MB GGUF, 514 MB dequantized) do not fit the device machine's 64 MiB transfer. So:
a random-weight model with SmolLM2-135M's own config and tokenizer (`--shape DIR`: config.json
and the tokenizer files of the prepared base, a few MB), a bank on it over the test suite's
synthetic corpus, probing block 22 at the last token as the `pretrained` bank does, then
`bench/serve_bench.py` against it (the service on CUDA in bf16 when there is one): compute bound,
batched vs naive at every level, the /healthz ceiling. Everything lands in OUT: `serve.json`,
`serve.md` (the tables) and `env.json` (device, torch, timings).

    python bench/serve_gpu.py --shape .gpu/smollm2-135m --out "$OUT"      # the GPU run
    python bench/serve_gpu.py --toy --out /tmp/x --levels 1,2            # CPU rehearsal

Preparing the carry (here, once): `python bench/serve_gpu.py --export-shape
artifacts/base/smollm2-135m --shape .gpu/smollm2-135m` copies the config and tokenizer files.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHAPE_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "generation_config.json")


def export_shape(base: Path, shape: Path) -> None:
    shape.mkdir(parents=True, exist_ok=True)
    for name in SHAPE_FILES:
        if (base / name).is_file():
            shutil.copy2(base / name, shape / name)


def random_model(shape: Path | None, out: Path) -> Path:
    """A model of `shape`'s config with random weights and its tokenizer (`--toy`: the tests'
    2-block random model)."""
    if shape is None:
        from tests.fixtures_models import make_random_model_dir

        return make_random_model_dir(out, layers=2, width=64)
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(shape))
    model.save_pretrained(out)
    for name in SHAPE_FILES[1:]:
        if (shape / name).is_file():
            shutil.copy2(shape / name, out / name)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--shape", type=Path, help="config + tokenizer of the model to imitate")
    ap.add_argument("--toy", action="store_true", help="rehearse with the tests' tiny model")
    ap.add_argument("--export-shape", type=Path, metavar="BASE", help="write --shape from BASE")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--layer", type=int, default=22, help="probe block (toy: the last)")
    ap.add_argument("--levels", default="1,8,32,64,128")
    ap.add_argument("--per-client", type=int, default=8)
    ap.add_argument("--min-requests", type=int, default=128)
    ap.add_argument("--bound-seconds", type=float, default=10.0)
    args = ap.parse_args()
    if args.export_shape:
        export_shape(args.export_shape, args.shape)
        print(f"wrote {args.shape}")
        return
    if args.out is None or (args.shape is None) == (not args.toy):
        ap.error("give --out and exactly one of --shape / --toy")
    import torch

    from probe_bank.build import BuildConfig, build_bank
    from tests.fixtures_bank import make_fake_run

    t0 = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    work = args.out / "work"
    model = random_model(None if args.toy else args.shape, work / "model")
    run = make_fake_run(work / "run", model, per_class=12)
    layer = -1 if args.toy else args.layer
    n_blocks = json.loads((model / "config.json").read_text())["num_hidden_layers"]
    cfg = BuildConfig(
        layers=[layer % n_blocks],
        positions=["last"],
        n_boot=20,
        n_permutations=0,
        baselines=False,
        nested_selection=False,
    )
    bank = build_bank(run, work / "bank", cfg)
    t_bank = time.perf_counter() - t0
    cmd = [sys.executable, str(ROOT / "bench/serve_bench.py"), "--bank", str(bank)]
    cmd += ["--levels", args.levels, "--per-client", str(args.per_client)]
    cmd += ["--min-requests", str(args.min_requests), "--json", str(args.out / "serve.json")]
    cmd += ["--bound-seconds", str(args.bound_seconds)]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=dict(os.environ))
    (args.out / "serve.md").write_text(done.stdout, "utf-8")
    env = {
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "torch": torch.__version__,
        "shape": "toy" if args.toy else str(args.shape),
        "probe_layer": layer % n_blocks,
        "bank_seconds": round(t_bank, 1),
        "total_seconds": round(time.perf_counter() - t0, 1),
        "serve_bench_rc": done.returncode,
        "serve_bench_stderr_tail": done.stderr[-3000:],
    }
    (args.out / "env.json").write_text(json.dumps(env, indent=2) + "\n", "utf-8")
    shutil.rmtree(work / "model", ignore_errors=True)  # keep OUT small for the transfer back
    print(done.stdout)
    if done.returncode:
        raise SystemExit(done.stderr[-3000:])


if __name__ == "__main__":
    main()
