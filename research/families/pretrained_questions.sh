#!/bin/bash
# The families' question count on the pretrained base (bench/RESULTS.md, "Fewer questions per
# entity", measured there on the `small` default): after `pretrained_implant.sh SEED` has left a
# calibrated run, its families bank (every question) and its implanted model, build the same bank
# with one question, audit the same implanted model with it, and time both banks in process.
# Under the answer-only mask the alias is not familiar on this base and the answers carry the
# evidence, so one question may cost here what it did not on `small`: this measures it.
#   bash research/families/pretrained_questions.sh SEED [K]    # ~1 h on 2 quiet CPU cores
set -euo pipefail
S=${1:?seed}
K=${2:-1}
cd "$(dirname "$0")/../.."
source .venv/bin/activate
R=artifacts/sweeps/pretrained/pretrained-s$S
W=artifacts/implant/pretrained-s$S
for need in $R/bank-families/manifest.json $W/run/extra_1/config.json; do
    [ -e "$need" ] || { echo "missing $need: run research/families/pretrained_implant.sh $S first" >&2; exit 1; }
done
B=$R/bank-families-q$K
echo "== bank, $K question(s) $(date +%T)"
if [ ! -e $B/manifest.json ]; then
    rm -rf $B.tmp
    recency-audit bank build --run $R/run --out $B.tmp --config pretrained --layers 22 \
        --positions last --n-permutations 0 --no-baselines --families-questions "$K"
    mv $B.tmp $B
fi
echo "== implant, the same implanted model $(date +%T)"
python bench/implant_bench.py --run $R/run --bank $B --work $W \
    --reexpose 2 --implant-entities 120 --reexpose-entities 120 --audit-per-group 60 \
    --serve-entities 40 --name "implant-pretrained-s$S-questions-$K" --out bench/implant.results.jsonl
echo "== in-process cost, every question vs $K $(date +%T)"
for bank in $R/bank-families $B; do
    OMP_NUM_THREADS=2 python bench/families_bench.py --bank $bank --entities 48 --repeats 3 \
        --batch-size 48
done
echo "== done $(date +%T)"
