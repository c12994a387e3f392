"""Click correction: the simulated user, the network's extra channels, the lesion box, requests in patient mm, and
correcting on an image's own grid (docs/correction.md)."""

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from diffumamba.correction.clicks import SIGMA_MM, Click, click_maps, next_click
from diffumamba.correction.corrector import Corrector, correct_on_grid
from diffumamba.correction.network_input import correction_channels, lesion_box
from diffumamba.correction.request import drawn_slices, grid_clicks, parse_request
from diffumamba.correction.session import clicks_to_reach, simulate_session
from diffumamba.evaluation.metrics import dice


def ball(shape, centre, radius, spacing=(1.0, 1.0, 1.0)):
    grid = np.indices(shape).astype(float)
    return sum(((g - c) * s) ** 2 for g, c, s in zip(grid, centre, spacing)) <= radius ** 2


def test_the_user_clicks_the_centre_of_the_largest_error():
    reference = ball((20, 30, 30), (10, 15, 15), 6)
    assert next_click(np.zeros_like(reference), reference, (1, 1, 1)) == Click((10.0, 15.0, 15.0), True)
    spurious = ball((20, 30, 30), (10, 4, 25), 3)               # smaller than the miss: the miss comes first
    missed_core = reference & ~ball((20, 30, 30), (10, 15, 15), 4)
    click = next_click(missed_core | spurious, reference, (1, 1, 1))
    assert click.positive and np.allclose(click.index, (10, 15, 15), atol=1)
    click = next_click(reference | spurious, reference, (1, 1, 1))   # only the spurious blob is wrong
    assert click == Click((10.0, 4.0, 25.0), False)
    assert next_click(reference, reference, (1, 1, 1)) is None


def test_the_deepest_point_is_measured_in_millimetres():
    # a slab 5 slices thick and 7 voxels wide: in voxels its middle row is deepest across y, but with 4 mm
    # slices the z-extent (20 mm) beats the 7 mm width, so depth is limited by y: any z in the middle row
    error = np.zeros((5, 9, 40), bool)
    error[:, 1:8, 2:38] = True
    click = next_click(np.zeros_like(error), error, (4.0, 1.0, 1.0))
    assert click.index[1] == 4 and 5 <= click.index[2] <= 34
    error = np.zeros((9, 9, 9), bool)
    error[1:8, 1:8, 1:8] = True
    assert next_click(np.zeros_like(error), error, (1.0, 1.0, 1.0)).index == (4.0, 4.0, 4.0)


def test_click_maps_are_gaussians_of_sigma_millimetres_on_any_grid():
    spacing = (3.0, 1.5, 1.5)
    maps = click_maps((12, 20, 20), [Click((6, 10, 10), True), Click((2.0, 3.0, 3.0), False)], spacing)
    assert maps.shape == (2, 12, 20, 20) and maps.dtype == np.float32
    assert maps[0, 6, 10, 10] == pytest.approx(1.0)
    assert maps[0, 7, 10, 10] == pytest.approx(np.exp(-9 / (2 * SIGMA_MM ** 2)), rel=1e-5)     # 3 mm away
    assert maps[0, 6, 12, 10] == pytest.approx(np.exp(-9 / (2 * SIGMA_MM ** 2)), rel=1e-5)     # 2 voxels of 1.5 mm
    assert maps[1, 2, 3, 3] == pytest.approx(1.0) and maps[1, 6, 10, 10] == 0 and maps[0, 2, 3, 3] == 0
    assert click_maps((4, 4, 4), [Click((40.0, 2.0, 2.0), True)], (1, 1, 1)).max() == 0       # off the grid
    twice = click_maps((8, 8, 8), [Click((4, 4, 4), True), Click((4, 4, 5), True)], (1, 1, 1))
    assert twice.max() == pytest.approx(1.0)                        # combined by maximum, not summed


def test_correction_channels_add_drawn_slices_densely():
    mask = ball((10, 16, 16), (5, 8, 8), 4)
    drawn = drawn_slices(mask, [5], "test")
    channels = correction_channels(mask, [], (1, 1, 1), drawn)
    assert channels.shape == (3, 10, 16, 16)
    assert np.array_equal(channels[0], mask)
    assert np.array_equal(channels[1, 5] > 0, mask[5]) and np.array_equal(channels[2, 5] > 0, ~mask[5])
    assert channels[1:, :5].max() == 0 and channels[1:, 6:].max() == 0
    with pytest.raises(ValueError, match=r"test: fixed slice\(s\) \[10\] outside the image's 10 slices"):
        drawn_slices(mask, [10], "test")


