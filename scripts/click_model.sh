#!/usr/bin/env bash
# The click lesion model of docs/correction.md (issue 29), from ../shared/data, on a CPU. Every step is resumable:
# run the same line again and what is finished is kept, an interrupted training continues from its last epoch.
#   bash scripts/click_model.sh WORK [STEP...]      STEP: data heldout shipped package lopo (default: the first four)
# - data:     LIDC crops pasted into chest CTs: Dataset201 (hosts: the two Lung-PET-CT-Dx CTs only, so no NSCLC
#             patient of the benchmark is seen) and Dataset202 (hosts: those and the five lung CTs; plus the five
#             patients' own GTVs as whole-CT cases)
# - heldout:  the benchmark's model: Dataset201, fold 0 of 5 patient-grouped folds (20 % of the LIDC patients held
#             out), EPOCHS_A x 100 iterations; it has seen none of the five NSCLC patients
# - shipped:  the heldout model fine-tuned on Dataset202, every case (--fold all), EPOCHS_B x 100 iterations
# - package:  WORK/click-lesion-<version>.zip with its model card
# - lopo:     leave-one-patient-out for the five NSCLC GTVs: the heldout model fine-tuned as the shipped one is, on
#             Dataset203 (Dataset201 + the GTVs of the four other patients), EPOCHS_LOPO x 75 iterations per fold;
#             bench/correct.py --models WORK/click/lopo scores each patient with the fold that held it out
set -euo pipefail
cd "$(dirname "$0")/.."
WORK="$(realpath -m "${1:?usage: click_model.sh WORK [STEP...]}")"; shift
STEPS="${*:-data heldout shipped package}"
EPOCHS_LOPO="${EPOCHS_LOPO:-2}"
DATA="${DIFFUMAMBA_SHARED_DATA:-$(realpath ../shared/data)}"
DM="${DIFFUMAMBA:-$PWD/.venv/bin/diffumamba}"
EPOCHS_A="${EPOCHS_A:-22}"
EPOCHS_B="${EPOCHS_B:-5}"
THREADS="${THREADS:-1}"
VERSION="${VERSION:-0.1.0}"
want() { [[ " $STEPS " == *" $1 "* ]]; }
DX="$DATA/lung_pet_ct_dx_boxes"
HOSTS_DX=(--host "$DX/Lung_Dx-A0001/ct" "$DX/Lung_Dx-A0001/boxes.json" --host "$DX/Lung_Dx-A0002/ct" "$DX/Lung_Dx-A0002/boxes.json")
LUNG="$WORK/raw/Dataset102_LungGTV"
HELDOUT_DATA="$WORK/raw/Dataset201_LidcPastedDx"
ALL_DATA="$WORK/raw/Dataset202_LesionsAll"
# the plan: 1.5 x 1 x 1 mm, a 48 x 64 x 64 mm patch (32 x 64 x 64 voxels), Diff-UMamba 8-64, CPU fp32
PLAN=(--network diffumamba --features 8 64 --spacing 1.5 1 1 --patch 32 64 64 --no-amp --task correction)
CLICKS=(--correction-pseudo-objects 0.2 --correction-off-centre --oversample 0.5 --threads "$THREADS")

if want data; then
  [ -f "$LUNG/dataset.json" ] || bash scripts/method_ablations.sh "$WORK" data
  [ -f "$HELDOUT_DATA/dataset.json" ] || "$DM" convert lidc "$DATA/lidc_idri_nodule_vois" "$HELDOUT_DATA" "${HOSTS_DX[@]}"
  if [ ! -f "$ALL_DATA/dataset.json" ]; then
    "$DM" convert lidc "$DATA/lidc_idri_nodule_vois" "$ALL_DATA" "${HOSTS_DX[@]}" --host-dataset "$LUNG" --seed 1
    "$DM" convert pairs "$DATA/pyradiomics_lung_ct" "$ALL_DATA" --pair '{case}_image.nrrd' '{case}_label.nrrd' \
      --labels lesion --append
    "$DM" convert dicom "$DATA/nsclc_radiomics_lung1_001" "$DATA/nsclc_radiomics_lung1_003" "$ALL_DATA" \
      --roi 'GTV.*' --label lesion --append
    "$DM" convert dicom "$DATA/four_d_lung_113_hm10395" "$ALL_DATA" --roi 'Tumor_c40|LN_c40' --label lesion --append
  fi
