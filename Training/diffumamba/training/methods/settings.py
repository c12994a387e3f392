"""Every weight, threshold and schedule of DALE and Diff-CL, with the help text the command line shows
(``--dale-NAME`` / ``--diffcl-NAME``). Defaults follow docs/methods.md."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

__all__ = ["DaleSettings", "DiffCLSettings", "METHOD_SETTINGS", "settings_for"]


def _option(default, help: str):
    return field(default=default, metadata={"help": help})


@dataclass
class DaleSettings:
    warmup: float = _option(0.2, "fraction of the epochs trained on every case with the plain loss")
    phase_epochs: int = _option(1, "epochs of each stable and each fuzzy phase")
    repartition_every: int = _option(10, "epochs between re-partitions into stable and fuzzy cases")
    fuzzy_quantile: float = _option(0.7, "cases whose entropy/error score is above this quantile are fuzzy")
    partition_patches: int = _option(4, "patches per case the EMA teacher scores at each partition")
    band_radius: int = _option(0, "half width in voxels of the label's boundary band; 0: from the data at every "
                                  "partition (the 90th percentile of the teacher's disagreements' distance to the "
                                  "label border, at most 8)")
    entropy_threshold: float = _option(0.5, "normalised teacher entropy above which a voxel is fuzzy")
    confidence: str = _option("loss-consistency", "label confidence of fuzzy voxels: loss-consistency (student and "
                                                  "teacher loss and the case's loss history against stable "
                                                  "boundaries'), teacher (the teacher's probability of the "
                                                  "label), none (every weight 1)")
    confidence_temperature: float = _option(0.5, "gamma: how fast loss-consistency confidence falls with the "
                                                  "excess loss (nats)")
    confidence_floor: float = _option(0.1, "lowest weight a voxel's label can get")
    teacher_momentum: float = _option(0.99, "EMA momentum of the teacher")
    stats_momentum: float = _option(0.99, "EMA momentum of the stable class-conditional feature statistics")
    align_weight: float = _option(0.1, "weight of the Wasserstein feature-alignment loss")
    align_rampup: float = _option(0.1, "fraction of the fuzzy-phase steps over which the alignment weight ramps up")
    max_voxels: int = _option(4096, "voxels per class and batch used for feature statistics")


@dataclass
class DiffCLSettings:
    timesteps: int = _option(1000, "diffusion steps T of the linear noise schedule")
    train_sampling_steps: int = _option(3, "DDIM steps for the pseudo-labels it gives the CNN during training")
    sampling_steps: int = _option(10, "DDIM steps of the diffusion branch when it segments a whole scan "
                                      "(RUN/diffusion.safetensors, experiment's diffusion and mean rows)")
    pseudo_weight: float = _option(0.1, "maximum weight of each branch's pseudo-label loss (mu1, mu2)")
    rampup: float = _option(0.4, "fraction of the iterations over which the pseudo-label weights ramp up")
    contrastive_weight: float = _option(0.1, "weight eta of the contrastive loss within the CNN's unlabelled loss")
    temperature: float = _option(0.1, "InfoNCE temperature")
    projection_dim: int = _option(64, "dimension of the contrastive projection head")
    memory_size: int = _option(256, "labelled embeddings kept per class in the memory bank")
    memory_per_batch: int = _option(64, "labelled embeddings per class added to the memory per step")
    contrastive: str = _option("propagation", "propagation: unlabelled voxels take the class their embedding's "
                                              "nearest labelled embeddings vote for, pulled to that class in "
                                              "embedding space and in the CNN's output; agreement: only voxels "
                                              "where both branches confidently agree, embedding space only")
    anchors: int = _option(256, "unlabelled voxels per step in the contrastive loss")
    neighbours: int = _option(16, "labelled embeddings that vote on an unlabelled voxel's class (propagation)")
    confidence: float = _option(0.8, "propagation: the vote's share a class needs; agreement: probability both "
                                     "branches must exceed (and agree on)")
    pseudo_label_every: int = _option(2, "epochs between re-segmenting the unlabelled cases with the CNN branch, "
                                         "whose foreground then centres the unlabelled patches as labels centre the "
                                         "labelled ones (0: unlabelled patches placed at random)")
    high_frequency_stages: int = _option(1, "deepest encoder stages (bottleneck excluded) gated by the "
                                            "high-frequency Mamba module")


METHOD_SETTINGS = {"dale": DaleSettings, "diffcl": DiffCLSettings}


def settings_for(method: str, options: dict):
    """The settings of ``method`` from ``{method: {name: value}}`` (unknown names refused)."""
    cls = METHOD_SETTINGS[method]
    given = dict(options.get(method, {}))
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(given) - known)
    if unknown:
        raise ValueError(f"unknown {method} options {unknown}; known: {sorted(known)}")
    return cls(**given)
