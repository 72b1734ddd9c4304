"""JointVocab: the single id space over text, image and audio tokens plus specials (method §2).

Owns: every offset and special id, the modality of any id, the per-modality output slice used for
logits, and the lookup tables the masking process needs. No other code computes offsets; the vocab is
saved with every checkpoint (as JSON) and rebuilt from it.

Layout, contiguous and in this order:
    text   [0, n_text)                      BPE ids
    image  [off_image, off_image + n_image)  image codebook
    audio  [off_audio, off_audio + K·C)      level k's code c at off_audio + k·C + c
    specials: BOS/EOS/MASK per modality, PAD_text, TASK_text, TASK_image_text, TASK_audio_text,
              then `n_reserved` spare task ids for later tasks.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

MODALITIES = ("text", "image", "audio")
TEXT, IMAGE, AUDIO = 0, 1, 2
TASKS = ("text", "image_text", "audio_text")


@dataclass(frozen=True)
class JointVocab:
    n_text: int
    n_image: int = 0  # image codebook size (0: no image tokens)
    audio_levels: int = 0  # K residual codebooks
    audio_codebook: int = 0  # C codes per level
    n_reserved: int = 5
    specials: dict[str, int] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self):
        if self.n_text <= 0:
            raise ValueError(f"JointVocab needs n_text > 0, got {self.n_text}")
        if self.n_image < 0 or self.audio_levels < 0 or self.audio_codebook < 0 or self.n_reserved < 0:
            raise ValueError("JointVocab sizes must be non-negative")
        if (self.audio_levels == 0) != (self.audio_codebook == 0):
            raise ValueError("audio_levels and audio_codebook must both be zero or both positive")
        names = [f"{kind}_{m}" for m in MODALITIES for kind in ("BOS", "EOS", "MASK")]
        names += ["PAD_text"] + [f"TASK_{t}" for t in TASKS]
        names += [f"TASK_reserved{i}" for i in range(self.n_reserved)]
        start = self.off_audio + self.n_audio
        object.__setattr__(self, "specials", {n: start + i for i, n in enumerate(names)})

    # -- ranges ------------------------------------------------------------------------------------
    @property
    def off_image(self) -> int:
        return self.n_text

    @property
    def off_audio(self) -> int:
        return self.n_text + self.n_image

    @property
    def n_audio(self) -> int:
        return self.audio_levels * self.audio_codebook

    @property
    def size(self) -> int:
        return self.off_audio + self.n_audio + len(self.specials)

    def segments(self) -> tuple[tuple[str, int], ...]:
        """(name, size) of the text, image, audio and specials ranges, each with its own tables."""
        return (("text", self.n_text), ("image", self.n_image), ("audio", self.n_audio),
                ("special", len(self.specials)))

    def content_range(self, modality: str) -> tuple[int, int]:
        """[lo, hi) of a modality's content ids (empty range when the modality is absent)."""
        lo, n = {"text": (0, self.n_text), "image": (self.off_image, self.n_image),
                 "audio": (self.off_audio, self.n_audio)}[modality]
        return lo, lo + n

    def has(self, modality: str) -> bool:
        lo, hi = self.content_range(modality)
        return hi > lo

    def __getattr__(self, name: str) -> int:  # vocab.BOS_text, vocab.MASK_image, vocab.TASK_text ...
        specials = self.__dict__.get("specials", {})
        if name in specials:
            return specials[name]
        raise AttributeError(name)

    def bos(self, m: str) -> int:
        return self.specials[f"BOS_{m}"]

    def eos(self, m: str) -> int:
        return self.specials[f"EOS_{m}"]

    def mask(self, m: str) -> int:
        return self.specials[f"MASK_{m}"]

    def task(self, t: str) -> int:
        return self.specials[f"TASK_{t}"]

    # -- local codes <-> joint ids -------------------------------------------------------------------
    def image_ids(self, codes: np.ndarray) -> np.ndarray:
        codes = np.asarray(codes)
        if codes.size and (codes.min() < 0 or codes.max() >= self.n_image):
            raise ValueError(f"image codes outside [0, {self.n_image})")
        return codes.astype(np.int64) + self.off_image

    def audio_ids(self, codes_FK: np.ndarray) -> np.ndarray:
        """(frames, K) codes -> frame-major joint ids: frame 1 levels 1..K, frame 2 levels 1..K, ..."""
        codes_FK = np.asarray(codes_FK)
        if codes_FK.ndim != 2 or codes_FK.shape[1] != self.audio_levels:
            raise ValueError(f"audio codes must have shape (frames, {self.audio_levels}), got {codes_FK.shape}")
        if codes_FK.size and (codes_FK.min() < 0 or codes_FK.max() >= self.audio_codebook):
            raise ValueError(f"audio codes outside [0, {self.audio_codebook})")
        level_offsets = self.off_audio + self.audio_codebook * np.arange(self.audio_levels)
        return (codes_FK.astype(np.int64) + level_offsets).reshape(-1)

    def audio_codes(self, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64)
        if ids.size % self.audio_levels:
            raise ValueError(f"{ids.size} audio ids are not a whole number of {self.audio_levels}-level frames")
        local = ids.reshape(-1, self.audio_levels) - self.off_audio
        return local - self.audio_codebook * np.arange(self.audio_levels)

    # -- tables for the masking process and the loss -----------------------------------------------
    def modality_table(self) -> torch.Tensor:
        """modality index (TEXT, IMAGE, AUDIO) of every id; specials belong to their modality."""
        table = torch.zeros(self.size, dtype=torch.long)
        for i, m in enumerate(MODALITIES):
            lo, hi = self.content_range(m)
            table[lo:hi] = i
            for kind in ("BOS", "EOS", "MASK"):
                table[self.specials[f"{kind}_{m}"]] = i
        return table

    def maskable_table(self) -> torch.Tensor:
        """True for content ids and EOS_*; False for TASK_*, BOS_*, PAD_text and MASK_* (method §3)."""
        table = torch.zeros(self.size, dtype=torch.bool)
        for m in MODALITIES:
            lo, hi = self.content_range(m)
            table[lo:hi] = True
            table[self.eos(m)] = True
        return table

    def mask_ids(self) -> torch.Tensor:
        """MASK id per modality index."""
        return torch.tensor([self.mask(m) for m in MODALITIES], dtype=torch.long)

    def output_ids(self, modality: str) -> torch.Tensor:
        """The ids a position of this modality may take: its content range, then its EOS.

        Logits are computed over exactly these ids, as a slice of the unembedding plus one row."""
        lo, hi = self.content_range(modality)
        return torch.cat([torch.arange(lo, hi), torch.tensor([self.eos(modality)])])

    def to_local(self, modality: str, ids: torch.Tensor) -> torch.Tensor:
        """Joint ids of a modality -> index into `output_ids(modality)`."""
        lo, hi = self.content_range(modality)
        return torch.where(ids == self.eos(modality), hi - lo, ids - lo)

    def to_joint(self, modality: str, local: torch.Tensor) -> torch.Tensor:
        lo, hi = self.content_range(modality)
        return torch.where(local == hi - lo, self.eos(modality), local + lo)

    def modality_of(self, token_id: int) -> str:
        if not 0 <= token_id < self.size:
            raise ValueError(f"id {token_id} outside the vocabulary [0, {self.size})")
        if token_id in self.specials.values() and not any(
            token_id == self.specials[f"{k}_{m}"] for m in MODALITIES for k in ("BOS", "EOS", "MASK")
        ):
            return "special"
        return MODALITIES[int(self.modality_table()[token_id])]

    # -- persistence -------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        d = asdict(self)
        d["size"] = self.size  # for readers; recomputed on load and checked
        return d

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def from_dict(cls, d: dict) -> "JointVocab":
        keys = ("n_text", "n_image", "audio_levels", "audio_codebook", "n_reserved")
        vocab = cls(**{k: int(d[k]) for k in keys if k in d})
        if "specials" in d and d["specials"] != vocab.specials:
            raise ValueError("saved JointVocab special ids disagree with the layout rebuilt from its sizes")
        return vocab

    @classmethod
    def load(cls, path: str | Path) -> "JointVocab":
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
            raise ValueError(f"{path}: not a valid JointVocab file ({e})") from None
