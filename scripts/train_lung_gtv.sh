#!/usr/bin/env bash
# Train, measure and package the full-CT lung GTV model (docs/lung_gtv_model.md) from ../shared/data: the five GTV
# CTs, 4 real LIDC lesions pasted into 3 copies of each (and of the two box-labelled Lung-PET-CT-Dx CTs, cut to
# their slabs without boxes), hard-negative patches on soft tissue. Every step is resumable: a finished run is
# skipped, a killed one continues from its last checkpoint (another sitting: run the same command again).
#   bash scripts/train_lung_gtv.sh WORK [STEP...]
#   steps: data, folds (leave-one-patient-out), evaluate, release, package (default: all)
#   CONFIG (default pasted-negatives): gtv-only | pasted | pasted-negatives | gtv-negatives (the ablation rows)
#   ITERATIONS (default 1000: the shipped 0.2.0) per fold, RELEASE_ITERATIONS (default ITERATIONS) for the shipped model,
#   ITERATIONS_PER_EPOCH (default 25; the test runs 5 of 5),
#   JOBS (default 2): folds trained side by side, one thread each (on 2 cores 18 % more iterations per second)
#   RELEASE_THREADS (default PyTorch's): threads of the release run (1 when folds train beside it)
#   FOLDS (default "0 1 2 3 4"): the held-out patients to train and evaluate; PASTES (default 3): copies per CT
set -euo pipefail
cd "$(dirname "$0")/.."
WORK="$(realpath -m "${1:?usage: train_lung_gtv.sh WORK [STEP...]}")"; shift
STEPS="${*:-data folds evaluate release package}"
DATA="${DIFFUMAMBA_SHARED_DATA:-$(realpath ../shared/data)}"
CONFIG="${CONFIG:-pasted-negatives}"
ITERATIONS="${ITERATIONS:-1000}"
RELEASE_ITERATIONS="${RELEASE_ITERATIONS:-$ITERATIONS}"
EPOCH="${ITERATIONS_PER_EPOCH:-25}"
JOBS="${JOBS:-2}"
FOLDS="${FOLDS:-0 1 2 3 4}"
PASTES="${PASTES:-3}"
VERSION="${VERSION:-0.2.0}"
DM="${DIFFUMAMBA:-$PWD/.venv/bin/diffumamba}"
PY="$(dirname "$DM")/python"
GTV="$WORK/raw/Dataset102_LungGTV"
RAW="$WORK/raw/Dataset311_LungWholeCT"
PLAN=(--preprocessed "$WORK/preprocessed" --network diffumamba --spacing 4 2 2 --features 8 64 --max-patch 24 64 64 --no-amp)
RUNS="$WORK/$CONFIG-$ITERATIONS"
want() { [[ " $STEPS " == *" $1 "* ]]; }
mkdir -p "$WORK"

case "$CONFIG" in
  gtv-only|pasted) SAMPLING=() ;;
  pasted-negatives|gtv-negatives) SAMPLING=(--hard-negatives 0.5 --lung-region) ;;
  *) echo "unknown CONFIG $CONFIG (gtv-only, pasted, pasted-negatives, gtv-negatives)" >&2; exit 2 ;;
esac

if want data && [ ! -f "$RAW/splits_final.json" ]; then
  if [ ! -f "$GTV/dataset.json" ]; then           # all GTVs of a patient as one label
    "$DM" convert pairs "$DATA/pyradiomics_lung_ct" "$GTV" --pair '{case}_image.nrrd' '{case}_label.nrrd'
    "$DM" convert dicom "$DATA/nsclc_radiomics_lung1_001" "$DATA/nsclc_radiomics_lung1_003" "$GTV" --roi 'GTV.*' --append
    "$DM" convert dicom "$DATA/four_d_lung_113_hm10395" "$GTV" --roi 'Tumor_c40|LN_c40' --append
  fi
  rm -rf "$RAW.partial" && cp -r "$GTV" "$RAW.partial" && rm -f "$RAW.partial/splits_final.json"
  DX="$DATA/lung_pet_ct_dx_boxes"
  "$DM" convert lidc "$DATA/lidc_idri_nodule_vois" "$RAW.partial" --append --whole-ct 4 --pastes "$PASTES" --min-diameter 10 \
    --host-dataset "$GTV" --host "$DX/Lung_Dx-A0001/ct" "$DX/Lung_Dx-A0001/boxes.json" \
    --host "$DX/Lung_Dx-A0002/ct" "$DX/Lung_Dx-A0002/boxes.json" --seed 0
  # leave one GTV patient out (with its pasted copies); the Dx slabs always train
  "$PY" -m diffumamba.training.lopo_splits "$RAW.partial" --always 'Lung-Dx'
  rm -rf "$RAW" && mv "$RAW.partial" "$RAW"
  "$DM" preprocess "$RAW" "${PLAN[@]}"
