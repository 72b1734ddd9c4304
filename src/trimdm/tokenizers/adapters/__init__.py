"""Pretrained tokenizers as trimdm tokenizers: a model folder on local disk (no download) becomes an
image or audio tokenizer with the native ones' surface (`tokenizers.base`), so a run can be trained
on its codes and carries it in its run directory.

Kinds: image "vqmodel" (diffusers VQModel: VQGAN / MoVQ, image.py); audio "mimi", "dac", "encodec"
(transformers codecs, audio.py). `diffusers` / `transformers` are optional (`pip install 'trimdm[hf]'`)
and imported only when an adapter is built.

Owns: `pretrained_tokenizer` (build one from a model folder and its settings) and `load_pretrained`
(reopen what an adapter's `save` wrote: the model's `save_pretrained` files plus trimdm_tokenizer.json,
folder.py). Does not own the choice between a native tokenizer and an adapter (tokenizers/media.py).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from trimdm.tokenizers.adapters.audio import PretrainedAudioCodec
from trimdm.tokenizers.adapters.folder import SETTINGS_FILE, read_settings
from trimdm.tokenizers.adapters.image import VQModelTokenizer

KINDS = {"image": ("vqmodel",), "audio": ("mimi", "dac", "encodec")}
SETTINGS = {"image": ("resolution",), "audio": ("levels",)}

__all__ = ["KINDS", "SETTINGS_FILE", "PretrainedAudioCodec", "VQModelTokenizer", "load_pretrained",
           "pretrained_tokenizer"]


def pretrained_tokenizer(modality: str, kind: str, path: str | Path, device: str | torch.device = "cpu",
                         **settings: Any) -> VQModelTokenizer | PretrainedAudioCodec:
    """The model saved (`save_pretrained`) in the local folder `path` as a `modality` tokenizer.

    image, kind "vqmodel": settings `resolution` (pixels, divisible by the model's downsampling
    factor; default the config's sample_size). audio, kind "mimi" | "dac" | "encodec": settings
    `levels` (codebooks to emit; defaults in adapters/audio.py). float32 on `device`.
    """
    if modality not in KINDS:
        raise ValueError(f"{path}: no pretrained tokenizers for modality {modality!r}; known: {', '.join(KINDS)}")
    if kind not in KINDS[modality]:
        raise ValueError(f"{path}: unknown {modality} tokenizer kind {kind!r}; known: {', '.join(KINDS[modality])}")
    unknown = sorted(set(settings) - set(SETTINGS[modality]))
    if unknown:
        raise ValueError(f"{path}: unknown settings {unknown} for a {kind} tokenizer; known: "
                         f"{', '.join(SETTINGS[modality])}")
    if modality == "image":
        return VQModelTokenizer(path, device=device, **settings)
    return PretrainedAudioCodec(kind, path, device=device, **settings)


def load_pretrained(directory: str | Path, modality: str | None = None,
                    device: str | torch.device = "cpu") -> VQModelTokenizer | PretrainedAudioCodec:
    """What an adapter's `save(directory)` wrote; with `modality`, a ValueError unless it is one."""
    saved, kind, settings = read_settings(directory)
    if modality is not None and saved != modality:
        raise ValueError(f"{Path(directory) / SETTINGS_FILE}: holds a {saved} tokenizer, not a {modality} one")
    return pretrained_tokenizer(saved, kind, directory, device=device, **settings)
