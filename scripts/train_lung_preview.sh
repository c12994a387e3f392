#!/usr/bin/env bash
# Train, measure and package the lung GTV research-preview model shipped in the Slicer catalog, from the five
# lung-tumour CTs in ../shared/data (docs/lung_preview_model.md). Every step is resumable: a finished step is skipped.
# Held-out predictions use the settings the package records (lung crop, overlap 0.25), so the measured accuracy is
# that of the shipped model's configuration.
#   bash scripts/train_lung_preview.sh WORK [STEP...]     steps: data folds evaluate release package (default: all)
# Budget: ITERATIONS (default 1000) per model, on the CPU: about 10 min per model on 2 cores, 6 models.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK="$(realpath -m "${1:?usage: train_lung_preview.sh WORK [STEP...]}")"; shift
STEPS="${*:-data folds evaluate release package}"
DATA="${DIFFUMAMBA_SHARED_DATA:-$(realpath ../shared/data)}"
ITERATIONS="${ITERATIONS:-1000}"
DM="${DIFFUMAMBA:-$PWD/.venv/bin/diffumamba}"
RAW="$WORK/raw/Dataset102_LungGTV"
PLAN=(--preprocessed "$WORK/preprocessed" --network diffumamba --spacing 4 2 2 --features 8 64 --max-patch 24 64 64 --no-amp)
TRAIN=(--epochs $((ITERATIONS / 25)) --iterations 25 --lr 0.01 --validate-every 0 --seed 0 --folds 5)
mkdir -p "$WORK"
want() { [[ " $STEPS " == *" $1 "* ]]; }

if want data && [ ! -f "$RAW/dataset.json" ]; then
  # All GTVs of a patient as one label (LUNG1-003 has three; 4D-Lung's nodal LN_c40 is a GTV too).
  "$DM" convert pairs "$DATA/pyradiomics_lung_ct" "$RAW" --pair '{case}_image.nrrd' '{case}_label.nrrd'
  "$DM" convert dicom "$DATA/nsclc_radiomics_lung1_001" "$DATA/nsclc_radiomics_lung1_003" "$RAW" --roi 'GTV.*' --append
  "$DM" convert dicom "$DATA/four_d_lung_113_hm10395" "$RAW" --roi 'Tumor_c40|LN_c40' --append
  "$DM" preprocess "$RAW" "${PLAN[@]}"
fi

if want folds; then
  # Five folds of five patients (splits_final.json, made by the first run): leave one patient out.
  for fold in 0 1 2 3 4; do
    [ -f "$WORK/folds/fold$fold/done" ] && continue
    "$DM" train "$RAW" "${PLAN[@]}" --run-dir "$WORK/folds/fold$fold" --fold $fold "${TRAIN[@]}" --overwrite
    touch "$WORK/folds/fold$fold/done"
  done
fi

if want evaluate; then
  mkdir -p "$WORK/heldout"
  for fold in 0 1 2 3 4; do
    case=$(python3 -c "import json,sys;print(json.load(open(sys.argv[1]))[$fold]['val'][0])" "$RAW/splits_final.json")
    [ -f "$WORK/heldout/$case.nii.gz" ] && continue
    "$DM" predict "$RAW/imagesTr/${case}_0000.nii.gz" --model "$WORK/folds/fold$fold/last.safetensors" \
      --out "$WORK/heldout" --crop lungs --overlap 0.25 --progress none
  done
  "$DM" evaluate --pred "$WORK/heldout" --ref "$RAW/labelsTr" --out "$WORK/heldout_evaluation" --labels 1=GTV
fi

if want release && [ ! -f "$WORK/release/done" ]; then
  "$DM" train "$RAW" "${PLAN[@]}" --run-dir "$WORK/release" --fold all "${TRAIN[@]}" --overwrite
  touch "$WORK/release/done"
fi

if want package; then
  "$DM" package "$WORK/release/last.safetensors" --out "$WORK/gtv-lung-preview-0.1.0.zip" \
    --card docs/lung_preview_model.md --crop lungs --overlap 0.25
fi
