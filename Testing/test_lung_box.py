"""The classical lung box that ``predict --crop lungs`` uses: it must never cut a lung or a GTV off."""

import numpy as np
import SimpleITK as sitk

from diffumamba.dicom.rtstruct import rasterise, read_rtstruct, select_rois
from diffumamba.dicom.series import choose_series, read_series, scan_folder
from diffumamba.inference.lung_box import lung_box
from diffumamba.inference.predictor import predict_case, predict_in_box
from diffumamba.nets import NetworkConfig, build_network


def test_lung1_box_holds_both_lungs_and_the_gtv_in_a_third_of_the_ct(shared_data):
    found = scan_folder(shared_data / "nsclc_radiomics_lung1_001")
    structure_set = read_rtstruct(found.rtstructs[0])
    image = read_series(choose_series(found, referenced=structure_set.referenced_series))
    hu = sitk.GetArrayFromImage(image)
    box = lung_box(hu, tuple(reversed(image.GetSpacing())))
    assert np.prod([b.stop - b.start for b in box]) / hu.size < 0.35
    for name in ("GTV-1", "Lung-Left", "Lung-Right"):
        mask = rasterise(select_rois(structure_set, name), image)
        assert mask[box].sum() == mask.sum()


def test_pyradiomics_lung_tumours_stay_inside(shared_data):
    for case in ("lung1", "lung2"):
        image = sitk.ReadImage(str(shared_data / "pyradiomics_lung_ct" / f"{case}_image.nrrd"))
        label = sitk.GetArrayFromImage(sitk.ReadImage(str(shared_data / "pyradiomics_lung_ct" / f"{case}_label.nrrd")))
        box = lung_box(sitk.GetArrayFromImage(image), tuple(reversed(image.GetSpacing())))
        assert label[box].sum() == label.sum() > 0


def test_no_air_means_no_box(shared_data):
    mr = sitk.GetArrayFromImage(sitk.ReadImage(str(shared_data / "brain_tumor_progression" / "01" / "Pre_Scan_T1.nii.gz")))
    assert lung_box(mr.astype(np.float32), (1.0, 1.0, 1.0)) is None


def test_prediction_in_a_box_is_background_outside_and_unchanged_inside():
    config = NetworkConfig(network="resunet", spatial_dims=3, in_channels=1, num_classes=2,
                           features_per_stage=[4, 8], kernel_sizes=[[3, 3, 3]] * 2, strides=[[1, 1, 1], [2, 2, 2]],
                           n_blocks_per_stage=[1, 1], n_blocks_per_stage_decoder=[1], patch_size=[8, 16, 16])
    network = build_network(config)
    plan = {"target_spacing": [2.0, 1.0, 1.0], "channel_names": ["MR"], "intensities": [{}], "patch_size": [8, 16, 16]}
    data = np.random.default_rng(0).normal(size=(1, 12, 30, 30)).astype(np.float32) + 5
    box = (slice(2, 10), slice(5, 25), slice(0, 30))
    kwargs = dict(networks=[network], plan=plan, spacing=(2.0, 1.0, 1.0), probabilities=True, uncertainty=True)
    inside = predict_case(data=np.ascontiguousarray(data[(slice(None), *box)]), **kwargs)
    full = predict_in_box(box, data, **kwargs)
    assert np.array_equal(full.labels[box], inside.labels)
    outside = np.ones(data.shape[1:], bool)
    outside[box] = False
    assert not full.labels[outside].any() and np.all(full.probabilities[0][outside] == 1)
    assert np.array_equal(predict_in_box(None, data, **kwargs).labels, predict_case(data=data, **kwargs).labels)
