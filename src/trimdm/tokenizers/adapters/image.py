"""Image tokenizer adapter over a pretrained `diffusers.VQModel` (kind "vqmodel"): the VQGAN of Esser,
Rombach & Ommer 2021 (arXiv:2012.09841) and its MoVQ variant (Zheng et al. 2022, arXiv:2209.09002, the
Kandinsky image tokenizer), loaded from a local folder. Implements `tokenizers.base.ImageMediaTokenizer`.

Owns: the path from uint8 images to the quantiser's nearest-code indices and back, and saving the model
with the adapter's settings. Does not own training, joint ids (JointVocab), or which folder to open
(media.py).

    uint8 (N, R, R, 3) -> [-1, 1] (N, 3, R, R) -> encode(...).latents (N, D, h, w) -> nearest codebook
    entry per latent (VectorQuantizer, Euclidean) -> codes (N, h*w), raster order, in [0, num_vq_embeddings)
    codes -> codebook entries (N, D, h, w) -> decode(force_not_quantize=True) -> clamp -> uint8

R is the `resolution` setting and h = w = R / 2**(len(block_out_channels) - 1): every encoder block but
the last halves the grid. Runs in float32 on `device` (CPU by default).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from trimdm.tokenizers.adapters.folder import from_local, read_model_config, require, write_settings
# the native tokenizer's pixel conventions, so both map uint8 <-> [-1, 1] and check inputs alike
from trimdm.tokenizers.image import _check_images, _to_uint8, _to_unit, check_codes

KIND = "vqmodel"
_CHUNK = 16  # images per forward pass: pretrained autoencoders at 256 px are large


def _resolution(cfg: dict, resolution: int | None, path: Path) -> tuple[int, int]:
    """(resolution in pixels, downsampling factor), checked against the model's config."""
    channels = cfg.get("block_out_channels")
    if not isinstance(channels, list) or not channels:
        raise ValueError(f"{path}/config.json: block_out_channels must be a non-empty list, got {channels!r}")
    factor = 2 ** (len(channels) - 1)
    if resolution is None:
        resolution = cfg.get("sample_size")
        if not isinstance(resolution, int) or isinstance(resolution, bool):
            raise ValueError(f"{path}: the config's sample_size {resolution!r} is no side length; pass resolution=")
    if not isinstance(resolution, int) or isinstance(resolution, bool) or resolution < 1:
        raise ValueError(f"{path}: resolution must be a positive int (pixels), got {resolution!r}")
    if resolution % factor:
        raise ValueError(f"{path}: resolution {resolution} is not divisible by the model's downsampling "
                         f"factor {factor} (2**(len(block_out_channels) - 1))")
    return resolution, factor


class VQModelTokenizer:
    """A pretrained VQModel as an image tokenizer: uint8 (N, R, R, 3) <-> int64 codes (N, h*w)."""

    modality = "image"

    def __init__(self, path: str | Path, resolution: int | None = None, device: str | torch.device = "cpu"):
        """`resolution`: side in pixels of the images to encode (default: the config's sample_size)."""
        path = Path(path)
        cfg = read_model_config(path, KIND, "_class_name", "VQModel")
        self.resolution, factor = _resolution(cfg, resolution, path)
        self.grid = self.resolution // factor
        diffusers = require("diffusers", KIND)
        self.path, self.device = path, torch.device(device)
        # float32 at load (diffusers warns about casting afterwards); low_cpu_mem_usage needs `accelerate`
        model = from_local(diffusers.VQModel, path, KIND, use_safetensors=True, torch_dtype=torch.float32,
                           low_cpu_mem_usage=False)
        self.model = model.to(self.device).eval()
        self.n_codes = int(self.model.config.num_vq_embeddings)

    @property
    def image_size(self) -> int:
        return self.resolution

    @property
    def codebook_sizes(self) -> tuple[int, ...]:
        return (self.n_codes,)

    @property
    def rate(self) -> float:
        return float(self.grid**2)

    def encode(self, images: np.ndarray) -> np.ndarray:
        """uint8 (N, R, R, 3) -> int64 (N, h*w), or (R, R, 3) -> (h*w,)."""
        batch, single = _check_images(images, self.resolution)
        out = [np.zeros((0, self.grid**2), dtype=np.int64)]
        with torch.inference_mode():
            for i in range(0, len(batch), _CHUNK):
                x = _to_unit(batch[i:i + _CHUNK]).to(self.device)
                z_BDhw = self.model.encode(x).latents
                if z_BDhw.shape[-2:] != (self.grid, self.grid):
                    raise ValueError(f"{self.path}: the encoder gives a {tuple(z_BDhw.shape[-2:])} latent grid for "
                                     f"{self.resolution}px images, expected ({self.grid}, {self.grid})")
                _, _, (_, _, idx) = self.model.quantize(z_BDhw)
                out.append(idx.reshape(len(x), -1).to(torch.int64).cpu().numpy())
        codes = np.concatenate(out)
        return codes[0] if single else codes

    def _check_codes(self, codes) -> tuple[np.ndarray, bool]:
        return check_codes(codes, self.grid**2, self.n_codes)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """int (N, h*w) -> uint8 (N, R, R, 3), or (h*w,) -> (R, R, 3)."""
        batch, single = self._check_codes(codes)
        g, dim = self.grid, self.model.quantize.vq_embed_dim
        out = [np.zeros((0, self.resolution, self.resolution, 3), dtype=np.uint8)]
        with torch.inference_mode():
            for i in range(0, len(batch), _CHUNK):
                ids = torch.as_tensor(batch[i:i + _CHUNK], dtype=torch.long, device=self.device).reshape(-1)
                shape = (len(ids) // g**2, g, g, dim)
                if self.model.config.lookup_from_codebook:  # this decode looks the indices up itself
                    y = self.model.decode(ids, force_not_quantize=True, shape=shape).sample
                else:
                    q_BDhw = self.model.quantize.get_codebook_entry(ids, shape)
                    y = self.model.decode(q_BDhw, force_not_quantize=True).sample
                out.append(_to_uint8(y.float().cpu()))
        images = np.concatenate(out)
        return images[0] if single else images

    def save(self, directory: str | Path) -> None:
        """The model (`save_pretrained`) and trimdm_tokenizer.json, so `directory` reopens alone."""
        Path(directory).mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(str(directory), safe_serialization=True)
        write_settings(directory, self.modality, KIND, {"resolution": self.resolution})
