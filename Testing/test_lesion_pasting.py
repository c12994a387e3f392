"""Real LIDC nodules pasted into real chest CTs (``data/lesion_pasting.py``, ``convert/lidc_vois.py``).

Hosts: the Lung-PET-CT-Dx CT ``Lung_Dx-A0002`` (DICOM, 8 mm slices, tumour boxed per slice in ``boxes.json``) and
the pyradiomics ``lung2`` CT (NRRD, 5 mm slices, tumour label map). Lesions: eight crops spread over the nodule
sizes (3-32 mm), each pasted into both hosts on the fine grid (the host on the crop's slices) and on the host's own
grid. The hosts and the 32 pastings are made once per module.
"""

import json
import shutil

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage
from scipy.spatial import cKDTree

from diffumamba.convert.lidc_vois import _read_pair, boxes_mask, read_host, read_voi_folder
from diffumamba.data.lesion_pasting import Host, body_air, lesion_radius_mm, lung_mask, paste_lesion

QUANTILES = (0.05, 0.2, 0.35, 0.5, 0.65, 0.8, 0.92, 0.99)      # of the crops sorted by diameter
MARGIN_MM = 15.0                                                # Host.candidates' default distance to the tumour


@pytest.fixture(scope="module")
def vois(shared_data):
    return read_voi_folder(shared_data / "lidc_idri_nodule_vois")


@pytest.fixture(scope="module")
def hosts(shared_data):
    """name -> (Host, tumour mask on its grid, air outside its body)."""
    found = {}
    for path, avoid in ((shared_data / "lung_pet_ct_dx_boxes" / "Lung_Dx-A0002" / "ct",
                         shared_data / "lung_pet_ct_dx_boxes" / "Lung_Dx-A0002" / "boxes.json"),
                        (shared_data / "pyradiomics_lung_ct" / "lung2_image.nrrd",
                         shared_data / "pyradiomics_lung_ct" / "lung2_label.nrrd")):
        name, image, tumour = read_host(path, avoid)
        found[name] = (Host.from_image(image, name, tumour), tumour,
                       body_air(sitk.GetArrayFromImage(image).astype(np.float32)))
    return found


@pytest.fixture(scope="module")
def pastes(vois, hosts):
    """Each chosen crop pasted into each host, on the fine grid (seed k) and on the host's grid (seed k + 100)."""
    chosen = sorted(vois, key=lambda v: (v.diameter_mm, v.name))
    chosen = [chosen[int(q * (len(chosen) - 1))] for q in QUANTILES]
    done = []
    for name, (host, tumour, air) in hosts.items():
        for k, voi in enumerate(chosen):
            image, mask = _read_pair(voi)
            for seed, fine in ((k, 1.0), (k + 100, 0.0)):
                pasted = paste_lesion(host, image, mask, np.random.default_rng(seed), fine_grid_share=fine)
                assert pasted is not None, f"no room for {voi.name} in {name}"
                done.append({"host": name, "voi": voi, "crop": (image, mask), "image": pasted[0],
                             "mask": pasted[1], "placement": pasted[2]})
    return done


def on_box(array, host_image, box):
    """A host-grid array sampled at the box's voxels (nearest neighbour)."""
    image = sitk.GetImageFromArray(array.astype(np.uint8))
    image.CopyInformation(host_image)
    return sitk.GetArrayFromImage(sitk.Resample(image, box, sitk.Transform(), sitk.sitkNearestNeighbor, 0)) > 0


def points_mm(image, mask):
    """Physical points (N, 3, LPS mm) of ``mask``'s voxels on ``image``'s grid."""
    index = np.argwhere(mask)[:, ::-1].astype(float)
    direction = np.array(image.GetDirection()).reshape(3, 3)
    return np.asarray(image.GetOrigin()) + (index * np.asarray(image.GetSpacing())) @ direction.T


def farthest_mm(mask_image):
    """How far the crop's mask reaches from its mean (where pasting centres it), in mm."""
    points = np.argwhere(sitk.GetArrayFromImage(mask_image) > 0) * np.array(mask_image.GetSpacing()[::-1])
    return float(np.linalg.norm(points - points.mean(0), axis=1).max())


def arrays(paste):
    return sitk.GetArrayFromImage(paste["image"]), sitk.GetArrayFromImage(paste["mask"]) > 0


# --- the crops ------------------------------------------------------------------------------------------------------

def test_the_voi_folder_holds_993_crops_of_550_patients(vois):
    assert len(vois) == 993 and len({v.patient for v in vois}) == 550
    assert len({v.name for v in vois}) == 993 and vois[0].name == "LIDC-IDRI-0001_n1"
    assert 3.0 < min(v.diameter_mm for v in vois) and max(v.diameter_mm for v in vois) < 33.0


