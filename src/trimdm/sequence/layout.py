"""Layout of one training row (method §3): packed text rows, padded paired rows, per-position tables.

Owns: where TASK/BOS/EOS/PAD go, how documents are packed, how paired rows are padded, and which
positions are maskable, padded, and of which modality. Does not own: ids of specials (JointVocab) or
how masks are drawn (diffusion/masking.py).

- Packed text: `TASK_text BOS_text doc1 EOS_text BOS_text doc2 EOS_text ...` cut every L−1 stream
  tokens; every row starts with TASK_text; a document may continue into the next row; no padding.
- Paired: `TASK_m BOS_text text EOS_text BOS_m media EOS_m PAD_text ...` right-padded to L.
Every per-position property is a function of the clean id alone, so a batch is just `ids_BL` and the
tables below recover modality, maskability and padding (`RowTables`).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch

from trimdm.tokenizers.vocab import MODALITIES, JointVocab


class PackedText:
    """Rows of length L over a corpus of documents, without materialising the packed stream.

    tokens: 1-D array of text ids (all documents concatenated); offsets: document starts, with a
    final entry len(tokens). The virtual stream is BOS doc EOS BOS doc EOS ...; row i holds TASK_text
    followed by stream[i·(L−1) : (i+1)·(L−1)]; the last partial row is dropped.
    """

    def __init__(self, tokens: np.ndarray, offsets: np.ndarray, vocab: JointVocab, seq_len: int):
        offsets = np.asarray(offsets, dtype=np.int64)
        if offsets.ndim != 1 or len(offsets) < 2 or offsets[0] != 0 or offsets[-1] != len(tokens):
            raise ValueError("document offsets must start at 0 and end at len(tokens)")
        if seq_len < 2:
            raise ValueError(f"seq_len={seq_len} leaves no room after TASK_text")
        self.tokens, self.vocab, self.seq_len = tokens, vocab, seq_len
        self.doc_start = offsets[:-1]
        doc_len = np.diff(offsets)
        # start of each document's BOS in the virtual stream; each doc adds 2 specials
        self.vstart = np.concatenate([[0], np.cumsum(doc_len + 2)])
        self.doc_len = doc_len
        self.n_rows = int(self.vstart[-1] // (seq_len - 1))

    def __len__(self) -> int:
        return self.n_rows

    def rows(self, index: np.ndarray) -> np.ndarray:
        """ids of rows `index` -> (len(index), L) int64."""
        index = np.asarray(index, dtype=np.int64)
        if index.size and (index.min() < 0 or index.max() >= self.n_rows):
            raise IndexError(f"row index outside [0, {self.n_rows})")
        span = self.seq_len - 1
        pos_BS = index[:, None] * span + np.arange(span)[None, :]  # virtual stream positions
        doc_BS = np.searchsorted(self.vstart, pos_BS, side="right") - 1
        rel_BS = pos_BS - self.vstart[doc_BS]  # 0: BOS, 1..len: token, len+1: EOS
        tok_idx = np.clip(self.doc_start[doc_BS] + rel_BS - 1, 0, len(self.tokens) - 1)
        out = self.tokens[tok_idx].astype(np.int64)
        out = np.where(rel_BS == 0, self.vocab.BOS_text, out)
        out = np.where(rel_BS == self.doc_len[doc_BS] + 1, self.vocab.EOS_text, out)
        task = np.full((len(index), 1), self.vocab.TASK_text, dtype=np.int64)
        return np.concatenate([task, out], axis=1)


PAIRED_TEXT_START = 2  # a paired row's text follows TASK_m and BOS_text


def paired_row(vocab: JointVocab, modality: str, text_ids: np.ndarray, media_ids: np.ndarray,
               seq_len: int) -> np.ndarray:
    """`TASK_m BOS_text text EOS_text BOS_m media EOS_m PAD_text...` of length seq_len.

    text_ids are BPE ids; media_ids are joint ids of `modality` (see JointVocab.image_ids/audio_ids).
    A row whose content exceeds seq_len is an error: media are never silently truncated."""
    if modality not in ("image", "audio"):
        raise ValueError(f"paired rows are image or audio, got {modality!r}")
    n = 5 + len(text_ids) + len(media_ids)
    if n > seq_len:
        raise ValueError(
            f"paired {modality} row needs {n} positions ({len(text_ids)} text + {len(media_ids)} "
            f"{modality} tokens + 5 specials) but data.seq_len={seq_len}"
        )
    v = vocab
    row = np.full(seq_len, v.PAD_text, dtype=np.int64)
    row[:n] = np.concatenate([
        [v.task(f"{modality}_text"), v.BOS_text], text_ids, [v.EOS_text],
        [v.bos(modality)], media_ids, [v.eos(modality)],
    ])
    return row


@dataclass
class RowTables:
    """Lookup tables from clean ids to per-position properties (built once per vocab)."""

    modality_V: torch.Tensor  # long: TEXT/IMAGE/AUDIO
    maskable_V: torch.Tensor  # bool
    mask_id_M: torch.Tensor  # MASK id per modality index
    pad_id: int
    vocab: JointVocab | None = None

    @classmethod
    def from_vocab(cls, vocab: JointVocab) -> "RowTables":
        return cls(vocab.modality_table(), vocab.maskable_table(), vocab.mask_ids(), vocab.PAD_text, vocab)

    def audio_level(self, ids_BL: torch.Tensor) -> torch.Tensor:
        """Residual level k of every position from its offset after the row's BOS_audio: audio is
        frame-major, so position BOS + 1 + j holds level j mod K whether it is clean or masked."""
        v = self.vocab
        is_bos = ids_BL == v.BOS_audio
        start = torch.where(is_bos.any(1), is_bos.long().argmax(1), 0)
        offset = torch.arange(ids_BL.shape[1], device=ids_BL.device)[None, :] - start[:, None] - 1
        return offset.remainder(max(v.audio_levels, 1))

    def output_heads(self, ids_BL: torch.Tensor, select_BL: torch.Tensor, every: bool = False) -> list[tuple]:
        """Split the selected positions by the output slice they predict: [(select, lo, hi, eos, m)].

        Text and image positions predict their modality's content ids plus its EOS; an audio position
        predicts only its own level's C codes plus EOS_audio (method §2: level k's codes are a separate
        range), which both the loss and the sampler use, so neither can put a code at the wrong level.
        Heads that select nothing are left out, unless `every`: then every slice of the vocabulary has
        its head, empty ones included, so that a loss built on them reaches every unembedding row (the
        same parameters get gradients on every rank of a distributed step, whatever each rank drew)."""
        v = self.vocab
        modality = self.modality(ids_BL)
        level = self.audio_level(ids_BL) if v.has("audio") else None
        heads = []
        for i, m in enumerate(MODALITIES):
            if not v.has(m):
                continue
            sel = select_BL & (modality == i)
            slices = [(sel, *v.content_range(m))] if m != "audio" else [
                (sel & (level == k), v.off_audio + k * v.audio_codebook, v.off_audio + (k + 1) * v.audio_codebook)
                for k in range(v.audio_levels)]
            heads += [(s, lo, hi, v.eos(m), m) for s, lo, hi in slices if every or bool(s.any())]
        return heads

    def modality(self, ids_BL: torch.Tensor) -> torch.Tensor:
        return self.modality_V[ids_BL]

    def maskable(self, ids_BL: torch.Tensor) -> torch.Tensor:
        return self.maskable_V[ids_BL]

    def pad(self, ids_BL: torch.Tensor) -> torch.Tensor:
        return ids_BL == self.pad_id


def row_tables(vocab: JointVocab, device: torch.device | str = "cpu") -> RowTables:
    """The tables of a vocabulary on the device of the ids they index, built once per (vocab, device):
    the loss and the sampler ask for them every call."""
    return _row_tables(vocab, str(torch.device(device)))


@functools.lru_cache(maxsize=8)
def _row_tables(vocab: JointVocab, device: str) -> RowTables:
    t = RowTables.from_vocab(vocab)
    return RowTables(t.modality_V.to(device), t.maskable_V.to(device), t.mask_id_M.to(device), t.pad_id, vocab)


class PairedRows:
    """Rows `TASK_m BOS_text text EOS_text BOS_m media EOS_m PAD...` over two aligned document shards.

    text_tokens/text_offsets: BPE ids of the captions or transcripts; media_codes/media_offsets: local
    codes (image: h·w per item; audio: frames·K per item, frame-major). Every row must fit seq_len:
    `check_fits` reports how many do not, so prepare can fail with counts instead of truncating."""

    def __init__(self, text_tokens, text_offsets, media_codes, media_offsets, modality: str, vocab: JointVocab,
                 seq_len: int):
        if len(text_offsets) != len(media_offsets):
            raise ValueError(f"{len(text_offsets) - 1} texts but {len(media_offsets) - 1} {modality} items")
        self.text, self.text_off = text_tokens, np.asarray(text_offsets)
        self.media, self.media_off = media_codes, np.asarray(media_offsets)
        self.modality, self.vocab, self.seq_len = modality, vocab, seq_len
        self.lengths = 5 + np.diff(self.text_off) + np.diff(self.media_off)

    def __len__(self) -> int:
        return len(self.text_off) - 1

    def check_fits(self, where: str) -> None:
        too_long = int((self.lengths > self.seq_len).sum())
        if too_long:
            raise ValueError(
                f"{where}: {too_long} of {len(self)} {self.modality}-text rows exceed data.seq_len="
                f"{self.seq_len} (longest {int(self.lengths.max())} tokens); raise data.seq_len or prepare "
                f"with a shorter maximum (media are never truncated)")

    def media_ids(self, i: int) -> np.ndarray:
        codes = np.asarray(self.media[self.media_off[i]:self.media_off[i + 1]])
        if self.modality == "image":
            return self.vocab.image_ids(codes)
        return self.vocab.audio_ids(codes.reshape(-1, self.vocab.audio_levels))

    def rows(self, index: np.ndarray) -> np.ndarray:
        out = np.empty((len(index), self.seq_len), dtype=np.int64)
        for j, i in enumerate(np.asarray(index)):
            text = np.asarray(self.text[self.text_off[i]:self.text_off[i + 1]])
            out[j] = paired_row(self.vocab, self.modality, text, self.media_ids(i), self.seq_len)
        return out

    def mean_tokens(self) -> float:
        """Mean non-padding tokens per row (used to turn token shares into row shares)."""
        return float(self.lengths.mean())
