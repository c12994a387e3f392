"""Training on LIDC nodule crops: ``convert lidc`` (crops, or pasted into a host CT), patient groups in the folds,
``--case-weight``, ``--patch``, ``--threads``, ``--init-from`` and the group pattern taken from dataset.json."""

import csv
import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from conftest import write_phantoms

from diffumamba.checkpoint import load_checkpoint
from diffumamba.cli import main
from diffumamba.convert.lidc_vois import GROUP_PATTERN
from diffumamba.convert.writer import DatasetWriter
from diffumamba.data.plan import make_plan
from diffumamba.nets.config import NetworkConfig
from diffumamba.training.sampling import PatchSampler, TrainingCase
from diffumamba.training.splits import case_groups, kfold_splits, load_or_create_splits
from diffumamba.training.sampling import case_weights
from diffumamba.training.trainer import Trainer, TrainSettings

CROPS = {"LIDC-IDRI-0003": (2, 3), "LIDC-IDRI-0005": (1, 2), "LIDC-IDRI-0008": (1, 2)}    # patient: nodules


@pytest.fixture(scope="module")
def small_vois(shared_data, tmp_path_factory):
    """Six real crops of three patients: a VOI folder of links with its metadata.csv trimmed to them."""
    source = shared_data / "lidc_idri_nodule_vois"
    folder = tmp_path_factory.mktemp("vois")
    files = {f"{patient}_R_{n}.nii.gz" for patient, nodules in CROPS.items() for n in nodules}
    for part in ("image", "mask"):
        (folder / part).mkdir()
        for name in files:
            (folder / part / name).symlink_to(source / part / name)
    with (source / "metadata.csv").open(newline="") as handle:
        reader = csv.DictReader(handle)
        rows = [row for row in reader if row["file"] in files]
        fields = reader.fieldnames
    with (folder / "metadata.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fields)
        writer.writeheader()
        writer.writerows(rows)
    assert len(rows) == 6
    return folder


def cases_of(dataset):
    return sorted(p.name[:-len(".nii.gz")] for p in (dataset / "labelsTr").glob("*.nii.gz"))


# --- convert lidc ---------------------------------------------------------------------------------------------------

def test_convert_lidc_crops_as_they_are(small_vois, tmp_path, capsys):
    out = tmp_path / "Dataset501_LidcCrops"
    assert main(["convert", "lidc", str(small_vois), str(out)]) == 0
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["group_pattern"] == GROUP_PATTERN and meta["labels"] == {"background": 0, "lesion": 1}
    assert meta["numTraining"] == 6 and meta["channel_names"] == {"0": "CT"}
    names = cases_of(out)
    assert names == sorted(f"{p}_n{n}" for p, nodules in CROPS.items() for n in nodules)
    image = sitk.ReadImage(str(out / "imagesTr" / "LIDC-IDRI-0003_n2_0000.nii.gz"))
    crop = sitk.ReadImage(str(small_vois / "image" / "LIDC-IDRI-0003_R_2.nii.gz"))
    assert np.array_equal(sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(crop))        # unchanged
    assert image.GetSpacing() == pytest.approx(crop.GetSpacing())
    label = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "labelsTr" / "LIDC-IDRI-0003_n2.nii.gz")))
    assert set(np.unique(label)) == {0, 1}