def test_a_voi_folder_with_a_missing_or_stray_file_is_refused(shared_data, tmp_path):
    source, copy = shared_data / "lidc_idri_nodule_vois", tmp_path / "vois"
    for part in ("image", "mask"):
        (copy / part).mkdir(parents=True)
        for path in (source / part).iterdir():
            (copy / part / path.name).symlink_to(path)
    shutil.copy(source / "metadata.csv", copy / "metadata.csv")
    assert len(read_voi_folder(copy)) == 993

    (copy / "mask" / "LIDC-IDRI-0003_R_2.nii.gz").unlink()
    with pytest.raises(FileNotFoundError, match="1 file.*missing.*LIDC-IDRI-0003_R_2"):
        read_voi_folder(copy)
    (copy / "mask" / "LIDC-IDRI-0003_R_2.nii.gz").symlink_to(source / "mask" / "LIDC-IDRI-0003_R_2.nii.gz")

    (copy / "image" / "LIDC-IDRI-9999_R_1.nii.gz").symlink_to(source / "image" / "LIDC-IDRI-0003_R_2.nii.gz")
    with pytest.raises(ValueError, match="1 crop.*does not list.*LIDC-IDRI-9999_R_1"):
        read_voi_folder(copy)
    with pytest.raises(FileNotFoundError, match="metadata.csv is missing"):
        read_voi_folder(tmp_path)


def test_a_lesions_reach_covers_its_whole_mask(vois):
    """``lesion_radius_mm`` is what placement keeps inside the lung and away from the tumour: every voxel of the
    mask lies within it of the mask's mean. Half the largest axis extent fell short for 95 % of the crops (up to
    1.78 times for these oblique ones)."""
    by_name = {v.name: v for v in vois}
    for name in ("LIDC-IDRI-1002_n4", "LIDC-IDRI-0179_n9", "LIDC-IDRI-0734_n1", "LIDC-IDRI-0001_n1"):
        mask = _read_pair(by_name[name])[1]
        reach = lesion_radius_mm(sitk.GetArrayFromImage(mask) > 0, mask.GetSpacing()[::-1])
        assert reach == pytest.approx(farthest_mm(mask))
    rod = np.zeros((20, 20, 20), bool)
    rod[np.arange(20), np.arange(20), np.arange(20)] = True           # a diagonal rod: 19 * sqrt(3) mm long
    assert lesion_radius_mm(rod, (1.0, 1.0, 1.0)) == pytest.approx(9.5 * np.sqrt(3))


# --- the hosts ------------------------------------------------------------------------------------------------------

def test_lung_mask_finds_the_lungs_of_real_chest_cts(hosts, shared_data):
    """Both lungs, 2.7 l (A0002: 240 mm of chest) and 3.9 l (lung2), never air outside the body; lung2's stomach
    gas (70 ml of enclosed air under the diaphragm) is not lung, and two lungs apart (NSCLC 1-001) both are."""
    litres = {}
    for name, (host, _, air) in hosts.items():
        hu = sitk.GetArrayFromImage(host.image)
        litres[name] = host.lung.sum() * np.prod(host.image.GetSpacing()) / 1e6
        assert not (host.lung & air).any()
        assert -880 < hu[host.lung].mean() < -700                  # aerated parenchyma with its vessels
        labels, count = ndimage.label(host.lung)
        sizes = ndimage.sum(host.lung, labels, range(1, count + 1)) * np.prod(host.image.GetSpacing()) / 1e6
        assert sizes.min() > 1.0, f"{name}: a 'lung' of {sizes.min() * 1000:.0f} ml"
    assert 2.0 < litres["Lung-Dx-A0002"] < 4.0 and 3.0 < litres["lung2-image"] < 6.0

    _, image, _ = read_host(shared_data / "nsclc_radiomics_lung1_001" / "ct")
    lungs = lung_mask(sitk.GetArrayFromImage(image).astype(np.float32), image.GetSpacing()[::-1])
    labels, count = ndimage.label(lungs)
    sizes = sorted(ndimage.sum(lungs, labels, range(1, count + 1)) * np.prod(image.GetSpacing()) / 1e6)
    assert count == 2 and sizes[0] > 1.5 and 4.0 < sum(sizes) < 7.0


