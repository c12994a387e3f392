"""``diffumamba convert``: real image/label pairs and real DICOM + RTSTRUCT exports become nnU-Net datasets
that the rest of the pipeline reads; failing cases are named and the others still convert."""

import json
import shutil

import numpy as np
import pytest
import SimpleITK as sitk

from diffumamba.cli import main
from diffumamba.convert.pairs import PairPattern
from diffumamba.data.dataset import RawDataset


def test_lung_pairs_convert_unchanged(shared_data, tmp_path, capsys):
    source = shared_data / "pyradiomics_lung_ct"
    out = tmp_path / "Dataset010_Lung"
    assert main(["convert", "pairs", str(source), str(out), "--pair", "{case}_image.nrrd", "{case}_label.nrrd"]) == 0
    dataset = RawDataset(out)
    assert [c.name for c in dataset.training_cases()] == ["lung1", "lung2"]
    assert dataset.channel_names == ["CT"] and dataset.labels == {"background": 0, "GTV": 1}
    for case in ("lung1", "lung2"):
        original = sitk.ReadImage(str(source / f"{case}_image.nrrd"))
        written = sitk.ReadImage(str(out / "imagesTr" / f"{case}_0000.nii.gz"))
        assert np.array_equal(sitk.GetArrayFromImage(original), sitk.GetArrayFromImage(written))
        assert np.allclose(original.GetOrigin(), written.GetOrigin(), atol=1e-3)
        label = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "labelsTr" / f"{case}.nii.gz")))
        assert np.array_equal(label, sitk.GetArrayFromImage(sitk.ReadImage(str(source / f"{case}_label.nrrd"))))
    assert "converted 2 case(s)" in capsys.readouterr().out
    assert main(["convert", "pairs", str(source), str(out), "--pair", "{case}_image.nrrd", "{case}_label.nrrd"]) == 2
    assert "already holds a dataset" in capsys.readouterr().err


def test_case_folders_with_several_pairs_and_name_templates(shared_data, tmp_path):
    out = tmp_path / "Dataset101_Brain"
    assert main(["convert", "pairs", str(shared_data / "brain_tumor_progression"), str(out), "--modality", "MR",
                 "--labels", "tumour",
                 "--pair", "{case}/Pre_Scan_T1.nii.gz", "{case}/Pre_Mask.nii.gz", "{case}_pre",
                 "--pair", "{case}/Post_Scan_T1.nii.gz", "{case}/Post_Mask.nii.gz", "{case}_post"]) == 0
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["numTraining"] == 12 and meta["channel_names"] == {"0": "MR"}
    assert (out / "labelsTr" / "07_post.nii.gz").is_file() and (out / "imagesTr" / "10_pre_0000.nii.gz").is_file()
    post = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "labelsTr" / "07_post.nii.gz")))
    assert int(post.sum()) == 1221  # the README's voxel count


def test_failing_cases_are_named_and_the_rest_convert(shared_data, tmp_path, capsys):
    source = tmp_path / "source"
    source.mkdir()
    lung = shared_data / "pyradiomics_lung_ct"
    for case in ("lung1", "lung2"):
        shutil.copy(lung / f"{case}_image.nrrd", source / f"{case}_image.nrrd")
    shutil.copy(lung / "lung1_label.nrrd", source / "lung1_label.nrrd")
    shifted = sitk.ReadImage(str(lung / "lung2_label.nrrd"))
    shifted.SetOrigin([o + 5 for o in shifted.GetOrigin()])
    sitk.WriteImage(shifted, str(source / "lung2_label.nrrd"))
    (source / "broken_image.nrrd").write_bytes(b"NRRD0004\nnot really\n")
    (source / "broken_label.nrrd").write_bytes(b"NRRD0004\nnot really\n")
    (source / "nolabel_image.nrrd").write_bytes(b"")
    out = tmp_path / "out"
    assert main(["convert", "pairs", str(source), str(out), "--pair", "{case}_image.nrrd", "{case}_label.nrrd"]) == 1
    captured = capsys.readouterr()
    assert "lung2: FAILED: label map is not on the image grid: origin" in captured.err + captured.out
    assert "broken: FAILED: cannot read broken_image.nrrd" in captured.err + captured.out
    assert "nolabel: FAILED: no label file" in captured.err + captured.out
    assert "3 case(s) failed" in captured.out
    assert json.loads((out / "dataset.json").read_text())["numTraining"] == 1
    assert sorted(p.name for p in (out / "imagesTr").iterdir()) == ["lung1_0000.nii.gz"]  # no partial files
    assert sorted(p.name for p in (out / "labelsTr").iterdir()) == ["lung1.nii.gz"]


