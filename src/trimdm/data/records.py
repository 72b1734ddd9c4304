"""One shard of a user's corpus: raw records -> checked, preprocessed, tokenised rows on disk.

Owns: what happens to one sample between its reader (data/sources/) and its shard: the text
normalisation the user asked for, images fitted to the tokenizer's square (media.fit_image), audio made
mono at the codec's rate and dropped or trimmed above the maximum duration, the train/val split by a
hash of the sample's key, the over-long-row check, and the reasons a sample is rejected. A shard is
written by `write_chunk` in a worker process (or inline) and marked complete by its `NAME.json`,
written last: a shard without it is never read and is rewritten on the next run.
Does not own the order of shards, the tokenizers' training or the corpus manifest (ingest.py).
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from trimdm.config import CorpusConfig
from trimdm.data.media import fit_image, read_audio, read_image
from trimdm.data.shards import write_shard
from trimdm.fileio import atomic_write_text, fsync_file, sha256_file

MEDIUM = {"image_text": "image", "audio_text": "audio"}  # the medium of each paired task
ROW_SPECIALS = 5  # TASK_m BOS_text ... EOS_text BOS_m ... EOS_m (sequence/layout.py paired_row)
# images per encoder call: 16 keeps a 64 px autoencoder's activations in cache; at 128 per call it ran
# 25% slower alone and 30% slower again beside a second worker (memory bandwidth; docs/LOG.md)
IMAGE_BATCH = 16


class Reject(Exception):
    """A sample that does not enter the corpus; the message is the reason recorded in rejects.jsonl."""


def split_of(key: str, seed: int, val_fraction: float) -> str:
    """"val" for a fraction `val_fraction` of keys, chosen by a hash of (seed, key): a sample stays on its
    side of the split whatever else the corpus holds."""
    h = int.from_bytes(hashlib.sha256(f"{seed}\0{key}".encode()).digest()[:8], "big") / 2.0 ** 64
    return "val" if h < val_fraction else "train"


def normalise_text(text: str, lowercase: bool, whitespace: str) -> str:
    text = text.strip()
    if whitespace == "collapse":
        text = re.sub(r"\s+", " ", text)
    return text.lower() if lowercase else text


def record_text(rec, kind: str, settings: CorpusConfig) -> str:
    what = {"text": "document", "image_text": "caption", "audio_text": "transcript"}[kind]
    if rec.error:
        raise Reject(rec.error)
    if rec.text is None:
        raise Reject(f"missing {what}")
    text = normalise_text(rec.text, settings.ingest.lowercase, settings.ingest.whitespace)
    if not text:
        raise Reject(f"empty {what}")
    return text


def record_image(rec, size: int, fit: str) -> np.ndarray:
    source = rec.media if rec.media is not None else rec.media_path
    if source is None:
        raise Reject("missing image")
    try:
        return fit_image(read_image(source, name=rec.key), size, fit)
    except ValueError as e:
        raise Reject(f"corrupt image: {_detail(e)}") from None


def record_audio(rec, sample_rate: int, max_seconds: float, too_long: str) -> tuple[np.ndarray, bool]:
    """(mono wave at `sample_rate`, whether it was trimmed)."""
    source = rec.media if rec.media is not None else rec.media_path
    if source is None:
        raise Reject("missing audio")
    if rec.media is None and not Path(source).is_file():
        raise Reject("missing audio file")
    try:
        wave = read_audio(source, sample_rate, name=rec.key)
    except ValueError as e:
        raise Reject(f"corrupt audio: {_detail(e)}") from None
    limit = int(max_seconds * sample_rate)
    if len(wave) > limit:
        if too_long == "drop":
            raise Reject(f"audio longer than {max_seconds:g}s")
        return wave[:limit], True
    return wave, False


def _detail(e: ValueError) -> str:
    """The problem of a media error without its 'WHERE: ' prefix (the reject names the key already)."""
    message = str(e)
    return message.split(": ", 1)[1] if ": " in message else message


@dataclass
class ChunkResult:
    """What a written shard holds, kept in its NAME.json (and summed into the corpus manifest)."""

    name: str
    kind: str
    samples: int = 0
    kept: dict = field(default_factory=lambda: {"train": 0, "val": 0})
    rejects: list = field(default_factory=list)  # {"source", "key", "reason"}
    trimmed: int = 0
    audio_seconds: float = 0.0
    audio_pairs: list = field(default_factory=list)  # (transcript tokens, frames) of train samples
    keys: dict = field(default_factory=lambda: {"train": [], "val": []})  # of the kept samples, in row order
    files: dict = field(default_factory=dict)  # shard name -> docs, tokens, dtype
    hashes: dict = field(default_factory=dict)  # file name -> bytes, sha256


class ChunkWriter:
    """Turns chunks of records of one kind into shards, with the corpus's tokenizers."""

    def __init__(self, tokenizers: dict, settings: CorpusConfig, fit: str):
        self.tok, self.settings, self.fit = tokenizers, settings, fit

    def _reject(self, result: ChunkResult, rec, reason: str) -> None:
        if self.settings.ingest.on_error == "fail":
            raise ValueError(f"{rec.source}: sample {rec.key}: {reason} (ingest.on_error=fail)")
        result.rejects.append({"source": rec.source, "key": rec.key, "reason": reason})

    def _media(self, rec, kind: str, result: ChunkResult):
        if kind == "image_text":
            return record_image(rec, self.tok["image"].image_size, self.fit)
        a = self.settings.tokenizers.audio
        wave, trimmed = record_audio(rec, self.tok["audio"].sample_rate, a.max_seconds, a.too_long)
        result.trimmed += trimmed
        return wave

    def _encode_media(self, kind: str, media: list) -> list[np.ndarray]:
        if not media:
            return []
        if kind == "image_text":
            images = np.stack(media)
            return [c for i in range(0, len(images), IMAGE_BATCH) for c in self.tok["image"].encode(images[i:i + IMAGE_BATCH])]
        return [np.asarray(self.tok["audio"].encode(w)).reshape(-1) for w in media]

    def write(self, directory: Path, name: str, kind: str, records: list) -> ChunkResult:
        """Process `records` into DIR/NAME.* shard files and DIR/NAME.json (written last)."""
        result = ChunkResult(name=name, kind=kind, samples=len(records))
        ingest = self.settings.ingest
        kept = []  # (record, split, text, medium)
        for rec in records:
            try:
                text = record_text(rec, kind, self.settings)
                medium = self._media(rec, kind, result) if kind != "text" else None
            except Reject as e:
                self._reject(result, rec, str(e))
                continue
            kept.append((rec, split_of(rec.key, ingest.seed, ingest.val_fraction), text, medium))
        with torch.inference_mode():
            texts = self.tok["text"].encode_batch([k[2] for k in kept])
            codes = self._encode_media(kind, [k[3] for k in kept]) if kind != "text" else [None] * len(kept)
        rows = {"train": ([], []), "val": ([], [])}
        levels = len(self.tok["audio"].codebook_sizes) if kind == "audio_text" else 1
        for (rec, split, _, medium), ids, code in zip(kept, texts, codes):
            if kind != "text" and ROW_SPECIALS + len(ids) + len(code) > ingest.max_row_tokens:
                self._reject(result, rec, f"over-long row ({ROW_SPECIALS + len(ids) + len(code)} tokens > "
                             f"ingest.max_row_tokens={ingest.max_row_tokens})")
                continue
            rows[split][0].append(ids)
            rows[split][1].append(code)
            result.kept[split] += 1
            result.keys[split].append(rec.key)
            if kind == "audio_text":
                result.audio_seconds += len(medium) / self.tok["audio"].sample_rate
                if split == "train":
                    result.audio_pairs.append((len(ids), len(code) // levels))
        self._write_files(directory, name, kind, rows, result)
        return result

    def _write_files(self, directory: Path, name: str, kind: str, rows: dict, result: ChunkResult) -> None:
        n_text = self.tok["text"].codebook_sizes[0]
        written = []
        for split, (ids, codes) in rows.items():
            written.append((f"{name}.{split}.text", write_shard(directory, f"{name}.{split}.text", ids, n_text)))
            if kind != "text":
                medium = MEDIUM[kind]
                size = self.tok[medium].codebook_sizes[0]
                written.append((f"{name}.{split}.{medium}",
                                write_shard(directory, f"{name}.{split}.{medium}", codes, size)))
            counts = np.bincount(np.concatenate(ids) if ids else np.zeros(0, np.int64), minlength=n_text + 1)
            counts[n_text] += len(ids)  # one EOS per text: the maskable text tokens
            np.save(directory / f"{name}.{split}.unigram.npy", counts.astype(np.int64))
        for shard, meta in written:
            result.files[shard] = meta
        for path in sorted(directory.glob(f"{name}.*")):
            if path.suffix != ".json":
                fsync_file(path)
                result.hashes[path.name] = {"bytes": path.stat().st_size, "sha256": sha256_file(path)}
        atomic_write_text(directory / f"{name}.json", json.dumps(result.__dict__, indent=1) + "\n")


def chunk_complete(directory: Path, name: str) -> dict | None:
    """The NAME.json of a finished shard whose files are all there with their sizes, else None."""
    path = directory / f"{name}.json"
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    for file, meta in info.get("hashes", {}).items():
        p = directory / file
        if not p.is_file() or p.stat().st_size != meta["bytes"]:
            return None
    return info