def test_boxes_mask_puts_each_box_on_its_slice(shared_data, hosts, tmp_path):
    """Each box of boxes.json lands on the slice of the DICOM file it was drawn on, with its rows and columns."""
    folder = shared_data / "lung_pet_ct_dx_boxes" / "Lung_Dx-A0002"
    host = hosts["Lung-Dx-A0002"][0]
    boxes = json.loads((folder / "boxes.json").read_text())
    mask = boxes_mask(folder / "boxes.json", host.image)
    slices = set()
    for box in boxes:
        drawn_on = sitk.ReadImage(str(folder / "ct" / box["file"]))
        k = host.image.TransformPhysicalPointToIndex(drawn_on.GetOrigin())[2]
        slices.add(k)
        rows, columns = slice(box["row_min"], box["row_max"] + 1), slice(box["column_min"], box["column_max"] + 1)
        assert mask[k][rows, columns].all()
        assert mask[k].sum() == (box["row_max"] - box["row_min"] + 1) * (box["column_max"] - box["column_min"] + 1)
    assert len(boxes) == 10 and set(np.flatnonzero(mask.any((1, 2)))) == slices
    hu = sitk.GetArrayFromImage(host.image)
    assert hu[mask].mean() > hu[host.lung].mean() + 300             # the boxes hold the tumour, not air

    (tmp_path / "boxes.json").write_text(json.dumps([{**boxes[0], "z_mm": 1000.0}]))
    with pytest.raises(ValueError, match="outside the CT"):
        boxes_mask(tmp_path / "boxes.json", host.image)


# --- the pastings ---------------------------------------------------------------------------------------------------

def test_the_pastings_cover_both_places_and_both_grids(pastes):
    assert {p["placement"].kind for p in pastes} == {"parenchyma", "pleura"}
    assert sum(p["placement"].fine_grid for p in pastes) == len(pastes) // 2
    assert all(0.8 <= p["placement"].scale <= 1.25 for p in pastes)
    for paste in pastes:
        spacing = paste["image"].GetSpacing()
        assert paste["image"].GetPixelID() == sitk.sitkInt16 and paste["mask"].GetPixelID() == sitk.sitkUInt8
        assert all(abs(n * s - 80.0) <= s for n, s in zip(paste["image"].GetSize(), spacing))     # the 80 mm box


def test_a_pasted_lesion_keeps_its_volume_on_the_fine_grid(pastes):
    """Volume = the crop's × scale³. The mask is resampled linearly and cut at 0.5, which moves its surface by well
    under half a voxel: the difference stays under half the volume of the mask's one-voxel surface layer (found:
    under 0.2 of it), and under 5 % for nodules of 10 mm or more (found: 2.5 %)."""
    for paste in (p for p in pastes if p["placement"].fine_grid):
        crop = sitk.GetArrayFromImage(paste["crop"][1]) > 0
        expected = crop.sum() * np.prod(paste["crop"][1].GetSpacing()) * paste["placement"].scale ** 3
        mask = arrays(paste)[1]
        voxel = np.prod(paste["mask"].GetSpacing())
        surface = (mask & ~ndimage.binary_erosion(mask)).sum() * voxel
        error = abs(mask.sum() * voxel - expected)
        assert error <= 0.5 * surface, (paste["voi"].name, error, surface)
        if paste["voi"].diameter_mm >= 10:
            assert error <= 0.05 * expected, paste["voi"].name


def test_a_pasted_lesion_keeps_its_hu_on_the_fine_grid(pastes):
    """Inside the pasted mask the lesion is pasted as it is (no blend): its mean HU lies between the crop's means
    inside its mask shrunk and grown by one voxel (linear resampling mixes at most one voxel across the edge)."""
    for paste in (p for p in pastes if p["placement"].fine_grid):
        hu = sitk.GetArrayFromImage(paste["crop"][0]).astype(float)
        crop = sitk.GetArrayFromImage(paste["crop"][1]) > 0
        inner = ndimage.binary_erosion(crop)
        bounds = sorted([hu[inner if inner.any() else crop].mean(), hu[ndimage.binary_dilation(crop)].mean()])
        image, mask = arrays(paste)
        assert bounds[0] - 1 <= image[mask].mean() <= bounds[1] + 1, (paste["voi"].name, image[mask].mean(), bounds)
        assert abs(image[mask].mean() - hu[crop].mean()) < 0.3 * hu[crop].std() + 10


