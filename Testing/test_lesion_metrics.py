"""Lesion-level figures of full-CT predictions (evaluation/lesions.py) and leave-one-patient-out splits with pasted
copies (training/lopo_splits.py), on arrays whose answers are known by construction."""

from __future__ import annotations

import json

import numpy as np
import pytest

from diffumamba.evaluation.lesions import false_positive_ml, lesion_detection, pieces
from diffumamba.training.lopo_splits import leave_one_group_out, main as lopo_main


def _two_tumours():
    ref = np.zeros((20, 40, 40), bool)
    ref[2:10, 2:12, 2:12] = True          # 800 voxels = 6.4 ml at 2 mm
    ref[12:18, 20:30, 20:30] = True       # 600 voxels = 4.8 ml: under 5 ml, not counted
    return ref


def test_a_tumour_counts_as_found_when_half_of_it_is_covered():
    ref, spacing = _two_tumours(), (2.0, 2.0, 2.0)
    pred = np.zeros_like(ref)
    pred[2:6, 2:12, 2:12] = True          # exactly half of the big one
    rows = lesion_detection(pred, ref, spacing)
    assert len(rows) == 1 and rows[0]["volume_ml"] == pytest.approx(6.4)
    assert rows[0]["covered"] == pytest.approx(0.5) and rows[0]["detected"]
    pred[5] = False                       # 7/16 covered
    assert not lesion_detection(pred, ref, spacing)[0]["detected"]
    assert lesion_detection(pred, np.zeros_like(ref), spacing) == []


def test_false_positives_and_pieces_count_what_lies_outside_the_gtv():
    ref, spacing = _two_tumours(), (2.0, 2.0, 2.0)
    pred = ref.copy()
    pred[0:2, 30:40, 30:40] = True        # 200 voxels = 1.6 ml elsewhere
    pred[19, 0, 0] = True                 # a 0.008 ml speck
    assert false_positive_ml(pred, ref, spacing) == pytest.approx(1.608)
    assert pieces(pred, spacing) == 3     # both tumours and the 1.6 ml piece; the speck is under 1 ml
    assert pieces(np.zeros_like(pred), spacing) == 0
    diagonal = np.zeros((3, 3, 3), bool)
    diagonal[0, 0, 0] = diagonal[1, 1, 1] = True
    assert pieces(diagonal, (10.0, 10.0, 10.0)) == 1      # corner neighbours are one piece (26-connected)


def test_leave_one_patient_out_keeps_copies_with_their_patient_and_box_hosts_in_training(tmp_path):
    pattern = r"^(.+?)_w\d+(?:z\d+)?$|^(.+)$"
    names = ["lung1", "lung1_w0", "lung1_w1", "lung2", "lung2_w0", "pat_3", "pat_3_w0", "Lung-Dx-A1_w0z0"]
    splits = leave_one_group_out(names, pattern, always="Lung-Dx")
    assert [s["val"] for s in splits] == [["lung1"], ["lung2"], ["pat_3"]]
    for split in splits:
        held = split["val"][0]
        assert not any(n == held or n.startswith(held + "_w") for n in split["train"])
        assert "Lung-Dx-A1_w0z0" in split["train"]
    assert sorted(splits[0]["train"]) == sorted(["Lung-Dx-A1_w0z0", "lung2", "lung2_w0", "pat_3", "pat_3_w0"])
    with pytest.raises(ValueError, match="two groups"):
        leave_one_group_out(["lung1", "lung1_w0", "Lung-Dx-A1_w0z0"], pattern, always="Lung-Dx")


def test_the_splits_command_writes_what_training_reads(tmp_path, capsys):
    from diffumamba.training.splits import load_or_create_splits

    root = tmp_path / "Dataset1_X"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    names = ["a", "a_w0", "b", "b_w0", "c", "Dx_w0z0"]
    for name in names:
        (root / "imagesTr" / f"{name}_0000.nii.gz").write_bytes(b"")
        (root / "labelsTr" / f"{name}.nii.gz").write_bytes(b"")
    (root / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT"}, "labels": {"background": 0, "GTV": 1},
                                                   "file_ending": ".nii.gz", "numTraining": 6,
                                                   "group_pattern": r"^(.+?)_w\d+(?:z\d+)?$|^(.+)$"}))
    assert lopo_main([str(root), "--always", "^Dx"]) == 0
    assert "3 folds" in capsys.readouterr().out
    splits = load_or_create_splits(root / "splits_final.json", names, 3, group_pattern=r"^(.+?)_w\d+(?:z\d+)?$|^(.+)$")
    assert [s["val"] for s in splits] == [["a"], ["b"], ["c"]]
    (root / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT"}, "labels": {"background": 0, "GTV": 1},
                                                   "file_ending": ".nii.gz", "numTraining": 6}))
    assert lopo_main([str(root), "--always", "."]) == 2               # nothing left to hold out: one clear line
    assert "two groups" in capsys.readouterr().err


def test_the_lesion_filter_keeps_whole_pieces_by_where_they_lie():
    """A chest phantom (HU, 2 mm voxels): one piece inside a lung, one in the mediastinum touching the lung, one in
    the chest wall 20 mm from it, and a 0.5 ml speck in the lung."""
    from diffumamba.inference.lesion_filter import keep_pieces

    z, y, x = np.mgrid[:40, :100, :100]
    hu = np.full((40, 100, 100), -1000.0)
    hu[((y - 50) / 45.0) ** 2 + ((x - 50) / 48.0) ** 2 <= 1] = 40.0          # body
    lungs = (((y - 50) / 30.0) ** 2 + ((x - 26) / 14.0) ** 2 <= 1) | (((y - 50) / 30.0) ** 2 + ((x - 74) / 14.0) ** 2 <= 1)
    hu[lungs & (z >= 3) & (z < 37)] = -850.0
    pred = np.zeros(hu.shape, bool)
    inside = (z >= 15) & (z < 25) & (y >= 45) & (y < 55) & (x >= 22) & (x < 30)   # in the right lung
    touching = (z >= 15) & (z < 25) & (y >= 45) & (y < 55) & (x >= 42) & (x < 58)  # mediastinum, lung at x 40 and 60
    wall = (z >= 15) & (z < 25) & (y >= 2) & (y < 8) & (x >= 46) & (x < 54)        # chest wall, 20+ mm from lung
    speck = (z >= 10) & (z < 12) & (y >= 60) & (y < 64) & (x >= 70) & (x < 74)     # 32 voxels = 0.26 ml
    pred = inside | touching | wall | speck
    spacing = (2.0, 2.0, 2.0)
    assert np.array_equal(keep_pieces(pred, hu, spacing, "touching"), inside | touching | speck)
    assert np.array_equal(keep_pieces(pred, hu, spacing, "inside"), inside | speck)
    assert np.array_equal(keep_pieces(pred, hu, spacing, "min-ml"), inside | touching | wall)
    assert not keep_pieces(np.zeros_like(pred), hu, spacing, "touching").any()
    with pytest.raises(ValueError, match="unknown rule"):
        keep_pieces(pred, hu, spacing, "largest")
