"""Checkpoints: atomic, verifiable, and loadable without pickle.

A checkpoint is a directory `checkpoints/step_XXXXXXXX/` holding
    model.safetensors      fp32 weights (the master copy)
    optimizer.safetensors  optimizer tensor state, keys "<param index>.<name>"
    rng.safetensors        random generator states (uint8 tensors)
    ema.safetensors        the fp32 EMA of the weights (`train.ema`; only in runs that keep one)
    state.json             step, tokens, loader position, optimizer scalars and groups, file sizes and
                           SHA-256 of the files above, the resolved config and the JointVocab
It is written under a temporary name, fsynced, renamed into place, and only then named in
`checkpoints/latest`; a crash at any point leaves the previous checkpoint usable, and a write that fails
(disk full, permission) removes what it wrote and says that the previous one is intact. Loading checks
every file against state.json and names the file that is missing, truncated or corrupt. A run whose
latest checkpoint is corrupt resumes from its newest intact one (`load_newest_intact`); sampling and
evaluation instead stop and list the intact ones (`load_checkpoint`). Nothing is unpickled.
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
EMA_FILE = "ema.safetensors"  # optional: listed in state.json's files when the run keeps an EMA


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


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (disk full, permission); the previous one is left intact."""


def save_checkpoint(run_dir: Path, step: int, model_state: dict, optim_state: dict,
                    rng: dict[str, torch.Tensor], trainer_state: dict, config: dict, vocab: dict,
                    keep: int = 2, ema: dict[str, torch.Tensor] | None = None) -> Path:
    """Write checkpoint step_N and name it in `latest`. A write that fails leaves `latest` and the
    checkpoint it names as they were, removes what it wrote, and raises CheckpointWriteError."""
    ckpt_root = Path(run_dir) / "checkpoints"
    final = ckpt_root / f"step_{step:08d}"
    tmp = ckpt_root / f".{final.name}.tmp"
    # a step_N already there (saved again, or one a resume from an older checkpoint left behind) is set
    # aside, not deleted, until the new one is named: if it is the previous checkpoint it stays usable
    aside = ckpt_root / f".{final.name}.old"
    previous = latest_checkpoint(run_dir)
    placed = False
    try:
        ckpt_root.mkdir(parents=True, exist_ok=True)
        for stale in (tmp, aside):
            if stale.exists():
                shutil.rmtree(stale)
        _write_files(tmp, step, model_state, optim_state, rng, trainer_state, config, vocab, ema)
        if final.exists():
            os.replace(final, aside)
        os.replace(tmp, final)
        placed = True
        point_latest(final)
    except (OSError, SafetensorError) as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if placed:
            shutil.rmtree(final, ignore_errors=True)
        if aside.exists():
            os.replace(aside, final)
        kept = f"the previous checkpoint {previous.name} is intact" if previous else "there is no earlier checkpoint"
        raise CheckpointWriteError(f"could not write checkpoint {final} ({e}); {kept}") from e
    shutil.rmtree(aside, ignore_errors=True)
    _prune(ckpt_root, final, keep)
    return final


def _write_files(tmp: Path, step: int, model_state: dict, optim_state: dict, rng: dict[str, torch.Tensor],
                 trainer_state: dict, config: dict, vocab: dict, ema: dict[str, torch.Tensor] | None) -> None:
    tmp.mkdir()
    opt_tensors, opt_meta = optimizer_to_flat(optim_state)
    save_file({k: v.detach().contiguous().cpu() for k, v in model_state.items()}, tmp / FILES[0])
    save_file(opt_tensors, tmp / FILES[1])
    save_file(rng, tmp / FILES[2])
    names = FILES
    if ema is not None:
        save_file({k: v.detach().contiguous().cpu() for k, v in ema.items()}, tmp / EMA_FILE)
        names = FILES + (EMA_FILE,)
    files = {}
    for name in names:
        fsync_file(tmp / name)
        files[name] = {"bytes": (tmp / name).stat().st_size, "sha256": sha256_file(tmp / name)}
    state = {"step": step, "trainer": trainer_state, "optimizer": opt_meta, "files": files,
             "config": config, "vocab": vocab}
    (tmp / "state.json").write_text(json.dumps(state, indent=1) + "\n")
    fsync_file(tmp / "state.json")