def test_undeclared_label_values_fail_the_case(shared_data, tmp_path, capsys):
    source = tmp_path / "source"
    source.mkdir()
    image = sitk.ReadImage(str(shared_data / "pyradiomics_lung_ct" / "lung1_image.nrrd"))
    label = sitk.ReadImage(str(shared_data / "pyradiomics_lung_ct" / "lung1_label.nrrd")) * 2
    sitk.WriteImage(image, str(source / "a_image.nrrd"))
    sitk.WriteImage(label, str(source / "a_label.nrrd"))
    assert main(["convert", "pairs", str(source), str(tmp_path / "out"), "--pair", "{case}_image.nrrd",
                 "{case}_label.nrrd"]) == 2
    assert "label values [2] are not declared" in capsys.readouterr().out
    assert not (tmp_path / "out" / "dataset.json").exists()
    assert main(["convert", "pairs", str(source), str(tmp_path / "out"), "--pair", "{case}_image.nrrd",
                 "{case}_label.nrrd", "--labels", "GTV", "node"]) == 0


def test_pattern_needs_the_case_placeholder():
    with pytest.raises(ValueError, match="must contain {case} exactly once"):
        PairPattern("image.nrrd", "{case}_label.nrrd")


def test_dicom_cases_convert_with_the_rtstruct_rasterised(shared_data, tmp_path, capsys):
    sarcoma = shared_data / "sts_sarcoma_ibsi"
    wrong_frame = tmp_path / "STS_008_wrong_frame"
    shutil.copytree(sarcoma / "STS_008" / "ct_dicom", wrong_frame)
    import pydicom

    rtstruct = pydicom.dcmread(wrong_frame / "rtstruct" / "RS.dcm")
    rtstruct.ReferencedFrameOfReferenceSequence[0].FrameOfReferenceUID = "1.2.3.4"
    rtstruct.save_as(wrong_frame / "rtstruct" / "RS.dcm")
    no_rtstruct = tmp_path / "images_only"
    shutil.copytree(sarcoma / "STS_019" / "ct_dicom" / "image", no_rtstruct)
    out = tmp_path / "Dataset020_Sarcoma"
    code = main(["convert", "dicom", str(sarcoma / "STS_002"), str(sarcoma / "STS_019"), str(wrong_frame),
                 str(no_rtstruct), str(out), "--roi", "gtv.*"])
    captured = capsys.readouterr()
    assert code == 1
    assert "STS_008_wrong_frame: FAILED: the RTSTRUCT's frame of reference 1.2.3.4 differs" in captured.out + captured.err
    assert "images_only: FAILED: no RTSTRUCT" in captured.out + captured.err
    dataset = RawDataset(out)
    assert [c.name for c in dataset.training_cases()] == ["STS_002", "STS_019"]
    for case in ("STS_002", "STS_019"):
        label = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "labelsTr" / f"{case}.nii.gz")))
        reference = sitk.GetArrayFromImage(sitk.ReadImage(str(sarcoma / case / "nifti" / "CT_mask.nii.gz")))
        assert np.array_equal(label, reference)
        image = sitk.ReadImage(str(out / "imagesTr" / f"{case}_0000.nii.gz"))
        assert np.allclose(image.GetOrigin(), sitk.ReadImage(str(sarcoma / case / "nifti" / "CT_image.nii.gz")).GetOrigin(),
                           atol=1e-2)


def test_dicom_unknown_roi_fails_listing_the_names(shared_data, tmp_path, capsys):
    assert main(["convert", "dicom", str(shared_data / "sts_sarcoma_ibsi" / "STS_002"), str(tmp_path / "out"),
                 "--roi", "PTV"]) == 2
    captured = capsys.readouterr()
    assert "no ROI matches 'PTV'; RS.dcm has: GTV_Mass_CT" in captured.out
    assert not (tmp_path / "out").exists()


def test_append_merges_dicom_and_file_pairs_into_one_dataset(shared_data, tmp_path, capsys):
    out = tmp_path / "Dataset010_Lung"
    assert main(["convert", "pairs", str(shared_data / "pyradiomics_lung_ct"), str(out),
                 "--pair", "{case}_image.nrrd", "{case}_label.nrrd"]) == 0
    assert main(["convert", "dicom", str(shared_data / "nsclc_radiomics_lung1_001"), str(out), "--roi", "GTV.*"]) == 2
    assert "--append or --overwrite" in capsys.readouterr().err
    assert main(["convert", "dicom", str(shared_data / "nsclc_radiomics_lung1_001"), str(out), "--roi", "GTV.*",
                 "--append"]) == 0
    dataset = RawDataset(out)
    assert [c.name for c in dataset.training_cases()] == ["lung1", "lung2", "nsclc_radiomics_lung1_001"]
    label = sitk.ReadImage(str(out / "labelsTr" / "nsclc_radiomics_lung1_001.nii.gz"))
    assert int(sitk.GetArrayViewFromImage(label).sum()) == 54_639 and label.GetSize() == (512, 512, 134)
    assert main(["convert", "pairs", str(shared_data / "pyradiomics_lung_ct"), str(out), "--append",
                 "--pair", "{case}_image.nrrd", "{case}_label.nrrd", "--modality", "MR"]) == 2
    assert "--append: " in capsys.readouterr().err


