"""Training-step speed in contiguous vs channels-last memory format (the choice ``devices.convolution_memory_format``
makes for the trainer).

One training step (forward with deep supervision, Dice + CE, backward, SGD step) of each network on the same
batch, both formats in the same process, alternating; the table gives the median of ``--runs`` timed steps
after 2 warm-up steps, the channels-last / contiguous ratio, and the largest difference of the logits.

    python bench/memory_format.py                 # 2 threads, CPU: the benchmark networks of versus_nnunet.py
    python bench/memory_format.py --device cuda   # the same on a GPU
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch

from diffumamba.nets import NetworkConfig, build_network
from diffumamba.training.losses import DeepSupervisionLoss, DiceCELoss, deep_supervision_weights

STAGES_3D = dict(features_per_stage=[8, 16, 32, 64, 64], kernel_sizes=[[3, 3, 3]] * 5,
                 strides=[[1, 1, 1], [2, 2, 2], [2, 2, 2], [1, 2, 2], [1, 2, 2]],
                 n_blocks_per_stage=[2, 2, 2, 1, 1], n_blocks_per_stage_decoder=[2, 2, 2, 1])
CASES = {   # name -> (network config, batch)
    "brain ResUNet 20x64x64": (dict(network="resunet", spatial_dims=3, patch_size=[20, 64, 64], **STAGES_3D), 2),
    "brain Diff-UMamba 20x64x64": (dict(network="diffumamba", spatial_dims=3, patch_size=[20, 64, 64], **STAGES_3D), 2),
    "lung ResUNet 24x64x64": (dict(network="resunet", spatial_dims=3, patch_size=[24, 64, 64], **STAGES_3D), 2),
    "2D ResUNet 256x256": (dict(network="resunet", spatial_dims=2, patch_size=[256, 256],
                                features_per_stage=[16, 32, 64, 128, 128], kernel_sizes=[[3, 3]] * 5,
                                strides=[[1, 1]] + [[2, 2]] * 4, n_blocks_per_stage=[2, 2, 2, 1, 1],
                                n_blocks_per_stage_decoder=[2, 2, 2, 1]), 4),
}


def step_seconds(network, loss, images, labels) -> float:
    optimizer = network.optimizer
    start = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    loss(network(images), labels).backward()
    optimizer.step()
    if images.is_cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"{device}, {args.threads} threads, median of {args.runs} steps\n")
    print("| network | contiguous s / step | channels-last s / step | ratio | max logit difference |")
    print("|---|---|---|---|---|")
    for name, (config, batch) in CASES.items():
        torch.manual_seed(0)
        config = NetworkConfig(in_channels=1, num_classes=2, **config)
        plain = build_network(config).to(device).train()
        fmt = torch.channels_last_3d if config.spatial_dims == 3 else torch.channels_last
        last = copy.deepcopy(plain).to(memory_format=fmt)
        loss = DeepSupervisionLoss(DiceCELoss(), deep_supervision_weights(config.n_stages - 1))
        images = torch.randn(batch, 1, *config.patch_size, device=device)
        labels = (torch.rand(batch, 1, *config.patch_size, device=device) > 0.9).long()
        with torch.no_grad():
            difference = max(float((a - b).abs().max()) for a, b in
                             zip(plain(images), last(images.contiguous(memory_format=fmt))))
        timings = {"plain": [], "last": []}
        for net in (plain, last):
            net.optimizer = torch.optim.SGD(net.parameters(), 1e-2, momentum=0.99, nesterov=True)
        for run in range(args.runs + 2):
            for net, key, inputs in ((plain, "plain", images), (last, "last", images.contiguous(memory_format=fmt))):
                seconds = step_seconds(net, loss, inputs, labels)
                if run >= 2:
                    timings[key].append(seconds)
        a, b = statistics.median(timings["plain"]), statistics.median(timings["last"])
        print(f"| {name} | {a:.3f} | {b:.3f} | {b / a:.2f} | {difference:.1e} |", flush=True)


if __name__ == "__main__":
    main()
