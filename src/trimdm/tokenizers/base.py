"""The one protocol every tokenizer implements (text BPE, image autoencoder, audio codec, adapters).

A tokenizer maps a raw item to *local* codes; it knows nothing of the joint id space. `JointVocab`
(vocab.py) turns local codes into joint ids, so offsets are computed in one place only (method §2).

Local code layout per modality:
- text:  shape (n,),      codes in [0, codebook_sizes[0])
- image: shape (h*w,),    raster order of the latent grid, codes in [0, codebook_sizes[0])
- audio: shape (frames, K), column k holds level k's codes in [0, codebook_sizes[k])
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Tokenizer(Protocol):
    modality: str  # "text" | "image" | "audio"

    @property
    def codebook_sizes(self) -> tuple[int, ...]:
        """One entry per codebook level (text and image: one level; audio: K levels)."""
        ...

    @property
    def rate(self) -> float:
        """Tokens per item (image), per second of audio (audio: frames/s × K), or NaN (text)."""
        ...

    def encode(self, item: Any) -> np.ndarray: ...

    def decode(self, codes: np.ndarray) -> Any: ...

    def save(self, directory: str | Path) -> None: ...
