"""Audio codec: 16 kHz speech <-> K residual codebooks at 25 frames/s (implements tokenizers.base.Tokenizer).

Owns: the log-mel front end (mel filterbank built here, STFT with torch), the convolutional encoder
and decoder over mel frames, the residual quantiser (ResidualFSQ or ResidualVQ from
`vector-quantize-pytorch`), waveform synthesis by fast Griffin-Lim, training on random crops, the
reconstruction metrics of method §9 (mel distance, STOI, codebook usage, token rate), saving and loading.
Does not own: where audio ids sit in the joint vocabulary (JointVocab: level k's code c is
off_audio + k·C + c) or the speech data (data/tinyworld/speech.py).

Pipeline (shapes for one utterance of F token frames, S = hop / mel_hop mel frames per token frame):
    wave (F·hop,) -> log-mel (n_mels, F·S) at 100 frames/s -> space-to-depth (n_mels·S, F)
    -> encoder (latent_dim, F) -> quantiser: codes (F, K) -> decoder -> log-mel (n_mels, F·S)
    -> pseudo-inverse of the filterbank -> |STFT| -> Griffin-Lim -> wave (F·hop,)
The mel front end runs at a finer hop (160 samples) than the tokens (640 samples) because
Griffin-Lim needs overlapping frames: at hop 640 with a 512-sample window it cannot rebuild phase
(measured STOI 0.90 at hop 320 and 0.80 at hop 640 vs 0.98 at hop 160, see DEFAULT notes below).
The encoder folds the S mel frames of a token frame into channels (space-to-depth), so every
convolution runs at 25 frames/s; the decoder unfolds them again.

References: residual quantisation, SoundStream (Zeghidour et al. 2021, Alg. 1); FSQ (Mentzer et al.
2023, arXiv:2309.15505) and its residual form as implemented by vector-quantize-pytorch; Griffin &
Lim (1984) with the momentum ("fast Griffin-Lim") update of Perraudin, Balazs & Søndergaard (2013);
mel scale of O'Shaughnessy (1987) (HTK formula) with Slaney's area-normalised triangles; STOI of
Taal et al. (2011) through torchmetrics/pystoi.
"""
from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from trimdm.fileio import CONFIG, WEIGHTS, load_state, read_module, save_module
from trimdm.optim.fit import fit

QUANTIZERS = ("rfsq", "rvq")
FORMAT = "trimdm.audio_codec"


