#!/usr/bin/env bash
# Create ./.venv (if missing) and install the diffumamba package with its test and benchmark extras.
# TORCH_SPEC chooses the PyTorch build: the default pins the CPU build CI uses; on a workstation with
# a GPU, set e.g. TORCH_SPEC="torch>=2.1" (and `pip install ./Training[cuda]` for mamba-ssm's kernels).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet "$TORCH_SPEC"
# Keep the torch just installed: a dependency that wants another build must fit it instead (the test extra's nnunetv2
# pulls timm, hence torchvision, whose newest release would otherwise replace the CPU torch with a CUDA one).
CONSTRAINTS="$(mktemp)"
trap 'rm -f "$CONSTRAINTS"' EXIT
.venv/bin/python -c 'from importlib.metadata import version; print("torch==" + version("torch").split("+")[0])' \
  > "$CONSTRAINTS"
.venv/bin/python -m pip install --quiet -c "$CONSTRAINTS" -e "./Training[test,bench]"
# The Slicer module is tested on real MRML classes and Slicer's own Python layer (Testing/slicer_conformance):
# slicer-core is Slicer's MRML and Segmentations libraries without Qt, and PySide6-Essentials supplies the real Qt
# API the strict Qt stand-ins are checked against (test dependencies only; inside Slicer the application has both).
.venv/bin/python -m pip install --quiet -c "$CONSTRAINTS" "slicer-core>=5.12" "PySide6-Essentials>=6.5"
# System tools the tests use: dciodvfy (Debian dicom3tools) validates the RTSTRUCT and SEG we write, cmake configures
# the extension's CMakeLists.txt. Installed here where apt-get may be run (root, or sudo without a password);
# elsewhere the tests that need them fail with one line naming the package.
missing=()
command -v dciodvfy >/dev/null 2>&1 || missing+=(dicom3tools)
command -v cmake >/dev/null 2>&1 || missing+=(cmake)
if [ ${#missing[@]} -gt 0 ]; then
  as_root=()
  [ "$(id -u)" = 0 ] || as_root=(sudo -n)
  if command -v apt-get >/dev/null 2>&1 && "${as_root[@]}" true 2>/dev/null; then
    echo "installing ${missing[*]} (apt-get)"
    { "${as_root[@]}" apt-get update -qq && "${as_root[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null; } ||
      echo "warning: apt-get could not install ${missing[*]}; the tests that need them will fail" >&2
  else
    echo "warning: ${missing[*]} not installed and apt-get cannot be run as root here: install them" \
         "(e.g. 'sudo apt-get install ${missing[*]}'), or the DICOM validation / CMake tests fail" >&2
  fi
fi
.venv/bin/diffumamba info
