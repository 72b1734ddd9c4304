"""A prepared corpus of the user's own data, as training and evaluation read it (`data.dataset=corpus`).

Owns: opening DIR (written by ingest.py; refused unless its manifest is there and its files match),
the row sources of a split (one per shard, joined), the rows a run's `data.seq_len` cannot hold (left
out and counted, never truncated), and what a run carries away: the tokenizers, the audio length rule,
the range of caption lengths and how images were fitted. Does not own building the corpus (ingest.py)
or the row layouts (sequence/).
"""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trimdm.data.ingest import load_tokenizers
from trimdm.data.records import MEDIUM
from trimdm.data.shards import Shard, verify_stage
from trimdm.sequence.layout import PackedText, PairedRows
from trimdm.tokenizers.vocab import JointVocab


class JoinedRows:
    """Several row sources read as one: row i of the whole is row i − start of the part that holds it."""

    def __init__(self, parts: list):
        self.parts = [p for p in parts if len(p)]
        self.starts = np.concatenate([[0], np.cumsum([len(p) for p in self.parts])]).astype(np.int64)

    def __len__(self) -> int:
        return int(self.starts[-1])

    def rows(self, index: np.ndarray) -> np.ndarray:
        index = np.asarray(index, dtype=np.int64)
        part = np.searchsorted(self.starts, index, side="right") - 1
        out = None
        for j in np.unique(part):
            where = np.nonzero(part == j)[0]
            rows = self.parts[j].rows(index[where] - self.starts[j])
            if out is None:
                out = np.empty((len(index), rows.shape[1]), dtype=np.int64)
            out[where] = rows
        return out


class JoinedTokens:
    """The token arrays of several shards read as one 1-D array (integer-array indexing and len), so that
    text is packed across shard boundaries as if the corpus were one document stream."""

    def __init__(self, parts: list[np.ndarray]):
        self.parts = parts
        self.starts = np.concatenate([[0], np.cumsum([len(p) for p in parts])]).astype(np.int64)

    def __len__(self) -> int:
        return int(self.starts[-1])

    def __getitem__(self, index: np.ndarray) -> np.ndarray:
        index = np.asarray(index, dtype=np.int64)
        part = np.searchsorted(self.starts, index, side="right") - 1
        out = np.empty(index.shape, dtype=np.int64)
        for j in np.unique(part):
            where = part == j
            out[where] = self.parts[j][index[where] - self.starts[j]]
        return out


def joined_text(shards: list[Shard]) -> tuple[JoinedTokens, np.ndarray]:
    """(tokens, document offsets) of several text shards, one after the other."""
    tokens = JoinedTokens([s.tokens for s in shards])
    offsets = [np.zeros(1, np.int64)] + [s.offsets[1:] + start for s, start in zip(shards, tokens.starts)]
    return tokens, np.concatenate(offsets)


class FittingRows:
    """The paired rows of a shard that fit `seq_len` (the others are left out, and counted)."""

    def __init__(self, rows: PairedRows, seq_len: int):
        self.inner, self.keep = rows, np.nonzero(rows.lengths <= seq_len)[0]
        self.left_out = len(rows) - len(self.keep)

    def __len__(self) -> int:
        return len(self.keep)

    def rows(self, index: np.ndarray) -> np.ndarray:
        return self.inner.rows(self.keep[np.asarray(index, dtype=np.int64)])


