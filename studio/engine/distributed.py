"""Data parallel training under `accelerate launch` / `torchrun`: the environment says how many
processes there are; rank 0 writes everything, all ranks train.

A single process (the usual case, and the studio's) gets a context whose methods do nothing, and
reading the rank imports no torch: `studio.py train` can take (or be refused) the accelerator lock
before the heavy imports.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator

if TYPE_CHECKING:
    import torch

    from studio.core.device import DeviceInfo


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def device(self, info: DeviceInfo) -> torch.device:
        import torch

        if info.type == "cuda":
            torch.cuda.set_device(self.local_rank)
            return torch.device("cuda", self.local_rank)
        return info.torch_device

    def wrap(self, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        if not self.enabled:
            return model
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    def no_sync(self, model: torch.nn.Module, last: bool):
        """Skip the gradient all-reduce on all but the last micro-batch of an optimizer step."""
        if self.enabled and not last:
            return model.no_sync()
        return contextlib.nullcontext()

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return value
        import torch.distributed as dist

        value = value.detach().clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
        return value / self.world_size

    @contextlib.contextmanager
    def main_process_first(self) -> Iterator[None]:
        """Rank 0 runs the block first (building cached models and data; transformers saves weights
        only on the main process), the other ranks after it, finding everything in the cache."""
        import torch.distributed as dist

        if self.enabled and self.rank != 0:
            dist.barrier()
        yield
        if self.enabled and self.rank == 0:
            dist.barrier()

    def barrier(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            dist.barrier()

    def close(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()


def rank() -> int:
    """This process's rank from the launcher's environment (0 when not distributed)."""
    return int(os.environ.get("RANK", "0")) if int(os.environ.get("WORLD_SIZE", "1")) > 1 else 0


def context() -> DistContext:
    """Join the process group when launched with several processes (WORLD_SIZE > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    import torch
    import torch.distributed as dist

    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend, rank=rank, world_size=world)
    return DistContext(rank, world, local)
