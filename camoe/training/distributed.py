"""Data-parallel training context: rank, world size, and the few collectives the trainer needs.

``camoe train`` under ``torchrun --nproc_per_node=P -m camoe train ...`` reads ``RANK`` / ``WORLD_SIZE`` /
``LOCAL_RANK`` (set by torchrun) and joins a process group: gloo on CPU, nccl when CUDA is available. Each rank
trains on its own share of every global batch (in memory) or its own record batches (streaming); gradients are
averaged by ``torch.nn.parallel.DistributedDataParallel``. The loss of each rank is normalised by the **global**
row count of each task in the step (one ``all_reduce`` of T + 1 numbers per step), so the averaged gradient equals
the gradient of a single process on the whole global batch, and a rank with no rows of some task adds an exact 0
while every head stays in the graph (case B21: no "unused parameter" error in DDP).

Without ``WORLD_SIZE`` > 1 everything here is a no-op: ``DistContext()`` is rank 0 of 1.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

__all__ = ["DistContext", "init_distributed"]


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in a data-parallel job.

    Attributes:
        rank: this process's rank in [0, world_size).
        world_size: number of processes; 1 = no process group, no collectives.
        device: device of this rank's model and batches.
    """

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        """Rank 0: the only rank that writes artifacts, checkpoints and logs."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum of ``tensor`` over ranks (in place; returned for chaining). No-op on one process."""
        if self.enabled:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if not self.enabled:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


def init_distributed(backend: str | None = None) -> DistContext:
    """Join the process group described by torchrun's environment, or return a single-process context.

    Args:
        backend: "gloo" or "nccl"; None = nccl when CUDA is available, else gloo.

    Returns:
        ``DistContext`` for this process (rank 0 of 1 when ``WORLD_SIZE`` is unset or 1).

    Raises:
        ValueError: ``WORLD_SIZE`` > 1 without ``RANK`` (or MASTER_ADDR / MASTER_PORT), i.e. not started by
            torchrun or an equivalent launcher.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise ValueError(f"WORLD_SIZE={world} but {missing} are not set; start with torchrun --nproc_per_node=P")
    rank = int(os.environ["RANK"])
    use_cuda = torch.cuda.is_available() and backend != "gloo"
    backend = backend or ("nccl" if use_cuda else "gloo")
    device = torch.device("cpu")
    if backend == "nccl":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, rank=rank, world_size=world)
    return DistContext(rank=rank, world_size=world, device=device)
