"""The memory check of a run (`train.memory_check`): the trainer refuses, before it builds the model, a
config whose estimated peak memory per process (model/memory.py) exceeds what the device has free, and
says what would fit: a smaller `train.micro_batch_size`, `train.activation_checkpointing=true`, or FSDP2
over more ranks.

Free memory: on a GPU `torch.cuda.mem_get_info` (per process: each rank has its own); on a CPU Linux's
MemAvailable (/proc/meminfo), shared by the node's ranks (torchrun's LOCAL_WORLD_SIZE). Where neither
can be read the check is skipped with a note. Owns the mapping from a config to `MemoryPlan`; the
formulas are model/memory.py's.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from trimdm.config import Config
from trimdm.model.memory import GiB, MemoryPlan, describe, training_memory
from trimdm.model.transformer import EXPLICIT_MAX_LEN
from trimdm.tokenizers.vocab import JointVocab
from trimdm.train.run import model_args

# A trimdm training process on a CPU apart from its model (Python, torch, tokenizers, the data opened):
# 0.26 GiB resident after the imports, 0.34 GiB once a demo_text trainer is built less its parameters
# (benchmarks/train_memory.py, docs/LOG.md 2026-12-06); rounded up
CPU_RUNTIME = 0.4 * GiB
FSDP_WORLDS = (2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


def memory_plan(cfg: Config, vocab: JointVocab, world: int, device: torch.device, micro: int | None = None,
                checkpointing: bool | None = None, parallel: str | None = None) -> MemoryPlan:
    """The MemoryPlan of a derived config on `world` processes of `device`; the keyword arguments
    replace the config's micro-batch (rows), checkpointing and parallel mode."""
    t = cfg.train
    rank_rows = cfg.derived.batch // world
    micro = micro or t.micro_batch_size or rank_rows
    parallel = parallel or t.parallel
    bf16 = t.dtype == "bf16"
    one_process_micro = world == 1 and rank_rows // micro > 1
    return MemoryPlan(
        micro_tokens=micro * cfg.data.seq_len, seq_len=cfg.data.seq_len,
        logit_width=1 + max(vocab.n_text, vocab.n_image, vocab.audio_codebook), bf16=bf16,
        checkpointing=t.activation_checkpointing if checkpointing is None else checkpointing,
        shards=world if parallel == "fsdp" and world > 1 else 1, ema=t.ema > 0,
        grad_copy=one_process_micro and t.noise_scale_every > 0,
        explicit_attention=device.type == "cpu" and bf16 and cfg.data.seq_len <= EXPLICIT_MAX_LEN,
        runtime=CPU_RUNTIME if device.type == "cpu" else 0.0)


def estimate(cfg: Config, vocab: JointVocab, world: int, device: torch.device, **changes) -> dict[str, float]:
    """Bytes per process by component and `peak` (model/memory.py) of a derived config."""
    return training_memory(model_args(cfg, vocab), memory_plan(cfg, vocab, world, device, **changes))


def available_memory(device: torch.device) -> tuple[float, str] | None:
    """(bytes free to this process, where that was read), or None where it cannot be read."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return float(free), f"free memory of {device} (torch.cuda.mem_get_info)"
    try:
        lines = Path("/proc/meminfo").read_text().splitlines()
    except OSError:
        return None
    kib = next((int(line.split()[1]) for line in lines if line.startswith("MemAvailable:")), None)
    if kib is None:
        return None
    ranks = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    share = f", shared by {ranks} processes on this node" if ranks > 1 else ""
    return kib * 1024.0 / ranks, f"MemAvailable in /proc/meminfo{share}"


def check_memory(cfg: Config, vocab: JointVocab, world: int, device: torch.device, log=print) -> dict[str, float]:
    """The estimate of a derived config; a ValueError that says how to fit it when its peak exceeds the
    free memory (unless train.memory_check=false)."""
    est = estimate(cfg, vocab, world, device)
    if not cfg.train.memory_check:
        return est
    free = available_memory(device)
    if free is None:
        log("memory check skipped: this system reports no available memory (/proc/meminfo)")
        return est
    available, where = free
    if est["peak"] <= available:
        return est
    raise ValueError(f"this run needs about {est['peak'] / GiB:.1f} GiB per process ({describe(est)} GiB), "
                     f"more than the {available / GiB:.1f} GiB available ({where}). To fit: "
                     + "; ".join(_remedies(cfg, vocab, world, device, available))
                     + "; or train.memory_check=false to start anyway (docs/scale.md)")


def _remedies(cfg: Config, vocab: JointVocab, world: int, device: torch.device, available: float) -> list[str]:
    t = cfg.train
    rank_rows = cfg.derived.batch // world
    micro = t.micro_batch_size or rank_rows
    out = []
    need = {m: estimate(cfg, vocab, world, device, micro=m)["peak"] for m in range(micro - 1, 0, -1)
            if rank_rows % m == 0}
    fits = [m for m, peak in need.items() if peak <= available]
    if fits:
        out.append(f"train.micro_batch_size={fits[0]} ({need[fits[0]] / GiB:.1f} GiB; rows per forward pass, the "
                   f"batch stays {cfg.derived.batch})")
    elif need:
        out.append(f"a smaller train.micro_batch_size is not enough ({need[1] / GiB:.1f} GiB at 1 row)")
    if not t.activation_checkpointing:
        ac = estimate(cfg, vocab, world, device, checkpointing=True)["peak"]
        out.append(f"train.activation_checkpointing=true ({ac / GiB:.1f} GiB, a third more compute)")
    for ranks in (w for w in FSDP_WORLDS if w > world and cfg.derived.batch % w == 0):
        per_rank = estimate(cfg, vocab, ranks, device, micro=min(micro, cfg.derived.batch // ranks),
                        parallel="fsdp")["peak"]
        if per_rank <= available:
            out.append(f"train.parallel=fsdp on {ranks} processes ({per_rank / GiB:.1f} GiB each, each with a GPU "
                       "or node of its own: parameters, gradients and AdamW states are sharded; torchrun, docs/scale.md)")
            break
    else:
        out.append("FSDP (train.parallel=fsdp) over more processes, with the above")
    return out
