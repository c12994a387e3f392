"""Issue 17, item 7: what the processes of one torchrun must agree on besides the weights. Two CPU processes (gloo)
train DALE and Diff-CL on a real lung tumour, each drawing its own batches; afterwards every piece of method
state that rank 0 alone saves (DALE's stable feature memory and loss history, Diff-CL's embedding bank) must be
the same on both ranks, or a multi-GPU resume would not continue the run that was interrupted."""

import os
import sys

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

sys.path.insert(0, os.path.dirname(__file__))

PORT = 29531


def _worker(rank, world, shared, out, method, port):
    import torch.distributed as dist

    os.environ.update(WORLD_SIZE=str(world), RANK=str(rank), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        from diffumamba.training.distributed import broadcast_object, gather_rows

        if method == "helpers":
            rows = torch.arange(rank + 2, dtype=torch.float32)[:, None].repeat(1, 3) + 10 * rank
            (gathered,) = gather_rows(rows)
            torch.save({"gathered": gathered, "broadcast": broadcast_object({"rank": rank})}, f"{out}/{rank}.pt")
            return
        from conftest import tumour_case
        from test_training_methods import DALE, make_trainer, noisy_copy

        from pathlib import Path

        lung2 = tumour_case(Path(shared), "lung2")
        if method == "dale":
            trainer = make_trainer("dale", [lung2, noisy_copy(lung2)], [], Path(out) / f"run{rank}", epochs=4,
                                   options=DALE, iterations=2)
        else:
            lung1 = tumour_case(Path(shared), "lung1", half_depth=10, half_width=40)
            trainer = make_trainer("diffcl", [lung2], [], Path(out) / f"run{rank}", epochs=1, unlabeled=[lung1],
                                   iterations=2)
        trainer.fit(progress=False)
        tensors, info = trainer.method.state()
        tensors = {k: v for k, v in tensors.items() if not k.startswith("teacher.")}
        torch.save({"tensors": tensors, "info": info}, f"{out}/{rank}.pt")
    finally:
        dist.destroy_process_group()


def _run(method, shared, tmp_path, port):
    mp.spawn(_worker, args=(2, str(shared), str(tmp_path), method, port), nprocs=2, join=True)
    return [torch.load(tmp_path / f"{rank}.pt", weights_only=False) for rank in range(2)]


def test_gather_rows_and_broadcast_across_two_processes(tmp_path):
    first, second = _run("helpers", "", tmp_path, PORT)
    expected = torch.cat([torch.arange(2.0)[:, None].repeat(1, 3), torch.arange(3.0)[:, None].repeat(1, 3) + 10])
    for result in (first, second):
        torch.testing.assert_close(result["gathered"], expected)        # rank order, uneven lengths
        assert result["broadcast"] == {"rank": 0}


@pytest.mark.parametrize("method", ["dale", "diffcl"])
def test_two_processes_hold_the_same_method_state(method, shared_data, tmp_path):
    first, second = _run(method, shared_data, tmp_path, PORT + 1 + (method == "diffcl"))
    assert first["tensors"].keys() == second["tensors"].keys()
    for key, value in first["tensors"].items():
        torch.testing.assert_close(value, second["tensors"][key], rtol=0, atol=0, msg=lambda m, key=key: f"{key}: {m}")
    if method == "dale":
        assert first["info"] == second["info"]
        counts = first["tensors"]["history.counts"]
        assert counts.sum() > 0 and first["tensors"]["memory.seen"].all()
    else:
        filled = first["tensors"]["memory.filled"]
        # Both processes' embeddings went in: 2 steps x 2 ranks x up to 64 per class, more than one rank alone pushes.
        assert (filled > 2 * 64).all() or (filled == 256).all(), filled
    if method == "dale":
        np.testing.assert_array_equal(first["info"]["band_radius"], second["info"]["band_radius"])
