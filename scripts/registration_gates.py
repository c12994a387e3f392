"""Registration quality on same- and other-patient pairs, absolute and relative to the current scan's own metric.

``propagate`` refuses a registration whose Mattes mutual information is above fixed limits (pipeline.py,
MAX_RIGID_METRIC / MAX_FINAL_METRIC, measured in issue 14). Mutual information is bounded by the image's own
entropy, so a low-entropy image (a noise phantom) cannot reach those limits even when perfectly aligned (issue 28,
D16). This prints, per pair, the metric after each stage, the current scan's metric against itself at identity (same
mask and samples: the best achievable) and their ratio, so a relative gate can be judged on the shared data:

    python scripts/registration_gates.py          # about 5 minutes on 2 cores

Pairs: simulated follow-ups of LUNG1-001 and the pyradiomics lung CTs and the real brain pairs 01 and 02 (same
patient); LUNG1-001 onto LUNG1-003 and brain 01 pre onto 02 post (other patients); the test phantom onto itself.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from diffumamba.inference.inputs import find_inputs
from diffumamba.mask_io import read_mask
from diffumamba.propagation.registration import (RegistrationSettings, _coarse, _focus_region, _method, body_mask,
                                                 looks_like_ct, register)
from diffumamba.propagation.simulate import simulate_followup

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("DIFFUMAMBA_SHARED_DATA", REPO.parent / "shared" / "data"))


def case(image: Path, gtv: Path):
    """(image, GTV mask image on its grid) from any input predict/propagate accept."""
    loaded = find_inputs([image])[0][1]()
    mask = sitk.GetImageFromArray(read_mask(gtv, loaded, what="prior GTV"))
    mask.CopyInformation(loaded.image)
    return loaded.image, mask


def self_metric(fixed, mask, settings: RegistrationSettings) -> float:
    """The metric of ``fixed`` against itself at identity, on the finest level as registered."""
    method = _method(settings, fixed, mask)
    voxels = float(np.count_nonzero(sitk.GetArrayViewFromImage(mask))) if mask is not None else float(
        np.prod(fixed.GetSize()))
    method.SetShrinkFactorsPerLevel([1])
    method.SetSmoothingSigmasPerLevel([settings.smoothing_mm[-1]])
    method.SetMetricSamplingPercentagePerLevel([min(1.0, settings.samples / max(voxels, 1.0))], settings.seed)
    method.SetInitialTransform(sitk.Euler3DTransform())
    return method.MetricEvaluate(fixed, fixed)


def measure(label: str, prior, prior_mask, current, settings: RegistrationSettings) -> None:
    started = time.perf_counter()
    registration = register(current, prior, settings, prior_mask=prior_mask)
    fixed = _coarse(current, settings.spacing_mm)
    mask = body_mask(fixed) if settings.mask and looks_like_ct(current) else None
    rigid_self = self_metric(fixed, mask, settings)
    region = _focus_region(fixed, prior_mask, registration.rigid, settings.focus_mm)
    if region is not None:
        fixed = sitk.RegionOfInterest(fixed, region[1], region[0])
        mask = sitk.RegionOfInterest(mask, region[1], region[0]) if mask is not None else None
    final_self = self_metric(fixed, mask, settings)
    print(f"| {label} | {registration.rigid_metric:.3f} | {rigid_self:.3f} | {registration.rigid_metric / rigid_self:.2f} "
          f"| {registration.final_metric:.3f} | {final_self:.3f} | {registration.final_metric / final_self:.2f} "
          f"| {time.perf_counter() - started:.0f} s |", flush=True)


def main() -> None:
    argparse.ArgumentParser(description=__doc__.split("\n\n")[0]).parse_args()   # --help; no options
    if not DATA.is_dir():
        sys.exit(f"shared data not found at {DATA}; set DIFFUMAMBA_SHARED_DATA")
    settings = RegistrationSettings()
    print("| pair | rigid | rigid self | ratio | final | final self | ratio | time |")
    print("|---|---|---|---|---|---|---|---|")
    lung1 = case(DATA / "nsclc_radiomics_lung1_001" / "ct", next((DATA / "nsclc_radiomics_lung1_001" / "rtstruct").iterdir()))
    measure("same: LUNG1-001 simulated follow-up", *lung1, simulate_followup(*lung1, rng=0).image, settings)
    for name in ("lung1", "lung2"):
        ct = case(DATA / "pyradiomics_lung_ct" / f"{name}_image.nrrd", DATA / "pyradiomics_lung_ct" / f"{name}_label.nrrd")
        measure(f"same: pyradiomics {name} simulated follow-up", *ct, simulate_followup(*ct, rng=0).image, settings)
    brain = DATA / "brain_tumor_progression"
    for pair in ("01", "02"):
        pre = case(brain / pair / "Pre_Scan_T1.nii.gz", brain / pair / "Pre_Mask.nii.gz")
        measure(f"same: brain {pair} pre -> post", *pre, sitk.ReadImage(str(brain / pair / "Post_Scan_T1.nii.gz")),
                settings)
    lung3 = case(DATA / "nsclc_radiomics_lung1_003" / "ct", next((DATA / "nsclc_radiomics_lung1_003" / "rtstruct").iterdir()))
    measure("other: LUNG1-001 -> LUNG1-003", *lung1, lung3[0], settings)
    pre = case(brain / "01" / "Pre_Scan_T1.nii.gz", brain / "01" / "Pre_Mask.nii.gz")
    measure("other: brain 01 pre -> 02 post", *pre, sitk.ReadImage(str(brain / "02" / "Post_Scan_T1.nii.gz")), settings)
    sys.path.insert(0, str(REPO / "Testing"))
    import tempfile

    from conftest import write_phantoms

    with tempfile.TemporaryDirectory() as tmp:
        phantoms = write_phantoms(Path(tmp) / "phantoms")
        phantom = case(phantoms / "imagesTr" / "c0_0000.nii.gz", phantoms / "labelsTr" / "c0.nii.gz")
        measure("same: test phantom c0 onto itself (registered anyway)", *phantom, phantom[0], settings)


if __name__ == "__main__":
    main()
