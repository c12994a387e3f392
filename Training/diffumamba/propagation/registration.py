"""Prior scan -> current scan registration: rigid, then B-spline, both on Mattes mutual information.

The recipe is the one measured in ``shared/reference/propagation.md`` (robust across contrast protocols,
where demons was not), made fast for a 2-core CPU by registering copies of both images resampled to a
coarse grid (``spacing_mm``, 2.5 mm by default) instead of stopping the pyramid early on the full one.
The rigid stage uses regular-step gradient descent (plain gradient descent stopped 11 mm off on a
contrast / no-contrast pair there); the B-spline mesh is refined x1, x2, x4 to about ``mesh_mm`` control-point
spacing. On CT the metric is restricted to the current scan's body (couch and air do not drive the fit).

The result maps points of the current (fixed) scan to the prior (moving) one, which is what resampling
the prior image and prior GTV onto the current grid needs.
"""

from __future__ import annotations

import re
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

__all__ = ["RegistrationSettings", "Registration", "RegistrationError", "register", "body_mask", "looks_like_ct",
           "itk_reason"]

WHAT_TO_DO = "check that the prior and current scans are the same patient and cover the same body region"


class RegistrationError(ValueError):
    """The registration failed inside ITK, or its own quality figures say its result is not anatomy."""


def itk_reason(err: BaseException) -> str:
    """The one line of an ITK exception that says what went wrong (without source paths and object ids)."""
    text = str(err)
    found = re.findall(r"ITK ERROR: (?:\w+\(0x[0-9a-fA-F]+\): )?(.*)", text)
    reason = found[-1] if found else (text.strip().splitlines() or [type(err).__name__])[-1]
    return " ".join(reason.split()).rstrip(".")


@dataclass
class RegistrationSettings:
    """Every choice of the registration, documented where it is set (``diffumamba propagate --help``).

    Attributes:
        spacing_mm: both images are resampled to at least this spacing per axis before registering.
        deformable: add the B-spline stage after the rigid one (False: rigid only).
        mesh_mm: final B-spline control-point spacing.
        rigid_iterations, bspline_iterations: per pyramid level.
        samples: voxels sampled (at random, fixed per level) by the metric per iteration, at every pyramid
            level (as elastix does: a few thousand samples estimate MI well; a percentage of a whole CT
            made every iteration cost 100,000s of B-spline evaluations).
        mask: restrict the metric to the body of the current scan when it is a CT.
        focus_mm: with a prior GTV given, the B-spline stage covers only the GTV's box after the rigid stage
            plus this margin (None: the whole scan). What matters for propagation is the deformation around
            the tumour; on LUNG1-001 a whole-scan B-spline took 30-100 s on 2 cores, the focused one a few.
        seed: of the metric's random sampling.
        threads: ITK threads of the registration. 1 (default) makes it bit-reproducible: ITK's multi-threaded Mattes
            MI adds the threads' partial sums in the order they finish, and the optimiser amplifies the last-digit
            differences (the same brain pair gave 8.6 and 8.3 ml on 2 threads). 0: ITK's default (all cores),
            faster, not reproducible.
    """

    spacing_mm: float = 2.5
    deformable: bool = True
    mesh_mm: float = 40.0
    rigid_iterations: int = 200
    bspline_iterations: int = 50
    shrink: tuple[int, ...] = (4, 2, 1)
    smoothing_mm: tuple[float, ...] = (4.0, 2.0, 1.0)
    samples: int = 20_000
    mask: bool = True
    focus_mm: Optional[float] = 60.0
    seed: int = 1
    threads: int = 1


@dataclass
class Registration:
    transform: object                     # sitk.Transform: current-scan points -> prior-scan points
    rigid: object                         # the rigid part alone
    seconds: dict = field(default_factory=dict)
    rigid_metric: float = float("nan")    # Mattes MI after the rigid stage (lower is better)
    final_metric: float = float("nan")


def looks_like_ct(image) -> bool:
    """Hounsfield units: air at about -1000 and nothing far below."""
    import SimpleITK as sitk

    array = sitk.GetArrayViewFromImage(image)
    low = float(np.percentile(array[::4, ::4, ::4], 1))
    return -1100 <= low <= -500 and float(array.min()) >= -3100


