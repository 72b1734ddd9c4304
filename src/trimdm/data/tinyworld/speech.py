"""tinyworld speech: English sentences spoken by eSpeak NG, and the folder format that stores them.

Owns:
- `Espeak`: the process-wide eSpeak NG library (shipped by the PyPI package `espeakng-loader`,
  driven through ctypes in synchronous mode), text -> float32 mono at the library's native rate.
- `Voice`, `VOICES`, `sample_voice`, `check_voices`: the English voice variants and their rate/pitch
  jitter, and the subset a smaller speech world draws from.
- `resample`: band-limited (Kaiser-windowed sinc) polyphase resampling in torch.
- `synthesize_corpus`: texts + seed -> `Utterance`s at 16 kHz, trimmed and peak-normalised.
- `write_speech_folder` / `read_speech_folder`: the on-disk layout `wavs/{i:06d}.wav` +
  `transcripts.jsonl`, also used for user-supplied audio-text folders; the reader skips and counts
  bad records (or raises with `strict=True`).

Does not own: the sentences themselves (the tinyworld text/caption generators make them), splits,
the audio tokenizer (tokenizers/audio.py) or sharding (data/shards).

Determinism. eSpeak NG keeps synthesis state in C statics that its API cannot reset (the pitch
flutter phase in wavegen.c, the automatic gain control, the Klatt noise state), so the same call in
one process gives slightly different samples depending on what was synthesised before. A freshly
loaded library replaying the same calls is bit-identical. `synthesize_corpus` therefore runs every
block of `CHUNK` consecutive utterances in a fresh worker process: the corpus depends only on
(texts, seed, sample_rate), never on the number of workers. `Espeak.synthesize` called directly is
not reproducible across a long-lived process and is meant for interactive use and for the workers.

Reference: eSpeak NG, https://github.com/espeak-ng/espeak-ng (speak_lib.h for the C API).
Resampling: J. O. Smith, "Digital Audio Resampling" (bandlimited interpolation), with the Kaiser
window design formulas of Kaiser (1974) / Oppenheim & Schafer §7.6.
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import dataclasses
import functools
import json
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

import espeakng_loader
import numpy as np
import soundfile as sf

from trimdm.data.media import audio_info, read_audio, resample

SAMPLE_RATE = 16_000  # the rate tinyworld speech is stored and tokenized at
CHUNK = 256  # utterances per fresh worker process; part of the corpus definition (see Determinism)
MAX_PROBLEMS = 10  # problems kept verbatim in a read report

# speak_lib.h constants
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_PARAM_RATE, _PARAM_PITCH, _PARAM_RANGE = 1, 3, 4
_SYNTH_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)


# ---------------------------------------------------------------------------------------------
# voices


@functools.cache
def _data_path() -> Path:
    return Path(espeakng_loader.get_data_path())


@dataclasses.dataclass(frozen=True)
class Voice:
    """One eSpeak NG voice: an English language voice plus a variant file from voices/!v.

    rate is words per minute (eSpeak accepts 80..450); pitch and range are eSpeak's 0..99 scales
    (50 = the variant's own base pitch / intonation range).
    """

    language: str = "en-us"
    variant: str = ""
    rate: int = 175
    pitch: int = 50
    range: int = 50

    def __post_init__(self) -> None:
        if not self.language.lower().startswith("en"):
            raise ValueError(f"tinyworld speech is English: language {self.language!r} is not en*")
        variants = _data_path() / "voices" / "!v"
        if self.variant and not (variants / self.variant).is_file():
            raise ValueError(f"no eSpeak NG voice variant {self.variant!r} in {variants}")
        if not 80 <= self.rate <= 450:
            raise ValueError(f"rate must be in 80..450 words/min, got {self.rate}")
        if not 0 <= self.pitch <= 99 or not 0 <= self.range <= 99:
            raise ValueError(f"pitch and range must be in 0..99, got {self.pitch}, {self.range}")

    @property
    def name(self) -> str:
        """The name eSpeak NG's SetVoiceByName understands, e.g. 'en-us+f3'."""
        return f"{self.language}+{self.variant}" if self.variant else self.language

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# Base voices: different formant sets (m*, f*), the Klatt synthesiser, two accents.
VOICES: tuple[Voice, ...] = (
    Voice("en-us", "m1", rate=165, pitch=45),
    Voice("en-us", "m3", rate=175, pitch=50),
    Voice("en-us", "f1", rate=170, pitch=50),
    Voice("en-us", "f3", rate=180, pitch=55),
    Voice("en-us", "klatt", rate=170, pitch=50),
    Voice("en", "m4", rate=160, pitch=45),
    Voice("en", "f2", rate=175, pitch=50),
    Voice("en", "m7", rate=170, pitch=50),
)
RATE_JITTER = 0.15  # rate multiplied by U(1 - j, 1 + j)
PITCH_JITTER = 10  # pitch shifted by an integer in [-j, j] (eSpeak 0..99 scale)
RANGE_JITTER = 15  # intonation range shifted by an integer in [-j, j]


VOICE_NAMES: tuple[str, ...] = tuple(v.name for v in VOICES)


def check_voices(names: Sequence[str], jitter: float, prefix: str = "") -> None:
    """A smaller speech world: distinct names among VOICE_NAMES and a jitter scale in [0, 1]. `prefix`
    goes before each key in the error (a config section)."""
    if not names or len(set(names)) != len(names) or not set(names) <= set(VOICE_NAMES):
        raise ValueError(f"{prefix}voices={','.join(map(str, names))}: expected distinct names among "
                         f"{', '.join(VOICE_NAMES)}")
    if not 0.0 <= jitter <= 1.0:
        raise ValueError(f"{prefix}voice_jitter={jitter} must lie in [0, 1]")


def sample_voice(rng: np.random.Generator, voices: Sequence[str] = VOICE_NAMES, jitter: float = 1.0) -> Voice:
    """A base voice among `voices` (names from VOICE_NAMES), uniformly, with rate, pitch and range
    jittered around its base; `jitter` scales the three jitters (0: the base voice as it is).

    Draw order (part of the data set definition): voice index, rate factor, pitch, range. With every
    voice and jitter 1 the draws are those of every earlier version."""
    check_voices(voices, jitter)
    base = VOICES[VOICE_NAMES.index(voices[int(rng.integers(len(voices)))])]
    factor = rng.uniform(1 - RATE_JITTER, 1 + RATE_JITTER)
    rate = round(base.rate * (1 + jitter * (factor - 1)))  # factor - 1 and back are exact: jitter 1 is factor
    pitch = base.pitch + round(jitter * int(rng.integers(-PITCH_JITTER, PITCH_JITTER + 1)))
    range_ = base.range + round(jitter * int(rng.integers(-RANGE_JITTER, RANGE_JITTER + 1)))
    return dataclasses.replace(
        base, rate=int(np.clip(rate, 80, 450)), pitch=int(np.clip(pitch, 0, 99)),
        range=int(np.clip(range_, 0, 99)),
    )


# ---------------------------------------------------------------------------------------------
# the library


class Espeak:
    """The eSpeak NG library of this process.

    All instances share one library handle, initialised lazily on first use and guarded by a lock
    (eSpeak NG is a C library with global state), so `Espeak()` may be constructed anywhere, any
    number of times. Output depends slightly on what this process synthesised before (module
    docstring, Determinism); reproducible data comes from `synthesize_corpus`.
    """

    _lock = threading.Lock()
    _lib: ctypes.CDLL | None = None
    _rate: int = 0
    _callback = None  # the ctypes callback object must outlive the library's use of it
    _chunks: list[np.ndarray] = []

    @staticmethod
    def _ensure() -> ctypes.CDLL:  # the caller holds Espeak._lock
        if Espeak._lib is not None:
            return Espeak._lib
        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.argtypes = [
            ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
            ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p,
        ]
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        rate = lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, 100, str(_data_path()).encode(), _INITIALIZE_DONT_EXIT
        )
        if rate <= 0:
            raise RuntimeError(f"espeak_Initialize failed ({rate}) with data at {_data_path()}")

        def on_audio(wav, n, _events):  # called synchronously from inside espeak_Synth
            if n > 0 and wav:
                Espeak._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
            return 0  # 0 = continue synthesis

        Espeak._callback = _SYNTH_CALLBACK(on_audio)
        lib.espeak_SetSynthCallback(Espeak._callback)
        Espeak._rate = int(rate)
        Espeak._lib = lib
        return lib

    @property
    def sample_rate(self) -> int:
        """The library's native output rate in Hz (22050 for the shipped voices)."""
        with self._lock:
            self._ensure()
            return Espeak._rate

    def synthesize_int16(self, text: str, voice: Voice) -> np.ndarray:
        """As `synthesize`, but the library's raw int16 samples."""
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"text must be a non-empty string, got {text!r}")
        if "\0" in text:
            raise ValueError(f"text contains a NUL character: {text!r}")
        if not isinstance(voice, Voice):
            raise ValueError(f"voice must be a Voice, got {type(voice).__name__}")
        data = text.encode("utf-8") + b"\0"
        with self._lock:
            lib = self._ensure()
            if lib.espeak_SetVoiceByName(voice.name.encode()) != 0:
                raise ValueError(f"eSpeak NG has no voice {voice.name!r}")
            # parameters persist across SetVoiceByName, so set all of them for every utterance
            for param, value in ((_PARAM_RATE, voice.rate), (_PARAM_PITCH, voice.pitch),
                                 (_PARAM_RANGE, voice.range)):
                lib.espeak_SetParameter(param, value, 0)
            lib.espeak_ng_SetRandSeed(0)  # breath noise; the rest of the state see module docstring
            Espeak._chunks.clear()
            err = lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
            chunks = list(Espeak._chunks)
            Espeak._chunks.clear()
        if err != 0:
            raise RuntimeError(f"espeak_Synth failed with error {err} for {text!r}")
        wave = np.concatenate(chunks) if chunks else np.zeros(0, np.int16)
        if not np.any(wave):
            raise ValueError(f"eSpeak NG produced no audio for {text!r}")
        return wave

    def synthesize(self, text: str, voice: Voice) -> np.ndarray:
        """Speak `text` with `voice`: float32 mono in [-1, 1] at `self.sample_rate`, untrimmed."""
        return self.synthesize_int16(text, voice).astype(np.float32) / 32768.0


