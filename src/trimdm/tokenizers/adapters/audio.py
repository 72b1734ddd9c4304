"""Audio tokenizer adapters over pretrained `transformers` neural codecs, loaded from a local folder.
Implements `tokenizers.base.AudioMediaTokenizer`: a float32 mono wave at the model's sampling rate
<-> int64 codes (frames, K), column k the k-th residual codebook, every level of one codebook size.

Kinds (all residual vector quantisers, so the first K levels of a deeper code are the K-level code):
- "mimi": Mimi (Défossez et al. 2024, arXiv:2410.00037, the Moshi codec), 12.5 frames/s at 24 kHz; its
  first level is the semantic (distilled) codebook. `levels` default: 8, the count Moshi models.
- "dac": Descript Audio Codec (Kumar et al. 2023, arXiv:2306.06546). `levels` default: all of them;
  trained with quantiser dropout, so any prefix decodes.
- "encodec": EnCodec (Défossez et al. 2022, arXiv:2210.13438). Decodes only at its target bandwidths,
  so `levels` (default 8) picks the largest target bandwidth whose codebook count is <= levels and the
  tokenizer emits that count (6 kbps and 8 codebooks for the 24 kHz model). Only the mono models
  without chunking or loudness normalisation are accepted (their per-chunk scales are not codes).

Encoding zero-pads the wave to whole frames, so `frames_for(s)` = ceil(s · sample_rate / hop) and a
decoded wave has frames · hop samples, hop = sample_rate / frames_per_second samples per frame.
Does not own training, joint ids (JointVocab), or which folder to open (media.py).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from trimdm.tokenizers.adapters.folder import from_local, read_model_config, require, write_settings
from trimdm.tokenizers.audio import _as_wave  # the native codec's wave check: 1-D, floating, finite

KINDS = ("mimi", "dac", "encodec")
_CLASSES = {"mimi": ("MimiConfig", "MimiModel"), "dac": ("DacConfig", "DacModel"),
            "encodec": ("EncodecConfig", "EncodecModel")}
DEFAULT_LEVELS = {"mimi": 8, "encodec": 8}  # dac: all of its codebooks


def _hop(kind: str, config, path: Path) -> int:
    """Samples per code frame, from the config: the product of the encoder's strides (DAC, EnCodec), or
    sampling_rate / frame_rate for Mimi, whose transformer stage downsamples once more."""
    if kind == "dac":
        return math.prod(config.downsampling_ratios)
    if kind == "encodec":
        return math.prod(config.upsampling_ratios)
    hop = config.sampling_rate / config.frame_rate
    if abs(hop - round(hop)) > 1e-6:
        raise ValueError(f"{path}: Mimi frame_rate {config.frame_rate} is no whole number of samples "
                         f"at {config.sampling_rate} Hz")
    return round(hop)


def _check_supported(kind: str, config, path: Path) -> None:
    if getattr(config, "audio_channels", 1) != 1:
        raise ValueError(f"{path}: a {config.audio_channels}-channel {kind} model; only mono models are supported")
    if kind == "encodec" and (config.normalize or config.chunk_length_s is not None):
        raise ValueError(f"{path}: EnCodec models that normalise loudness or encode in chunks keep per-chunk "
                         f"scales outside the codes and are not supported (normalize={config.normalize}, "
                         f"chunk_length_s={config.chunk_length_s})")


def encodec_codebooks(config, bandwidth: float) -> int:
    """Codebooks EnCodec uses at `bandwidth` kbps: bandwidth / (log2(C) bits · frames/s), at least one
    (transformers' EncodecResidualVectorQuantizer.get_num_quantizers_for_bandwidth)."""
    return int(max(1, math.floor(bandwidth * 1000 / (math.log2(config.codebook_size) * config.frame_rate))))


def _levels(kind: str, config, levels: int | None, path: Path) -> tuple[int, float | None]:
    """(codebooks emitted, EnCodec's bandwidth or None), checked against the model."""
    if levels is not None and (not isinstance(levels, int) or isinstance(levels, bool) or levels < 1):
        raise ValueError(f"{path}: levels must be a positive int, got {levels!r}")
    if kind == "encodec":
        want = DEFAULT_LEVELS["encodec"] if levels is None else levels
        counts = {float(bw): encodec_codebooks(config, bw) for bw in config.target_bandwidths}
        fitting = [bw for bw, n in counts.items() if n <= want]
        if not fitting:
            raise ValueError(f"{path}: no EnCodec target bandwidth uses <= {want} codebooks "
                             f"(codebooks per bandwidth in kbps: {counts})")
        bandwidth = max(fitting, key=lambda bw: (counts[bw], bw))
        return counts[bandwidth], bandwidth
    total = config.n_codebooks if kind == "dac" else config.num_quantizers
    lowest = config.num_semantic_quantizers if kind == "mimi" else 1
    if levels is None:
        levels = min(DEFAULT_LEVELS["mimi"], total) if kind == "mimi" else total
    if not lowest <= levels <= total:
        raise ValueError(f"{path}: levels must lie in [{lowest}, {total}] for this {kind} model, got {levels}")
    return levels, None


class PretrainedAudioCodec:
    """A pretrained Mimi / DAC / EnCodec model as an audio tokenizer (see the module docstring)."""

    modality = "audio"

    def __init__(self, kind: str, path: str | Path, levels: int | None = None, device: str | torch.device = "cpu"):
        path = Path(path)
        if kind not in KINDS:
            raise ValueError(f"{path}: unknown audio tokenizer kind {kind!r}; known: {', '.join(KINDS)}")
        read_model_config(path, kind, "model_type", kind)
        transformers = require("transformers", kind)
        config_cls, model_cls = (getattr(transformers, name) for name in _CLASSES[kind])
        config = from_local(config_cls, path, kind)
        _check_supported(kind, config, path)
        self.kind, self.path, self.device = kind, path, torch.device(device)
        self.hop = _hop(kind, config, path)
        self.levels, self.bandwidth = _levels(kind, config, levels, path)
        self.codebook_size = int(config.codebook_size)
        self._sample_rate = int(config.sampling_rate)
        model = from_local(model_cls, path, kind, config=config, use_safetensors=True)
        self.model = model.to(device=self.device, dtype=torch.float32).eval()
        if kind == "encodec":
            assert self.model.quantizer.get_num_quantizers_for_bandwidth(self.bandwidth) == self.levels

    # --- AudioMediaTokenizer ------------------------------------------------------------------

    @property
    def sample_rate(self) -> int:
        return self._sample_rate

    @property
    def frames_per_second(self) -> float:
        return self._sample_rate / self.hop

    @property
    def codebook_sizes(self) -> tuple[int, ...]:
        return (self.codebook_size,) * self.levels

    @property
    def rate(self) -> float:
        """Tokens per second of audio: frames/s × K."""
        return self.frames_per_second * self.levels

    def frames_for(self, seconds: float) -> int:
        """Frames `encode` returns for `seconds` of audio: ceil(samples / hop)."""
        if seconds < 0:
            raise ValueError(f"seconds must be >= 0, got {seconds}")
        return -(-round(seconds * self._sample_rate) // self.hop)

    def encode(self, wave) -> np.ndarray:
        """float wave (n,) at sample_rate -> int64 codes (ceil(n / hop), K)."""
        w = _as_wave(wave)
        if len(w) == 0:
            return np.zeros((0, self.levels), dtype=np.int64)
        n = -(-len(w) // self.hop) * self.hop
        x_11T = F.pad(torch.from_numpy(w), (0, n - len(w)))[None, None].to(self.device)
        with torch.inference_mode():
            if self.kind == "mimi":
                codes_KF = self.model.encode(x_11T, num_quantizers=self.levels).audio_codes[0]
            elif self.kind == "dac":
                codes_KF = self.model.encode(x_11T, n_quantizers=self.levels, return_dict=True).audio_codes[0]
            else:
                codes_KF = self.model.encode(x_11T, bandwidth=self.bandwidth, return_dict=True).audio_codes[0, 0]
        codes = codes_KF[:self.levels].T.to(torch.int64).cpu().numpy()
        assert codes.shape == (n // self.hop, self.levels), codes.shape
        return codes

    def _check_codes(self, codes) -> torch.Tensor:
        c = np.asarray(codes)
        if c.ndim != 2 or c.shape[1] != self.levels:
            raise ValueError(f"audio codes must have shape (frames, {self.levels}), got {c.shape}")
        if not np.issubdtype(c.dtype, np.integer):
            raise ValueError(f"audio codes must be integers, got dtype {c.dtype}")
        if c.size and (c.min() < 0 or c.max() >= self.codebook_size):
            raise ValueError(f"audio codes outside [0, {self.codebook_size})")
        return torch.from_numpy(c.astype(np.int64))

    def decode(self, codes) -> np.ndarray:
        """codes (F, K) -> float32 wave (F·hop,) at sample_rate."""
        c_FK = self._check_codes(codes)
        if len(c_FK) == 0:
            return np.zeros(0, dtype=np.float32)
        c_1KF = c_FK.T[None].to(self.device)
        with torch.inference_mode():
            if self.kind == "mimi":
                wave = self.model.decode(c_1KF).audio_values[0, 0]
            elif self.kind == "dac":
                wave = self.model.decode(audio_codes=c_1KF, return_dict=True).audio_values[0]
            else:
                wave = self.model.decode(c_1KF[None], [None], return_dict=True).audio_values[0, 0]
        return wave[:len(c_FK) * self.hop].float().cpu().numpy()

    def save(self, directory: str | Path) -> None:
        """The model (`save_pretrained`) and trimdm_tokenizer.json, so `directory` reopens alone."""
        Path(directory).mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(str(directory))
        write_settings(directory, self.modality, self.kind, {"levels": self.levels})
