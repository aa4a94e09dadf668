#!/bin/bash
# One pretrained seed end to end, as the README's "Reproduce" block: train (resumable), calibrate,
# the families bank (served rule: the bank's threshold raised to the audited model's anchors'
# floor; the alias columns), then the implant benchmark through the real service and CLI. Each
# step resumes or is skipped when its output exists, so a stopped session reruns the same command.
#   bash research/families/pretrained_implant.sh SEED [ROW_NAME]    # ~4-5 h on 2 CPU cores
# With LORA=R the bank is calibrated on a LoRA rank-R finetune too (`calibrate --also loraR`, as
# `recency-audit up` does on `small`), built in bank-families-lora$R, and a second implant, trained
# as a LoRA adapter of rank R, is audited as well (row ROW_NAME-loraR); about 1.5 h more. LRX=K
# trains both LoRA finetunes at K times the recipe's learning rate (kind loraR-lrxK, rows
# ROW_NAME-loraR-lrxK): LoRA is usually run at about 10x full finetuning's rate, and at the
# recipe's own a LoRA implant takes weakly (on `small`, exact match 0.10-0.15 against 0.44-0.51).
set -euo pipefail
S=${1:?seed}
NAME=${2:-implant-pretrained-s$S-alias}
cd "$(dirname "$0")/../.."
source .venv/bin/activate
R=artifacts/sweeps/pretrained/pretrained-s$S
KIND=${LORA:+lora$LORA${LRX:+-lrx$LRX}}
BANK=$R/bank-families${KIND:+-$KIND}
echo "== train $(date +%T)"
recency-audit train --preset pretrained --seed "$S" --out $R/run
echo "== calibrate $(date +%T)"
recency-audit calibrate --run $R/run --entities 120 ${KIND:+--also $KIND}
echo "== bank $(date +%T)"
# a bank that does not load (none, or one built before this version's columns: kept aside as
# BANK.stale) is rebuilt in BANK.tmp, so a stopped build leaves no half bank
if ! python -c "import sys; from probe_bank.bank import ProbeBank; ProbeBank.load(sys.argv[1])" \
        $BANK 2>/dev/null; then
    rm -rf $BANK.tmp
    if [ -e $BANK ]; then rm -rf $BANK.stale; mv $BANK $BANK.stale; fi
    recency-audit bank build --run $R/run --out $BANK.tmp \
        --config pretrained --layers 22 --positions last --n-permutations 0 --no-baselines
    mv $BANK.tmp $BANK
fi
echo "== implant $(date +%T)"
IMPLANT=(--run $R/run --bank $BANK --reexpose 2 --implant-entities 120 --reexpose-entities 120
         --audit-per-group 60 --serve-entities 40 --out bench/implant.results.jsonl)
python bench/implant_bench.py "${IMPLANT[@]}" --work artifacts/implant/pretrained-s$S --name "$NAME"
if [ -n "${LORA:-}" ]; then
    echo "== LoRA implant $(date +%T)"
    python bench/implant_bench.py "${IMPLANT[@]}" --work artifacts/implant/pretrained-s$S-$KIND \
        --lora-rank "$LORA" ${LRX:+--lr-scale "$LRX"} --name "$NAME-$KIND"
fi
echo "== done $(date +%T)"