@dataclasses.dataclass(frozen=True)
class AudioCodecConfig:
    """Everything needed to rebuild a codec (saved as config.json next to the weights).

    Defaults (measured on tinyworld speech, see docs/LOG.md and the module docstring):
    - n_fft = win = 512 (32 ms), mel_hop = 160 (10 ms), 80 mels: Griffin-Lim from the *original*
      log-mel reaches STOI 0.98; n_fft = win = 1024 gives 0.94, 64 mels 0.97.
    - hop = 640: 25 token frames per second, S = 4 mel frames folded into one token frame.
    - rfsq levels (8, 5, 5, 5): C = 1000 codes per level (the FSQ paper's ~1k configuration), K = 4
      levels -> 100 tokens/s and 4·log2(1000) ≈ 40 bits per frame, 1 kbit/s.
    """

    sample_rate: int = 16_000
    hop: int = 640  # samples per token frame: sample_rate / hop token frames per second
    mel_hop: int = 160  # samples per mel frame; must divide hop
    n_fft: int = 512
    win: int = 512  # Hann window length, <= n_fft
    n_mels: int = 80
    f_min: float = 0.0
    f_max: float = 8000.0
    log_floor: float = 1e-5  # log-mel = log(max(mel, log_floor)); silence sits at the floor
    channels: int = 256  # encoder/decoder width at 25 frames/s
    blocks: int = 4  # residual blocks in each of encoder and decoder (dilations 1, 2, 4, 8, 1, ...)
    latent_dim: int = 64  # encoder output / quantiser input dimension
    quantizer: str = "rfsq"  # "rfsq" (ResidualFSQ) | "rvq" (ResidualVQ, EMA codebooks, k-means init)
    levels: int = 4  # K residual codebooks
    # levels the tokenizer emits, coarsest first (0: all K). Decoding treats the others as zero residual
    # (the quantiser's dropout mask). The speech judge reads tinyworld reconstructions from the first
    # 1 / 2 / 4 levels at 14.4 / 8.8 / 8.4% CER (docs/LOG.md): the finer levels cost tokens
    # and training, not intelligibility
    emit_levels: int = 0
    fsq_levels: tuple[int, ...] = (8, 5, 5, 5)  # rfsq: C = prod(fsq_levels)
    rvq_codebook_size: int = 1024  # rvq: C
    gl_iters: int = 32  # Griffin-Lim iterations
    gl_momentum: float = 0.99  # fast Griffin-Lim momentum (0: classic Griffin-Lim)

    def __post_init__(self) -> None:
        if isinstance(self.fsq_levels, list):  # JSON gives lists
            object.__setattr__(self, "fsq_levels", tuple(self.fsq_levels))
        ints = ("sample_rate", "hop", "mel_hop", "n_fft", "win", "n_mels", "channels", "blocks",
                "latent_dim", "levels", "rvq_codebook_size", "gl_iters")
        for name in ints:
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"AudioCodecConfig.{name} must be a positive int, got {v!r}")
        if self.hop % self.mel_hop:
            raise ValueError(f"mel_hop ({self.mel_hop}) must divide hop ({self.hop})")
        if self.win > self.n_fft:
            raise ValueError(f"win ({self.win}) must be <= n_fft ({self.n_fft})")
        if not 0.0 <= self.f_min < self.f_max <= self.sample_rate / 2:
            raise ValueError(f"need 0 <= f_min < f_max <= sample_rate/2, got {self.f_min}, {self.f_max}")
        if self.n_mels > self.n_fft // 2 + 1:
            raise ValueError(f"n_mels ({self.n_mels}) exceeds the {self.n_fft // 2 + 1} STFT bins")
        if not self.log_floor > 0:
            raise ValueError(f"log_floor must be positive, got {self.log_floor}")
        if self.quantizer not in QUANTIZERS:
            raise ValueError(f"quantizer must be one of {QUANTIZERS}, got {self.quantizer!r}")
        if not self.fsq_levels or any(not isinstance(v, int) or v < 2 for v in self.fsq_levels):
            raise ValueError(f"fsq_levels must be a non-empty tuple of ints >= 2, got {self.fsq_levels!r}")
        if not isinstance(self.emit_levels, int) or isinstance(self.emit_levels, bool) or \
                not 0 <= self.emit_levels <= self.levels:
            raise ValueError(f"AudioCodecConfig.emit_levels must be an int in [0, levels={self.levels}], "
                             f"got {self.emit_levels!r}")
        if not 0.0 <= self.gl_momentum < 1.0:
            raise ValueError(f"gl_momentum must lie in [0, 1), got {self.gl_momentum}")

    @property
    def stride(self) -> int:
        """Mel frames per token frame (S)."""
        return self.hop // self.mel_hop

    @property
    def emitted(self) -> int:
        """Levels the tokenizer emits (K' <= K)."""
        return self.emit_levels or self.levels

    @property
    def codebook_size(self) -> int:
        return math.prod(self.fsq_levels) if self.quantizer == "rfsq" else self.rvq_codebook_size

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "AudioCodecConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown AudioCodecConfig fields {unknown}")
        return cls(**d)


# ---------------------------------------------------------------------------------------------
# front end: mel filterbank, log-mel, Griffin-Lim


def _hz_to_mel(f):
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def _mel_to_hz(m):
    return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


def mel_edges(cfg: AudioCodecConfig) -> np.ndarray:
    """n_mels + 2 frequencies (Hz): filter m rises from edges[m], peaks at edges[m+1], falls to edges[m+2]."""
    return _mel_to_hz(np.linspace(_hz_to_mel(cfg.f_min), _hz_to_mel(cfg.f_max), cfg.n_mels + 2))