# ---------------------------------------------------------------------------------------------
# corpus


@dataclasses.dataclass(frozen=True, eq=False)
class Utterance:
    text: str
    voice: Voice
    wave: np.ndarray  # float32 mono, peak ~0.9, at sample_rate
    seconds: float
    sample_rate: int = SAMPLE_RATE


TRIM_THRESHOLD = 0.01  # |x| below 1% of the peak (-40 dB) counts as silence at the ends
TRIM_MARGIN_S = 0.05  # silence kept before the first / after the last loud sample
PEAK = 0.9


def _trim(wave: np.ndarray, sample_rate: int) -> np.ndarray:
    loud = np.flatnonzero(np.abs(wave) > TRIM_THRESHOLD * np.abs(wave).max())
    margin = round(TRIM_MARGIN_S * sample_rate)
    return wave[max(0, loud[0] - margin): loud[-1] + 1 + margin]


def _worker_main() -> None:
    """Entry of a synthesis worker process: JSON [[text, voice fields], ...] on stdin; on stdout one JSON
    line ({"sample_rate", "lengths"} or {"error"}) and then the int16 samples of every wave, in order."""
    jobs = json.load(sys.stdin)
    espeak = Espeak()
    try:
        waves = [espeak.synthesize_int16(t, Voice(**v)) for t, v in jobs]
    except ValueError as e:  # bad input stays a ValueError in the parent
        sys.stdout.buffer.write(json.dumps({"error": str(e)}).encode() + b"\n")
        return
    header = {"sample_rate": espeak.sample_rate, "lengths": [len(w) for w in waves]}
    sys.stdout.buffer.write(json.dumps(header).encode() + b"\n")
    for w in waves:
        sys.stdout.buffer.write(np.ascontiguousarray(w, dtype="<i2").tobytes())