def _tiny_pairs(folder, names, shift_label=()):
    """Small synthetic image/label NRRD pairs (a bright box); labels of ``shift_label`` lie off the image grid."""
    folder.mkdir(parents=True, exist_ok=True)
    for k, name in enumerate(names):
        array = np.full((6, 12, 12), -800, np.int16)
        array[2:4, 4:8, 4:8] = 40 + k
        image = sitk.GetImageFromArray(array)
        label = sitk.GetImageFromArray((array > 0).astype(np.uint8))
        if name in shift_label:
            label.SetOrigin((5.0, 0.0, 0.0))
        sitk.WriteImage(image, str(folder / f"{name}_image.nrrd"))
        sitk.WriteImage(label, str(folder / f"{name}_label.nrrd"))
    return folder


def _snapshot(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_overwrite_that_converts_nothing_leaves_the_old_dataset_untouched(tmp_path, capsys):
    out = tmp_path / "Dataset030_Tiny"
    pattern = ["--pair", "{case}_image.nrrd", "{case}_label.nrrd"]
    assert main(["convert", "pairs", str(_tiny_pairs(tmp_path / "good", ["a", "b"])), str(out), *pattern]) == 0
    (out / "notes.txt").write_text("the user's own file")
    before = _snapshot(out)
    capsys.readouterr()
    bad = _tiny_pairs(tmp_path / "bad", ["c", "d"], shift_label=("c", "d"))
    assert main(["convert", "pairs", str(bad), str(out), *pattern, "--overwrite"]) == 2
    err = capsys.readouterr().err
    line = next(l for l in err.splitlines() if "error:" in l)
    assert line.startswith("diffumamba convert: error: no case converted (2 failed)") and "left as it was" in line, err
    assert _snapshot(out) == before                                 # every old file, byte for byte
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Dataset030_Tiny", "bad", "good"]   # no temporary left


def test_overwrite_swaps_the_new_dataset_in_and_keeps_other_files(tmp_path, capsys):
    out = tmp_path / "Dataset030_Tiny"
    pattern = ["--pair", "{case}_image.nrrd", "{case}_label.nrrd"]
    assert main(["convert", "pairs", str(_tiny_pairs(tmp_path / "good", ["a", "b"])), str(out), *pattern]) == 0
    (out / "notes.txt").write_text("the user's own file")
    new = _tiny_pairs(tmp_path / "new", ["x", "y"], shift_label=("y",))
    assert main(["convert", "pairs", str(new), str(out), *pattern, "--overwrite"]) == 1     # y failed, x converted
    assert [c.name for c in RawDataset(out).training_cases()] == ["x"]
    assert sorted(p.name for p in (out / "imagesTr").iterdir()) == ["x_0000.nii.gz"]
    assert (out / "notes.txt").read_text() == "the user's own file"
    assert sorted(p.name for p in out.iterdir()) == ["dataset.json", "imagesTr", "labelsTr", "notes.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Dataset030_Tiny", "good", "new"]


def test_an_interrupted_overwrite_leaves_the_old_dataset(tmp_path, monkeypatch):
    from diffumamba.convert.writer import DatasetWriter

    out = tmp_path / "Dataset030_Tiny"
    pattern = ["--pair", "{case}_image.nrrd", "{case}_label.nrrd"]
    assert main(["convert", "pairs", str(_tiny_pairs(tmp_path / "good", ["a", "b"])), str(out), *pattern]) == 0
    before = _snapshot(out)
    original = DatasetWriter.add

    def add_then_stop(self, name, images, label):
        original(self, name, images, label)
        raise KeyboardInterrupt

    monkeypatch.setattr(DatasetWriter, "add", add_then_stop)
    assert main(["convert", "pairs", str(_tiny_pairs(tmp_path / "new", ["x", "y"])), str(out), *pattern,
                 "--overwrite"]) == 130
    assert _snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Dataset030_Tiny", "good", "new"]


def test_a_second_conversion_into_the_same_dataset_is_refused(tmp_path, shared_data, capsys):
    """Two conversions writing one dataset would mix their cases: the second is refused while the first holds it."""
    from diffumamba.cli import main
    from diffumamba.files import output_lock

    out = tmp_path / "Dataset950_Locked"
    out.mkdir()
    with output_lock(out, "dataset folder"):
        code = main(["convert", "pairs", str(shared_data / "pyradiomics_lung_ct"), str(out), "--pair",
                     "{case}_image.nrrd", "{case}_label.nrrd"])
    assert code == 2 and "another run is writing" in capsys.readouterr().err and not (out / "dataset.json").exists()
    assert main(["convert", "pairs", str(shared_data / "pyradiomics_lung_ct"), str(out), "--pair",
                 "{case}_image.nrrd", "{case}_label.nrrd"]) == 0 and not (out / ".diffumamba.lock").exists()
