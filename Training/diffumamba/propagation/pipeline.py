"""Prior GTV -> current scan: register, warp, and (with a propagation model) refine; what ``propagate`` runs.

A propagation model is any core network trained with ``train --task propagation``: its input channels are
the current scan, the registered prior scan and the registered prior GTV. Without a model the result is
the registered prior GTV itself ("registration only"), which follows anatomy but not tumour response.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np

from ..geometry import bounding_box
from .registration import (WHAT_TO_DO, Registration, RegistrationError, RegistrationSettings, body_mask, itk_reason,
                           looks_like_ct, register)
from .warp import jacobian_range, warp_image, warp_mask

__all__ = ["PropagationResult", "propagate", "is_propagation_plan", "PRIOR_MASK_CHANNEL", "check_registration",
           "same_scan", "MAX_FINAL_METRIC", "MAX_RIGID_METRIC", "MIN_INSIDE_BODY"]

PRIOR_MASK_CHANNEL = "noNorm"   # nnU-Net's name for a channel left unnormalised
SEARCH_MARGIN_MM = 15.0         # growth of a 3 cm GTV to twice its volume moves its surface ~4 mm; plus registration error
CONTEXT_MM = 40.0               # image context around the search region given to the network on CT
# Registration quality gates (check_registration). Metrics are Mattes mutual information as ITK reports it
# (negated: lower is better); the rigid one over the current scan's body, the final (B-spline) one around the GTV.
# Measured with the default settings (issue 14, item 5): same patient (simulated follow-ups of LUNG1-001,
# pyradiomics lung1 and lung2; real brain pairs 01 and 02): rigid -0.99 .. -1.48, final -1.16 .. -1.73;
# different patients (LUNG1-001 GTV onto LUNG1-003; brain 01 pre onto 02 post): rigid -0.32, -0.67, final -0.53,
# -0.89 (LUNG1-001 -> 003 also folded: smallest Jacobian determinant -4.2). The limits lie between.
MAX_RIGID_METRIC = -0.8
MAX_FINAL_METRIC = -1.0
MIN_INSIDE_BODY = 0.5           # fraction of the registered prior GTV inside the current CT's body


def is_propagation_plan(plan: dict) -> bool:
    names = plan.get("channel_names", [])
    return plan.get("task") == "propagation" and len(names) == 3 and names[2] == PRIOR_MASK_CHANNEL


@dataclass
class PropagationResult:
    labels: np.ndarray                 # (z, y, x) uint8 final GTV on the current grid
    warped_prior: np.ndarray           # (z, y, x) uint8 registered prior GTV on the current grid
    warped_prior_image: object         # sitk.Image: the prior scan on the current grid
    registration: Registration
    refined: bool
    report: dict = field(default_factory=dict)


def propagate(current, prior, prior_mask: np.ndarray, settings: Optional[RegistrationSettings] = None,
              networks: Sequence = (), plan: Optional[dict] = None, overlap: float = 0.5, device="cpu",
              crop: str = "none", progress: Optional[Callable[[str, float], None]] = None,
              search_margin_mm: Optional[float] = SEARCH_MARGIN_MM, check_quality: bool = True) -> PropagationResult:
    """Propagate ``prior_mask`` ((z, y, x) on ``prior``'s grid) onto ``current`` (SimpleITK images).

    With ``check_quality`` (default), a registration whose own figures say it is not anatomy raises
    RegistrationError before anything else (``check_registration``); an ITK failure always does.

    With ``networks``, the refined GTV is kept within ``search_margin_mm`` of the registered prior GTV
    (None: anywhere): propagation follows a known tumour, so tissue far from it is not searched (on CT the
    network runs only on that region plus context, which is also what makes refinement fast).
    """
    import SimpleITK as sitk

    report = progress or (lambda stage, fraction: None)
    mask_image = sitk.GetImageFromArray(prior_mask.astype(np.uint8))
    mask_image.CopyInformation(prior)
    identical = same_scan(current, prior)
    if identical:
        registration = Registration(sitk.Euler3DTransform(), sitk.Euler3DTransform())   # nothing moved: the identity
    else:
        registration = register(current, prior, settings, progress=lambda s, f: report(s, 0.6 * f),
                                prior_mask=mask_image)
    try:
        warped_image = warp_image(prior, current, registration.transform)
        warped = sitk.GetArrayFromImage(warp_mask(mask_image, current, registration.transform)).astype(np.uint8)
        jacobian = jacobian_range(registration.transform, current)
    except RuntimeError as err:
        raise RegistrationError(f"the registered prior could not be resampled onto the current scan in ITK "
                                f"({itk_reason(err)}); {WHAT_TO_DO}") from None
    if check_quality:
        check_registration(registration, warped, current, jacobian)
    elif not warped.any():
        raise RegistrationError("the prior GTV falls outside the current scan after registration; check that both "
                                "scans cover the tumour region")
    labels, refined = warped, False
    if networks:
        from ..inference.lung_box import lung_box
        from ..inference.predictor import predict_in_box

        if plan is None or not is_propagation_plan(plan):
            raise ValueError("the checkpoint is not a propagation model (train one with 'train --task propagation')")
        data = np.stack([sitk.GetArrayFromImage(current).astype(np.float32),
                         sitk.GetArrayFromImage(warped_image).astype(np.float32), warped.astype(np.float32)])
        spacing = tuple(reversed(current.GetSpacing()))
        region = near(warped, spacing, search_margin_mm) if search_margin_mm else None
        if region is not None and plan["channel_names"][0] == "CT":
            # CT normalisation is fixed, so a crop sees the same intensities as the whole scan; per-image
            # z-scores (MR) would change with the crop, so other modalities are predicted whole.
            box = bounding_box(region, spacing, CONTEXT_MM)
        else:
            box = lung_box(data[0], spacing) if crop == "lungs" else None
        prediction = predict_in_box(box, data, networks=networks, plan=plan, spacing=spacing, overlap=overlap,
                                    device=device, progress=lambda s, f: report("refine", 0.6 + 0.35 * f))
        labels, refined = (prediction.labels > 0).astype(np.uint8), True
        if region is not None:
            labels &= region.astype(np.uint8)
    result = PropagationResult(labels, warped, warped_image, registration, refined)
    result.report = propagation_report(prior_mask, prior, warped, labels, current, registration, refined, jacobian)
    result.report["search_margin_mm"] = search_margin_mm if refined else None
    result.report["same_scan"] = identical
    report("done", 1.0)
    return result


def same_scan(current, prior) -> bool:
    """Whether the two scans are one: same grid, same voxels. The registration is then the identity, by definition;
    registering would only add the optimiser's wander (on a synthetic phantom, whose noise gives mutual information
    little to hold on to, enough to fail the quality gates: issue 28, D16)."""
    import SimpleITK as sitk

    from ..geometry import grid_differences

    return not grid_differences(current, prior) and np.array_equal(sitk.GetArrayViewFromImage(current),
                                                                  sitk.GetArrayViewFromImage(prior))


def check_registration(registration: Registration, warped: np.ndarray, current, jacobian) -> None:
    """Refuse a registration whose own figures say its result is not anatomy (RegistrationError, saying which
    figure and what to do): the registered prior GTV outside the current scan, or (on CT) mostly outside its
    body; folding (smallest Jacobian determinant <= 0); a final metric worse than MAX_FINAL_METRIC."""
    import SimpleITK as sitk

    if not warped.any():
        raise RegistrationError("the prior GTV falls outside the current scan after registration; check that both "
                                "scans cover the tumour region")
    low = jacobian[0]
    if not low > 0:
        raise RegistrationError(f"the registration folds space (smallest Jacobian determinant {low:.2f}, must be > 0), "
                                f"so its result is not anatomy; {WHAT_TO_DO}, or try --rigid-only or a larger --mesh-mm")
    deformable = "deformable" in registration.seconds
    for name, metric, limit in (("rigid", registration.rigid_metric, MAX_RIGID_METRIC),
                                ("final", registration.final_metric if deformable else float("nan"), MAX_FINAL_METRIC)):
        if np.isfinite(metric) and metric > limit:
            raise RegistrationError(f"the registration matched the scans poorly ({name} metric {metric:.3f}, Mattes "
                                    f"mutual information, lower is better; same-patient pairs reach below {limit}), so "
                                    f"the propagated GTV would not be trustworthy; {WHAT_TO_DO}")
    if looks_like_ct(current):
        body = body_mask(current)
        if body is not None:
            inside = float(np.logical_and(warped > 0, sitk.GetArrayViewFromImage(body) > 0).sum()) / float(warped.sum())
            if inside < MIN_INSIDE_BODY:
                raise RegistrationError(f"only {100 * inside:.0f} % of the registered prior GTV lies inside the current "
                                        f"scan's body, so the registration did not find the tumour region; "
                                        f"{WHAT_TO_DO}")


def near(mask: np.ndarray, spacing, margin_mm: float) -> np.ndarray:
    """Voxels within ``margin_mm`` (Euclidean, in mm) of ``mask``, computed in its bounding box only."""
    from scipy import ndimage

    box = bounding_box(mask, spacing, margin_mm)
    out = np.zeros(mask.shape, bool)
    out[box] = ndimage.distance_transform_edt(~mask[box].astype(bool), sampling=spacing) <= margin_mm
    return out


def propagation_report(prior_mask, prior, warped, labels, current, registration: Registration, refined: bool,
                       jacobian=None) -> dict:
    """Volumes (ml), change (%), agreement of the result with the registered prior, registration health."""
    prior_ml = float(prior_mask.sum()) * float(np.prod(prior.GetSpacing())) / 1000
    voxel_ml = float(np.prod(current.GetSpacing())) / 1000
    current_ml = float(labels.sum()) * voxel_ml
    overlap = float(np.logical_and(warped, labels).sum())
    total = float(warped.sum() + labels.sum())
    jac_min, jac_max = jacobian if jacobian is not None else jacobian_range(registration.transform, current)
    return {"prior_volume_ml": round(prior_ml, 3), "registered_prior_volume_ml": round(float(warped.sum()) * voxel_ml, 3),
            "current_volume_ml": round(current_ml, 3),
            "volume_change_percent": round(100.0 * (current_ml - prior_ml) / prior_ml, 1) if prior_ml else None,
            "dice_registered_prior_vs_result": round(2 * overlap / total, 4) if total else 1.0,
            "refined": refined, "registration_seconds": {k: round(v, 1) for k, v in registration.seconds.items()},
            "rigid_metric": _rounded(registration.rigid_metric), "final_metric": _rounded(registration.final_metric),
            "jacobian_min": round(jac_min, 3), "jacobian_max": round(jac_max, 3)}


def _rounded(metric: float):
    """A metric for the JSON report: None when there was none (identical scans: nothing was registered)."""
    return round(float(metric), 4) if np.isfinite(metric) else None