def test_lesion_box_holds_mask_clicks_and_margin_and_at_least_a_patch():
    mask = np.zeros((40, 100, 100), bool)
    mask[18:22, 40:50, 40:50] = True
    mask[30:32, 90:95, 90:95] = True                                 # a second lesion, far from the click
    box = lesion_box(mask.shape, (3.0, 1.0, 1.0), mask, [Click((20.0, 54.0, 45.0), False)], None, 6.0, (30, 20, 20))
    assert box == (slice(15, 25), slice(34, 61), slice(34, 56))      # 30 mm of z at 3 mm, 6 mm margins in-plane
    alone = lesion_box(mask.shape, (3.0, 1.0, 1.0), mask, [Click((20.0, 70.0, 45.0), True)], None, 6.0, (3, 4, 4))
    assert alone == (slice(18, 23), slice(64, 77), slice(39, 52))    # 5 mm from neither lesion: the click alone
    drawn = drawn_slices(mask, [31], "t")
    assert lesion_box(mask.shape, (3.0, 1.0, 1.0), mask, [], drawn, 6.0, (3, 4, 4)) == (
        slice(28, 34), slice(83, 100), slice(83, 100))     # the drawn slice's lesion only, slid back inside the grid
    edge = lesion_box(mask.shape, (1.0, 1.0, 1.0), mask, [Click((0.0, 0.0, 0.0), True)], None, 5.0, (60, 10, 10))
    assert edge[0] == slice(0, 40) and edge[1].start == 0 and edge[2].start == 0        # clipped to the grid
    huge = np.ones((100, 400, 400), bool)                             # a spurious region filling the scan
    capped = lesion_box(huge.shape, (1.0, 1.0, 1.0), huge, [Click((50.0, 300.0, 100.0), False)], None, 5.0, (10,) * 3)
    assert capped == (slice(0, 100), slice(220, 380), slice(20, 180))   # 160 mm around the click
    with pytest.raises(ValueError, match="nothing to correct"):
        lesion_box(mask.shape, (1, 1, 1), np.zeros_like(mask), [], None, 5.0, (10, 10, 10))


def test_requests_in_lps_or_ras_and_their_errors():
    request = parse_request({"coordinate_system": "RAS", "clicks": [{"point": [10, -20, 30], "label": "include"},
                                                                    {"point": [1, 2, 3.5], "label": "exclude"}],
                             "fixed_slices": [3, 1, 3]}, "c.json")
    assert request.points == [(-10.0, 20.0, 30.0), (-1.0, -2.0, 3.5)]
    assert request.positive == [True, False] and request.fixed_slices == [1, 3]
    for bad, message in (([], "expected a JSON object"), ({"coordinate_system": "XYZ"}, "LPS or RAS"),
                         ({"clicks": [{"point": [1, 2], "label": "include"}]}, "click 1 needs 'point'"),
                         ({"clicks": [{"point": [1, 2, float("nan")], "label": "include"}]}, "three finite"),
                         ({"clicks": [{"point": [1, 2, 3], "label": "maybe"}]}, "'include' or 'exclude'"),
                         ({"fixed_slices": [1.5]}, "slice indices")):
        with pytest.raises(ValueError, match=f"c.json: .*{message}"):
            parse_request(bad, "c.json")


def test_clicks_map_to_the_image_grid_through_its_direction():
    image = sitk.Image(40, 30, 20, sitk.sitkInt16)
    image.SetSpacing((0.8, 0.8, 2.5))
    image.SetOrigin((-100.0, 50.0, 7.0))
    image.SetDirection((1, 0, 0, 0, -1, 0, 0, 0, 1))      # y runs towards anterior
    point = image.TransformContinuousIndexToPhysicalPoint((12.5, 3.0, 9.0))
    [click] = grid_clicks(parse_request({"clicks": [{"point": list(point), "label": "include"}]}, "r"), image, "r")
    assert np.allclose(click.index, (9.0, 3.0, 12.5)) and click.positive
    outside = parse_request({"clicks": [{"point": [500, 0, 0], "label": "exclude"}]}, "r")
    with pytest.raises(ValueError, match="r: click 1 at .* lies outside the image"):
        grid_clicks(outside, image, "r")


def grow_into_clicked_error(reference):
    """A corrector that adds (removes) the connected error region a click falls in: exact per region."""
    from scipy import ndimage

    def correct(mask, clicks):
        out = mask.copy()
        for click in clicks:
            error = reference != out
            regions, _ = ndimage.label(error)
            at = regions[tuple(int(round(i)) for i in click.index)]
            if at:
                out[regions == at] = click.positive
        return out
    return correct


