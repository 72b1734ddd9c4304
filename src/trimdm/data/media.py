"""Reading media files: images and audio, as every reader of user input and of data sets needs them.

Owns: `read_image` (any PIL-readable image -> uint8 RGB (H, W, 3)), `read_audio` (any soundfile-readable
file: WAV, FLAC, OGG -> float32 mono at a requested rate), `audio_info` (frames and rate, checked, without
decoding), the truncated-WAV check libsndfile lacks, and band-limited `resample`. Every failure is a
ValueError naming the file and the problem. Does not own folder layouts or manifests (the data sets) or
what a tokenizer needs of a medium (its own size checks).

Imports no torch at module level: tinyworld's speech-synthesis workers import this module (through
data/tinyworld/speech.py) and must start fast; `resample` imports it when called.
"""
from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np
import soundfile as sf
from PIL import Image

IMAGE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)
AUDIO_ERRORS = (sf.SoundFileError, RuntimeError, OSError)


def read_image(path: str | Path) -> np.ndarray:
    """The image at `path` as uint8 RGB (H, W, 3), decoded fully (a truncated file fails here, not later
    in a data loader) and converted from any mode (L, LA, P, RGBA, ...)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such image file")
    try:
        with Image.open(path) as im:
            im.load()
            return np.array(im.convert("RGB"), dtype=np.uint8)  # a writable copy, for torch
    except IMAGE_ERRORS as e:
        raise ValueError(f"{path}: not a readable image ({type(e).__name__}: {e})") from None


def _wav_header_problem(path: Path) -> str | None:
    """A reason if a RIFF/WAVE file promises more sample data than it holds, else None.

    libsndfile silently reads what is there, so truncation is found from the chunk sizes.
    Non-RIFF files (FLAC, ...) are left to soundfile.
    """
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        pos = 12
        while True:
            chunk = f.read(8)
            if len(chunk) < 8:
                return "truncated: no data chunk"
            chunk_id, chunk_size = chunk[:4], int.from_bytes(chunk[4:], "little")
            pos += 8
            if chunk_id == b"data":
                # 0 and 0xFFFFFFFF are placeholders written by streaming encoders: size unknown
                if chunk_size not in (0, 0xFFFFFFFF) and pos + chunk_size > size:
                    return (f"truncated: data chunk declares {chunk_size} bytes, "
                            f"file holds {size - pos}")
                return None
            pos += chunk_size + (chunk_size & 1)
            f.seek(pos)


def audio_info(path: str | Path) -> tuple[int, int]:
    """(frames, sample rate) of an audio file, read from its header; ValueError for a missing, truncated,
    unreadable or empty file."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such audio file")
    reason = _wav_header_problem(path)
    if reason is None:
        try:
            info = sf.info(str(path))
        except AUDIO_ERRORS as e:
            reason = f"unreadable ({e})"
        else:
            if info.frames == 0:
                reason = "no audio frames"
    if reason is not None:
        raise ValueError(f"{path}: not a readable audio file: {reason}")
    return info.frames, info.samplerate


def read_audio(path: str | Path, sample_rate: int) -> np.ndarray:
    """The audio at `path` as float32 mono (channels averaged) at `sample_rate` (resampled if needed)."""
    audio_info(path)
    try:
        data, file_sr = sf.read(str(path), dtype="float32", always_2d=True)
    except AUDIO_ERRORS as e:
        raise ValueError(f"{path}: not a readable audio file: unreadable ({e})") from None
    wave = data.mean(axis=1)
    if file_sr != sample_rate:
        wave = resample(wave, file_sr, sample_rate)
    return wave.astype(np.float32, copy=False)


RESAMPLE_ROLLOFF = 0.9  # filter cutoff as a fraction of the lower Nyquist frequency
RESAMPLE_ZEROS = 32  # zero crossings of the cutoff sinc on each side of the centre tap
RESAMPLE_BETA = 8.0  # Kaiser beta: stopband ~ beta / 0.1102 + 8.7 = 81 dB
_PHASES_PER_GROUP = 16  # output phases per matmul: speed only (same result up to float rounding)


