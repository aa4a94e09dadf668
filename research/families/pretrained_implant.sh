#!/bin/bash
# One pretrained seed end to end, as the README's "Reproduce" block: train (resumable), calibrate,
# the families bank (served rule: the bank's threshold raised to the audited model's anchors'
# floor; the alias columns), then the implant benchmark through the real service and CLI. Each
# step resumes or is skipped when its output exists, so a stopped session reruns the same command.
#   bash research/families/pretrained_implant.sh SEED [ROW_NAME]    # ~4-5 h on 2 CPU cores
set -euo pipefail
S=${1:?seed}
NAME=${2:-implant-pretrained-s$S-alias}
cd "$(dirname "$0")/../.."
source .venv/bin/activate
R=artifacts/sweeps/pretrained/pretrained-s$S
echo "== train $(date +%T)"
recency-audit train --preset pretrained --seed "$S" --out $R/run
echo "== calibrate $(date +%T)"
recency-audit calibrate --run $R/run --entities 120
echo "== bank $(date +%T)"
# a bank that does not load (none, or one built before this version's columns: kept aside as
# bank-families.stale) is rebuilt in bank-families.tmp, so a stopped build leaves no half bank
if ! python -c "import sys; from probe_bank.bank import ProbeBank; ProbeBank.load(sys.argv[1])" \
        $R/bank-families 2>/dev/null; then
    rm -rf $R/bank-families.tmp
    if [ -e $R/bank-families ]; then rm -rf $R/bank-families.stale; mv $R/bank-families $R/bank-families.stale; fi
    recency-audit bank build --run $R/run --out $R/bank-families.tmp \
        --config pretrained --layers 22 --positions last --n-permutations 0 --no-baselines
    mv $R/bank-families.tmp $R/bank-families
fi
echo "== implant $(date +%T)"
python bench/implant_bench.py --run $R/run --bank $R/bank-families --work artifacts/implant/pretrained-s$S \
    --reexpose 2 --implant-entities 120 --reexpose-entities 120 --audit-per-group 60 \
    --serve-entities 40 --name "$NAME" --out bench/implant.results.jsonl
echo "== done $(date +%T)"
