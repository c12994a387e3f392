"""Training a correction model (``train --task correction``): the simulated starting masks, clicks and drawn slices
each patch gets, the network's answers fed back, and a model that learns to follow clicks on the phantoms."""

import numpy as np
import pytest
import torch

from diffumamba.correction.clicks import Click, click_maps, next_click
from diffumamba.training.click_simulation import ClickSimulation, correction_batch

from test_correction import IncludeChannelNet, ball


def batch(radius=5):
    label = torch.from_numpy(ball((16, 24, 24), (8, 12, 12), radius))[None, None].long()
    return torch.randn(1, 1, 16, 24, 24), label


def test_an_empty_start_gets_one_click_at_the_tumours_centre():
    images, labels = batch()
    settings = ClickSimulation(max_iterations=0, start_empty=1.0, drawn_slices=0.0)
    out, _ = correction_batch(images, labels, IncludeChannelNet(), np.random.default_rng(0), (1, 1, 1), settings)
    assert out.shape == (1, 4, 16, 24, 24) and torch.equal(out[:, :1], images)
    assert out[0, 1].max() == 0 and out[0, 3].max() == 0
    expected = click_maps((16, 24, 24), [Click((8.0, 12.0, 12.0), True)], (1, 1, 1))[0]
    assert np.allclose(out[0, 2].numpy(), expected)


def test_spoilt_starts_are_the_reference_moved_grown_cut_or_blotted():
    images, labels = batch()
    exact = ClickSimulation(max_iterations=0, start_empty=0.0, drawn_slices=0.0, max_shift=0, max_radius=0, cut=0.0,
                            blob=0.0)
    out, _ = correction_batch(images, labels, IncludeChannelNet(), np.random.default_rng(0), (1, 1, 1), exact)
    assert torch.equal(out[0, 1], labels[0, 0].float()) and out[0, 2:].max() == 0
    rng = np.random.default_rng(1)
    starts = [correction_batch(images, labels, IncludeChannelNet(), rng, (1, 1, 1),
                               ClickSimulation(max_iterations=0, start_empty=0.0, drawn_slices=0.0))[0][0, 1]
              for _ in range(20)]
    reference = labels[0, 0].bool()
    differing = [int((start.bool() != reference).sum()) for start in starts]
    assert sum(d > 0 for d in differing) >= 15 and max(differing) > 100      # real errors, not the reference


def test_drawn_slices_are_given_densely():
    images, labels = batch()
    settings = ClickSimulation(max_iterations=0, start_empty=0.0, drawn_slices=1.0)
    out, _ = correction_batch(images, labels, IncludeChannelNet(), np.random.default_rng(3), (1, 1, 1), settings)
    reference = labels[0, 0].bool()
    drawn = [z for z in range(16) if out[0, 3, z].max() == 1]
    assert 1 <= len(drawn) <= 2 and all(reference[z].any() for z in drawn)
    for z in drawn:
        assert torch.equal(out[0, 2, z] == 1, reference[z]) and torch.equal(out[0, 3, z] == 1, ~reference[z])


def test_the_networks_answers_come_back_as_the_mask_with_the_next_click():
    """Two rounds with a network that segments a ball around each include click: the mask channel holds its last
    answer and the include channel a second click in the shell the first answer missed."""
    images, labels = batch(radius=6)
    settings = ClickSimulation(min_iterations=2, max_iterations=2, start_empty=1.0, drawn_slices=0.0)
    out, _ = correction_batch(images, labels, IncludeChannelNet(), np.random.default_rng(0), (1, 1, 1), settings)
    first = Click((8.0, 12.0, 12.0), True)
    answer = ball((16, 24, 24), (8, 12, 12), 3.53)                    # 1.18 sigma around the first click
    second = next_click(answer, labels[0, 0].numpy().astype(bool), (1, 1, 1))
    assert second.positive and second != first
    mask = out[0, 1].numpy().astype(bool)
    assert mask[answer].all() and mask.sum() > answer.sum()          # the second answer adds the second ball
    include = out[0, 2].numpy()
    for click in (first, second):
        assert include[tuple(int(i) for i in click.index)] == pytest.approx(1.0)


def test_a_correction_model_learns_to_follow_clicks_on_the_phantoms(phantoms, tmp_path):
    """120 iterations of ``train --task correction`` on two phantoms: the held-out two, from an empty mask, reach
    Dice 0.95 after three simulated clicks (validation runs the benchmark's protocol); after one iteration, far less."""
    import csv

    from diffumamba.cli import main

    def train(name, epochs, iterations):
        run = tmp_path / name
        assert main(["train", str(phantoms), "--preprocessed", str(tmp_path / "pre"), "--run-dir", str(run),
                     "--fold", "0", "--folds", "2", "--epochs", str(epochs), "--iterations", str(iterations),
                     "--features", "8", "16", "--max-patch", "16", "32", "32", "--no-amp", "--network", "resunet",
                     "--task", "correction", "--validate-every", "12", "--no-augment"]) == 0
        return float(list(csv.DictReader((run / "log.csv").open()))[-1]["val_dice"])

    assert train("one_step", 1, 1) < 0.5
    assert train("trained", 12, 10) > 0.95


def test_pseudo_objects_are_coherent_regions_under_a_random_voxel():
    from diffumamba.training.pseudo_objects import inner_click_index, pseudo_object

    image = np.zeros((16, 32, 32), np.float32)
    image[4:12, 8:24, 8:24] = 2.0                                  # a bright box in a dark patch
    rng = np.random.default_rng(0)
    found = [pseudo_object(image, rng, (1, 1, 1), radius_mm=(30, 40)) for _ in range(10)]
    inside = [f for f in found if f is not None and f[8, 16, 16]]
    from diffumamba.evaluation.metrics import dice

    assert inside and all(dice(f, image > 1) > 0.9 and not (f & (image < 1)).any() for f in inside)  # the box, smoothed
    reference = ball((16, 32, 32), (8, 16, 16), 6)
    picks = {inner_click_index(reference, rng, (1, 1, 1)) for _ in range(20)}
    assert len(picks) > 5 and all(reference[tuple(int(i) for i in p)] for p in picks)


def test_pseudo_objects_replace_the_labels_to_learn():
    images, labels = batch()
    images[:] = 0
    images[0, 0, 4:12, 6:18, 6:18] = 3.0
    settings = ClickSimulation(max_iterations=0, start_empty=1.0, drawn_slices=0.0, pseudo_objects=1.0)
    out, learnt = correction_batch(images, labels, IncludeChannelNet(), np.random.default_rng(2), (1, 1, 1), settings)
    assert learnt.shape == labels.shape and not torch.equal(learnt, labels)
    assert out[0, 2].max() == pytest.approx(1.0) and learnt[0, 0][tuple(int(i) for i in np.argwhere(
        out[0, 2].numpy() == out[0, 2].numpy().max())[0])] == 1            # the click lies in the object learnt