def body_mask(image):
    """Largest component above -500 HU, holes filled per slice, dilated by 2 voxels (a uint8 image)."""
    import SimpleITK as sitk
    from scipy import ndimage

    from ..geometry import body_array

    body = body_array(sitk.GetArrayFromImage(image))
    if body is None:
        return None
    body = ndimage.binary_dilation(body, iterations=2)
    mask = sitk.GetImageFromArray(body.astype(np.uint8))
    mask.CopyInformation(image)
    return mask


def _coarse(image, spacing_mm: float):
    """``image`` resampled (linear, anti-aliased) to at least ``spacing_mm`` per axis, float32."""
    import SimpleITK as sitk

    image = sitk.Cast(image, sitk.sitkFloat32)
    old_spacing, old_size = np.array(image.GetSpacing()), np.array(image.GetSize())
    new_spacing = np.maximum(old_spacing, spacing_mm)
    if np.allclose(new_spacing, old_spacing):
        return image
    sigma = np.sqrt(np.maximum(new_spacing ** 2 - old_spacing ** 2, 0)) / 2.355   # FWHM of the new voxel
    smoothed = sitk.SmoothingRecursiveGaussian(image, [float(max(s, 1e-3)) for s in sigma])
    new_size = np.maximum(1, np.round(old_size * old_spacing / new_spacing)).astype(int)
    direction = np.array(image.GetDirection()).reshape(3, 3)
    # Keep the physical extent: the first voxel's box corner stays where it was.
    corner = np.array(image.GetOrigin()) - direction @ (old_spacing / 2)
    origin = corner + direction @ (new_spacing / 2)
    return sitk.Resample(smoothed, [int(n) for n in new_size], sitk.Transform(), sitk.sitkLinear,
                         [float(o) for o in origin], [float(s) for s in new_spacing], image.GetDirection(),
                         float(np.min(sitk.GetArrayViewFromImage(image))), sitk.sitkFloat32)


def _method(settings: RegistrationSettings, fixed, mask):
    import SimpleITK as sitk

    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(50)
    method.SetMetricSamplingStrategy(method.RANDOM)
    voxels = float(np.count_nonzero(sitk.GetArrayViewFromImage(mask))) if mask is not None else float(np.prod(fixed.GetSize()))
    percentages = [min(1.0, settings.samples * s ** 3 / max(voxels, 1.0)) for s in settings.shrink]
    method.SetMetricSamplingPercentagePerLevel(percentages, settings.seed)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetShrinkFactorsPerLevel(list(settings.shrink))
    method.SetSmoothingSigmasPerLevel(list(settings.smoothing_mm))
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    return method


def _focus_region(fixed, prior_mask, rigid, margin_mm: float):
    """(index, size) on ``fixed``'s grid of the box around the rigidly moved prior GTV plus a margin."""
    import SimpleITK as sitk

    where = np.argwhere(sitk.GetArrayViewFromImage(prior_mask) > 0)
    low, high = where.min(0)[::-1], where.max(0)[::-1]                 # (x, y, z) index box of the prior GTV
    inverse = rigid.GetInverse()
    corners = [prior_mask.TransformContinuousIndexToPhysicalPoint([float(c) for c in corner])
               for corner in np.array(np.meshgrid(*zip(low, high), indexing="ij")).reshape(3, -1).T]
    indices = np.array([fixed.TransformPhysicalPointToContinuousIndex(inverse.TransformPoint(c)) for c in corners])
    margin = margin_mm / np.array(fixed.GetSpacing())
    start = np.maximum(0, np.floor(indices.min(0) - margin)).astype(int)
    stop = np.minimum(np.array(fixed.GetSize()), np.ceil(indices.max(0) + margin + 1)).astype(int)
    if np.any(stop - start < 4):
        return None
    return [int(v) for v in start], [int(v) for v in stop - start]


@contextmanager
def itk_threads(threads: int):
    """ITK's default thread count set to ``threads`` (0: left as it is) while the block runs, then restored."""
    import SimpleITK as sitk

    if threads <= 0:
        yield
        return
    before = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(before)


