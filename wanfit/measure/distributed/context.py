"""This process's place in a several-GPU point, as torchrun describes it (RANK, WORLD_SIZE, LOCAL_RANK) and as
torch.distributed knows it once the process group is up."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class RankInfo:
    rank: int
    local_rank: int
    world_size: int


def rank_from_environ() -> RankInfo:
    """The rank torchrun's variables give this process (a single process: rank 0 of 1)."""
    rank = int(os.environ.get("RANK", "0"))
    return RankInfo(rank=rank, local_rank=int(os.environ.get("LOCAL_RANK", str(rank))),
                    world_size=int(os.environ.get("WORLD_SIZE", "1")))


def current_rank() -> RankInfo | None:
    """This process's rank while a process group is up, else None (a one-GPU point)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return None
    return RankInfo(rank=dist.get_rank(), local_rank=rank_from_environ().local_rank, world_size=dist.get_world_size())


def rank_device(requested: str | None, local_rank: int) -> str:
    """The device a rank runs on: its own GPU (cuda:LOCAL_RANK, as generate.py's device_id), or the CPU when asked
    or when there is no GPU."""
    if requested == "cpu" or (requested is None and not torch.cuda.is_available()):
        return "cpu"
    return f"cuda:{local_rank}"


def collective_backend(device: str) -> str:
    """NCCL between GPUs, gloo on the CPU (the official get_distributed_backend's choice; Wan-Video/Wan2.2
    wan/distributed/util.py)."""
    return "nccl" if device.startswith("cuda") else "gloo"