@dataclass
class CorpusData:
    directory: Path
    manifest: dict
    tokenizers: dict  # modality -> tokenizer
    fit: str = "crop"  # how images were fitted to the tokenizer's square
    log: object = None  # where to say how many rows a run's seq_len leaves out

    @property
    def tokenizer(self):
        return self.tokenizers["text"]

    def vocab(self) -> JointVocab:
        image, audio = self.tokenizers.get("image"), self.tokenizers.get("audio")
        return JointVocab(n_text=self.tokenizers["text"].codebook_sizes[0],
                          n_image=image.codebook_sizes[0] if image else 0,
                          audio_levels=len(audio.codebook_sizes) if audio else 0,
                          audio_codebook=audio.codebook_sizes[0] if audio else 0)

    def _shard(self, name: str) -> Shard:
        return Shard(self.directory / "shards", name, self._files[name])

    @functools.cached_property
    def _files(self) -> dict:
        return {name: meta for c in self.manifest["chunks"] for name, meta in c["files"].items()}

    def sources(self, split: str, vocab: JointVocab, seq_len: int, tasks=("text", "image_text", "audio_text")) -> dict:
        """Row sources of the corpus's tasks among `tasks`; paired rows longer than `seq_len` are left out
        (and said, through `self.log`)."""
        out = {}
        for kind in [k for k in self.manifest["kinds"] if k in tasks]:
            chunks = [c["name"] for c in self.manifest["chunks"] if c["kind"] == kind]
            if kind == "text":  # one stream of documents across shards: no partial row lost per shard
                shards = [s for s in (self._shard(f"{c}.{split}.text") for c in chunks) if len(s)]
                parts = [PackedText(*joined_text(shards), vocab, seq_len)] if shards else []
            else:
                parts = [FittingRows(self._paired(c, split, kind, vocab, seq_len), seq_len) for c in chunks]
                left_out = sum(p.left_out for p in parts)
                if left_out and self.log is not None:
                    self.log(f"data: {left_out} {split} {kind} rows longer than data.seq_len={seq_len} are left out")
            out[kind] = JoinedRows(parts)
        return out

    def _paired(self, chunk: str, split: str, kind: str, vocab: JointVocab, seq_len: int) -> PairedRows:
        text, media = self._shard(f"{chunk}.{split}.text"), self._shard(f"{chunk}.{split}.{MEDIUM[kind]}")
        return PairedRows(text.tokens, text.offsets, media.tokens, media.offsets, MEDIUM[kind], vocab, seq_len)

    def tokens_per_row(self, seq_len: int) -> dict[str, float]:
        """Mean non-padding tokens per training row of each task (text rows are full)."""
        out = {}
        for kind in self.manifest["kinds"]:
            if kind == "text":
                out[kind] = float(seq_len)
                continue
            lengths = np.concatenate([np.diff(self._shard(f"{c['name']}.train.text").offsets)
                                      + np.diff(self._shard(f"{c['name']}.train.{MEDIUM[kind]}").offsets) + 5
                                      for c in self.manifest["chunks"] if c["kind"] == kind])
            fitting = lengths[lengths <= seq_len]
            out[kind] = float(fitting.mean()) if len(fitting) else float(seq_len)
        return out

    def unigram_bits(self) -> float:
        return self.manifest["unigram"]["val_cross_entropy_bits"]

    def save_tokenizers(self, run_dir: Path) -> None:
        self.tokenizers["text"].save(Path(run_dir) / "tokenizer")
        for medium, tok in self.tokenizers.items():
            if medium != "text":
                tok.save(Path(run_dir) / "tokenizers" / medium)
        if "audio" in self.tokenizers:
            rule = Path(run_dir) / "tokenizers" / "audio" / "length_rule.json"
            rule.write_text(json.dumps(self.manifest["audio_length_rule"], indent=2) + "\n")
        if "image" in self.tokenizers:
            n = np.concatenate([np.diff(self._shard(f"{c['name']}.train.text").offsets)
                                for c in self.manifest["chunks"] if c["kind"] == "image_text"])
            folder = Path(run_dir) / "tokenizers" / "image"
            (folder / "caption_lengths.json").write_text(json.dumps({"min": int(n.min()), "max": int(n.max())}) + "\n")
            (folder / "fit.json").write_text(json.dumps({"fit": self.fit}) + "\n")


def load_corpus(directory: str | Path, log=None) -> CorpusData:
    """The complete corpus in `directory`; a clear error when it is missing, unfinished or damaged."""
    if not str(directory):
        raise ValueError("data.dataset=corpus needs data.corpus=DIR, a corpus written by `trimdm prepare "
                         "--text/--image-text/--audio-text SRC... --out DIR`")
    directory = Path(directory)
    if not (directory / "corpus.json").is_file():
        raise ValueError(f"data.corpus={directory}: not a trimdm corpus (write one with `trimdm prepare "
                         f"--text/--image-text/--audio-text SRC... --out {directory}`)")
    manifest, reason = verify_stage(directory)
    if manifest is None:
        raise ValueError(f"data.corpus={directory}: the corpus is incomplete or damaged ({reason}); rerun the "
                         f"same `trimdm prepare` to finish it")
    settings = json.loads((directory / "corpus.json").read_text())["settings"]
    return CorpusData(directory, manifest, load_tokenizers(directory / "tokenizers", manifest["kinds"]),
                      fit=settings["tokenizers"]["image"]["fit"], log=log)