@functools.lru_cache(maxsize=16)
def _polyphase_filters(orig_sr: int, new_sr: int):
    """(M, L, left padding, [(input offset in a block, (span, phases) matrix) per phase group]).

    Output n sits at input time t_n = n * orig / new. With g = gcd, M = orig / g inputs map to
    L = new / g outputs per block, output phase p = n mod L has base input floor(p M / L) and
    fraction f_p, and its taps are h(k - f_p) for integer k, where
        h(t) = 2 fc sinc(2 fc t) * kaiser(t / T, beta),   |t| <= T = ZEROS / (2 fc),
    fc = ROLLOFF * min(orig, new) / 2 / orig in cycles per input sample. The Kaiser transition
    width is about (A - 8) fc_hz / (14.36 ZEROS) = 0.16 fc_hz, so for 22.05 -> 16 kHz the passband
    is flat to ~6.6 kHz and everything above ~7.8 kHz (below the new Nyquist) is down >= 80 dB.
    Each phase's taps are normalised to sum to 1 (exact unity gain at DC).
    """
    import torch  # deferred: tinyworld's synthesis workers import this module and must start fast

    g = math.gcd(orig_sr, new_sr)
    m, l_ = orig_sr // g, new_sr // g
    fc = RESAMPLE_ROLLOFF * min(orig_sr, new_sr) / 2 / orig_sr
    half = RESAMPLE_ZEROS / (2 * fc)
    kh = int(math.floor(half))
    n_taps = 2 * kh + 2  # k in [-kh, kh + 1] covers |k - f| < half for every f in [0, 1)
    k = torch.arange(-kh, kh + 2, dtype=torch.float64)
    groups = []
    for p0 in range(0, l_, _PHASES_PER_GROUP):
        phases = torch.arange(p0, min(p0 + _PHASES_PER_GROUP, l_), dtype=torch.int64)
        base = phases * m // l_  # floor(p M / L)
        frac = (phases * m % l_).double() / l_
        t = k[None, :] - frac[:, None]  # (phases, taps): tap time minus output time
        window = torch.special.i0(
            RESAMPLE_BETA * torch.sqrt(torch.clamp(1 - (t / half) ** 2, min=0.0))
        ) / torch.special.i0(torch.tensor(RESAMPLE_BETA, dtype=torch.float64))
        taps = 2 * fc * torch.sinc(2 * fc * t) * window * (t.abs() <= half)
        taps = taps / taps.sum(dim=1, keepdim=True)
        offset = int(base[0])
        span = int(base[-1]) - offset + n_taps
        matrix = torch.zeros(span, len(phases), dtype=torch.float64)
        for j in range(len(phases)):
            start = int(base[j]) - offset
            matrix[start:start + n_taps, j] = taps[j]
        groups.append((offset, matrix.float()))
    return m, l_, kh, groups


def resample(wave: np.ndarray, orig_sr: int, new_sr: int) -> np.ndarray:
    """Band-limited resampling of a mono waveform to float32; length round(n * new / orig).

    Kaiser-windowed sinc interpolation (see `_polyphase_filters`), zero-padded at both ends, output
    sample n aligned with input time n * orig / new; the length rounds halves up.
    """
    import torch  # deferred, see _polyphase_filters

    if not (isinstance(orig_sr, int) and isinstance(new_sr, int) and orig_sr > 0 and new_sr > 0):
        raise ValueError(f"sample rates must be positive ints, got {orig_sr!r} -> {new_sr!r}")
    wave = np.asarray(wave)
    if wave.ndim != 1:
        raise ValueError(f"resample takes a 1-D mono wave, got shape {wave.shape}")
    n = wave.shape[0]
    n_out = (n * new_sr + orig_sr // 2) // orig_sr
    if orig_sr == new_sr:
        return wave.astype(np.float32, copy=True)
    if n_out == 0:
        return np.zeros(0, np.float32)
    m, l_, kh, groups = _polyphase_filters(orig_sr, new_sr)
    n_blocks = -(-n_out // l_)
    need = (n_blocks - 1) * m + max(offset + mat.shape[0] for offset, mat in groups)
    x_T = torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32))
    x_T = torch.nn.functional.pad(x_T, (kh, max(0, need - kh - n)))
    # one strided view per group of phases: row b holds the inputs that block b's outputs need
    y_BL = torch.cat(
        [x_T[offset:].unfold(0, mat.shape[0], m)[:n_blocks] @ mat for offset, mat in groups], dim=1
    )
    return y_BL.reshape(-1)[:n_out].numpy().copy()