def test_convert_lidc_pasted_into_a_host(small_vois, shared_data, tmp_path, capsys):
    """Each crop's lesion pasted twice into the Lung-PET-CT-Dx CT (boxes.json avoided): 80 mm boxes on its
    in-plane grid; a second conversion appended with the same pattern keeps it."""
    host = shared_data / "lung_pet_ct_dx_boxes" / "Lung_Dx-A0002"
    out = tmp_path / "Dataset502_LidcPasted"
    assert main(["convert", "lidc", str(small_vois), str(out), "--host", str(host / "ct"), str(host / "boxes.json"),
                 "--pastes", "2", "--seed", "3"]) == 0
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["group_pattern"] == GROUP_PATTERN and meta["numTraining"] == 12
    assert cases_of(out) == sorted(f"{p}_n{n}_p{k}" for p, nodules in CROPS.items() for n in nodules for k in (0, 1))
    for name in ("LIDC-IDRI-0003_n2_p0", "LIDC-IDRI-0008_n1_p1"):
        image = sitk.ReadImage(str(out / "imagesTr" / f"{name}_0000.nii.gz"))
        label = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "labelsTr" / f"{name}.nii.gz")))
        assert image.GetSpacing()[0] == pytest.approx(0.646484375)                    # the host's pixels
        assert image.GetSize()[0] * image.GetSpacing()[0] == pytest.approx(80.0, abs=1.0)
        assert label.any() and set(np.unique(label)) == {0, 1}
        hu = sitk.GetArrayFromImage(image)
        assert hu.min() >= -1100 and (hu < -600).mean() > 0.05          # lung around the lesion

    assert main(["convert", "lidc", str(small_vois), str(out), "--append"]) == 0        # the crops beside them
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["group_pattern"] == GROUP_PATTERN and meta["numTraining"] == 18


def test_an_append_with_another_group_pattern_is_refused(tmp_path):
    root = tmp_path / "Dataset503"
    writer = DatasetWriter(root, ["CT"], ["lesion"], group_pattern=GROUP_PATTERN)
    image = sitk.GetImageFromArray(np.zeros((4, 8, 8), np.int16))
    writer.add("LIDC-IDRI-0001_n1", [image], sitk.Cast(image, sitk.sitkUInt8))
    writer.finish()
    assert json.loads((root / "dataset.json").read_text())["group_pattern"] == GROUP_PATTERN
    with pytest.raises(ValueError, match="groups its cases by patient"):
        DatasetWriter(root, ["CT"], ["lesion"], append=True, group_pattern=r"^(\d+)_")
    assert DatasetWriter(root, ["CT"], ["lesion"], append=True).group_pattern == GROUP_PATTERN


# --- patient groups in the folds ------------------------------------------------------------------------------------

NAMES = ["LIDC-IDRI-0003_n2", "LIDC-IDRI-0003_n3", "LIDC-IDRI-0003_n2_p0", "LIDC-IDRI-0003_n2_p1",
         "LIDC-IDRI-0005_n1", "LIDC-IDRI-0005_n2_p0", "LIDC-IDRI-0008_n1", "LIDC-IDRI-0008_n2",
         "LIDC-IDRI-0011_n1", "LIDC-IDRI-0012_n1", "lung1", "lung2", "Lung-Dx-A0002", "LUNG1-001"]


def test_the_lidc_pattern_groups_by_patient_and_full_cts_by_themselves():
    groups = case_groups(NAMES, GROUP_PATTERN)
    assert groups["LIDC-IDRI-0003_n2_p1"] == groups["LIDC-IDRI-0003_n3"] == "LIDC-IDRI-0003"
    assert groups["lung1"] == "lung1" and groups["Lung-Dx-A0002"] == "Lung-Dx-A0002"
    assert len(set(groups.values())) == 9


def test_folds_keep_a_patients_nodules_together(tmp_path):
    splits = kfold_splits(NAMES, 3, group_pattern=GROUP_PATTERN)
    groups = case_groups(NAMES, GROUP_PATTERN)
    assert sorted(n for s in splits for n in s["val"]) == sorted(NAMES)
    for split in splits:
        assert not {groups[n] for n in split["train"]} & {groups[n] for n in split["val"]}
    full = [n for s in splits for n in s["val"] if n in ("lung1", "lung2", "Lung-Dx-A0002", "LUNG1-001")]
    assert len(full) == 4                                                 # each its own group, spread by the shuffle

    path = tmp_path / "splits_final.json"
    assert load_or_create_splits(path, NAMES, 3, group_pattern=GROUP_PATTERN) == splits
    per_case = kfold_splits(NAMES, 3)                                     # made without the pattern
    path.write_text(json.dumps(per_case))
    with pytest.raises(ValueError, match="puts one group in training and validation"):
        load_or_create_splits(path, NAMES, 3, group_pattern=GROUP_PATTERN)


