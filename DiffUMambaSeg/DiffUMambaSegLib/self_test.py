"""The in-Slicer self-test (``DiffUMambaSegTest``, run by "Reload and Test", the Self Tests module, or CTest).

Both flows on Slicer's CTChest sample: segmentation with the catalog's default model (the lung GTV research
preview shipped inside the extension, copied into the model cache and verified against its SHA-256 as a
download is), and registration-only propagation. The model parts need torch and the other dependencies; on the
extension factory's test machine they are not installed, and the self-test must not install torch there (as
TotalSegmentator's and MONAIAuto3DSeg's self-tests do not): in testing mode without the dependencies the model parts are reported as
not run, loudly, and set ``DIFFUMAMBASEG_SELFTEST_FULL=1`` to run them anyway.
"""

from __future__ import annotations

import os
from pathlib import Path

from . import install

__all__ = ["run_self_test", "dependencies_present"]


def dependencies_present(module_dir: Path) -> bool:
    requirements = install.runtime_requirements(module_dir)      # what the module installs, not the training extras
    return not install.missing(requirements, install.installed_version) and install.installed_version("torch")


def run_self_test(test, logic_class) -> None:
    import slicer

    module_dir = Path(slicer.util.modulePath("DiffUMambaSeg")).parent
    if (slicer.app.testingEnabled() and not dependencies_present(module_dir)
            and os.environ.get("DIFFUMAMBASEG_SELFTEST_FULL") != "1"):
        test.delayDisplay("DiffUMambaSeg: torch and the other dependencies are not installed here; the model flows "
                          "were NOT run (set DIFFUMAMBASEG_SELFTEST_FULL=1 to install and run them)")
        return
    slicer.mrmlScene.Clear(0)
    segmentation_flow(test, logic_class)
    slicer.mrmlScene.Clear(0)
    propagation_flow(test, logic_class)


def _ct():
    import SampleData

    return SampleData.SampleDataLogic().downloadSample("CTChest")


def default_model(module_dir: Path) -> list[Path]:
    """The checkpoints of the catalog's first segmentation model (listed first in the panel, never pre-selected
    there: a research model; the self-test is not a clinical use), from the model cache, after copying and
    verifying it there if needed."""
    from . import catalog
    from .model_cache import ModelCache

    entries = [e for e in catalog.load_catalog(module_dir / "Resources" / "Models.json") if e.task == "segmentation"]
    if not entries:
        raise ValueError("the catalog lists no segmentation model")
    return ModelCache().download(entries[0])


def segmentation_flow(test, logic_class) -> None:
    import slicer

    ct, logic = _ct(), logic_class()
    test.assertTrue(logic.ensureDependencies())
    checkpoints = default_model(Path(slicer.util.modulePath("DiffUMambaSeg")).parent)
    parameters = logic.getParameterNode()
    parameters.inputVolume, parameters.device = ct, "cpu"
    logic.startSegmentation(parameters, checkpoints, lambda progress: None, print)
    outcome = logic.finish(logic.wait(timeout=1800))
    test.assertIsNotNone(outcome.segmentation)
    test.assertEqual(outcome.segmentation.GetSegmentation().GetSegment(outcome.segment_id).GetName(), "GTV")
    test.assertEqual(outcome.segmentation.GetNodeReference(
        outcome.segmentation.GetReferenceImageGeometryReferenceRole()), ct)
    test.delayDisplay("DiffUMambaSeg segmentation test passed")


def propagation_flow(test, logic_class) -> None:
    import slicer
    import vtk

    ct = _ct()
    prior = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "prior")
    prior.SetReferenceImageGeometryParameterFromVolumeNode(ct)
    bounds = [0.0] * 6
    ct.GetRASBounds(bounds)
    sphere = vtk.vtkSphereSource()
    sphere.SetCenter([(bounds[2 * i] + bounds[2 * i + 1]) / 2 for i in range(3)])
    sphere.SetRadius(15)
    sphere.Update()
    prior.AddSegmentFromClosedSurfaceRepresentation(sphere.GetOutput(), "GTV", [1, 0, 0])
    logic = logic_class()
    parameters = logic.getParameterNode()
    parameters.priorVolume, parameters.priorSegmentation, parameters.currentVolume = ct, prior, ct
    logic.startPropagation(parameters, lambda progress: None, print)
    outcome = logic.finish(logic.wait(timeout=600))
    test.assertIsNotNone(outcome.segmentation)
    test.assertGreater(outcome.report["dice_registered_prior_vs_result"], 0.99)
    test.assertAlmostEqual(outcome.report["current_volume_ml"], outcome.report["prior_volume_ml"],
                           delta=0.1 * outcome.report["prior_volume_ml"])
    test.delayDisplay("DiffUMambaSeg propagation test passed")