def test_the_protocol_counts_clicks_until_the_dice_is_reached():
    reference = ball((20, 40, 40), (10, 20, 20), 8)
    start = reference & ~ball((20, 40, 40), (10, 20, 24), 5)             # a bite missing
    start |= ball((20, 40, 40), (10, 5, 5), 3)                          # and a spurious blob
    scores = simulate_session(grow_into_clicked_error(reference), reference, start, (1, 1, 1), 4)
    assert scores[0] == pytest.approx(0.8432, abs=1e-4) and scores[2:] == [1.0, 1.0, 1.0]
    assert scores[1] == pytest.approx(0.9717, abs=1e-4)     # the bite (482 voxels) before the blob (123)
    assert clicks_to_reach(scores, 0.85) <= 1 and clicks_to_reach(scores, 0.999) == 2
    assert clicks_to_reach([0.1, 0.2, 0.3], 0.9) == 2                   # never reached: the click limit


class IncludeChannelNet(torch.nn.Module):
    """Predicts the lesion where the include channel exceeds 1/2: a ball of 1.18 sigma around each positive
    click. It knows nothing of images, so what ``Corrector`` returns shows only where its grids put the clicks."""

    def forward(self, x):
        include = x[:, -2:-1]
        return torch.cat([0.5 - include, include - 0.5], 1) * 10


def corrector_plan(spacing, patch):
    return {"target_spacing": list(spacing), "patch_size": list(patch), "channel_names": ["CT"],
            "intensities": [{"mean": 0.0, "std": 100.0, "percentile_00_5": -1000.0, "percentile_99_5": 1000.0}],
            "image_order": 1, "task": "correction"}