# --- case weights ---------------------------------------------------------------------------------------------------

def tiny_case(name, seed=0):
    rng = np.random.default_rng(seed)
    label = np.zeros((8, 16, 16), np.int16)
    label[3:5, 6:10, 6:10] = 1
    return TrainingCase.from_arrays(name, rng.normal(size=(1, 8, 16, 16)).astype(np.float32), label)


def test_a_weighted_case_is_drawn_factor_times_as_often():
    """Two whole-CT tumours among 18 nodules, weighted 9: each drawn 9 times as often as a nodule (seeded 4000
    draws; binomial sd of the ratio about 0.4), so half the patches come from the two."""
    names = [f"LIDC-IDRI-{i:04d}_n1" for i in range(1, 19)] + ["lung1", "lung2"]
    weights = case_weights(names, {"^lung": 9.0})
    assert weights == [1.0] * 18 + [9.0, 9.0]
    sampler = PatchSampler([tiny_case(n) for n in names], (8, 8, 8), batch_size=200, seed=1, weights=weights)
    drawn = []
    for _ in range(20):
        sampler.batch()
        drawn += sampler.drawn
    per_lung = np.mean([drawn.count(n) for n in ("lung1", "lung2")])
    per_nodule = np.mean([drawn.count(n) for n in names[:18]])
    assert per_lung / per_nodule == pytest.approx(9.0, abs=1.5)
    assert abs(sum(n.startswith("lung") for n in drawn) / len(drawn) - 0.5) < 0.05

    plain = PatchSampler([tiny_case(n) for n in names], (8, 8, 8), batch_size=200, seed=1)
    plain.batch()
    assert sum(n.startswith("lung") for n in plain.drawn) < 40            # unweighted: 1 in 10


def test_bad_case_weights_are_refused():
    cases = [tiny_case("a"), tiny_case("b")]
    for bad in ([1.0], [1.0, -1.0], [0.0, 0.0], [1.0, float("nan")], [1.0, float("inf")]):
        with pytest.raises(ValueError, match="case weights"):
            PatchSampler(cases, (8, 8, 8), 2, weights=bad)
    assert case_weights(["a", "ab", "b"], {"a": 2.0, "b$": 3.0}) == [2.0, 6.0, 3.0]     # factors multiply
    assert case_weights(["a"], {}) is None
    with pytest.raises(ValueError, match=r"'\^lung' matches no training case"):
        case_weights(["LIDC-IDRI-0001_n1"], {"^lung": 5.0})


def test_a_case_weight_matching_only_one_side_of_a_split_is_not_an_error(tmp_path):
    """Checked against all training cases once; a sampler of a subset (DALE's fuzzy cases, Diff-CL's unlabelled
    ones) that holds none of the weighted cases draws them all alike instead of stopping the run."""
    config = NetworkConfig.from_dict(tiny_config())
    settings = TrainSettings(epochs=1, iterations_per_epoch=1, device="cpu", case_weights={"^lung": 5.0})
    cases = [tiny_case("lung1"), tiny_case("LIDC-IDRI-0001_n1")]
    trainer = Trainer(config, cases, [], tmp_path, settings, batch_size=2)
    assert list(trainer.batches.make_sampler(cases[1:], seed=0).p) == [1.0]
    assert list(trainer.batches.make_sampler(cases, seed=0).p) == pytest.approx([5 / 6, 1 / 6])
    with pytest.raises(ValueError, match="matches no training case"):
        Trainer(config, cases[1:], [], tmp_path / "b", settings, batch_size=2)


