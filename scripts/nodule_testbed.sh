#!/usr/bin/env bash
# DALE under known label noise and Diff-CL under label scarcity, on the 993 LIDC-IDRI nodules of ../shared/data
# (issue 32; docs/experiments.md "Nodule test bed"). Every experiment is a resumable `diffumamba experiment`: interrupt
# at will, run the same line again; finished runs are reused and an interrupted one continues from its last epoch.
#   bash scripts/nodule_testbed.sh WORK [STEP...]
#   steps: data dale dale-ablations diffcl diffcl-ablations (default: data dale diffcl)
# One fold of 5 split by patient (fold 0: 110 held-out patients, 193 nodules; 440 training patients, 800 nodules),
# scored on the held-out patients' original masks and grids; SEEDS (default "0 1 2") per arm.
#   dale:   a share (10, 30, 50 %) of the training masks corrupted as readers err (label_noise.py: dilated or eroded
#           by 1-3 voxels, shifted by 1-2, a missed part, a merged vessel); arms supervised (noisy) and DALE, then
#           DALE without ω / alignment / the data-derived band; ceiling: supervised on clean labels. DALE_ITERATIONS.
#   diffcl: 5, 10, 25 % of the training *patients* labelled, the rest unlabelled; arms supervised (labelled only),
#           supervised-hf and Diff-CL, then Diff-CL without the high-frequency module / the contrastive term;
#           ceiling: supervised on every label. DIFFCL_ITERATIONS.
# The main arms of every condition (dale, diffcl) run before the ablation arms (dale-ablations, diffcl-ablations: own
# folders), so a stopped run has the headline comparison first; DALE_SHARES / DIFFCL_SHARES pick the conditions (and
# their order), DALE_ABLATION_SHARES / DIFFCL_ABLATION_SHARES those of the ablation arms (default: the issue's target
# conditions, 30 % corrupted and 10 % labelled, as in the documented tables; "10 30 50" / "05 10 25" run the full
# grid). Each step ends by writing WORK/dale_table.md or WORK/diffcl_table.md (+ .csv) from the finished runs.
# ITERATIONS_PER_EPOCH (default 40) sets the epoch length of both budgets (the test runs 4 of 4).
# Two processes side by side with one thread each use 2 cores best (e.g. `dale dale-ablations` and `diffcl
# diffcl-ablations`), after `data`; never two processes on the same step and share.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK="$(realpath -m "${1:?usage: nodule_testbed.sh WORK [STEP...]}")"; shift
STEPS="${*:-data dale diffcl}"
DATA="${DIFFUMAMBA_SHARED_DATA:-$(realpath ../shared/data)}"
SEEDS="${SEEDS:-0 1 2}"
DALE_ITERATIONS="${DALE_ITERATIONS:-800}"
DIFFCL_ITERATIONS="${DIFFCL_ITERATIONS:-320}"
DALE_SHARES="${DALE_SHARES:-30 10 50}"
DIFFCL_SHARES="${DIFFCL_SHARES:-10 05 25}"
DALE_ABLATION_SHARES="${DALE_ABLATION_SHARES:-30}"
DIFFCL_ABLATION_SHARES="${DIFFCL_ABLATION_SHARES:-10}"
DM="${DIFFUMAMBA:-$PWD/.venv/bin/diffumamba}"
PY="${PYTHON:-$PWD/.venv/bin/python}"
want() { [[ " $STEPS " == *" $1 "* ]]; }
mkdir -p "$WORK"
NODULES="$WORK/raw/Dataset320_LidcNodules"
# bars on a terminal; none in a redirected log (its lines stay: one per epoch and per run)
PROGRESS="${PROGRESS:-$([ -t 2 ] && echo bar || echo none)}"
GRID=(--preprocessed "$WORK/pre" --spacing 1.5 1 1 --patch 16 32 32 --features 8 64 --no-amp --progress "$PROGRESS")
PLAN=("${GRID[@]}" --networks diffumamba --folds 5 --fold-list 0 --lr 1e-2 --no-augment --seeds $SEEDS
      --threads "${THREADS:-1}")
EPOCH="${ITERATIONS_PER_EPOCH:-40}"
budget() { echo --epochs $(($1 / EPOCH)) --iterations "$EPOCH"; }

if want data; then
  [ -f "$NODULES/dataset.json" ] || "$DM" convert lidc "$DATA/lidc_idri_nodule_vois" "$NODULES" --progress "$PROGRESS"
  "$DM" preprocess "$NODULES" "${GRID[@]}" --network diffumamba     # once, before two processes share the cache
fi

run() {   # run FOLDER ARGS...: one experiment (skipped when every run of it is finished)
  local folder="$WORK/$1"; shift
  "$DM" experiment "$NODULES" --results "$folder" "${PLAN[@]}" "$@"
}

table() {  # table STEP BASELINE CEILING NAME:FOLDER...: the step's table from the folders that exist
  local step="$1" baseline="$2" ceiling="$3"; shift 3
  local levels=()
  for item in "$@"; do
    local name="${item%%:*}" folders="" f
    for f in ${item#*:}; do [ -f "$WORK/$f/experiment.json" ] && folders="${folders:+$folders,}$WORK/$f"; done
    [ -n "$folders" ] && levels+=(--level "$name=$folders")
  done
  "$PY" -m diffumamba.experiment.level_table --baseline "$baseline" --ceiling "$WORK/$ceiling" "${levels[@]}" \
    --out "$WORK/${step}_table.md" || echo "($step table not written: a condition has no finished baseline run yet)"
}

DALE=($(budget "$DALE_ITERATIONS") --label-noise readers)
DIFFCL=($(budget "$DIFFCL_ITERATIONS") --labeled-unit patient --diffcl-sampling-steps 5)
dale_table() {
  table dale supervised dale-clean "10 %:dale-10 dale-10-ablations" "30 %:dale-30 dale-30-ablations" \
    "50 %:dale-50 dale-50-ablations"
}
diffcl_table() {
  table diffcl supervised diffcl-all "5 %:diffcl-05 diffcl-05-ablations" "10 %:diffcl-10 diffcl-10-ablations" \
    "25 %:diffcl-25 diffcl-25-ablations"
}

if want dale; then
  run dale-clean "${DALE[@]}" --methods supervised
  for share in $DALE_SHARES; do
    run "dale-$share" "${DALE[@]}" --methods supervised dale --corrupt-fraction "0.$share"
  done
  dale_table
fi
if want dale-ablations; then
  for share in $DALE_ABLATION_SHARES; do
    run "dale-$share-ablations" "${DALE[@]}" --corrupt-fraction "0.$share" \
      --methods dale:confidence=none dale:align_weight=0 dale:band_radius=2
  done
  dale_table
fi

if want diffcl; then
  run diffcl-all "${DIFFCL[@]}" --methods supervised
  for share in $DIFFCL_SHARES; do
    run "diffcl-$share" "${DIFFCL[@]}" --methods supervised supervised-hf diffcl --labeled-fraction "0.$share"
  done
  diffcl_table
fi
if want diffcl-ablations; then
  for share in $DIFFCL_ABLATION_SHARES; do
    run "diffcl-$share-ablations" "${DIFFCL[@]}" --labeled-fraction "0.$share" \
      --methods diffcl:high_frequency_stages=0 diffcl:contrastive_weight=0
  done
  diffcl_table
fi
exit 0
