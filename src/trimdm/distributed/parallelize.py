"""Data parallelism applied to a built model from outside (torchtitan's `parallelize_*` pattern).

- ddp:  `DistributedDataParallel` around the whole model; gradients averaged across ranks.
- fsdp: FSDP2 `fully_shard` on every transformer block, then on the root (embeddings, final norm,
        unembedding); parameters are sharded DTensors, all-gathered per block in forward and backward.
Activation checkpointing (`checkpoint_blocks`) and compile (`compile_blocks`) are applied per block
here too, before `parallelize`. The model itself knows nothing of this. Full (unsharded) state dicts for checkpoints come from
`full_state` and go back through `load_full_state`, so any world size, or a single process, can read
a checkpoint written by another.
"""
from __future__ import annotations

import functools

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


def checkpoint_blocks(model: nn.Module) -> None:
    """Activation checkpointing per transformer block (`train.activation_checkpointing`): a block keeps
    only its input for the backward pass and recomputes its activations there (one more forward of the
    trunk, about a third more FLOPs for a training step), so activation memory falls from every block's
    intermediates to one residual stream per block plus one block's intermediates at a time.
    torch.utils.checkpoint without reentrancy (the variant that works under DDP, FSDP2 and compile);
    the recomputation replays the same kernels on the same inputs under the same autocast state, so the
    gradients are those of the plain model bit for bit on a deterministic device (tests/unit/
    test_memory.py). In place, like `compile_blocks`: each block's `forward` is wrapped, so parameter
    names, optimizer groups and checkpoints are unchanged (torch's `checkpoint_wrapper` module would
    rename every parameter). Applied before `compile_blocks` and `parallelize`, as torchtitan does:
    FSDP2's hooks then run around the checkpointed forward, its parameters gathered for the recompute."""
    from torch.utils.checkpoint import checkpoint

    for block in model.blocks:
        block.forward = functools.partial(checkpoint, block.forward, use_reentrant=False)


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