def mel_filterbank(cfg: AudioCodecConfig) -> torch.Tensor:
    """(n_mels, n_fft//2 + 1) triangular filters on the HTK mel scale, Slaney area-normalised (2/width),
    so a filter's output does not grow with its bandwidth."""
    freqs = np.linspace(0.0, cfg.sample_rate / 2, cfg.n_fft // 2 + 1)
    edges = mel_edges(cfg)
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    fb = np.maximum(0.0, np.minimum((freqs - lo) / (mid - lo), (hi - freqs) / (hi - mid)))
    fb *= 2.0 / (hi - lo)
    if (fb.sum(axis=1) == 0).any():
        raise ValueError(f"n_mels={cfg.n_mels} is too many for n_fft={cfg.n_fft}: some mel filters are empty")
    return torch.from_numpy(fb.astype(np.float32))


class _FrontEnd(nn.Module):
    """log-mel analysis and Griffin-Lim synthesis; holds no trainable state."""

    def __init__(self, cfg: AudioCodecConfig):
        super().__init__()
        self.cfg = cfg
        fb_MB = mel_filterbank(cfg)
        self.register_buffer("fb_MB", fb_MB, persistent=False)
        self.register_buffer("fb_pinv_BM", torch.linalg.pinv(fb_MB), persistent=False)
        self.register_buffer("window", torch.hann_window(cfg.win), persistent=False)

    def _stft(self, x_BT: torch.Tensor) -> torch.Tensor:
        c = self.cfg
        return torch.stft(x_BT, c.n_fft, c.mel_hop, c.win, self.window, center=True,
                          pad_mode="constant", return_complex=True)

    def log_mel(self, x_BT: torch.Tensor) -> torch.Tensor:
        """(B, T) with T a multiple of mel_hop -> (B, n_mels, T / mel_hop) natural-log magnitude mel.

        STFT frame t is centred on sample t·mel_hop; the last centred frame (on sample T) is dropped so
        that a token frame of `hop` samples owns exactly S mel frames.
        """
        assert x_BT.shape[-1] % self.cfg.mel_hop == 0
        mag_BFT = self._stft(x_BT).abs()[..., :-1]
        return torch.log(torch.clamp(self.fb_MB @ mag_BFT, min=self.cfg.log_floor))

    def griffin_lim(self, logmel_MT: torch.Tensor) -> torch.Tensor:
        """(n_mels, Tm) log-mel -> (Tm·mel_hop,) wave: pinv(filterbank) -> magnitude -> fast Griffin-Lim.

        Phase starts from a fixed-seed random draw, so synthesis is deterministic.
        """
        c = self.cfg
        mel_MT = torch.exp(logmel_MT)
        mel_MT = torch.cat([mel_MT, mel_MT[:, -1:]], dim=1)  # the dropped end frame: repeat the last
        mag_FT = (self.fb_pinv_BM @ mel_MT).clamp(min=0.0)
        length = logmel_MT.shape[1] * c.mel_hop
        g = torch.Generator().manual_seed(0)
        phase = torch.exp(2j * math.pi * torch.rand(mag_FT.shape, generator=g)).to(torch.complex64)
        prev = torch.zeros_like(phase)
        for _ in range(c.gl_iters):
            wave = torch.istft(mag_FT * phase, c.n_fft, c.mel_hop, c.win, self.window, center=True, length=length)
            rebuilt = self._stft(wave[None])[0]
            phase = rebuilt + c.gl_momentum * (rebuilt - prev)  # Perraudin et al. (2013), Alg. 2
            prev = rebuilt
            phase = phase / phase.abs().clamp(min=1e-16)
        return torch.istft(mag_FT * phase, c.n_fft, c.mel_hop, c.win, self.window, center=True, length=length)


# ---------------------------------------------------------------------------------------------
# network


class _ResBlock(nn.Module):
    def __init__(self, ch: int, dilation: int):
        super().__init__()
        self.conv = nn.Conv1d(ch, ch, 3, padding=dilation, dilation=dilation)
        self.proj = nn.Conv1d(ch, ch, 1)

    def forward(self, x_BCT: torch.Tensor) -> torch.Tensor:
        return x_BCT + self.proj(F.gelu(self.conv(F.gelu(x_BCT))))


def _stack(cfg: AudioCodecConfig, c_in: int, c_out: int) -> nn.Sequential:
    dilations = [2 ** (i % 4) for i in range(cfg.blocks)]  # receptive field ±31 frames (1.2 s) at 4 blocks
    return nn.Sequential(
        nn.Conv1d(c_in, cfg.channels, 3, padding=1),
        *[_ResBlock(cfg.channels, d) for d in dilations],
        nn.GELU(),
        nn.Conv1d(cfg.channels, c_out, 1),
    )


def _build_quantizer(cfg: AudioCodecConfig) -> nn.Module:
    from vector_quantize_pytorch import ResidualFSQ, ResidualVQ

    if cfg.quantizer == "rfsq":
        # projections latent_dim <-> len(fsq_levels) are inside ResidualFSQ; each level quantises the
        # residual scaled up by prod(levels)^k (the library's `scales`).
        return ResidualFSQ(dim=cfg.latent_dim, levels=list(cfg.fsq_levels), num_quantizers=cfg.levels)
    # EMA codebooks with k-means init on the first batch and dead-code replacement, as SoundStream.
    return ResidualVQ(dim=cfg.latent_dim, num_quantizers=cfg.levels, codebook_size=cfg.rvq_codebook_size,
                      decay=0.99, kmeans_init=True, kmeans_iters=10, threshold_ema_dead_code=2,
                      commitment_weight=1.0)


class _CodecNet(nn.Module):
    """Normalised log-mel -> latent -> residual codes -> latent -> log-mel, all at 25 frames/s."""

    def __init__(self, cfg: AudioCodecConfig):
        super().__init__()
        self.cfg = cfg
        self.front = _FrontEnd(cfg)
        self.register_buffer("mel_mean", torch.zeros(cfg.n_mels))  # per-bin log-mel statistics,
        self.register_buffer("mel_std", torch.ones(cfg.n_mels))  # set from training data
        self.encoder = _stack(cfg, cfg.n_mels * cfg.stride, cfg.latent_dim)
        self.quantizer = _build_quantizer(cfg)
        self.decoder = _stack(cfg, cfg.latent_dim, cfg.n_mels * cfg.stride)

    def encode_latent(self, logmel_BMT: torch.Tensor) -> torch.Tensor:
        x = (logmel_BMT - self.mel_mean[:, None]) / self.mel_std[:, None]
        x = rearrange(x, "b m (f s) -> b (m s) f", s=self.cfg.stride)
        return rearrange(self.encoder(x), "b d f -> b f d")

    def quantize(self, z_BFD: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> (quantised latent (B, F, D), codes (B, F, K), auxiliary loss scalar)."""
        if not self.training and self.cfg.quantizer == "rvq" and not all(
                bool(layer._codebook.initted) for layer in self.quantizer.layers):
            # the library k-means-initialises empty codebooks on *any* forward, eval included: an
            # untrained rvq codec would silently fit its codebooks to the first thing it encodes
            raise ValueError("rvq codebooks are not initialised: train the codec (k-means init on the "
                             "first training batch) or load a trained one")
        out = self.quantizer(z_BFD)
        aux = out[2].sum() if self.cfg.quantizer == "rvq" else z_BFD.new_zeros(())
        return out[0], out[1], aux

    def decode_latent(self, q_BFD: torch.Tensor) -> torch.Tensor:
        y = self.decoder(rearrange(q_BFD, "b f d -> b d f"))
        y = rearrange(y, "b (m s) f -> b m (f s)", s=self.cfg.stride)
        return y * self.mel_std[:, None] + self.mel_mean[:, None]

    def forward(self, logmel_BMT: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Under autocast the convolutions run in low precision and the quantiser in fp32."""
        z = self.encode_latent(logmel_BMT)
        with torch.autocast(logmel_BMT.device.type, enabled=False):
            q, codes, aux = self.quantize(z.float())
        return self.decode_latent(q), codes, aux


# ---------------------------------------------------------------------------------------------
# the tokenizer


def _as_wave(wave) -> np.ndarray:
    w = np.asarray(wave)
    if w.ndim != 1:
        raise ValueError(f"wave must be 1-D (mono samples), got shape {w.shape}")
    if not np.issubdtype(w.dtype, np.floating):
        raise ValueError(f"wave must be floating point in [-1, 1], got dtype {w.dtype}")
    if not np.isfinite(w).all():
        raise ValueError("wave contains NaN or inf")
    return w.astype(np.float32, copy=False)


class AudioCodec:
    """Speech at `cfg.sample_rate` <-> int64 codes of shape (frames, K'), column k in [0, C): the
    coarsest K' = `cfg.emitted` of the K residual levels."""

    modality = "audio"

    def __init__(self, cfg: AudioCodecConfig, net: _CodecNet | None = None):
        self.cfg = cfg
        self.net = (net if net is not None else _CodecNet(cfg)).eval()

    # --- Tokenizer protocol -------------------------------------------------------------------

    @property
    def codebook_sizes(self) -> tuple[int, ...]:
        return (self.cfg.codebook_size,) * self.cfg.emitted

    @property
    def sample_rate(self) -> int:
        """Samples per second of the waves encode takes and decode returns."""
        return self.cfg.sample_rate

    @property
    def frames_per_second(self) -> float:
        return self.cfg.sample_rate / self.cfg.hop

    @property
    def rate(self) -> float:
        """Tokens per second of audio: frames/s × K' (the levels emitted)."""
        return self.frames_per_second * self.cfg.emitted

    def frames_for(self, seconds: float) -> int:
        """Token frames `encode` returns for `seconds` of audio: ceil(samples / hop)."""
        if seconds < 0:
            raise ValueError(f"seconds must be >= 0, got {seconds}")
        return -(-round(seconds * self.cfg.sample_rate) // self.cfg.hop)

    def _padded(self, wave: np.ndarray) -> torch.Tensor:
        n = -(-len(wave) // self.cfg.hop) * self.cfg.hop  # zero-pad to whole token frames
        return F.pad(torch.from_numpy(wave), (0, n - len(wave)))

    def mel(self, wave) -> np.ndarray:
        """(n_mels, frames·S) log-mel of the zero-padded wave, the encoder's input and the decoder's target."""
        w = _as_wave(wave)
        with torch.inference_mode():
            return self.net.front.log_mel(self._padded(w)[None])[0].numpy()

    def encode(self, wave) -> np.ndarray:
        """float wave (n,) -> int64 codes (ceil(n / hop), K'): the coarsest K' = `emit_levels` of K."""
        w = _as_wave(wave)
        if len(w) == 0:
            return np.zeros((0, self.cfg.emitted), dtype=np.int64)
        with torch.inference_mode():
            logmel = self.net.front.log_mel(self._padded(w)[None])
            _, codes_BFK, _ = self.net.quantize(self.net.encode_latent(logmel))
        return codes_BFK[0, :, :self.cfg.emitted].to(torch.int64).numpy()

    def _check_codes(self, codes) -> torch.Tensor:
        c = np.asarray(codes)
        if c.ndim != 2 or c.shape[1] != self.cfg.emitted:
            raise ValueError(f"audio codes must have shape (frames, {self.cfg.emitted}), got {c.shape}")
        if not np.issubdtype(c.dtype, np.integer):
            raise ValueError(f"audio codes must be integers, got dtype {c.dtype}")
        if c.size and (c.min() < 0 or c.max() >= self.cfg.codebook_size):
            raise ValueError(f"audio codes outside [0, {self.cfg.codebook_size})")
        return torch.from_numpy(c.astype(np.int64))

    def decode_mel(self, codes) -> np.ndarray:
        """codes (F, K') -> decoded log-mel (n_mels, F·S), before Griffin-Lim."""
        c = self._check_codes(codes)
        if len(c) == 0:
            return np.zeros((self.cfg.n_mels, 0), dtype=np.float32)
        # levels not emitted: -1, which the quantiser masks to a zero residual
        c = F.pad(c, (0, self.cfg.levels - self.cfg.emitted), value=-1)
        with torch.inference_mode():
            q_BFD = self.net.quantizer.get_output_from_indices(c[None])
            return self.net.decode_latent(q_BFD)[0].numpy()

    def mel_to_wave(self, logmel) -> np.ndarray:
        """(n_mels, Tm) log-mel -> float32 wave (Tm·mel_hop,) by Griffin-Lim."""
        m = torch.as_tensor(np.asarray(logmel, dtype=np.float32))
        if m.ndim != 2 or m.shape[0] != self.cfg.n_mels:
            raise ValueError(f"log-mel must have shape ({self.cfg.n_mels}, frames), got {tuple(m.shape)}")
        if m.shape[1] == 0:
            return np.zeros(0, dtype=np.float32)
        with torch.inference_mode():
            return self.net.front.griffin_lim(m).numpy().astype(np.float32)

    def decode(self, codes) -> np.ndarray:
        """codes (F, K') -> float32 wave (F·hop,) at cfg.sample_rate."""
        return self.mel_to_wave(self.decode_mel(codes))

    # --- persistence --------------------------------------------------------------------------

    def save(self, directory: str | Path) -> None:
        save_module(directory, self.net.state_dict(), {"format": FORMAT, "config": self.cfg.to_dict()}, newline=False)

    @classmethod
    def load(cls, directory: str | Path) -> "AudioCodec":
        meta, state = read_module(directory, "audio codec")
        cfg_path = Path(directory) / CONFIG
        if meta.get("format") != FORMAT or not isinstance(meta.get("config"), dict):
            raise ValueError(f"{cfg_path}: not an audio codec config (expected format {FORMAT!r})")
        try:
            cfg = AudioCodecConfig.from_dict(meta["config"])
        except (TypeError, ValueError) as e:
            raise ValueError(f"{cfg_path}: invalid audio codec config ({e})") from None
        net = _CodecNet(cfg)
        load_state(net, state, Path(directory) / WEIGHTS)
        return cls(cfg, net)


# ---------------------------------------------------------------------------------------------
# training


def _crops(waves: Sequence[np.ndarray], n: int, length: int, rng: np.random.Generator) -> torch.Tensor:
    """(n, length) random crops; utterances shorter than `length` are zero-padded (silence) at the end."""
    out = np.zeros((n, length), dtype=np.float32)
    for row, i in enumerate(rng.integers(len(waves), size=n)):
        w = waves[i]
        start = int(rng.integers(len(w) - length + 1)) if len(w) > length else 0
        seg = w[start:start + length]
        out[row, :len(seg)] = seg
    return torch.from_numpy(out)


def _mel_stats(front: _FrontEnd, waves: Sequence[np.ndarray], hop: int) -> tuple[torch.Tensor, torch.Tensor]:
    sums, sq, n = 0.0, 0.0, 0
    for w in waves:
        m = front.log_mel(F.pad(torch.from_numpy(w), (0, -len(w) % hop))[None])[0].double()
        sums, sq, n = sums + m.sum(1), sq + (m * m).sum(1), n + m.shape[1]
    mean = sums / n
    std = (sq / n - mean * mean).clamp(min=1e-6).sqrt()
    return mean.float(), std.float()


def _initial_codec(cfg: AudioCodecConfig, waves: Sequence[np.ndarray], batch_size: int, crop: int,
                   rng: np.random.Generator) -> tuple[_CodecNet, torch.Tensor]:
    """A fresh codec network with its log-mel normalisation measured on up to 256 utterances, and the
    first training batch; under `rvq` its codebooks are k-means-initialised on that batch, so that
    "untrained" means a random encoder with data-fitted codebooks (the library does this on the first
    forward). Draws from torch's global generator (the caller seeds it) and from `rng`."""
    net = _CodecNet(cfg)
    stats_idx = rng.choice(len(waves), size=min(256, len(waves)), replace=False)
    with torch.no_grad():
        mean, std = _mel_stats(net.front, [waves[i] for i in stats_idx], cfg.hop)
    net.mel_mean.copy_(mean)
    net.mel_std.copy_(std)
    first_BT = _crops(waves, batch_size, crop, rng)
    if cfg.quantizer == "rvq":
        net.train()
        with torch.no_grad():
            net(net.front.log_mel(first_BT))
        net.eval()
    return net, first_BT


def train_audio_codec(
    waves_train: Sequence[np.ndarray],
    waves_val: Sequence[np.ndarray],
    cfg: AudioCodecConfig,
    steps: int,
    batch_size: int,
    seed: int,
    log: Callable[[str], None] | None = print,
    *,
    lr: float = 2e-3,
    crop_seconds: float = 2.0,
    log_every: int = 100,
    bf16: bool = False,
) -> tuple[AudioCodec, dict]:
    """Train a codec on random `crop_seconds` crops with L1 on log-mel (+ commitment loss for rvq).

    Deterministic given (data, cfg, steps, batch_size, seed, lr, crop_seconds) and the torch thread
    count: crops come from numpy's generator seeded with `seed`, initialisation and the quantisers'
    own randomness from torch's global generator, seeded inside a forked RNG state (the caller's is
    left untouched). AdamW with 5% linear warm-up and cosine decay to 10% of `lr`, gradient clip 1.
    The report holds the validation mel L1 (decoded log-mel vs original, natural-log units) before
    and after training. `bf16`: forward passes under bf16 autocast (fp32 weights, quantiser and loss).
    """
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be >= 1, got {steps}, {batch_size}")
    if not waves_train:
        raise ValueError("waves_train is empty")
    waves_train = [_as_wave(w) for w in waves_train]
    waves_val = [_as_wave(w) for w in waves_val]
    if any(len(w) == 0 for w in waves_train):
        raise ValueError("waves_train contains an empty wave")
    crop = round(crop_seconds * cfg.sample_rate / cfg.hop) * cfg.hop
    if crop <= 0:
        raise ValueError(f"crop_seconds={crop_seconds} is shorter than one token frame")
    say = log or (lambda _s: None)
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net, first_BT = _initial_codec(cfg, waves_train, batch_size, crop, rng)
        codec = AudioCodec(cfg, net)
        val_init = mel_l1_decoded(codec, waves_val) if waves_val else math.nan
        warmup = max(1, steps // 20)

        def lr_at(step: int) -> float:
            if step < warmup:
                return lr * (step + 1) / warmup
            p = (step - warmup) / max(1, steps - warmup)
            return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p)))

        def loss_at(step: int):
            x_BT = first_BT if step == 0 else _crops(waves_train, batch_size, crop, rng)
            with torch.no_grad():
                target_BMT = net.front.log_mel(x_BT)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                pred_BMT, _, aux = net(target_BMT)
            rec = F.l1_loss((pred_BMT.float() - net.mel_mean[:, None]) / net.mel_std[:, None],
                            (target_BMT - net.mel_mean[:, None]) / net.mel_std[:, None])
            return rec + aux, rec.item()

        def on_log(done: int, values: list[float]) -> None:
            say(f"audio codec step {done}/{steps} l1(normalised log-mel) {np.mean(values[-log_every:]):.4f} "
                f"{time.perf_counter() - t0:.0f}s")

        losses = fit(net, steps, loss_at, lr_at, betas=(0.9, 0.99), log_every=log_every, on_log=on_log)
        net.eval()
        train_seconds = time.perf_counter() - t0
        val_final = mel_l1_decoded(codec, waves_val) if waves_val else math.nan
    report = {
        "steps": steps, "batch_size": batch_size, "seed": seed, "lr": lr, "crop_seconds": crop / cfg.sample_rate,
        "threads": torch.get_num_threads(), "train_seconds": train_seconds, "bf16": bf16,
        "params": sum(p.numel() for p in net.parameters()),
        "train_l1_first": float(np.mean(losses[:min(10, steps)])),
        "train_l1_last": float(np.mean(losses[-min(log_every, steps):])),
        "val_mel_l1_init": val_init, "val_mel_l1": val_final,
        "config": cfg.to_dict(),
    }
    say(f"audio codec trained in {train_seconds:.0f}s: val mel L1 {val_init:.3f} -> {val_final:.3f}")
    return codec, report


# ---------------------------------------------------------------------------------------------
# metrics (method §9: mel distance, STOI, tokens per second, codebook usage)


def mel_l1_decoded(codec: AudioCodec, waves: Sequence[np.ndarray]) -> float:
    """Mean |log-mel(original) - decoded log-mel| over all mel bins and frames (natural log units)."""
    total, n = 0.0, 0
    for w in waves:
        if len(w) == 0:
            continue
        ref = codec.mel(w)
        total += float(np.abs(codec.decode_mel(codec.encode(w)) - ref).sum())
        n += ref.size
    return total / max(n, 1)


def reconstruction_metrics(codec: AudioCodec, waves: Sequence[np.ndarray], stoi: bool = True) -> dict:
    """Reconstruction quality of `codec` on `waves` (float, at codec.cfg.sample_rate).

    mel_l1_decoded: mean |log-mel(x) - decoded log-mel| (before Griffin-Lim);
    mel_l1_wave: mean |log-mel(x) - log-mel(decode(encode(x)))| (after Griffin-Lim);
    mel_l1_gl_original: the same for Griffin-Lim from the original log-mel (this decoder's ceiling);
    stoi_codes / stoi_gl_original: mean STOI (Taal et al. 2011) of the two syntheses against x;
    codebook_usage[k]: fraction of level k's C codes seen; codebook_perplexity[k]: exp(entropy) of
    level k's code histogram; tokens_per_second: frames/s × K.
    stoi=True needs the `pystoi` package (torchmetrics' backend) and raises if it is missing.
    """
    if stoi:
        from torchmetrics.utilities.imports import _PYSTOI_AVAILABLE

        if not _PYSTOI_AVAILABLE:
            raise ValueError("STOI needs the pystoi package (pip install pystoi); pass stoi=False to skip it")
        from torchmetrics.functional.audio import short_time_objective_intelligibility
    cfg = codec.cfg
    waves = [_as_wave(w) for w in waves if len(w)]
    if not waves:
        raise ValueError("no non-empty waves to measure")
    sums = {"dec": 0.0, "wave": 0.0, "gl": 0.0}
    stoi_codes, stoi_gl, n_el, seconds = [], [], 0, 0.0
    counts = np.zeros((cfg.emitted, cfg.codebook_size), dtype=np.int64)
    for w in waves:
        ref = codec.mel(w)
        codes = codec.encode(w)
        for k in range(cfg.emitted):
            counts[k] += np.bincount(codes[:, k], minlength=cfg.codebook_size)
        dec = codec.decode_mel(codes)
        y_codes = codec.mel_to_wave(dec)
        y_gl = codec.mel_to_wave(ref)
        sums["dec"] += float(np.abs(dec - ref).sum())
        sums["wave"] += float(np.abs(codec.mel(y_codes) - ref).sum())
        sums["gl"] += float(np.abs(codec.mel(y_gl) - ref).sum())
        n_el += ref.size
        seconds += len(w) / cfg.sample_rate
        if stoi:
            target = torch.from_numpy(w)
            for y, out in ((y_codes, stoi_codes), (y_gl, stoi_gl)):
                out.append(float(short_time_objective_intelligibility(
                    torch.from_numpy(y[:len(w)]), target, cfg.sample_rate)))
    p = counts / counts.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        entropy = -np.where(p > 0, p * np.log(p), 0.0).sum(axis=1)
    return {
        "n_utterances": len(waves), "seconds": seconds,
        "mel_l1_decoded": sums["dec"] / n_el, "mel_l1_wave": sums["wave"] / n_el,
        "mel_l1_gl_original": sums["gl"] / n_el,
        "stoi_codes": float(np.mean(stoi_codes)) if stoi else None,
        "stoi_gl_original": float(np.mean(stoi_gl)) if stoi else None,
        "codebook_size": cfg.codebook_size, "levels": cfg.levels, "levels_emitted": cfg.emitted,
        "codebook_usage": [float((c > 0).mean()) for c in counts],
        "codebook_perplexity": [float(math.exp(h)) for h in entropy],
        "frames_per_second": codec.frames_per_second, "tokens_per_second": codec.rate,
    }
