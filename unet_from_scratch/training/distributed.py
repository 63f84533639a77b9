"""Data-parallel training under ``torchrun``: one process per device, gradients averaged by DDP.

``torchrun --nproc_per_node=N -m unet_from_scratch.train ...`` starts N copies of the trainer with RANK,
WORLD_SIZE and LOCAL_RANK in their environment. Each process builds the same model from the same seed, wraps it in
``DistributedDataParallel`` (which averages the gradients over the processes during ``backward``) and trains on its
shard of every epoch (``data.EpochSampler`` with ``rank``/``world_size``). Validation runs on a shard each too, and
the counts behind every score are summed over the processes (``all_reduce_sum``), so every rank reports the scores
of the whole validation split. Only rank 0 prints and writes the run directory.

The backend is gloo on the CPU and nccl on CUDA. Batch norm keeps per-process statistics (its buffers are
broadcast from rank 0 at every forward, so all ranks hold the same ones).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    device: str = "cpu"  # where the collectives run: nccl reduces CUDA tensors only

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def init_world(device: torch.device) -> World:
    """Join the process group ``torchrun`` set up (gloo on CPU, nccl on CUDA); a plain run is a world of one."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")), str(device))


def all_reduce_sum(values: np.ndarray, world: World) -> np.ndarray:
    """``values`` summed elementwise over every process (float64; unchanged in a world of one)."""
    if not world.distributed:
        return np.asarray(values, dtype=np.float64)
    tensor = torch.as_tensor(np.asarray(values, dtype=np.float64), device=world.device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.cpu().numpy()


def close_world(world: World) -> None:
    """Leave the process group once every rank is done (rank 0 may still be writing the run directory)."""
    if world.distributed and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