# Load this file by path rather than as trimdm.data...: a worker must not pay for the package's
# imports (torch alone takes seconds), it only needs numpy, soundfile and the library.
_WORKER_BOOTSTRAP = (
    "import importlib.util, sys\n"
    "spec = importlib.util.spec_from_file_location('_trimdm_speech_worker', sys.argv[1])\n"
    "mod = importlib.util.module_from_spec(spec)\n"
    "sys.modules[spec.name] = mod\n"
    "spec.loader.exec_module(mod)\n"
    "mod._worker_main()\n"
)


def _synthesize_in_fresh_process(jobs: list[tuple[str, dict]]) -> tuple[int, list[np.ndarray]]:
    proc = subprocess.run(
        [sys.executable, "-c", _WORKER_BOOTSTRAP, str(Path(__file__).resolve())],
        input=json.dumps(jobs).encode(), capture_output=True, check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"speech worker failed:\n{proc.stderr.decode(errors='replace')[-2000:]}")
    line, _, body = proc.stdout.partition(b"\n")
    header = json.loads(line)
    if "error" in header:
        raise ValueError(header["error"])
    samples = np.frombuffer(body, dtype="<i2")
    ends = np.cumsum(header["lengths"])
    if len(samples) != (ends[-1] if len(ends) else 0):
        raise RuntimeError(f"speech worker wrote {len(samples)} samples, its header promised {ends[-1]}")
    return header["sample_rate"], [w.astype(np.int16) for w in np.split(samples, ends[:-1])]


