"""Token shards on disk: memory-mapped arrays plus an index, and stage manifests.

Owns: the on-disk format of tokenized data and the integrity check of a prepared stage. A stage is
a directory built under a temporary name and renamed into place only when complete, with a
`manifest.json` (written last) listing every file's size and SHA-256: a partial or corrupted stage is
detected (`verify_stage`) and rebuilt, and a finished one is never rewritten.

A shard `NAME` of documents is `NAME.tokens.bin` (raw uint16/uint32 ids, all documents concatenated)
and `NAME.offsets.npy` (int64 document starts, with a final entry equal to the token count).
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np

from trimdm.fileio import fsync_file, sha256_file

MANIFEST = "manifest.json"


def write_shard(directory: Path, name: str, docs: list[np.ndarray], vocab_size: int) -> dict:
    dtype = np.uint16 if vocab_size <= np.iinfo(np.uint16).max + 1 else np.uint32
    lengths = np.array([len(d) for d in docs], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    tokens = np.concatenate(docs).astype(dtype) if docs else np.zeros(0, dtype)
    tokens.tofile(directory / f"{name}.tokens.bin")
    np.save(directory / f"{name}.offsets.npy", offsets)
    return {"docs": len(docs), "tokens": int(offsets[-1]), "dtype": np.dtype(dtype).name}


class Shard:
    """Read side of a shard: `tokens` is a read-only memmap, `offsets` an in-memory index."""

    def __init__(self, directory: Path, name: str, meta: dict):
        path = directory / f"{name}.tokens.bin"
        self.tokens = np.memmap(path, dtype=np.dtype(meta["dtype"]), mode="r") if meta["tokens"] else \
            np.zeros(0, np.dtype(meta["dtype"]))
        self.offsets = np.load(directory / f"{name}.offsets.npy")
        if len(self.tokens) != self.offsets[-1]:
            raise ValueError(f"{path}: holds {len(self.tokens)} tokens but its index says {self.offsets[-1]}")

    def doc(self, i: int) -> np.ndarray:
        return np.asarray(self.tokens[self.offsets[i]:self.offsets[i + 1]])

    def __len__(self) -> int:
        return len(self.offsets) - 1


def finish_stage(tmp: Path, final: Path, info: dict) -> None:
    """Write the manifest (sizes and hashes of every file) and move the stage into place atomically."""
    files = {p.name: {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
             for p in sorted(tmp.iterdir()) if p.is_file() and p.name != MANIFEST}
    for p in tmp.iterdir():
        if p.is_file():
            fsync_file(p)
    (tmp / MANIFEST).write_text(json.dumps({**info, "files": files}, indent=2) + "\n")
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)


def verify_stage(directory: Path, deep: bool = False) -> tuple[dict | None, str]:
    """(manifest, "") if the stage is complete and intact, else (None, reason). `deep` checks hashes."""
    path = directory / MANIFEST
    if not path.exists():
        return None, f"{path} is missing"
    try:
        manifest = json.loads(path.read_text())
        files = manifest["files"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        return None, f"{path} is unreadable ({e})"
    for name, meta in files.items():
        p = directory / name
        if not p.exists():
            return None, f"{p} is missing"
        if p.stat().st_size != meta["bytes"]:
            return None, f"{p} has {p.stat().st_size} bytes, manifest says {meta['bytes']}"
        if deep and sha256_file(p) != meta["sha256"]:
            return None, f"{p} does not match its SHA-256 in the manifest"
    return manifest, ""


def new_stage_dir(final: Path) -> Path:
    tmp = final.with_name(f"{final.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp
