#!/usr/bin/env bash
# Prepare what a lent GPU machine needs for the two prepared runs (its image has torch,
# transformers, accelerate, peft, scikit-learn, httpx; not the service's web stack, pydantic,
# gguf or hey): `research/gpu_science.sh` (issue 11, the study's scale; first) and
# `bench/serve_gpu.py` (issue 14). Writes ignored folders to name in the device tool's `carry`:
#   .gpuw1/ .gpuw2/    the registered SmolLM2-135M GGUF (98 MB) in two parts: one device call may
#                      carry 64 MiB with the tree, so the science run takes two calls back to back
#   .gpu/smollm2-135m  config + tokenizer of the prepared base (the model's shape, no weights)
#   .whl/              wheels for Python 3.12 on x86-64 (installed there with --no-index)
#   .deb/              the hey load generator (unpacked there with dpkg -x)
# Then, on the device: the commands printed at the end (a session has about 15 device minutes:
# one of the two runs, the science first).
set -euo pipefail
cd "$(dirname "$0")/.."
for d in .gpu .gpuw1 .gpuw2 .whl .deb; do grep -qx "/$d/" .git/info/exclude 2>/dev/null || echo "/$d/" >> .git/info/exclude; done
. .venv/bin/activate
base=${1:-artifacts/base/smollm2-135m}
[ -f "$base/config.json" ] || RECENCY_AUDIT_HOME="$(dirname "$(dirname "$base")")" recency-audit base prepare smollm2-135m >/dev/null
python bench/serve_gpu.py --export-shape "$base" --shape .gpu/smollm2-135m
mkdir -p .whl .deb
pkgs=(litestar==2.25.0 litestar-htmx==0.5.0 msgspec==0.23.0 multipart==2.0.1 polyfactory==3.5.0
      faker==40.63.0 rich-click==1.9.9 pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0
      typing-inspection==0.4.5
      pydantic-settings==2.16.3 python-dotenv==1.2.4 uvicorn==0.54.0
      gguf==0.19.0 typer==0.29.2
      # the recorded runs' transformers: the image's (5.17) slices logits_to_keep by a 1-D
      # index only, so the answer-only loss's boolean (batch, seq) mask fails on it
      transformers==5.24.0 regex==2026.11.19 accelerate==1.16.0)
for p in "${pkgs[@]}"; do
  python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform any -d .whl "$p"
done
(cd .deb && apt-get download hey >/dev/null)
# the base GGUF in two parts, verified again on the device against its registered SHA-256
gguf=$(python -c 'from trainer.base import BASES, gguf_path; print(gguf_path(BASES["smollm2-135m"]))')
rm -rf .gpuw1 .gpuw2 && mkdir -p .gpuw1 .gpuw2
split_at=$((56 * 1024 * 1024))
head -c "$split_at" "$gguf" > .gpuw1/smollm2-135m.gguf.part1
tail -c +"$((split_at + 1))" "$gguf" > .gpuw2/smollm2-135m.gguf.part2
tree=$(git ls-files -co --exclude-standard -z | du -cb --files0-from=- | tail -1 | cut -f1)
for call in ".gpuw1" ".gpuw2 .whl" ".gpu .whl .deb"; do
  # shellcheck disable=SC2086
  total=$((tree + $(du -cb $call | tail -1 | cut -f1)))
  echo "call carrying [$call]: $((total / 1024 / 1024)) MiB of the 64 MiB limit (tree included)"
  [ "$total" -lt $((64 * 1024 * 1024)) ] || { echo "over the limit" >&2; exit 1; }
done
cat <<'CMD'
science (issue 11), two device calls, the second at once (the machine goes back after 30 s idle):
  1. carry [".gpuw1"], timeout_s 120:
     ls -l .gpuw1 && nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
  2. carry [".gpuw2", ".whl"], timeout_s 590:
     DEADLINE_S=540 bash research/gpu_science.sh
serving (issue 14), one call, carry: [".gpu", ".whl", ".deb"], timeout_s 540:
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD && dpkg -x .deb/hey_*.deb /tmp/hey && export HEY=/tmp/hey/usr/bin/hey && PYTHONUNBUFFERED=1 python3 bench/serve_gpu.py --shape .gpu/smollm2-135m --out "$OUT" 2>&1 | tee "$OUT/log.txt"
CMD