fi
if want heldout; then
  run="$WORK/click/heldout"
  if [ -f "$run/last.safetensors" ]; then resume=(--resume); else resume=(); fi
  "$DM" train "$HELDOUT_DATA" --preprocessed "$WORK/pre_click" --run-dir "$run" --fold 0 --folds 5 "${PLAN[@]}" \
    "${CLICKS[@]}" --lr 1e-2 --epochs "$EPOCHS_A" --iterations 100 --validate-every 4 --validate-cases 24 "${resume[@]}"
fi
if want shipped; then
  run="$WORK/click/shipped"
  if [ -f "$run/last.safetensors" ]; then resume=(--resume); else resume=(--init-from "$WORK/click/heldout/last.safetensors"); fi
  # the five whole-CT tumours are drawn about as often as 250 pasted nodules: a quarter of the patches
  "$DM" train "$ALL_DATA" --preprocessed "$WORK/pre_click_all" --run-dir "$run" --fold all "${PLAN[@]}" "${CLICKS[@]}" \
    --case-weight '^(?!LIDC-IDRI)' 50 --lr 3e-3 --epochs "$EPOCHS_B" --iterations 100 --validate-every 0 "${resume[@]}"
fi
if want package; then
  "$DM" package "$WORK/click/shipped/last.safetensors" --out "$WORK/click-lesion-$VERSION.zip" \
    --card docs/click_lesion_model.md
fi
if want lopo; then
  LOPO="$WORK/raw/Dataset203_LidcDxPlusGtv"
  if [ ! -f "$LOPO/dataset.json" ]; then          # links, not copies; the folds as Dataset102's (one patient each)
    mkdir -p "$LOPO/imagesTr" "$LOPO/labelsTr"
    ln -sf "$HELDOUT_DATA"/imagesTr/* "$LOPO/imagesTr/"; ln -sf "$HELDOUT_DATA"/labelsTr/* "$LOPO/labelsTr/"
    for c in $(python3 -c "import json; print(' '.join(s['val'][0] for s in json.load(open('$LUNG/splits_final.json'))))"); do
      ln -sf "$ALL_DATA/imagesTr/${c}_0000.nii.gz" "$LOPO/imagesTr/"; ln -sf "$ALL_DATA/labelsTr/$c.nii.gz" "$LOPO/labelsTr/"
    done
    python3 - "$LOPO" "$HELDOUT_DATA" "$LUNG" <<'PY'
import json, os, sys
lopo, heldout, lung = sys.argv[1:]
meta = json.load(open(f"{heldout}/dataset.json"))
names = sorted(f[:-len("_0000.nii.gz")] for f in os.listdir(f"{lopo}/imagesTr"))
meta["numTraining"] = len(names)
json.dump(meta, open(f"{lopo}/dataset.json", "w"), indent=2)
order = [s["val"][0] for s in json.load(open(f"{lung}/splits_final.json"))]
json.dump([{"train": [n for n in names if n != x], "val": [x]} for x in order], open(f"{lopo}/splits_final.json", "w"))
PY
  fi
  for fold in ${LOPO_FOLDS:-0 1 2 3 4}; do
    run="$WORK/click/lopo/fold$fold"
    if [ -f "$run/last.safetensors" ]; then resume=(--resume); else resume=(--init-from "$WORK/click/heldout/last.safetensors"); fi
    "$DM" train "$LOPO" --preprocessed "$WORK/pre_click_lopo" --run-dir "$run" --fold "$fold" --folds 5 "${PLAN[@]}" \
      "${CLICKS[@]}" --case-weight '^(?!LIDC-IDRI)' 50 --lr 3e-3 --epochs "$EPOCHS_LOPO" --iterations 75 \
      --validate-every 0 "${resume[@]}"
  done
fi
