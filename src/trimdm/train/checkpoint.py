"""Checkpoints: atomic, verifiable, and loadable without pickle.

A checkpoint is a directory `checkpoints/step_XXXXXXXX/` holding
    model.safetensors      fp32 weights (the master copy)
    optimizer.safetensors  optimizer tensor state, keys "<param index>.<name>"
    rng.safetensors        random generator states (uint8 tensors)
    state.json             step, tokens, loader position, optimizer scalars and groups, file sizes and
                           SHA-256 of the files above, the resolved config and the JointVocab
It is written under a temporary name, fsynced, renamed into place, and only then named in
`checkpoints/latest`; a crash at any point leaves the previous checkpoint usable. Loading checks every
file against state.json and names the file that is truncated or corrupt. Nothing is unpickled.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from trimdm.fileio import atomic_write_text, fsync_file, sha256_file

FILES = ("model.safetensors", "optimizer.safetensors", "rng.safetensors")


def optimizer_to_flat(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, scalars = {}, {}
    for pid, st in state["state"].items():
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"{pid}.{k}"] = v.detach().contiguous().cpu()
            else:
                scalars[f"{pid}.{k}"] = v
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def optimizer_from_flat(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict = {}
    for key, v in list(tensors.items()) + list(meta["scalars"].items()):
        pid, name = key.rsplit(".", 1)  # pid: an index, or a parameter name (full FSDP state dicts)
        state.setdefault(int(pid) if pid.isdigit() else pid, {})[name] = v
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(run_dir: Path, step: int, model_state: dict, optim_state: dict,
                    rng: dict[str, torch.Tensor], trainer_state: dict, config: dict, vocab: dict,
                    keep: int = 2) -> Path:
    ckpt_root = Path(run_dir) / "checkpoints"
    ckpt_root.mkdir(parents=True, exist_ok=True)
    final = ckpt_root / f"step_{step:08d}"
    tmp = ckpt_root / f".step_{step:08d}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    opt_tensors, opt_meta = optimizer_to_flat(optim_state)
    save_file({k: v.detach().contiguous().cpu() for k, v in model_state.items()}, tmp / FILES[0])
    save_file(opt_tensors, tmp / FILES[1])
    save_file(rng, tmp / FILES[2])
    files = {}
    for name in FILES:
        fsync_file(tmp / name)
        files[name] = {"bytes": (tmp / name).stat().st_size, "sha256": sha256_file(tmp / name)}
    state = {"step": step, "trainer": trainer_state, "optimizer": opt_meta, "files": files,
             "config": config, "vocab": vocab}
    (tmp / "state.json").write_text(json.dumps(state, indent=1) + "\n")
    fsync_file(tmp / "state.json")
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    atomic_write_text(ckpt_root / "latest", final.name + "\n")
    for old in sorted(ckpt_root.glob("step_*"))[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(run_dir: Path) -> Path | None:
    pointer = Path(run_dir) / "checkpoints" / "latest"
    if not pointer.exists():
        return None
    path = pointer.parent / pointer.read_text().strip()
    if not path.is_dir():
        raise ValueError(f"{pointer} names {path.name}, which does not exist")
    return path


def resolve_checkpoint(path: str | Path) -> Path:
    """A run directory (its latest checkpoint) or a checkpoint directory."""
    path = Path(path)
    if (path / "state.json").exists():
        return path
    if not path.exists():
        raise ValueError(f"{path}: no such run or checkpoint directory")
    latest = latest_checkpoint(path)
    if latest is None:
        raise ValueError(f"{path}: no checkpoint found (expected {path}/checkpoints/latest)")
    return latest


def load_checkpoint(path: str | Path, with_optimizer: bool = True) -> dict:
    """Read and verify a checkpoint. Returns dict(step, model, optimizer, rng, trainer, config, vocab)."""
    path = resolve_checkpoint(path)
    state_path = path / "state.json"
    try:
        state = json.loads(state_path.read_text())
        files = state["files"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{state_path}: unreadable checkpoint state ({e})") from None
    out = {"path": path, "step": state["step"], "trainer": state["trainer"], "config": state["config"],
           "vocab": state["vocab"]}
    wanted = FILES if with_optimizer else FILES[:1]
    for name in wanted:
        p = path / name
        if not p.exists():
            raise ValueError(f"{p}: checkpoint file is missing")
        size = p.stat().st_size
        if size != files[name]["bytes"]:
            raise ValueError(f"{p}: checkpoint file is truncated or corrupt ({size} bytes, expected "
                             f"{files[name]['bytes']})")
        if sha256_file(p) != files[name]["sha256"]:
            raise ValueError(f"{p}: checkpoint file is corrupt (SHA-256 does not match state.json)")
        try:
            tensors = load_file(p)
        except (SafetensorError, OSError) as e:
            raise ValueError(f"{p}: cannot read safetensors ({e})") from None
        key = name.split(".")[0]
        out[key] = optimizer_from_flat(tensors, state["optimizer"]) if key == "optimizer" else tensors
    return out
