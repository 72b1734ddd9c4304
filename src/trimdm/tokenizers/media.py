"""Opening a saved media tokenizer without knowing which model it is.

Owns `load_media_tokenizer`: a folder written by a media tokenizer's `save` holds either a native
tokenizer (image.py's `ImageTokenizer`, audio.py's `AudioCodec`: config.json + model.safetensors) or a
pretrained adapter (adapters/: the model's own files + trimdm_tokenizer.json); the settings file tells
them apart. Does not own any tokenizer, nor where a run or data set keeps its tokenizers.
"""
from __future__ import annotations

from pathlib import Path

from trimdm.tokenizers.adapters import SETTINGS_FILE, load_pretrained
from trimdm.tokenizers.audio import AudioCodec
from trimdm.tokenizers.base import AudioMediaTokenizer, ImageMediaTokenizer
from trimdm.tokenizers.image import ImageTokenizer

MEDIA = ("image", "audio")


def load_media_tokenizer(directory: str | Path, modality: str) -> ImageMediaTokenizer | AudioMediaTokenizer:
    """The `modality` ("image" | "audio") tokenizer saved in `directory`: an adapter where the folder
    holds trimdm_tokenizer.json (on CPU), else the native tokenizer of that modality."""
    if modality not in MEDIA:
        raise ValueError(f"{directory}: modality must be one of {MEDIA}, got {modality!r}")
    directory = Path(directory)
    if (directory / SETTINGS_FILE).is_file():
        return load_pretrained(directory, modality)
    return ImageTokenizer.load(directory) if modality == "image" else AudioCodec.load(directory)
