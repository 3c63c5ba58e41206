"""Helpers over ``torch.distributed`` that also work in a single process."""

from __future__ import annotations

import functools
import os
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

__all__ = [
    "get_world_size",
    "get_rank",
    "get_local_rank",
    "is_main_process",
    "synchronize",
    "all_gather",
    "gather",
    "shared_random_seed",
    "unwrap_model",
]


def _is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_world_size() -> int:
    return dist.get_world_size() if _is_dist() else 1


def get_rank() -> int:
    return dist.get_rank() if _is_dist() else 0


def get_local_rank() -> int:
    """Rank of this process on its machine (``LOCAL_RANK`` as set by ``launch`` or torchrun)."""
    return int(os.environ.get("LOCAL_RANK", 0)) if _is_dist() else 0


def is_main_process() -> bool:
    return get_rank() == 0


def synchronize() -> None:
    """Barrier across all processes (no-op in a single process)."""
    if get_world_size() == 1:
        return
    if dist.get_backend() == dist.Backend.NCCL and torch.cuda.is_available():
        dist.barrier(device_ids=[torch.cuda.current_device()])
    else:
        dist.barrier()


@functools.lru_cache
def _cpu_group() -> Any:
    """A gloo group so that Python objects can be gathered without touching the GPU."""
    if dist.get_backend() == dist.Backend.NCCL:
        return dist.new_group(backend="gloo")
    return dist.group.WORLD


def all_gather(data: Any) -> list[Any]:
    """Gather a picklable object from every process. Returns a list, one entry per rank."""
    if get_world_size() == 1:
        return [data]
    output: list[Any] = [None] * get_world_size()
    dist.all_gather_object(output, data, group=_cpu_group())
    return output


def gather(data: Any, dst: int = 0) -> list[Any]:
    """Gather a picklable object on rank ``dst``; other ranks get ``[]``."""
    if get_world_size() == 1:
        return [data]
    group = _cpu_group()
    if get_rank() == dst:
        output: list[Any] = [None] * get_world_size()
        dist.gather_object(data, output, dst=dst, group=group)
        return output
    dist.gather_object(data, None, dst=dst, group=group)
    return []


def shared_random_seed() -> int:
    """A random integer that is the same on every process (drawn on rank 0)."""
    seed = int(np.random.randint(2**31))
    return all_gather(seed)[0]


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The network inside a DistributedDataParallel (or DataParallel), else ``model``."""
    if isinstance(model, torch.nn.parallel.DistributedDataParallel | torch.nn.DataParallel):
        return model.module
    return model
