"""The demo pipeline end to end (shortened), and the phantom it trains on."""

import numpy as np
import SimpleITK as sitk

from diffumamba.demo.phantom import make_phantom
from diffumamba.demo.run import run_demo


def test_phantom_has_one_tumour_inside_a_lung():
    image, label = make_phantom(3)
    assert image.dtype == np.int16 and label.shape == image.shape
    assert 100 < label.sum() < 5000
    assert np.median(image[label > 0]) > -300                           # far denser than lung (-850), blurred edges
    assert np.median(image[image.shape[0] // 2, :5, :5]) < -900        # air outside the body
    assert not np.array_equal(make_phantom(4)[1], label)


def test_short_demo_writes_every_output(tmp_path):
    result = run_demo(tmp_path, n_train=3, epochs=1, iterations=2, progress=False)
    for key in ("checkpoint", "prediction", "overlay"):
        assert result[key].is_file()
    assert (result["evaluation"] / "metrics.csv").is_file() and 0.0 <= result["dice"] <= 1.0
    prediction = sitk.ReadImage(str(result["prediction"]))
    reference = sitk.ReadImage(str(tmp_path / "Dataset900_Phantom" / "labelsTs" / "phantom03.nii.gz"))
    assert prediction.GetSize() == reference.GetSize() and prediction.GetOrigin() == reference.GetOrigin()
    assert result["overlay"].read_bytes()[:4] == b"\x89PNG"
