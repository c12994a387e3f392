"""``convert lidc --whole-ct N``: full chest CTs with N real lesions pasted into each copy (``data/full_ct_pasting``).

Each host CT gives ``copies`` cases named ``HOST_wK`` (``HOST_wKzJ`` for slab J of a box-labelled host), so the
dataset's group pattern keeps every copy of a patient in the patient's fold: a held-out patient's chest is never
seen in training under another name.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

__all__ = ["WHOLE_CT_GROUP_PATTERN", "whole_ct_cases"]

WHOLE_CT_GROUP_PATTERN = r"^(.+?)_w\d+(?:z\d+)?$|^(.+)$"


def whole_ct_cases(vois: Sequence, specs: Sequence[tuple[Path, Optional[Path], Optional[str]]],
                   lesions_per_ct: int, copies: int, seed: int = 0) -> list:
    """SourceCases: ``copies`` pasted copies of every host (CT path, tumour label map or boxes.json, case name or
    None for the file's own)."""
    from .lidc_vois import read_host
    from .run import SourceCase

    @lru_cache(maxsize=1)              # cases come host by host: read and measure each host once
    def host(index: int, slab: Optional[int]):
        from ..data.full_ct_pasting import slabs_without
        from ..data.lesion_pasting import Host

        path, avoid, name = specs[index]
        found, image, tumour = read_host(path, avoid)
        if slab is not None:
            part = slabs_without(tumour, image.GetSpacing()[2])[slab]
            image, tumour = image[:, :, part.start:part.stop], None
        made = Host.from_image(image, name or found, tumour)
        if not made.lung.any():
            raise ValueError(f"{path}: no lungs found (no enclosed air of 50 ml or more); is it a chest CT?")
        return made, tumour

    def loader(index: int, slab: Optional[int], copy: int):
        def load():
            import SimpleITK as sitk

            from ..data.full_ct_pasting import paste_many
            from .lidc_vois import _read_pair

            target, tumour = host(index, slab)
            rng = np.random.default_rng([seed, index, 0 if slab is None else slab + 1, copy])
            chosen = rng.choice(len(vois), size=min(lesions_per_ct, len(vois)), replace=False)
            image, label, placements = paste_many(target, [_read_pair(vois[i]) for i in chosen], rng, tumour)
            if not placements:
                raise ValueError(f"{specs[index][0]}: no room in its lungs for any of the lesions drawn")
            mask = sitk.GetImageFromArray(label)
            mask.CopyInformation(image)
            return [image], mask
        return load

    cases = []
    for index, (path, avoid, name) in enumerate(specs):
        slabs: list = [None]
        host_name = name
        if avoid is not None and Path(avoid).suffix == ".json":     # boxes only: keep to the slabs without them
            from ..data.full_ct_pasting import slabs_without

            found, image, boxes = read_host(path, avoid)
            slabs = list(range(len(slabs_without(boxes, image.GetSpacing()[2]))))
            if not slabs:
                raise ValueError(f"{path}: no slab of 60 mm lies 20 mm or more from the boxes of {avoid}")
            host_name = name or found
        elif host_name is None:
            host_name = read_host(path)[0]
        for slab in slabs:
            for copy in range(copies):
                suffix = f"_w{copy}" + ("" if slab is None else f"z{slab}")
                cases.append(SourceCase(host_name + suffix, loader(index, slab, copy)))
    return cases
