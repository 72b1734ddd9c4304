"""Text tokenizer: byte-level BPE trained with HF `tokenizers` (implements tokenizers.base.Tokenizer).

Owns: training, encoding, decoding and saving the BPE. Its ids are local [0, vocab_size); JointVocab
places them at the start of the joint id space (text ids are the same in both). Special tokens of the
joint vocabulary are not BPE tokens: they are added by the sequence layout.
"""
from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers


class TextTokenizer:
    modality = "text"

    def __init__(self, hf: HFTokenizer):
        self.hf = hf

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int) -> "TextTokenizer":
        if vocab_size < 257:
            raise ValueError(f"byte-level BPE needs vocab_size >= 257 (256 bytes + merges), got {vocab_size}")
        hf = HFTokenizer(models.BPE())
        hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        hf.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        hf.train_from_iterator(texts, trainer=trainer)
        return cls(hf)

    @property
    def codebook_sizes(self) -> tuple[int, ...]:
        return (self.hf.get_vocab_size(),)

    @property
    def rate(self) -> float:
        return math.nan

    def encode(self, text: str) -> np.ndarray:
        return np.asarray(self.hf.encode(text, add_special_tokens=False).ids, dtype=np.int64)

    def encode_batch(self, texts: list[str]) -> list[np.ndarray]:
        # no special tokens of a loaded tokenizer.json's post-processor: the row layout adds trimdm's own
        return [np.asarray(e.ids, dtype=np.int64) for e in self.hf.encode_batch(texts, add_special_tokens=False)]

    def decode(self, codes) -> str:
        return self.hf.decode([int(c) for c in codes])

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.hf.save(str(directory / "tokenizer.json"))
        (directory / "tokenizer_config.json").write_text(json.dumps({"kind": "bpe", "vocab_size": self.codebook_sizes[0]}))

    @classmethod
    def load(cls, directory: str | Path) -> "TextTokenizer":
        return cls.load_file(Path(directory) / "tokenizer.json")

    @classmethod
    def load_file(cls, path: str | Path) -> "TextTokenizer":
        """Any HF `tokenizers` tokenizer.json (a BPE, WordPiece or Unigram model saved by `save`)."""
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"{path}: no such text tokenizer file (expected a tokenizer.json)")
        try:
            return cls(HFTokenizer.from_file(str(path)))
        except Exception as e:  # tokenizers raises a plain Exception on malformed files
            raise ValueError(f"{path}: cannot load text tokenizer ({e})") from None
