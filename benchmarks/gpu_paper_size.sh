#!/usr/bin/env bash
# Issue 5, the paper-size setting on one GPU: vig_s (16 blocks, 320 channels),
# larger crops (BCData 512 px, CRCHisto 448 px), longer training, one seed / fold 0.
# BCData and CRCHisto train side by side on the one card (each model is small for it);
# each stops starting new trainings after BUDGET minutes and keeps the rows it has.
#
#   DATA=../shared/data OUT=benchmarks/results bash benchmarks/gpu_paper_size.sh
#
# Writes $OUT/sparse_annotation_gpu_{bcdata,crchisto}.{json,md,png} and their logs.
set -u
DATA=${DATA:-../shared/data}
OUT=${OUT:-benchmarks/results}
BUDGET=${BUDGET:-6.5}
EPOCHS=${EPOCHS:-40}
MODEL=${MODEL:-vig_s}
DEVICE=${DEVICE:-cuda}
WORKERS=${WORKERS:-6}
PRECISION=${PRECISION:-32-true}
METHODS=${METHODS:-ce sel_sfl pu sel_pu const}
KEEPS=${KEEPS:-0.25 1.0}
SPARSITY=${SPARSITY:-random}  # issue 11's run: METHODS="ce pu pu_sar" KEEPS="0.1 0.25 1.0" SPARSITY="random salient"
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
mkdir -p "$OUT"
common=(--data "$DATA" --model "$MODEL" --epochs "$EPOCHS" --batch-size 8 --lr 0.001 --val-every 4
        --device "$DEVICE" --precision "$PRECISION" --num-workers "$WORKERS" --seeds 0 --fold-per-seed
        --budget-minutes "$BUDGET" --methods $METHODS --keeps $KEEPS --sparsity $SPARSITY)
"${PYTHON:-python3}" benchmarks/sparse_annotation.py "${common[@]}" --datasets bcdata --crop 512 --crops-per-image 4 \
    --out "$OUT/sparse_annotation_gpu_bcdata.json" --work /tmp/sparsecell_gpu_bc > "$OUT/gpu_bcdata.log" 2>&1 &
"${PYTHON:-python3}" benchmarks/sparse_annotation.py "${common[@]}" --datasets crchisto --crop 448 --crops-per-image 2 \
    --out "$OUT/sparse_annotation_gpu_crchisto.json" --work /tmp/sparsecell_gpu_crc > "$OUT/gpu_crchisto.log" 2>&1 &
wait
grep -h -E "F1 |budget|Error|error" "$OUT"/gpu_*.log