def test_a_click_lands_where_it_was_placed_on_the_image_grid(shared_data):
    """A real CT (0.7 x 0.7 x 5 mm) corrected on a 2 x 2 x 2 mm model grid: the include ball comes back centred
    on the click in patient coordinates, the mask outside the lesion box and the fixed slice are unchanged."""
    image = sitk.ReadImage(str(shared_data / "pyradiomics_lung_ct" / "lung2_image.nrrd"))
    array = sitk.GetArrayFromImage(image).astype(np.float32)[None]
    spacing = tuple(reversed(image.GetSpacing()))
    corrector = Corrector([IncludeChannelNet()], corrector_plan((2.0, 2.0, 2.0), (16, 16, 16)), "cpu")
    mask = np.zeros(array.shape[1:], bool)
    far = (5, 30, 30)
    mask[far] = True                                           # far outside the lesion box: must survive
    click_index = (array.shape[1] // 2 + 0.3, 200.4, 300.0)
    out = corrector.correct(array, spacing, mask, [Click(click_index, True)], None)
    assert out[far]
    out[far] = False
    radius = SIGMA_MM * np.sqrt(2 * np.log(2))
    box = tuple(slice(int(c) - 8, int(c) + 9) for c in click_index)
    ideal = np.zeros_like(out)
    ideal[box] = ball(ideal[box].shape, [c - b.start for c, b in zip(click_index, box)], radius, spacing)
    assert dice(out, ideal) > 0.8                                  # the ball, through two resamplings
    assert np.allclose(np.argwhere(out).mean(0) * spacing, np.argwhere(ideal).mean(0) * spacing, atol=0.5)
    fixed = int(round(click_index[0]))
    by_hand = np.zeros_like(mask)
    by_hand[fixed - 2, 190:200, 290:300] = True               # a square two slices away, the click's slice emptied
    kept = corrector.correct(array, spacing, out, [Click(click_index, True)], drawn_slices(by_hand, [fixed, fixed - 2], "t"))
    assert not kept[fixed].any() and np.array_equal(kept[fixed - 2], by_hand[fixed - 2])


class CountingNet(IncludeChannelNet):
    """IncludeChannelNet that records the shape of every batch it is given."""

    def __init__(self):
        super().__init__()
        self.batches = []

    def forward(self, x):
        self.batches.append(tuple(x.shape))
        return super().forward(x)


def test_a_box_larger_than_a_patch_is_one_batch_of_two_windows_with_the_same_answer(shared_data):
    """Three include clicks 50 mm apart make a box of several 16-voxel patches: it goes through the network as one
    batch of two windows of the box's size (a multiple of the network's strides), and a network that looks only at
    each voxel answers exactly as with the training patch's overlapping windows."""
    image = sitk.ReadImage(str(shared_data / "pyradiomics_lung_ct" / "lung2_image.nrrd"))
    array = sitk.GetArrayFromImage(image).astype(np.float32)[None]
    spacing = tuple(reversed(image.GetSpacing()))
    plan = {**corrector_plan((2.0, 2.0, 2.0), (16, 16, 16)), "network": {"strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2]]}}
    centre = (array.shape[1] // 2, 200.0, 250.0)
    clicks = [Click((centre[0], centre[1], centre[2] + dx / spacing[2]), True) for dx in (-50, 0, 50)]
    mask = np.zeros(array.shape[1:], bool)
    counting = CountingNet()
    two = Corrector([counting], plan, "cpu").correct(array, spacing, mask, clicks)
    windows = CountingNet()
    patches = Corrector([windows], plan, "cpu", two_windows=False).correct(array, spacing, mask, clicks)
    assert len(counting.batches) == 1 and counting.batches[0][0] == 2
    assert all(n % 4 == 0 and n >= 16 for n in counting.batches[0][2:])
    assert sum(b[0] for b in windows.batches) > 2 and np.array_equal(two, patches) and two.sum() > 0


def test_a_click_changes_only_the_region_it_touches():
    """Progressive merge: the network (which only draws balls at include clicks) would erase a correct part of the
    mask that lies in the click's box; with progressive merge the include click adds its ball and nothing else
    changes, and an exclude click on that part removes exactly that part."""
    array = np.zeros((1, 30, 40, 40), np.float32)
    spacing = (2.0, 2.0, 2.0)
    plan = corrector_plan(spacing, (16, 16, 16))
    mask = np.zeros((30, 40, 40), bool)
    part = (slice(14, 17), slice(14, 18), slice(16, 20))
    mask[part] = True                                             # 12 mm from the click: inside its box
    include = Click((15.0, 20.0, 24.0), True)
    whole_box = Corrector([IncludeChannelNet()], plan, "cpu", progressive=False).correct(array, spacing, mask, [include])
    merged = Corrector([IncludeChannelNet()], plan, "cpu").correct(array, spacing, mask, [include])
    added = whole_box & ~mask
    assert not whole_box[part].any() and added[15, 20, 24] and added.sum() > 10       # the box answer erased it
    assert np.array_equal(merged, mask | added)                                         # merged: only the ball
    exclude = Click((15.0, 15.0, 17.0), False)                    # on the part
    after = Corrector([IncludeChannelNet()], plan, "cpu").correct(array, spacing, merged, [include, exclude])
    assert np.array_equal(after, added)
    far = Click((15.0, 35.0, 5.0), False)                         # touches nothing the answer changed
    assert np.array_equal(Corrector([IncludeChannelNet()], plan, "cpu").correct(
        array, spacing, merged, [include, far]), merged)


def test_correct_on_grid_pastes_only_inside_the_box():
    data = np.zeros((1, 30, 60, 60), np.float32)
    mask = np.zeros((30, 60, 60), bool)
    mask[2, 2, 2] = True
    out = correct_on_grid([IncludeChannelNet()], data, mask, [Click((15.0, 40.0, 40.0), True)], (1.0, 1.0, 1.0),
                          (8, 8, 8), "cpu", margin_mm=4.0)
    assert out[2, 2, 2] and out[15, 40, 40] and out.sum() == 1 + ball(mask.shape, (15, 40, 40), 3.5).sum()


def test_grow_from_seeds_segments_a_real_tumour_from_clicks(shared_data):
    """The non-AI baseline on pyradiomics lung2 (48 ml): one include click grows most of the tumour, and the
    simulated user's next clicks (exclude on the leaks, include on the misses) improve it."""
    from diffumamba.correction.region_growing import GrowFromSeeds

    image = sitk.ReadImage(str(shared_data / "pyradiomics_lung_ct" / "lung2_image.nrrd"))
    label = sitk.GetArrayFromImage(sitk.ReadImage(str(shared_data / "pyradiomics_lung_ct" / "lung2_label.nrrd"))) > 0
    spacing = tuple(reversed(image.GetSpacing()))
    grow = GrowFromSeeds(sitk.GetArrayFromImage(image), spacing)
    scores = simulate_session(grow.correct, label, np.zeros_like(label), spacing, 4)
    assert scores[0] == 0 and scores[1] > 0.65 and scores[4] > 0.75 and scores[4] > scores[1]
    started_from_truth = GrowFromSeeds(sitk.GetArrayFromImage(image), spacing, start=label)
    assert np.array_equal(started_from_truth.correct(label, []), label)    # no click: the mask is kept
