"""Data-parallel training under ``torchrun`` (DistributedDataParallel): the scale-out path for ``--method bsnn``.

    torchrun --nproc-per-node 2 --no-python bsnn-hw train --dataset fashion-mnist --hidden 512 -o m.bsnn

torchrun sets WORLD_SIZE, RANK and LOCAL_RANK; with WORLD_SIZE > 1 the trainer joins the process group (NCCL on
CUDA, each process on cuda:LOCAL_RANK; gloo on CPUs). ``--batch-size`` stays the **global** batch: every step each
process takes its contiguous share of the same shuffled global batch (``shard``), the same rate-code seeds and the
same dropout masks as one process would (the model draws the whole batch's masks and keeps its rows), and scales its
mean loss by (its rows x processes / global rows), so DDP's gradient average is exactly the gradient of the global
batch's mean loss. The weights therefore follow one process's run with the same global batch, up to the float
summation order of the all-reduce (tests/test_distributed.py checks it with two gloo processes on the CPU).
Process 0 alone evaluates, writes checkpoints, the artifact and the plot; the others wait at a barrier.
"""
from __future__ import annotations

import os

import torch


def _env_int(name: str, default: str, lo: int) -> int:
    """The environment variable ``name`` (torchrun's) as an int >= ``lo``; a one-line ValueError otherwise."""
    text = os.environ.get(name, default)
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or value < lo:
        raise ValueError(f"{name} must be an integer >= {lo} (torchrun sets it), not {text!r}")
    return value


def world_size() -> int:
    """torchrun's WORLD_SIZE (1 outside torchrun)."""
    return _env_int("WORLD_SIZE", "1", 1)


def local_device(device: torch.device) -> torch.device:
    """Under torchrun on CUDA, this process's GPU (cuda:LOCAL_RANK); otherwise ``device``."""
    if world_size() > 1 and device.type == "cuda" and device.index is None:
        device = torch.device("cuda", _env_int("LOCAL_RANK", "0", 0))
        torch.cuda.set_device(device)
    return device


class Distributed:
    """The process group of one torchrun job, or a stand-in for a single process (``active`` False)."""

    def __init__(self, device: torch.device):
        self.world = world_size()
        self.rank = _env_int("RANK", "0", 0) if self.world > 1 else 0
        if self.rank >= self.world:
            raise ValueError(f"RANK must be in 0..{self.world - 1} (WORLD_SIZE {self.world}), not {self.rank}")
        self.active = self.world > 1
        self.device = device
        if self.active:
            import torch.distributed as dist
            if not dist.is_initialized():
                dist.init_process_group("nccl" if device.type == "cuda" else "gloo")

    @property
    def main(self) -> bool:
        """Process 0 (the one that evaluates and writes)."""
        return self.rank == 0

    def shard(self, rows: int) -> tuple[int, int]:
        """This process's contiguous rows [start, stop) of a global batch of ``rows``."""
        return rows * self.rank // self.world, rows * (self.rank + 1) // self.world

    def wrap(self, model):
        """The model under DistributedDataParallel (parameters broadcast from process 0); the model itself alone."""
        if not self.active:
            return model
        from torch.nn.parallel import DistributedDataParallel
        ids = [self.device.index] if self.device.type == "cuda" else None
        # static_graph: the same parameters take part in every step (some, e.g. an unused readout scale, in none)
        return DistributedDataParallel(model, device_ids=ids, static_graph=True)

    def sum(self, *values: float) -> list[float]:
        """Each value summed over the processes (for the epoch's loss and accuracy)."""
        if not self.active:
            return list(values)
        import torch.distributed as dist
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.tolist()

    def barrier(self) -> None:
        if self.active:
            import torch.distributed as dist
            dist.barrier()

    def close(self) -> None:
        if self.active:
            import torch.distributed as dist
            if dist.is_initialized():
                dist.destroy_process_group()