# --- plan: --patch --------------------------------------------------------------------------------------------------

def fingerprint(spacing=(1.0, 1.0, 1.0), shape=(40, 40, 40)):
    return {"spacings": [list(spacing)] * 3, "shapes_after_crop": [list(shape)] * 3, "channel_names": ["CT"],
            "labels": {"background": 0, "lesion": 1},
            "foreground_intensities": [{"mean": 0.0, "std": 1.0, "percentile_00_5": -1.0, "percentile_99_5": 1.0}]}


def test_patch_size_sets_the_patch_rounded_to_the_strides():
    """A lesion dataset's crops are smaller than the context a model should see: the patch is given, not the
    median shape (40 voxels here), and rounded down to a multiple of the network's total stride per axis."""
    plan = make_plan(fingerprint(), "h", patch_size=[64, 96, 100])
    strides = np.prod(np.array(plan.network["strides"]), axis=0)
    assert plan.patch_size == [int(n // s * s) for n, s in zip([64, 96, 100], strides)]
    assert plan.patch_size[:2] == [64, 96] and plan.patch_size[2] < 100 and plan.network["patch_size"] == plan.patch_size
    assert make_plan(fingerprint(), "h", max_patch=[32, 32, 32]).patch_size == [32, 32, 32]
    for bad in ([64, 96], [64, 96, 96, 96], [0, 96, 96]):
        with pytest.raises(ValueError, match="--patch needs 3 positive sizes"):
            make_plan(fingerprint(), "h", patch_size=bad)


# --- the train command ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def grouped_phantoms(tmp_path_factory):
    """The four phantoms renamed as three patients (two nodules of LIDC-IDRI-0001, one of 0002, one full CT) with
    dataset.json's group pattern, as ``convert lidc`` writes it."""
    root = write_phantoms(tmp_path_factory.mktemp("grouped") / "Dataset504_Grouped")
    names = {"c0": "LIDC-IDRI-0001_n1", "c1": "LIDC-IDRI-0001_n2", "c2": "LIDC-IDRI-0002_n1", "c3": "lung1"}
    for old, new in names.items():
        (root / "imagesTr" / f"{old}_0000.nii.gz").rename(root / "imagesTr" / f"{new}_0000.nii.gz")
        (root / "labelsTr" / f"{old}.nii.gz").rename(root / "labelsTr" / f"{new}.nii.gz")
    meta = json.loads((root / "dataset.json").read_text())
    (root / "dataset.json").write_text(json.dumps({**meta, "group_pattern": GROUP_PATTERN}))
    return root


def train(dataset, tmp_path, name, *extra):
    return main(["train", str(dataset), "--preprocessed", str(tmp_path / "pre"), "--run-dir", str(tmp_path / name),
                 "--folds", "2", "--fold", "1", "--epochs", "1", "--iterations", "1", "--validate-every", "0",
                 "--features", "4", "8", "--no-amp", "--network", "resunet", *extra])


def test_train_takes_the_group_pattern_of_dataset_json(grouped_phantoms, tmp_path_factory, capsys):
    """No --group-pattern: the folds keep LIDC-IDRI-0001's two nodules together (per case they fall apart);
    the run also takes --patch, --threads, --case-weight and --validate-cases, and a second run --init-from."""
    tmp_path = tmp_path_factory.mktemp("runs")
    torch.set_num_threads(2)                 # --threads 1 must bring it down (the suite's workers may run at 1)
    assert train(grouped_phantoms, tmp_path, "first", "--patch", "8", "16", "16", "--threads", "1",
                 "--case-weight", "^lung", "3", "--validate-cases", "1") == 0
    assert f"group pattern {GROUP_PATTERN!r} (dataset.json)" in capsys.readouterr().out
    splits = json.loads((grouped_phantoms / "splits_final.json").read_text())
    for split in splits:
        assert ("LIDC-IDRI-0001_n1" in split["val"]) == ("LIDC-IDRI-0001_n2" in split["val"])
        assert "LIDC-IDRI-0001_n1" in split["val"] or "LIDC-IDRI-0001_n1" in split["train"]
    header = load_checkpoint(tmp_path / "first" / "last.safetensors")[0]
    assert header["plan"]["patch_size"] == [8, 16, 16] and torch.get_num_threads() == 1
    assert header["cases"]["train"] == splits[1]["train"] and "lung1" in splits[1]["train"]

    assert train(grouped_phantoms, tmp_path, "tuned", "--patch", "8", "16", "16", "--init-from",
                 str(tmp_path / "first" / "last.safetensors")) == 0
    assert "initialised from" in capsys.readouterr().out
    assert train(grouped_phantoms, tmp_path, "other", "--patch", "8", "16", "16", "--features", "8", "16",
                 "--init-from", str(tmp_path / "first" / "last.safetensors")) == 2
    err = error_lines(capsys)
    assert len(err) == 1 and "its network differs from this run's in features_per_stage" in err[0]


def error_lines(capsys):
    """The command's own lines on stderr (the progress bars share it)."""
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("diffumamba")]


@pytest.mark.parametrize("extra, message", [(["--threads", "0"], "--threads must be at least 1"),
                                            (["--case-weight", "^lung", "-1"], "the factor must be a positive"),
                                            (["--case-weight", "^lung", "x"], "could not convert"),
                                            (["--case-weight", "[", "2"], "--case-weight [ 2"),
                                            (["--validate-cases", "0"], "--validate-cases must be at least 1"),
                                            (["--init-from", "nothing.safetensors"], "no such checkpoint file")])
def test_bad_training_options_are_refused_in_one_line(grouped_phantoms, tmp_path, capsys, extra, message):
    """... before the dataset is preprocessed (a typo found after an hour of preprocessing costs the hour)."""
    assert train(grouped_phantoms, tmp_path, "run", *extra) == 2
    err = error_lines(capsys)
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "pre").exists() and not (tmp_path / "run").exists()


