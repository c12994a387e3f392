#!/usr/bin/env bash
# The click-correction models of docs/correction.md (issue 18): one per fold of the five lung CTs in ../shared/data
# (patient-grouped, leave one patient out), so bench/correct.py scores every patient with a model that never saw it.
# Resumable: run the same line again and finished folds are kept, an interrupted one continues from its last epoch.
#   bash scripts/correction_models.sh WORK [FOLD...]
# Budget: EPOCHS (default 60) of ITERATIONS (default 25) iterations; NETWORK (default diffumamba); PSEUDO (0.3).
set -euo pipefail
cd "$(dirname "$0")/.."
WORK="$(realpath -m "${1:?usage: correction_models.sh WORK [FOLD...]}")"; shift
FOLDS="${*:-0 1 2 3 4}"
EPOCHS="${EPOCHS:-60}"
ITERATIONS="${ITERATIONS:-25}"
NETWORK="${NETWORK:-diffumamba}"
PSEUDO="${PSEUDO:-0.3}"            # share of patches whose label is a pseudo-object (training/pseudo_objects.py)
DM="${DIFFUMAMBA:-$PWD/.venv/bin/diffumamba}"
LUNG="$WORK/raw/Dataset102_LungGTV"
[ -f "$LUNG/dataset.json" ] || bash scripts/method_ablations.sh "$WORK" data    # the same conversion as the ablations
for fold in $FOLDS; do
  run="$WORK/correction/fold$fold"
  if [ -f "$run/last.safetensors" ]; then resume=(--resume); else resume=(); fi
  "$DM" train "$LUNG" --preprocessed "$WORK/pre_correction" --run-dir "$run" --task correction --fold "$fold" --folds 5 \
    --network "$NETWORK" --features 8 64 --spacing 3 1.5 1.5 --max-patch 32 64 64 --lr 1e-2 --oversample 0.67 \
    --correction-pseudo-objects "$PSEUDO" --correction-off-centre \
    --epochs "$EPOCHS" --iterations "$ITERATIONS" --validate-every 20 --no-amp "${resume[@]}"
done
