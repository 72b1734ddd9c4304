"""Process-group set-up for `torchrun` (method §7). A single process needs none of this.

Owns: reading torchrun's environment, choosing the backend (nccl on GPUs, gloo on CPUs), the device of
each rank, small collectives the trainer needs, and a clean exit. Workers end with barrier, destroy,
flush and `os._exit(0)`: gloo workers have been seen to abort at interpreter exit after finishing.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def init_distributed(device: torch.device) -> DistEnv:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return DistEnv()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return DistEnv(rank, world, local_rank)


def rank_device(device: torch.device, env: DistEnv) -> torch.device:
    return torch.device("cuda", env.local_rank) if device.type == "cuda" else device


def all_reduce_sum(t: torch.Tensor, env: DistEnv) -> torch.Tensor:
    if env.active:
        t = t.clone()
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def broadcast_object(obj, env: DistEnv):
    if not env.active:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def is_main_process() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def finish(code: int = 0) -> None:
    """End a torchrun worker cleanly (see module docstring). Returns only for single processes."""
    if not dist.is_initialized():
        return
    dist.barrier()
    dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
