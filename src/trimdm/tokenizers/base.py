"""The protocols every tokenizer implements (text BPE, image autoencoder, audio codec, adapters).

A tokenizer maps a raw item to *local* codes; it knows nothing of the joint id space. `JointVocab`
(vocab.py) turns local codes into joint ids, so offsets are computed in one place only (method §2).

Local code layout per modality:
- text:  shape (n,),      codes in [0, codebook_sizes[0])
- image: shape (h*w,),    raster order of the latent grid, codes in [0, codebook_sizes[0])
- audio: shape (frames, K), column k holds level k's codes in [0, codebook_sizes[k])

Media tokenizers add what their callers need to read and write raw media without knowing which
model is behind them (the native ones of image.py / audio.py or a pretrained adapter of adapters/):
- image (`ImageMediaTokenizer`): `image_size`, the side in pixels of the square uint8 RGB images
  (N, image_size, image_size, 3) that encode takes and decode returns;
- audio (`AudioMediaTokenizer`): `sample_rate` of the float32 mono waves encode takes and decode
  returns, `frames_per_second` of the codes, and `frames_for(seconds)`, the frames encode returns for
  that much audio.
`media.load_media_tokenizer` opens any of them from the folder their `save` wrote.
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


@runtime_checkable
class ImageMediaTokenizer(Tokenizer, Protocol):
    """uint8 images (N, image_size, image_size, 3) <-> int64 codes (N, h*w)."""

    @property
    def image_size(self) -> int:
        """Side length in pixels of the square images encode takes and decode returns."""
        ...


@runtime_checkable
class AudioMediaTokenizer(Tokenizer, Protocol):
    """float32 mono wave (n,) at sample_rate <-> int64 codes (frames, K)."""

    @property
    def sample_rate(self) -> int:
        """Samples per second of the waves encode takes and decode returns."""
        ...

    @property
    def frames_per_second(self) -> float:
        """Code frames per second of audio."""
        ...

    def frames_for(self, seconds: float) -> int:
        """Frames encode returns for `seconds` of audio."""
        ...
