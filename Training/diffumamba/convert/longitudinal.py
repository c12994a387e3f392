"""Propagation training cases: (current scan, registered prior scan, registered prior GTV) -> current GTV.

Two sources, both registered exactly as ``diffumamba propagate`` will register at inference (the network
learns to correct real registration errors, not ideal warps):

- real longitudinal pairs: prior and current scans with a GTV at both visits (``longitudinal_cases``);
  with ``both_directions`` each pair also gives the reverse case (current as prior), which doubles the
  scarce real data and shows the model shrinking as well as growing tumours;
- pairs simulated from single time points of a segmentation dataset (``simulated_cases``): each case is
  the prior of ``per_case`` random follow-ups (``propagation.simulate``: growth or shrinkage,
  deformation, intensity change and noise).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..propagation.registration import RegistrationSettings
from .run import SourceCase

__all__ = ["propagation_channels", "longitudinal_cases", "simulated_cases"]


def propagation_channels(modality: str) -> list[str]:
    from ..propagation.pipeline import PRIOR_MASK_CHANNEL

    return [modality, modality, PRIOR_MASK_CHANNEL]


def registered_case(current, current_label, prior, prior_label, settings: RegistrationSettings,
                    transform=None):
    """([current, prior on current grid, prior GTV on current grid as 0/1 float], current label)."""
    import SimpleITK as sitk

    from ..propagation.registration import register
    from ..propagation.warp import warp_image, warp_mask

    if transform is None:
        transform = register(current, prior, settings, prior_mask=prior_label).transform
    warped_image = warp_image(prior, current, transform)
    warped_mask = sitk.Cast(warp_mask(prior_label, current, transform), sitk.sitkFloat32)
    return [sitk.Cast(current, sitk.sitkFloat32), warped_image, warped_mask], sitk.Cast(current_label > 0, sitk.sitkUInt8)


def longitudinal_cases(source: Path, patterns: tuple[str, str, str, str], name: str, settings: RegistrationSettings,
                       both_directions: bool = False) -> tuple[list[SourceCase], list[tuple[str, str]]]:
    """Cases from files matched by (prior image, prior label, current image, current label) patterns."""
    from ..mask_io import read_label_map
    from ..imageio import read_scalar_image
    from .pairs import PairPattern, find_pairs

    prior_image, prior_label, current_image, current_label = patterns
    pairs, problems = find_pairs(source, [PairPattern(prior_image, prior_label, name)])
    cases = []
    for pair in pairs:
        current_files = [source / p.replace("{case}", pair.case) for p in (current_image, current_label)]
        missing = [str(p) for p in current_files if not p.is_file()]
        if missing:
            problems.append((pair.name, f"no current-visit file {', '.join(missing)}"))
            continue

        def load(pair=pair, current_files=current_files, reverse=False):
            prior = (read_scalar_image(pair.image), read_label_map(pair.label)[0])
            current = (read_scalar_image(current_files[0]), read_label_map(current_files[1])[0])
            if reverse:
                prior, current = current, prior
            return registered_case(current[0], current[1], prior[0], prior[1], settings)

        cases.append(SourceCase(pair.name, load))
        if both_directions:
            cases.append(SourceCase(f"{pair.name}_reverse", lambda load=load: load(reverse=True)))
    return cases, problems


def simulated_cases(dataset: Path, per_case: int, settings: RegistrationSettings, seed: int = 0,
                    true_transform: bool = False, simulation=None) -> tuple[list[SourceCase], str]:
    """``per_case`` simulated follow-ups of every training case of a segmentation dataset; and its modality."""
    import SimpleITK as sitk

    from ..data.dataset import RawDataset
    from ..data.fingerprint import read_case
    from ..propagation.simulate import simulate_followup

    raw = RawDataset(dataset)
    if raw.num_channels != 1:
        raise ValueError(f"{dataset}: simulation needs single-channel cases, this dataset has {raw.channel_names}")
    cases = []
    for index, case in enumerate(raw.training_cases()):
        for k in range(per_case):
            def load(case=case, k=k, index=index):
                data, label, _, image = read_case(case)
                prior = sitk.GetImageFromArray(data[0])
                prior.CopyInformation(image)
                prior_label = sitk.GetImageFromArray((label > 0).astype(np.uint8))
                prior_label.CopyInformation(image)
                if not label.any():
                    raise ValueError("the label is empty: nothing to propagate")
                followup = simulate_followup(prior, prior_label, simulation, rng=[seed, index, k])
                return registered_case(followup.image, followup.mask, prior, prior_label, settings,
                                       transform=followup.transform if true_transform else None)
            cases.append(SourceCase(f"{case.name}_sim{k}", load))
    return cases, raw.channel_names[0]
