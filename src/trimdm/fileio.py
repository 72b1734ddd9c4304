"""Files shared by checkpoints, prepared data and saved modules: hashes, fsync, atomic replace, and the
safetensors-plus-JSON folder of a small module (tokenizers, judges). No pickle anywhere."""
from __future__ import annotations

import hashlib
import json
import os
import uuid
from pathlib import Path


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def atomic_write_text(path: Path, text: str) -> None:
    """Write to a temporary sibling, fsync, then rename over `path`: readers see old or new, never half.

    The sibling's name is unique to this call, so two writers of the same path (two runs checking one
    prepared data set at once) each rename a whole file of their own; the last rename wins."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        tmp.write_text(text)
        fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# -- small saved modules: safetensors weights beside a JSON config ---------------------------------------
WEIGHTS = "model.safetensors"
CONFIG = "config.json"


def save_module(directory: str | Path, state: dict, meta: dict, indent: int = 1, newline: bool = True) -> None:
    """Save a small module (a tokenizer, a judge): `state` as DIR/model.safetensors (no pickle) and
    `meta` (its format tag and config) as DIR/config.json."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous().clone() for k, v in state.items()}, str(directory / WEIGHTS))
    (directory / CONFIG).write_text(json.dumps(meta, indent=indent) + ("\n" if newline else ""))


def read_module(directory: str | Path, what: str) -> tuple[dict, dict]:
    """(config JSON object, weights) of a module saved by `save_module`; a ValueError that names the
    file and `what` it should hold when either is missing or unreadable. The caller checks the format."""
    from safetensors.torch import load_file

    cfg_path, w_path = Path(directory) / CONFIG, Path(directory) / WEIGHTS
    try:
        meta = json.loads(cfg_path.read_text())
    except FileNotFoundError:
        raise ValueError(f"{cfg_path}: {what} config is missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{cfg_path}: unreadable {what} config ({e})") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{cfg_path}: not a {what} config (expected a JSON object)")
    if not w_path.is_file():
        raise ValueError(f"{w_path}: {what} weights are missing")
    try:
        state = load_file(str(w_path))  # safetensors: no pickle, no code runs on load
    except Exception as e:  # SafetensorError derives from Exception only
        raise ValueError(f"{w_path}: cannot read {what} weights ({type(e).__name__}: {e})") from None
    return meta, state


def load_state(net, state: dict, where: str | Path) -> None:
    """Load weights into a module built from its saved config; a mismatch names `where`."""
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ValueError(f"{where}: weights do not match the config ({e})") from None
