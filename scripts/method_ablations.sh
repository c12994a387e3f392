#!/usr/bin/env bash
# The DALE and Diff-CL ablations of docs/experiments.md (issue 17), on the real data in ../shared/data. Every step is
# one resumable `diffumamba experiment`: interrupt it at will, run the same line again, and finished runs are reused
# while an interrupted one continues from its last epoch.
#   bash scripts/method_ablations.sh WORK [STEP...]
#   steps: data dale-sarcoma dale-sarcoma-mild diffcl-brain dale-lung dale-lung-mild diffcl-lung (default: all)
# Budget: ITERATIONS per run (default 200, in epochs of 25), SEEDS (default "0 1 2"), STEPS_DDIM (the diffusion
# branch's DDIM steps when it is scored, default 5). Every arm of one experiment shares the plan, splits, seeds,
# corrupted or unlabelled cases and iterations; each experiment prints its table and writes WORK/<step>/table.md.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK="$(realpath -m "${1:?usage: method_ablations.sh WORK [STEP...]}")"; shift
STEPS="${*:-data dale-sarcoma dale-sarcoma-mild diffcl-brain dale-lung dale-lung-mild diffcl-lung}"
DATA="${DIFFUMAMBA_SHARED_DATA:-$(realpath ../shared/data)}"
ITERATIONS="${ITERATIONS:-200}"
SEEDS="${SEEDS:-0 1 2}"
STEPS_DDIM="${STEPS_DDIM:-5}"
DM="${DIFFUMAMBA:-$PWD/.venv/bin/diffumamba}"
want() { [[ " $STEPS " == *" $1 "* ]]; }
mkdir -p "$WORK"

SARCOMA="$WORK/raw/Dataset103_SarcomaCT"
LUNG="$WORK/raw/Dataset102_LungGTV"
BRAIN="$WORK/raw/Dataset101_BrainTumourProgression"
BUDGET=(--epochs $((ITERATIONS / 25)) --iterations 25 --lr 1e-2 --no-augment --no-amp --seeds $SEEDS)
SMALL=(--features 8 64 --max-patch 20 64 64)
LUNG_PLAN=(--spacing 4 2 2 --features 8 64 --max-patch 24 64 64)        # the lung preview model's plan
DALE_ARMS=(--methods supervised dale dale:confidence=teacher dale:confidence=none dale:align_weight=0 --baseline supervised)
DIFFCL_ARMS=(--methods supervised supervised-hf diffcl diffcl:high_frequency_stages=0 diffcl:contrastive_weight=0
             --baseline supervised --diffcl-sampling-steps "$STEPS_DDIM")

if want data; then
  [ -f "$SARCOMA/dataset.json" ] || "$DM" convert pairs "$DATA/sts_sarcoma_ibsi" "$SARCOMA" \
    --pair '{case}/nifti/CT_image.nii.gz' '{case}/nifti/CT_mask.nii.gz'
  if [ ! -f "$LUNG/dataset.json" ]; then      # all GTVs of a patient as one label, as for the lung preview model
    "$DM" convert pairs "$DATA/pyradiomics_lung_ct" "$LUNG" --pair '{case}_image.nrrd' '{case}_label.nrrd'
    "$DM" convert dicom "$DATA/nsclc_radiomics_lung1_001" "$DATA/nsclc_radiomics_lung1_003" "$LUNG" --roi 'GTV.*' --append
    "$DM" convert dicom "$DATA/four_d_lung_113_hm10395" "$LUNG" --roi 'Tumor_c40|LN_c40' --append
  fi
  [ -f "$BRAIN/dataset.json" ] || "$DM" convert pairs "$DATA/brain_tumor_progression" "$BRAIN" --modality MR \
    --labels tumour --pair '{case}/Pre_Scan_T1.nii.gz' '{case}/Pre_Mask.nii.gz' '{case}_pre' \
    --pair '{case}/Post_Scan_T1.nii.gz' '{case}/Post_Mask.nii.gz' '{case}_post'
fi

# DALE with real label noise: a seeded share of each fold's training CTs gets a grown, shrunk or shifted GTV; the
# held-out CT is scored against its own expert contour. Four patients, leave one out.
want dale-sarcoma && "$DM" experiment "$SARCOMA" --preprocessed "$WORK/pre_sarcoma" --results "$WORK/dale-sarcoma" \
  --networks diffumamba "${DALE_ARMS[@]}" --folds 4 "${BUDGET[@]}" "${SMALL[@]}" --corrupt-fraction 0.5 --corrupt-voxels 3
want dale-sarcoma-mild && "$DM" experiment "$SARCOMA" --preprocessed "$WORK/pre_sarcoma" --results "$WORK/dale-sarcoma-mild" \
  --networks diffumamba "${DALE_ARMS[@]}" --folds 4 "${BUDGET[@]}" "${SMALL[@]}" --corrupt-fraction 0.3 --corrupt-voxels 2

# Diff-CL with two labelled volumes of the eight training volumes per fold; folds by patient (a patient's two
# visits on one side). The Diff-CL arms are also scored by their diffusion branch (ARM/diffusion) and the mean.
want diffcl-brain && "$DM" experiment "$BRAIN" --preprocessed "$WORK/pre_brain" --results "$WORK/diffcl-brain" \
  --networks diffumamba "${DIFFCL_ARMS[@]}" --folds 3 --group-pattern '^(\d+)_' "${BUDGET[@]}" "${SMALL[@]}" \
  --labeled-fraction 0.25

# The lung CTs: five patients, leave one out; DALE on corrupted GTVs, Diff-CL with 2 of the 4 training CTs labelled.
want dale-lung && "$DM" experiment "$LUNG" --preprocessed "$WORK/pre_lung" --results "$WORK/dale-lung" \
  --networks diffumamba "${DALE_ARMS[@]}" --folds 5 "${BUDGET[@]}" "${LUNG_PLAN[@]}" --corrupt-fraction 0.5 --corrupt-voxels 3
want dale-lung-mild && "$DM" experiment "$LUNG" --preprocessed "$WORK/pre_lung" --results "$WORK/dale-lung-mild" \
  --networks diffumamba "${DALE_ARMS[@]}" --folds 5 "${BUDGET[@]}" "${LUNG_PLAN[@]}" --corrupt-fraction 0.3 --corrupt-voxels 2
want diffcl-lung && "$DM" experiment "$LUNG" --preprocessed "$WORK/pre_lung" --results "$WORK/diffcl-lung" \
  --networks diffumamba "${DIFFCL_ARMS[@]}" --folds 5 "${BUDGET[@]}" "${LUNG_PLAN[@]}" --labeled-fraction 0.5
exit 0