def _prune(ckpt_root: Path, final: Path, keep: int) -> None:
    """Keep the `keep` newest checkpoints up to `final` (0: all). Any later one belongs to a timeline
    that a resume from an older checkpoint replaced (the corrupt one it passed over included)."""
    done = checkpoint_dirs(ckpt_root.parent)
    later = [p for p in done if p.name > final.name]
    earlier = [p for p in done if p.name <= final.name]
    for old in later + (earlier[keep:] if keep > 0 else []):
        shutil.rmtree(old, ignore_errors=True)


def checkpoint_dirs(run_dir: Path) -> list[Path]:
    """The checkpoint directories of a run, newest first (verified by nobody)."""
    return sorted((p for p in (Path(run_dir) / "checkpoints").glob("step_*") if p.is_dir()), reverse=True)


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint `checkpoints/latest` names (it may be missing or corrupt: loading verifies it), or
    None for a run that has saved none."""
    pointer = Path(run_dir) / "checkpoints" / "latest"
    if not pointer.exists():
        return None
    return pointer.parent / pointer.read_text().strip()


def point_latest(path: Path) -> None:
    """Name checkpoint `path` in its run's `checkpoints/latest`."""
    atomic_write_text(path.parent / "latest", path.name + "\n")


def load_checkpoint(path: str | Path, with_optimizer: bool = True) -> dict:
    """A checkpoint directory, or a run directory's latest checkpoint, read and verified. Returns
    dict(path, step, model, optimizer, rng, trainer, config, vocab, ema); ema is None in a run without
    one.

    When a run directory's latest checkpoint fails verification, the error names it and lists the run's
    intact checkpoints to pass instead: sampling and evaluation never fall back to an older model
    silently (resuming a run does, with a warning: `load_newest_intact`)."""
    path = Path(path)
    if (path / "state.json").exists():
        return read_checkpoint(path, with_optimizer)
    if not path.exists():
        raise ValueError(f"{path}: no such run or checkpoint directory")
    latest = latest_checkpoint(path)
    if latest is None:
        raise ValueError(f"{path}: no checkpoint found (expected {path}/checkpoints/latest)")
    try:
        return read_checkpoint(latest, with_optimizer)
    except ValueError as e:
        intact = [str(p) for p in checkpoint_dirs(path) if p != latest and _intact(p, with_optimizer)]
        hint = (f"intact: {', '.join(intact)}; pass one of those instead" if intact
                else "the run holds no intact checkpoint")
        raise ValueError(f"{path}: its latest checkpoint {latest.name} is corrupt ({e}); {hint}") from None


def load_newest_intact(run_dir: Path) -> tuple[dict, list[tuple[Path, str]]]:
    """For resuming a run: its latest checkpoint or, when that one fails verification, the newest one
    that passes. Returns (checkpoint, [(checkpoint passed over, why)]); a ValueError that names every
    checkpoint tried when none is intact. The run must have a `latest` pointer."""
    latest = latest_checkpoint(run_dir)
    tried = []
    for path in [latest] + [p for p in checkpoint_dirs(run_dir) if p != latest]:
        try:
            return read_checkpoint(path), tried
        except ValueError as e:
            tried.append((path, str(e)))
    raise ValueError(f"{run_dir}: no intact checkpoint to resume from; tried "
                     + "; ".join(f"{p.name}: {why}" for p, why in tried)
                     + ". Move the run directory aside to start afresh")


def _intact(path: Path, with_optimizer: bool) -> bool:
    try:
        read_checkpoint(path, with_optimizer)
    except ValueError:
        return False
    return True


def read_checkpoint(path: Path, with_optimizer: bool = True) -> dict:
    """Read checkpoint directory `path`, checking every file against the sizes and SHA-256 in its
    state.json; a ValueError names the file that is missing, truncated or corrupt."""
    if not path.is_dir():
        raise ValueError(f"{path}: checkpoint directory is missing")
    state_path = path / "state.json"
    try:
        state = json.loads(state_path.read_text())
        files = state["files"]
        out = {"path": path, "step": state["step"], "trainer": state["trainer"], "config": state["config"],
               "vocab": state["vocab"]}
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{state_path}: unreadable checkpoint state ({e})") from None
    wanted = FILES if with_optimizer else FILES[:1]
    out["ema"] = None
    if EMA_FILE in files:  # the EMA is read with or without the optimizer: sampling uses it
        wanted = wanted + (EMA_FILE,)
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