fi

train_fold() {         # train_fold FOLD: one leave-one-patient-out model of CONFIG
  local fold=$1 dir="$RUNS/fold$1" only=()
  [ -f "$dir/done" ] && return 0
  if [[ "$CONFIG" == gtv-* ]]; then      # the five GTV CTs only: the fold's training cases without a pasted copy
    mapfile -t only < <("$PY" -c "import json,sys;print('\n'.join(n for n in json.load(open(sys.argv[1]))[$fold]['train'] if '_w' not in n))" "$RAW/splits_final.json")
    only=(--labeled "${only[@]}")
  fi
  local start=(--overwrite)
  [ -f "$dir/last.safetensors" ] && start=(--resume)
  "$DM" train "$RAW" "${PLAN[@]}" --run-dir "$dir" --fold "$fold" --epochs $((ITERATIONS / EPOCH)) --iterations "$EPOCH" \
    --lr 0.01 --validate-every 0 --seed 0 --threads 1 "${SAMPLING[@]}" "${only[@]}" "${start[@]}" \
    > "$dir.log" 2>&1 || { echo "fold $fold failed: see $dir.log" >&2; return 1; }
  touch "$dir/done"
}

if want folds; then
  mkdir -p "$RUNS"
  for fold in $FOLDS; do
    train_fold "$fold" &
    while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n || exit 1; done
  done
  while [ "$(jobs -rp | wc -l)" -gt 0 ]; do wait -n || exit 1; done
fi

if want evaluate; then
  mkdir -p "$RUNS/heldout"
  for fold in $FOLDS; do
    case=$("$PY" -c "import json,sys;print(json.load(open(sys.argv[1]))[$fold]['val'][0])" "$RAW/splits_final.json")
    [ -f "$RUNS/heldout/$case.nii.gz" ] || "$DM" predict "$RAW/imagesTr/${case}_0000.nii.gz" \
      --model "$RUNS/fold$fold/last.safetensors" --out "$RUNS/heldout" --crop lungs --overlap 0.25 --progress none \
      --probabilities
  done
  "$PY" bench/lung_gtv.py --pred "$RUNS/heldout" --ref "$RAW/labelsTr" --model "$RUNS/fold0/last.safetensors" \
    --boxes "$DATA/lung_pet_ct_dx_boxes" --images "$RAW/imagesTr" --filters touching inside min-ml 'p>=0.7' 'p>=0.9' \
    --out "$RUNS/evaluation" --name "$CONFIG, $ITERATIONS iterations"
fi

if want release; then
  dir="$WORK/release-$CONFIG-$RELEASE_ITERATIONS"
  if [ ! -f "$dir/done" ]; then
    only=()
    [[ "$CONFIG" == gtv-* ]] && only=(--labeled $(cd "$RAW/labelsTr" && ls | grep -v '_w' | sed 's/\.nii\.gz$//'))
    start=(--overwrite)
    [ -f "$dir/last.safetensors" ] && start=(--resume)
    "$DM" train "$RAW" "${PLAN[@]}" --run-dir "$dir" --fold all --epochs $((RELEASE_ITERATIONS / EPOCH)) --iterations "$EPOCH" \
      --lr 0.01 --validate-every 0 --seed 0 ${RELEASE_THREADS:+--threads "$RELEASE_THREADS"} "${SAMPLING[@]}" "${only[@]}" \
      "${start[@]}"
    touch "$dir/done"
  fi
fi

if want package; then
  "$DM" package "$WORK/release-$CONFIG-$RELEASE_ITERATIONS/last.safetensors" --out "$WORK/gtv-lung-$VERSION.zip" \
    --card docs/lung_gtv_model.md --crop lungs --overlap 0.25
fi