# --- Trainer.init_weights -------------------------------------------------------------------------------------------

def tiny_config(base=4):
    from diffumamba.nets import isotropic_3d

    return isotropic_3d("resunet", n_stages=2, base_features=base, max_features=2 * base,
                        patch_size=[8, 16, 16]).to_dict()


def test_init_weights_loads_matching_weights_exactly_and_refuses_another_network(tmp_path):
    settings = TrainSettings(epochs=1, iterations_per_epoch=1, validate_every=0, device="cpu")
    cases = [tiny_case("a", 0), tiny_case("b", 1)]
    source = Trainer(NetworkConfig.from_dict(tiny_config()), cases, [], tmp_path / "a", settings, batch_size=2,
                     meta={"labels": {"background": 0, "lesion": 1}})
    source.fit(progress=False)
    saved = load_checkpoint(tmp_path / "a" / "last.safetensors")[1]

    torch.manual_seed(1)
    target = Trainer(NetworkConfig.from_dict(tiny_config()), cases, [], tmp_path / "b", settings, batch_size=2)
    assert any(not torch.equal(v, saved[k]) for k, v in target.network.state_dict().items())
    target.init_weights(tmp_path / "a" / "last.safetensors")
    mine = target.network.state_dict()
    assert set(mine) == set(saved) and all(torch.equal(mine[k], saved[k]) for k in saved)
    assert target.start_epoch == 0                                          # weights only: training starts anew

    other = Trainer(NetworkConfig.from_dict(tiny_config(base=8)), cases, [], tmp_path / "c", settings, batch_size=2)
    before = {k: v.clone() for k, v in other.network.state_dict().items()}
    with pytest.raises(ValueError, match="its network differs from this run's in features_per_stage"):
        other.init_weights(tmp_path / "a" / "last.safetensors")
    assert all(torch.equal(v, before[k]) for k, v in other.network.state_dict().items())
