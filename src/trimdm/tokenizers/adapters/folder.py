"""The folder of a pretrained tokenizer: what it must hold, checked before any weights load, and the
settings file that lets a saved adapter reopen itself.

Owns: reading and checking a model folder's `config.json` (written by `save_pretrained`), importing an
optional dependency with the pip extra named when it is missing, and `trimdm_tokenizer.json`, the
adapter's own record beside the model's files:
    {"modality": "image" | "audio", "kind": "vqmodel" | "mimi" | "dac" | "encodec", "settings": {...}}
Does not own any model (image.py, audio.py) nor the choice between native and adapter (media.py).
"""
from __future__ import annotations

import importlib
import json
from pathlib import Path
from types import ModuleType
from typing import Any

SETTINGS_FILE = "trimdm_tokenizer.json"
MODEL_CONFIG = "config.json"
INSTALL = "pip install 'trimdm[hf]'"


def read_model_config(path: str | Path, kind: str, key: str, expected: str) -> dict[str, Any]:
    """The JSON object in `path`/config.json, which must name the model `kind` needs (`config[key] ==
    expected`); a ValueError naming the path when the folder or its config is missing or names another
    model."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path}: no such folder (a pretrained {kind} tokenizer is loaded from a local folder)")
    if not path.is_dir():
        raise ValueError(f"{path}: not a folder (a pretrained {kind} tokenizer is loaded from a local folder)")
    cfg_path = path / MODEL_CONFIG
    try:
        cfg = json.loads(cfg_path.read_text())
    except FileNotFoundError:
        raise ValueError(f"{path}: no {MODEL_CONFIG}, so not a saved {kind} model "
                         f"(save_pretrained writes one)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{cfg_path}: unreadable model config ({e})") from None
    if not isinstance(cfg, dict):
        raise ValueError(f"{cfg_path}: not a model config (expected a JSON object)")
    if cfg.get(key) != expected:
        found = cfg.get("_class_name") or cfg.get("model_type") or "no model class"
        raise ValueError(f"{cfg_path}: holds {found!r}, not the model kind {kind!r} needs ({key} {expected!r})")
    return cfg


def require(module: str, kind: str) -> ModuleType:
    """The optional package `module`, or a ValueError saying which pip extra brings it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ValueError(f"pretrained {kind!r} tokenizers need the {module!r} package ({e}): {INSTALL}") from None


def write_settings(directory: str | Path, modality: str, kind: str, settings: dict[str, Any]) -> None:
    record = {"modality": modality, "kind": kind, "settings": settings}
    (Path(directory) / SETTINGS_FILE).write_text(json.dumps(record, indent=2) + "\n")


def read_settings(directory: str | Path) -> tuple[str, str, dict[str, Any]]:
    """(modality, kind, settings) of a saved adapter; a ValueError naming the file when it is malformed."""
    path = Path(directory) / SETTINGS_FILE
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"{path}: missing, so {directory} holds no saved pretrained tokenizer") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: unreadable ({e})") from None
    if (not isinstance(record, dict) or set(record) != {"modality", "kind", "settings"}
            or not isinstance(record["settings"], dict)):
        raise ValueError(f"{path}: expected a JSON object with exactly \"modality\", \"kind\" and a "
                         f"\"settings\" object, got {record!r}")
    return record["modality"], record["kind"], record["settings"]


def from_local(cls, path: Path, kind: str, **kwargs):
    """`cls.from_pretrained` (a model or config class) from the local folder only, never the Hub; its
    failures as a ValueError naming the path."""
    try:
        return cls.from_pretrained(str(path), local_files_only=True, **kwargs)
    except (OSError, ValueError, RuntimeError, KeyError) as e:
        raise ValueError(f"{path}: cannot load the {kind} model ({type(e).__name__}: {e})") from None