def register(current, prior, settings: Optional[RegistrationSettings] = None,
             progress: Optional[Callable[[str, float], None]] = None, prior_mask=None) -> Registration:
    """Register ``prior`` (moving) to ``current`` (fixed); both SimpleITK images in physical space.

    ``prior_mask`` (the prior GTV, a SimpleITK image on ``prior``'s grid) focuses the B-spline stage on it.
    An ITK failure (no overlap left, too few samples, an image too small) raises RegistrationError with ITK's
    reason and what to check, not ITK's traceback.
    """
    settings = settings or RegistrationSettings()
    try:
        with itk_threads(settings.threads):
            return _register(current, prior, settings, progress, prior_mask)
    except RuntimeError as err:
        if "ITK" not in str(err) and "SimpleITK" not in str(err):
            raise
        raise RegistrationError(f"the registration of the prior scan onto the current one failed in ITK "
                                f"({itk_reason(err)}); {WHAT_TO_DO}") from None


def _register(current, prior, settings: Optional[RegistrationSettings] = None,
              progress: Optional[Callable[[str, float], None]] = None, prior_mask=None) -> Registration:
    import SimpleITK as sitk

    settings = settings or RegistrationSettings()
    report = progress or (lambda stage, fraction: None)
    seconds = {}
    started = time.perf_counter()
    fixed, moving = _coarse(current, settings.spacing_mm), _coarse(prior, settings.spacing_mm)
    mask = body_mask(fixed) if settings.mask and looks_like_ct(current) else None
    seconds["resample"] = time.perf_counter() - started

    report("rigid", 0.0)
    started = time.perf_counter()
    rigid_method = _method(settings, fixed, mask)
    rigid_method.SetOptimizerAsRegularStepGradientDescent(learningRate=2.0, minStep=1e-3,
                                                          numberOfIterations=settings.rigid_iterations,
                                                          relaxationFactor=0.5, gradientMagnitudeTolerance=1e-8)
    rigid_method.SetOptimizerScalesFromPhysicalShift()
    initial = sitk.CenteredTransformInitializer(fixed, moving, sitk.Euler3DTransform(),
                                                sitk.CenteredTransformInitializerFilter.GEOMETRY)
    rigid_method.SetInitialTransform(initial, inPlace=False)
    rigid = rigid_method.Execute(fixed, moving)
    rigid_metric = rigid_method.GetMetricValue()
    seconds["rigid"] = time.perf_counter() - started
    report("rigid", 1.0)
    if not settings.deformable:
        return Registration(rigid, rigid, seconds, rigid_metric, rigid_metric)

    report("deformable", 0.0)
    started = time.perf_counter()
    if prior_mask is not None and settings.focus_mm is not None:
        region = _focus_region(fixed, prior_mask, rigid, settings.focus_mm)
        if region is not None:
            fixed = sitk.RegionOfInterest(fixed, region[1], region[0])
            mask = sitk.RegionOfInterest(mask, region[1], region[0]) if mask is not None else None
    extent = [n * s for n, s in zip(fixed.GetSize(), fixed.GetSpacing())]
    levels = len(settings.shrink)
    factor = 2 ** (levels - 1)
    mesh = [max(1, int(round(e / (settings.mesh_mm * factor)))) for e in extent]
    bspline = sitk.BSplineTransformInitializer(fixed, mesh, order=3)
    method = _method(settings, fixed, mask)
    method.SetOptimizerAsGradientDescentLineSearch(5.0, settings.bspline_iterations, convergenceMinimumValue=1e-4,
                                                   convergenceWindowSize=5)
    method.SetMovingInitialTransform(rigid)
    method.SetInitialTransformAsBSpline(bspline, inPlace=True, scaleFactors=[2 ** k for k in range(levels)])
    method.Execute(fixed, moving)
    seconds["deformable"] = time.perf_counter() - started
    report("deformable", 1.0)
    transform = sitk.CompositeTransform([rigid, bspline])
    return Registration(transform, rigid, seconds, rigid_metric, method.GetMetricValue())
