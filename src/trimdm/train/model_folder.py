"""A model folder: one trained model as a self-describing, verifiable folder (`trimdm export` writes it).

    config.json        {"format": "trimdm-model", "version": 1, "library_name": "trimdm", "trimdm_version",
                       "trimdm_config": the run's resolved config without its `sample` section,
                       "vocab": the JointVocab, "trained": step, tokens and the checkpoint exported,
                       "files": bytes and SHA-256 of every other file that loading reads}
    model.safetensors  the fp32 weights (no optimizer state): the run's EMA of the weights when it kept one
                       (`trained.weights` says which: "ema" or "model")
    sampling.json      the sampling defaults: the config's `sample` section and its config version
    tokenizer/         the text tokenizer;  tokenizers/image, tokenizers/audio: the media tokenizers
    eval.json          the run's evaluation of the exported checkpoint, where it had one
    README.md          the model card (outside the manifest: a card may be edited)

The root holds config.json, model.safetensors and README.md, as the Hugging Face hub lays out a model.
Owns the format: recognising a folder, verifying it (every listed file's size and SHA-256, every
weight's shape against the config) and reading it into the dict `load_checkpoint` returns, so a run
directory, a checkpoint and a model folder load alike (`load_model_source`). Errors name the file that
is missing, truncated, corrupt or does not fit. Writing is export.py's; building the model is run.py's.
"""
from __future__ import annotations

import json
from pathlib import Path, PurePosixPath

from safetensors.torch import load_file

from trimdm.config import Config, config_version
from trimdm.fileio import sha256_file
from trimdm.train.checkpoint import load_checkpoint

FORMAT = "trimdm-model"
FORMAT_VERSION = 1
CONFIG = "config.json"
WEIGHTS = "model.safetensors"
SAMPLING = "sampling.json"
CARD = "README.md"
TEXT_TOKENIZER = "tokenizer"
MEDIA_TOKENIZERS = "tokenizers"
REQUIRED = (WEIGHTS, SAMPLING, f"{TEXT_TOKENIZER}/tokenizer.json")


