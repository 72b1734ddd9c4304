"""Data parallelism applied to a built model from outside (torchtitan's `parallelize_*` pattern).

- ddp:  `DistributedDataParallel` around the whole model; gradients averaged across ranks.
- fsdp: FSDP2 `fully_shard` on every transformer block, then on the root (embeddings, final norm,
        unembedding); parameters are sharded DTensors, all-gathered per block in forward and backward.
The model itself knows nothing of this. Full (unsharded) state dicts for checkpoints come from
`full_state` and go back through `load_full_state`, so any world size, or a single process, can read
a checkpoint written by another.
"""
from __future__ import annotations

import torch
from torch import nn

from trimdm.distributed.env import DistEnv


def parallelize(model: nn.Module, mode: str, env: DistEnv, device: torch.device) -> nn.Module:
    if not env.active:
        return model
    if mode == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids, broadcast_buffers=False)
    if mode == "fsdp":
        from torch.distributed.fsdp import fully_shard

        for block in model.blocks:
            fully_shard(block)
        fully_shard(model)
        return model
    raise ValueError(f"train.parallel={mode!r}: expected ddp | fsdp")


def compile_blocks(model: nn.Module) -> None:
    """torch.compile every transformer block in place (`train.compile`; torchtitan compiles per block
    too): each block's norms, rotary embedding, attention glue and SwiGLU fuse into a few kernels, which
    is where a model of a few million parameters spends a GPU's time. In place, so parameter names and
    checkpoints are unchanged. Applied before `parallelize`, as FSDP2 expects."""
    for block in model.blocks:
        block.compile(dynamic=True)


def full_state(model: nn.Module, optimizer: torch.optim.Optimizer, mode: str, env: DistEnv):
    """(model state, optimizer state) as full CPU tensors, identical on every rank."""
    if env.active and mode == "fsdp":
        from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                             get_optimizer_state_dict)

        opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return get_model_state_dict(model, options=opts), get_optimizer_state_dict(model, optimizer, options=opts)
    return unwrap(model).state_dict(), optimizer.state_dict()


def load_full_state(model: nn.Module, optimizer: torch.optim.Optimizer, model_state: dict, optim_state: dict,
                    mode: str, env: DistEnv) -> None:
    if env.active and mode == "fsdp":
        from torch.distributed.checkpoint.state_dict import (StateDictOptions, set_model_state_dict,
                                                             set_optimizer_state_dict)

        opts = StateDictOptions(full_state_dict=True)
        set_model_state_dict(model, model_state, options=opts)
        set_optimizer_state_dict(model, optimizer, optim_state, options=opts)
        return
    unwrap(model).load_state_dict(model_state)
    optimizer.load_state_dict(optim_state)


def unwrap(model: nn.Module) -> nn.Module:
    """The plain model inside a DDP wrapper (FSDP2 modifies the model in place: nothing to unwrap)."""
    return getattr(model, "module", model)
