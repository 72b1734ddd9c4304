"""Reading media files: images and audio, as every reader of user input and of data sets needs them.

Owns: `read_image` (any PIL-readable image, from a path or encoded bytes -> uint8 RGB (H, W, 3), modes
with transparency composited on white), `fit_image` (resize on the shorter side and centre-crop, or on
the longer side and pad with white, to a square), `read_audio` (any soundfile-readable file or bytes:
WAV, FLAC, OGG -> float32 mono at a requested rate), `audio_info` (frames and rate, checked, without
decoding), the truncated-WAV check libsndfile lacks, and band-limited `resample`. Every failure is a
ValueError naming the file and the problem. Does not own folder layouts or manifests (the data sets) or
what a tokenizer needs of a medium (its own size checks).

Imports no torch at module level: tinyworld's speech-synthesis workers import this module (through
data/tinyworld/speech.py) and must start fast; `resample` imports it when called.
"""
from __future__ import annotations

import functools
import io
import math
import re
from pathlib import Path

import numpy as np
import soundfile as sf
from PIL import Image

IMAGE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)
AUDIO_ERRORS = (sf.SoundFileError, RuntimeError, OSError)


def read_image(source: str | Path | bytes, name: str = "") -> np.ndarray:
    """The image at a path (or in encoded bytes, `name` saying where they came from) as uint8 RGB (H, W, 3),
    decoded fully (a truncated file fails here, not later in a data loader) and converted from any mode:
    L, P, CMYK, I;16 ... to RGB, and LA, RGBA, PA or a palette with transparency composited on white."""
    if isinstance(source, bytes):
        where, opened = name or "<image bytes>", io.BytesIO(source)
    else:
        where = str(source)
        if not Path(source).is_file():
            raise ValueError(f"{where}: no such image file")
        opened = source
    try:
        with Image.open(opened) as im:
            im.load()
            return np.array(_to_rgb(im), dtype=np.uint8)  # a writable copy, for torch
    except IMAGE_ERRORS as e:
        raise ValueError(f"{where}: not a readable image ({type(e).__name__}: {_named(e, where)})") from None


def _named(error: Exception, where: str) -> str:
    """The library's message with an in-memory file's repr (an address that changes every run) replaced
    by the name of what was read, so that the same bad input always gives the same message."""
    return re.sub(r"<_io\.BytesIO object at 0x[0-9a-f]+>", where, str(error))


def _to_rgb(im: Image.Image) -> Image.Image:
    if im.mode == "P" and "transparency" in im.info or im.mode == "PA":
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA"):
        white = Image.new("RGBA", im.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, im.convert("RGBA")).convert("RGB")
    if im.mode.startswith("I;16") or im.mode == "I":  # 16-bit greyscale: scale to 8 bits before RGB
        return Image.fromarray((np.asarray(im, dtype=np.float64) / 257.0).clip(0, 255).astype(np.uint8)).convert("RGB")
    return im.convert("RGB")


def fit_image(image: np.ndarray, size: int, mode: str = "crop") -> np.ndarray:
    """uint8 RGB (H, W, 3) -> (size, size, 3). crop: the shorter side scaled to `size` and the centre kept;
    pad: the longer side scaled to `size` and the rest filled with white. Bicubic, with antialiasing
    when shrinking (PIL's reducing filter). An image already size×size is returned as it is."""
    if mode not in ("crop", "pad"):
        raise ValueError(f"fit mode {mode!r}: expected crop | pad")
    h, w = image.shape[:2]
    if (h, w) == (size, size):
        return image
    scale = size / (min(h, w) if mode == "crop" else max(h, w))
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    resized = Image.fromarray(image).resize((nw, nh), Image.Resampling.BICUBIC)
    if mode == "crop":
        left, top = (nw - size) // 2, (nh - size) // 2
        return np.array(resized.crop((left, top, left + size, top + size)), dtype=np.uint8)
    canvas = Image.new("RGB", (size, size), (255, 255, 255))
    canvas.paste(resized, ((size - nw) // 2, (size - nh) // 2))
    return np.array(canvas, dtype=np.uint8)


def _wav_header_problem(f, size: int) -> str | None:
    """A reason if a RIFF/WAVE file (open binary `f` of `size` bytes) promises more sample data than it
    holds, else None. libsndfile silently reads what is there, so truncation is found from the chunk
    sizes. Non-RIFF files (FLAC, ...) are left to soundfile."""
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
                return f"truncated: data chunk declares {chunk_size} bytes, file holds {size - pos}"
            return None
        pos += chunk_size + (chunk_size & 1)
        f.seek(pos)


def _open_audio(source: str | Path | bytes, name: str):
    """(where, a fresh file object or path for soundfile, problem or None) of a path or encoded bytes."""
    if isinstance(source, bytes):
        where = name or "<audio bytes>"
        return where, lambda: io.BytesIO(source), _wav_header_problem(io.BytesIO(source), len(source))
    path = Path(source)
    if not path.is_file():
        raise ValueError(f"{path}: no such audio file")
    with path.open("rb") as f:
        problem = _wav_header_problem(f, path.stat().st_size)
    return str(path), lambda: str(path), problem


def audio_info(source: str | Path | bytes, name: str = "") -> tuple[int, int]:
    """(frames, sample rate) of an audio file (a path, or encoded bytes with `name` saying where they came
    from), read from its header; ValueError for a missing, truncated, unreadable or empty file."""
    where, opener, reason = _open_audio(source, name)
    if reason is None:
        try:
            info = sf.info(opener())
        except AUDIO_ERRORS as e:
            reason = f"unreadable ({_named(e, where)})"
        else:
            if info.frames == 0:
                reason = "no audio frames"
    if reason is not None:
        raise ValueError(f"{where}: not a readable audio file: {reason}")
    return info.frames, info.samplerate


def read_audio(source: str | Path | bytes, sample_rate: int, name: str = "") -> np.ndarray:
    """The audio at a path (or in encoded bytes) as float32 mono (channels averaged) at `sample_rate`
    (resampled if needed). A file that decodes to fewer frames than its header promises (a truncated
    FLAC or OGG) is an error, as is a missing, unreadable or empty one."""
    frames, _ = audio_info(source, name)
    where, opener, _ = _open_audio(source, name)
    try:
        data, file_sr = sf.read(opener(), dtype="float32", always_2d=True)
    except AUDIO_ERRORS as e:
        raise ValueError(f"{where}: not a readable audio file: unreadable ({_named(e, where)})") from None
    if len(data) < frames:
        raise ValueError(f"{where}: not a readable audio file: truncated ({len(data)} of {frames} frames)")
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
