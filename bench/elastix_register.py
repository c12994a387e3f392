"""elastix rigid + B-spline registration of one prior/current pair, for ``bench/propagate.py``.

Runs in a separate Python that has ``itk-elastix`` (about 1.7 GB installed, so not a project dependency).
elastix's default rigid and B-spline maps (Mattes MI, adaptive stochastic gradient descent, 2048 random
samples per iteration, 4 resolutions, 20 mm final grid) with the bending-energy penalty removed (with it
itk-elastix segfaulted on full-size CT pairs, ``shared/reference/propagation.md`` section 2). Prints one
JSON line: the seconds of registration + warping the prior GTV (reading the files excluded).

    python elastix_register.py CURRENT PRIOR PRIOR_GTV OUT_WARPED_GTV
"""

import json
import sys
import time

import itk


def main(current_path: str, prior_path: str, mask_path: str, out_path: str) -> int:
    fixed = itk.imread(current_path, itk.F)
    moving = itk.imread(prior_path, itk.F)
    mask = itk.imread(mask_path, itk.F)
    started = time.perf_counter()
    parameters = itk.ParameterObject.New()
    parameters.AddParameterMap(parameters.GetDefaultParameterMap("rigid"))
    bspline = parameters.GetDefaultParameterMap("bspline", 4, 20.0)
    bspline["Registration"] = ["MultiResolutionRegistration"]
    bspline["Metric"] = ["AdvancedMattesMutualInformation"]
    parameters.AddParameterMap(bspline)
    for index in range(parameters.GetNumberOfParameterMaps()):
        parameters.SetParameter(index, "WriteResultImage", "false")
    _, transform = itk.elastix_registration_method(fixed, moving, parameter_object=parameters,
                                                   log_to_console=False)
    for index in range(transform.GetNumberOfParameterMaps()):
        transform.SetParameter(index, "ResampleInterpolator", "FinalLinearInterpolator")
        transform.SetParameter(index, "DefaultPixelValue", "0")
    warped = itk.transformix_filter(mask, transform)
    seconds = time.perf_counter() - started
    itk.imwrite(warped, out_path)
    print(json.dumps({"seconds": seconds}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(*sys.argv[1:5]))
