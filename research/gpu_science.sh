#!/usr/bin/env bash
# Device side of issue 11's study-scale run (the `pretrained` preset at 2,640 entities per stage).
#
# The base is the registered SmolLM2-135M GGUF (98 MB), larger than one device call may carry
# (64 MiB with the tree), so `bench/prepare_gpu_carry.sh` splits it in two: the first device call
# carries .gpuw1 and leaves it on the warm machine, the second, made at once (the machine is given
# back after 30 s idle), carries .gpuw2 and .whl and runs this script. Here the parts are joined,
# the missing Python packages installed from the carried wheels, the base converted and verified
# against its registered SHA-256 (`base prepare --gguf`), and the seeds trained and probed one
# after another under a deadline (`research/pretrained_gpu.py`). Every small result lands in $OUT
# as it exists (log.txt, results.jsonl, progress.json, spec.json, versions.json).
#
#   DEADLINE_S=420 bash research/gpu_science.sh [pretrained_gpu.py options]
#
# CARRY (default: the repository root) is where .gpuw1, .gpuw2 and .whl lie; without .whl the
# packages are taken as installed (the CPU rehearsal in tests/trainer/test_pretrained_gpu.py).
set -euo pipefail
cd "$(dirname "$0")/.."
: "${OUT:?OUT must name the output folder (the device sets it)}"
CARRY=${CARRY:-.}
DEADLINE_S=${DEADLINE_S:-420}
WORK=${WORK:-/tmp/recency-gpu-work}
export RECENCY_AUDIT_HOME=${RECENCY_AUDIT_HOME:-/tmp/recency-gpu-home}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
PY=${PYTHON:-python3}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/log.txt") 2>&1
t0=$SECONDS

parts=("$CARRY"/.gpuw1/*.part1 "$CARRY"/.gpuw2/*.part2)
for p in "${parts[@]}"; do
  if [ ! -f "$p" ]; then
    echo "gpu_science: $p is missing: the first call's part is gone when the machine was given" \
         "back between the two calls (30 s idle); make both calls again, the second at once" >&2
    exit 3
  fi
done
joined="$(mktemp -d)/SmolLM2-135M-Instruct.Q4_1.gguf"
cat "${parts[@]}" > "$joined"

if [ -d "$CARRY/.whl" ]; then
  site=$(mktemp -d)
  "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$site" "$CARRY"/.whl/*.whl
  export PYTHONPATH="$site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
"$PY" - "$OUT/versions.json" constraints.txt <<'EOF'
import json, sys, torch, transformers, sklearn
gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
body = {"torch": torch.__version__, "transformers": transformers.__version__,
        "scikit_learn": sklearn.__version__, "gpu": gpu}
open(sys.argv[1], "w").write(json.dumps(body) + "\n")
print("versions", body)
pinned = dict(l.strip().split("==") for l in open(sys.argv[2]) if "==" in l)
if transformers.__version__ != pinned["transformers"]:  # the training loop needs its API
    sys.exit(f"transformers {transformers.__version__} is not the pinned {pinned['transformers']}")
EOF
"$PY" recency_audit.py base prepare smollm2-135m --gguf "$joined"
rm -f "$joined"
echo "gpu_science: base ready after $((SECONDS - t0)) s"
"$PY" research/pretrained_gpu.py --out "$OUT" --work "$WORK" --lean-build \
  --deadline-s "$((DEADLINE_S - (SECONDS - t0)))" "$@"
echo "gpu_science: done after $((SECONDS - t0)) s"
