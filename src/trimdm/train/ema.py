"""An exponential moving average of the weights (`train.ema`, method §7), for evaluation and sampling.

After every applied optimizer step: ema ← ema + (1 − β)·(w − ema), i.e. β·ema + (1 − β)·w, in fp32 (the
master weights' dtype, whatever the autocast dtype). It starts at the weights the run starts from (its
initialisation, or `train.init`'s) and averages over about 1/(1 − β) steps, so β should leave that well
below the run's steps. A step skipped for a non-finite loss applies nothing and is not averaged.

Owns the average and its full (unsharded) state for checkpoints. Under FSDP2 each rank keeps the shard of
each parameter it owns (the average is elementwise, so shards never meet); `state_dict` gathers them and
`load_state_dict` scatters a full state back. It does not own where the average is saved
(checkpoint.py) or which weights a loaded run uses (run.py: the average, when a checkpoint has one).
"""
from __future__ import annotations

import torch
from torch import nn


def _local(t: torch.Tensor) -> torch.Tensor:
    """The local shard of an FSDP2 parameter (a DTensor), or the tensor itself."""
    return t.to_local() if hasattr(t, "to_local") else t


class WeightEMA:
    def __init__(self, model: nn.Module, decay: float):
        """`model`: the plain model (parameter names as in its state dict), after FSDP2 if any."""
        if not 0.0 < decay < 1.0:
            raise ValueError(f"train.ema={decay}: an EMA decay must be in (0, 1)")
        self.decay = decay
        self.params = {name: p for name, p in model.named_parameters() if p.requires_grad}
        with torch.no_grad():
            self.shadow = {name: p.detach().clone().float() for name, p in self.params.items()}

    @torch.no_grad()
    def update(self) -> None:
        names = list(self.params)
        torch._foreach_lerp_([_local(self.shadow[n]) for n in names],
                             [_local(self.params[n].detach()).float() for n in names], 1.0 - self.decay)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Full fp32 CPU tensors by parameter name (under FSDP2 a collective: every rank calls it)."""
        out = {}
        for name, t in self.shadow.items():
            full = t.full_tensor() if hasattr(t, "full_tensor") else t
            out[name] = full.detach().cpu().contiguous()
        return out

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        missing, extra = sorted(set(self.shadow) - set(state)), sorted(set(state) - set(self.shadow))
        if missing or extra:
            raise ValueError(f"EMA state does not fit the model (missing: {missing[:3]}; unexpected: {extra[:3]})")
        for name, t in self.shadow.items():
            full = state[name].to(torch.float32)
            if tuple(full.shape) != tuple(t.shape):
                raise ValueError(f"EMA state {name}: shape {tuple(full.shape)}, the model's {tuple(t.shape)}")
            if hasattr(t, "device_mesh"):  # a DTensor: this rank's shard of the full tensor
                from torch.distributed.tensor import distribute_tensor

                full = distribute_tensor(full.to(t.device_mesh.device_type), t.device_mesh, t.placements)
            _local(t).copy_(_local(full))