def test_a_pasted_lesion_lies_in_the_lung_or_on_its_border(pastes, hosts):
    """Parenchyma: wholly in the lung. Pleura: its centre at least half its reach deep, so no voxel lies further
    than half its reach (+ one voxel) outside the lung; over all pastings at least 90 % of the lesion is lung."""
    inside, total = 0, 0
    for paste in pastes:
        host = hosts[paste["host"]][0]
        mask = arrays(paste)[1]
        lung = on_box(host.lung, host.image, paste["mask"])
        spacing = np.array(paste["mask"].GetSpacing()[::-1])
        inside, total = inside + (mask & lung).sum(), total + mask.sum()
        if paste["placement"].kind == "parenchyma":
            assert (mask & lung).sum() >= 0.99 * mask.sum(), paste["voi"].name
        else:
            reach = farthest_mm(paste["crop"][1]) * paste["placement"].scale
            away = ndimage.distance_transform_edt(~lung, sampling=spacing)[mask].max()
            assert away <= 0.5 * reach + np.linalg.norm(spacing), (paste["voi"].name, away, reach)
    assert inside >= 0.9 * total


def test_a_pasted_lesion_is_never_in_air_outside_the_body_nor_near_the_hosts_tumour(pastes, hosts):
    """The tumour (lung2's label, A0002's boxes) keeps 15 mm from the lesion's reach; the interpolated mask edge
    may come half a (scaled) crop voxel closer: at least 13 mm."""
    for paste in pastes:
        host, tumour, air = hosts[paste["host"]]
        mask = arrays(paste)[1]
        assert not (mask & on_box(air, host.image, paste["mask"])).any(), paste["voi"].name
        nearest = cKDTree(points_mm(host.image, tumour)).query(points_mm(paste["mask"], mask))[0].min()
        assert nearest >= MARGIN_MM - 2.0, (paste["host"], paste["voi"].name, nearest)


def test_the_box_lies_inside_the_scan(pastes, hosts):
    """Every voxel of the box samples the host (no -1024 invented beyond its first or last slice)."""
    for paste in pastes:
        host = hosts[paste["host"]][0]
        size = np.array(paste["image"].GetSize())
        for corner in np.array(np.meshgrid(*[[0, n - 1] for n in size])).reshape(3, -1).T:
            point = paste["image"].TransformIndexToPhysicalPoint([int(c) for c in corner])
            index = np.array(host.image.TransformPhysicalPointToContinuousIndex(point))
            assert np.all(index >= -0.5 - 1e-6) and np.all(index <= np.array(host.image.GetSize()) - 0.5 + 1e-6)


def test_the_lesions_surroundings_replace_only_the_hosts_lung(pastes, hosts):
    """Outside the lesion and outside the host's lung the box is the host as it was: the crop's 2 mm of lung air
    is not pasted over heart, chest wall or diaphragm (a dark ring there would mark every lesion)."""
    checked = 0
    for paste in pastes:
        host = hosts[paste["host"]][0]
        image, mask = arrays(paste)
        lung = sitk.GetImageFromArray(host.lung.astype(np.float32))
        lung.CopyInformation(host.image)
        lung = sitk.GetArrayFromImage(sitk.Resample(lung, paste["image"], sitk.Transform(), sitk.sitkLinear, 0.0))
        region = sitk.GetArrayFromImage(sitk.Resample(host.image, paste["image"], sitk.Transform(), sitk.sitkLinear,
                                                      -1024.0, sitk.sitkFloat32))
        spacing = paste["image"].GetSpacing()[::-1]
        near = (ndimage.distance_transform_edt(~mask, sampling=spacing) <= 4.0) & ~mask & (lung == 0)
        assert np.array_equal(image[near], np.round(region[near]).astype(np.int16)), paste["voi"].name
        checked += near.sum()
    assert checked > 1000                              # lesions did touch tissue beyond the lung


def test_a_pasting_is_reproducible_with_its_seed(vois, hosts):
    host = hosts["lung2-image"][0]
    image, mask = _read_pair(vois[0])
    first, again, other = (paste_lesion(host, image, mask, np.random.default_rng(seed)) for seed in (5, 5, 6))
    assert first[2] == again[2] and first[2] != other[2]
    for a, b in zip(first[:2], again[:2]):
        assert np.array_equal(sitk.GetArrayFromImage(a), sitk.GetArrayFromImage(b)) and a.GetOrigin() == b.GetOrigin()


def test_a_host_without_lungs_takes_no_lesion(vois):
    """Soft tissue only (e.g. an abdomen): no lungs, no candidates, None (the converter tries the next host)."""
    tissue = sitk.GetImageFromArray(np.full((40, 64, 64), 40, np.int16))
    tissue.SetSpacing((1.0, 1.0, 2.0))
    host = Host.from_image(tissue, "abdomen")
    image, mask = _read_pair(vois[0])
    assert not host.lung.any() and paste_lesion(host, image, mask, np.random.default_rng(0)) is None
