#!/usr/bin/env bash
# The main job: set up, build the embedded default (small reference model + probe bank) if missing, serve it.
set -euo pipefail
cd "$(dirname "$0")/.."
RECENCY_AUDIT_SKIP_APT=1 bash scripts/setup.sh
. .venv/bin/activate
export TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
exec recency-audit up "$@"
