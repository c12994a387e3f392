"""``diffumamba info``: versions and the compute back-ends this installation will use."""

from __future__ import annotations

import platform


def add_parser(commands) -> None:
    parser = commands.add_parser("info", help="show versions, threads and whether the mamba-ssm CUDA kernels are used")
    parser.set_defaults(run=run)


def run(args) -> int:
    import numpy
    import torch

    from .. import __version__
    from ..nets import cuda_kernels_available

    print(f"diffumamba {__version__}")
    print(f"python {platform.python_version()}, torch {torch.__version__}, numpy {numpy.__version__}")
    print(f"cpu threads: {torch.get_num_threads()}")
    print(f"cuda: {'available: ' + torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'not available'}")
    print("selective scan: " + ("mamba-ssm CUDA kernel on CUDA tensors, PyTorch scan otherwise"
                                if cuda_kernels_available() else "PyTorch scan (mamba-ssm not in use)"))
    return 0
