"""Issue 29's training frictions: one cache for ``preprocess`` and ``train --task correction``; a correction model's
validation scores what ``correct`` does (the original grid, progressive merge)."""

import json
from dataclasses import asdict

import numpy as np

from diffumamba.cli import main


def test_preprocess_and_train_with_task_correction_share_one_cache(phantoms, tmp_path, capsys):
    plan = ["--features", "4", "8", "--max-patch", "16", "32", "32", "--no-amp", "--network", "resunet"]
    assert main(["preprocess", str(phantoms), "--preprocessed", str(tmp_path / "pre"), "--task", "correction",
                 *plan]) == 0
    folders = sorted(p.name for p in (tmp_path / "pre").glob("plan_*"))
    assert len(folders) == 1
    capsys.readouterr()
    assert main(["train", str(phantoms), "--preprocessed", str(tmp_path / "pre"), "--run-dir", str(tmp_path / "run"),
                 "--fold", "all", "--epochs", "1", "--iterations", "1", "--validate-every", "0", "--task",
                 "correction", "--threads", "1", *plan]) == 0
    assert sorted(p.name for p in (tmp_path / "pre").glob("plan_*")) == folders      # no second cache
    plan_json = json.loads((tmp_path / "pre" / folders[0] / "plan.json").read_text())
    assert plan_json["task"] == "correction" and plan_json["network"]["in_channels"] == 4


def test_correction_validation_scores_the_correct_path(correction_model):
    """The validator's Dice equals a session run by hand through ``Corrector`` on the raw case (original grid)."""
    import SimpleITK as sitk

    from diffumamba.correction.corrector import Corrector
    from diffumamba.correction.session import simulate_session
    from diffumamba.correction.validation import CorrectionValidation
    from diffumamba.data.dataset import RawDataset
    from diffumamba.inference.models import load_ensemble

    checkpoint, phantoms = correction_model
    ensemble = load_ensemble([checkpoint], "cpu")
    case = RawDataset(phantoms).training_cases()[0]
    validation = CorrectionValidation([case], ensemble.plan, clicks=2)
    scores = validation.scores(ensemble.networks[0], "cpu")
    assert len(scores) == 1 and len(scores[0]) == 3
    image = sitk.ReadImage(str(case.images[0]))
    array = sitk.GetArrayFromImage(image).astype(np.float32)[None]
    spacing = tuple(reversed(image.GetSpacing()))
    label = sitk.GetArrayFromImage(sitk.ReadImage(str(case.label))) > 0
    corrector = Corrector(ensemble.networks, ensemble.plan, "cpu")
    by_hand = simulate_session(lambda mask, clicks: corrector.correct(array, spacing, mask, clicks), label,
                               np.zeros(label.shape, bool), spacing, 2)
    assert np.allclose(scores[0], by_hand)
    assert validation(ensemble.networks[0], "cpu") == by_hand[-1]