def is_model_folder(path: str | Path) -> bool:
    """Whether `path` is a model folder: its config.json says so (a run directory's config.json does
    not). A config.json that cannot be read beside model.safetensors counts too, so that reading the
    folder names what is wrong with it."""
    path = Path(path)
    cfg = path / CONFIG
    if not cfg.is_file() or (path / "checkpoints").exists() or (path / "state.json").exists():
        return False
    try:
        meta = json.loads(cfg.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return (path / WEIGHTS).is_file()
    return isinstance(meta, dict) and meta.get("format") == FORMAT


def load_model_source(path: str | Path) -> dict:
    """A run directory (its latest checkpoint), a checkpoint directory or a model folder, read and
    verified, without optimizer state: dict(path, home, model_folder, step, tokens, model, ema, weights,
    config, vocab, config_file). `model` holds the training weights, `ema` their EMA (None where the run
    kept none, and in a model folder, whose one set of weights `weights` names: "ema" or "model").
    `home` holds the tokenizer folders; `config_file` is where the config was read."""
    if is_model_folder(path):
        return read_model_folder(path)
    ckpt = load_checkpoint(path, with_optimizer=False)
    return {**ckpt, "home": ckpt["path"].parent.parent, "model_folder": False, "weights": "model",
            "tokens": ckpt["trainer"].get("tokens"), "config_file": ckpt["path"] / "state.json"}


def read_model_folder(path: str | Path) -> dict:
    """Verify and read a model folder (the module docstring's layout); a ValueError names the file."""
    folder = Path(path)
    meta = read_folder_config(folder)
    verify_files(folder, meta["files"])
    config = {**meta["trimdm_config"], "sample": _read_sampling(folder, meta["trimdm_config"])}
    try:
        Config.from_dict(config).derive()
    except ValueError as e:
        raise ValueError(f"{folder / CONFIG} with {SAMPLING}: not a valid trimdm config ({e})") from None
    try:
        tensors = load_file(str(folder / WEIGHTS))  # safetensors: no pickle, no code runs on load
    except Exception as e:  # SafetensorError derives from Exception only
        raise ValueError(f"{folder / WEIGHTS}: cannot read safetensors ({type(e).__name__}: {e})") from None
    trained = meta["trained"]
    return {"path": folder, "home": folder, "model_folder": True, "step": trained.get("step"),
            "tokens": trained.get("tokens"), "model": tensors, "ema": None,
            "weights": trained.get("weights", "model"), "config": config, "vocab": meta["vocab"],
            "config_file": folder / CONFIG}


def read_folder_config(folder: Path) -> dict:
    """config.json of a model folder, with its format, version and sections checked."""
    cfg_path = folder / CONFIG
    if not folder.is_dir():
        raise ValueError(f"{folder}: no such model folder")
    try:
        meta = json.loads(cfg_path.read_text())
    except FileNotFoundError:
        raise ValueError(f"{cfg_path}: missing (a model folder's config)") from None
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ValueError(f"{cfg_path}: unreadable model folder config ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{cfg_path}: not a trimdm model folder config (expected \"format\": \"{FORMAT}\")")
    if meta.get("version") != FORMAT_VERSION:
        raise ValueError(f"{cfg_path}: model folder version {meta.get('version')!r}; this trimdm reads "
                         f"version {FORMAT_VERSION} (a newer trimdm wrote it?)")
    kinds = {"trimdm_config": dict, "vocab": dict, "trained": dict, "files": dict}
    bad = [k for k, kind in kinds.items() if not isinstance(meta.get(k), kind)]
    if bad:
        raise ValueError(f"{cfg_path}: missing or malformed {', '.join(bad)}")
    unlisted = [name for name in REQUIRED if name not in meta["files"]]
    if unlisted:
        raise ValueError(f"{cfg_path}: its file list lacks {', '.join(unlisted)}")
    return meta


def verify_files(folder: Path, files: dict) -> None:
    """Every file the manifest lists exists inside `folder` with its recorded size and SHA-256."""
    for name, rec in sorted(files.items()):
        rel = PurePosixPath(name)
        if rel.is_absolute() or ".." in rel.parts or not rel.parts or not isinstance(rec, dict):
            raise ValueError(f"{folder / CONFIG}: bad file entry {name!r} (a relative path inside the folder "
                             "with its bytes and sha256)")
        p = folder.joinpath(*rel.parts)
        if not p.is_file():
            raise ValueError(f"{p}: missing (the model folder's {CONFIG} lists it)")
        size = p.stat().st_size
        if size != rec.get("bytes"):
            raise ValueError(f"{p}: truncated or corrupt ({size} bytes, {CONFIG} records {rec.get('bytes')})")
        if sha256_file(p) != rec.get("sha256"):
            raise ValueError(f"{p}: corrupt (its SHA-256 does not match {CONFIG})")


def _read_sampling(folder: Path, trimdm_config: dict) -> dict:
    """The `sample` section sampling.json holds. It is written at the config's version, and read with
    the config (`Config.from_dict` upgrades both together), so a different version is an error."""
    path = folder / SAMPLING
    try:
        data = json.loads(path.read_text())
        sample, version = data["sample"], config_version(data["config_version"], str(path))
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: unreadable sampling defaults ({type(e).__name__}: {e})") from None
    if not isinstance(sample, dict):
        raise ValueError(f"{path}: \"sample\" must be a JSON object")
    if version != trimdm_config.get("version", 0):
        raise ValueError(f"{path}: config version {version} differs from {CONFIG}'s "
                         f"{trimdm_config.get('version', 0)}")
    return sample


def check_weights(expected: dict, tensors: dict, source: dict, file: str = WEIGHTS) -> None:
    """The weights of a source (`load_model_source`), read from its `file`, fit the model its config
    describes: the same names and shapes (`expected`: a freshly built model's state dict). A ValueError
    names both files."""
    weights, config = source["path"] / file, source["config_file"]
    missing, extra = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    if missing or extra:
        raise ValueError(f"{weights}: its tensors do not match the model {config} describes (missing: "
                         f"{missing[:3]}; unexpected: {extra[:3]})")
    for name, want in expected.items():
        if tuple(tensors[name].shape) != tuple(want.shape):
            raise ValueError(f"{weights}: {name} has shape {tuple(tensors[name].shape)}, but {config} "
                             f"describes {tuple(want.shape)}")