def synthesize_corpus(
    texts: Sequence[str],
    seed: int,
    sample_rate: int = SAMPLE_RATE,
    max_seconds: float | None = None,
    workers: int = 1,
    voices: Sequence[str] = VOICE_NAMES,
    voice_jitter: float = 1.0,
) -> list[Utterance]:
    """Speak every text with a voice drawn by `sample_voice(np.random.default_rng(seed), voices,
    voice_jitter)`.

    Each utterance is trimmed of leading/trailing silence (`_trim`), resampled to `sample_rate`
    and scaled to peak `PEAK`. Utterances longer than `max_seconds` after trimming are dropped, so
    the result may be shorter than `texts` (each Utterance carries its text). The output depends
    only on (texts, seed, sample_rate); `workers` worker processes run at once (speed only).
    """
    if isinstance(texts, str):
        raise ValueError("texts must be a sequence of strings, not one string")
    texts = list(texts)
    for i, text in enumerate(texts):
        if not isinstance(text, str) or not text.strip() or "\0" in text:
            raise ValueError(f"texts[{i}] must be a non-empty string without NUL, got {text!r}")
    if not isinstance(sample_rate, int) or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive int, got {sample_rate!r}")
    if max_seconds is not None and max_seconds <= 0:
        raise ValueError(f"max_seconds must be positive or None, got {max_seconds}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    rng = np.random.default_rng(seed)
    drawn = [sample_voice(rng, voices, voice_jitter) for _ in texts]
    jobs = [(t, v.to_dict()) for t, v in zip(texts, drawn)]
    chunks = [jobs[i:i + CHUNK] for i in range(0, len(jobs), CHUNK)]
    out: list[Utterance] = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        # threads only wait on worker processes; this thread resamples finished chunks meanwhile
        futures = [pool.submit(_synthesize_in_fresh_process, chunk) for chunk in chunks]
        for start, future in zip(range(0, len(jobs), CHUNK), futures):
            native_sr, waves = future.result()
            for i, raw in enumerate(waves, start):
                wave = _trim(raw.astype(np.float32) / 32768.0, native_sr)
                wave = resample(wave, native_sr, sample_rate)
                wave *= PEAK / np.abs(wave).max()
                seconds = len(wave) / sample_rate
                if max_seconds is not None and seconds > max_seconds:
                    continue
                out.append(Utterance(texts[i], drawn[i], wave, seconds, sample_rate))
    return out


# ---------------------------------------------------------------------------------------------
# folder format


def write_speech_folder(out_dir: str | Path, utterances: Sequence[Utterance]) -> Path:
    """Write `wavs/{i:06d}.wav` (16-bit PCM) and `transcripts.jsonl`; returns out_dir."""
    out_dir = Path(out_dir)
    (out_dir / "wavs").mkdir(parents=True, exist_ok=True)
    with (out_dir / "transcripts.jsonl").open("w", encoding="utf-8") as f:
        for i, utt in enumerate(utterances):
            rel = f"wavs/{i:06d}.wav"
            sf.write(out_dir / rel, np.clip(utt.wave, -1.0, 1.0), utt.sample_rate, subtype="PCM_16")
            record = {"file": rel, "text": utt.text, "voice": utt.voice.to_dict(),
                      "seconds": round(utt.seconds, 4)}
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    return out_dir


@dataclasses.dataclass
class SpeechFolderReport:
    """What `read_speech_folder` kept and skipped; `problems` holds the first few (file, reason)."""

    read: int = 0
    skipped_corrupt: int = 0
    skipped_empty_transcript: int = 0
    skipped_too_long: int = 0
    skipped_missing_file: int = 0
    skipped_bad_record: int = 0  # a transcripts.jsonl line that is not {"file": str, "text": str}
    problems: list[tuple[str, str]] = dataclasses.field(default_factory=list)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def read_speech_folder(
    root: str | Path,
    max_seconds: float | None,
    strict: bool = False,
    sample_rate: int = SAMPLE_RATE,
) -> tuple[list[tuple[np.ndarray, str]], SpeechFolderReport]:
    """Read a `transcripts.jsonl` + audio folder into [(float32 mono wave at sample_rate, text)].

    Records with an empty transcript, a missing or unreadable/truncated audio file, or audio longer
    than `max_seconds` are skipped and counted in the report; with `strict=True` the first such
    record raises ValueError naming the file. Audio at another rate is resampled; channels are
    averaged to mono.
    """
    root = Path(root)
    manifest = root / "transcripts.jsonl"
    if not manifest.is_file():
        raise ValueError(f"{root} has no transcripts.jsonl")
    if max_seconds is not None and max_seconds <= 0:
        raise ValueError(f"max_seconds must be positive or None, got {max_seconds}")
    if not isinstance(sample_rate, int) or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive int, got {sample_rate!r}")
    report = SpeechFolderReport()
    items: list[tuple[np.ndarray, str]] = []

    def skip(counter: str, where: str, reason: str) -> None:
        if strict:
            raise ValueError(f"{where}: {reason}")
        setattr(report, counter, getattr(report, counter) + 1)
        if len(report.problems) < MAX_PROBLEMS:
            report.problems.append((where, reason))

    with manifest.open(encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                skip("skipped_bad_record", f"{manifest}:{line_no}", f"not JSON ({e.msg})")
                continue
            if not (isinstance(record, dict) and isinstance(record.get("file"), str)
                    and isinstance(record.get("text"), str)):
                skip("skipped_bad_record", f"{manifest}:{line_no}", "needs string file and text")
                continue
            path, text = root / record["file"], record["text"].strip()
            if not text:
                skip("skipped_empty_transcript", str(path), "empty transcript")
                continue
            if not path.is_file():
                skip("skipped_missing_file", str(path), "missing audio file")
                continue
            try:
                frames, rate = audio_info(path)
                seconds = frames / rate
                if max_seconds is not None and seconds > max_seconds:
                    skip("skipped_too_long", str(path), f"{seconds:.2f} s > max_seconds={max_seconds}")
                    continue
                wave = read_audio(path, sample_rate)
            except ValueError as e:
                skip("skipped_corrupt", str(path), str(e).removeprefix(f"{path}: not a readable audio file: "))
                continue
            items.append((wave, text))
            report.read += 1
    return items, report
