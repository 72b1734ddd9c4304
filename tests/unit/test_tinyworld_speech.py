"""tinyworld speech: eSpeak NG synthesis, the torch resampler, and the speech folder format."""

import json
import os

import numpy as np
import pytest
import soundfile as sf

from trimdm.data.tinyworld import speech
from trimdm.data.tinyworld.speech import (
    VOICES,
    Espeak,
    Utterance,
    Voice,
    read_speech_folder,
    resample,
    sample_voice,
    synthesize_corpus,
    write_speech_folder,
)

SHORT = "A red ball."
LONG = "The small blue square is above the big green triangle on the left side of the picture."


@pytest.fixture(scope="module")
def corpus():
    return synthesize_corpus([SHORT, LONG, "Three yellow stars are near the dark ring."], seed=0)


def tone(freq, sr, seconds, amp=0.5):
    t = np.arange(round(sr * seconds)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def peak_hz(wave, sr):
    spectrum = np.abs(np.fft.rfft(wave * np.hanning(len(wave))))
    return np.argmax(spectrum) * sr / len(wave)


def rms(x):
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


# --- synthesis -------------------------------------------------------------------------------


def test_corpus_duration_is_plausible_for_the_text(corpus):
    short, long, _ = corpus
    for utt in corpus:
        assert utt.sample_rate == 16_000 and utt.wave.dtype == np.float32 and utt.wave.ndim == 1
        assert utt.seconds == pytest.approx(len(utt.wave) / 16_000)
        assert 1.5 <= len(utt.text.split()) / utt.seconds <= 6.0, (utt.text, utt.seconds)
        assert np.abs(utt.wave).max() == pytest.approx(speech.PEAK, abs=1e-3)
    assert long.seconds > 2 * short.seconds


def test_corpus_is_deterministic_for_a_seed_and_varies_with_it(corpus):
    again = synthesize_corpus([u.text for u in corpus], seed=0)
    assert [u.voice for u in again] == [u.voice for u in corpus]
    for a, b in zip(again, corpus):
        np.testing.assert_array_equal(a.wave, b.wave)
    other = synthesize_corpus([u.text for u in corpus], seed=1)
    assert [u.voice for u in other] != [u.voice for u in corpus]


def test_corpus_does_not_depend_on_worker_count(monkeypatch):
    monkeypatch.setattr(speech, "CHUNK", 2)  # 3 worker processes for 5 texts
    texts = ["One green cube.", "Two red rings.", "A star.", "The big box.", "A tiny blue ball."]
    serial = synthesize_corpus(texts, seed=5, workers=1)
    parallel = synthesize_corpus(texts, seed=5, workers=2)
    for a, b in zip(serial, parallel, strict=True):
        np.testing.assert_array_equal(a.wave, b.wave)


def test_max_seconds_drops_long_utterances():
    utts = synthesize_corpus([SHORT, LONG], seed=0, max_seconds=2.0)
    assert [u.text for u in utts] == [SHORT]


def test_voices_sound_different():
    """Voices differ by more than the history-dependent drift of one voice (module docstring)."""
    assert len(VOICES) >= 5 and len({v.name for v in VOICES}) == len(VOICES)
    espeak = Espeak()

    def log_spectrum(wave):  # mean log power spectrum of 512-sample frames, level removed
        frames = np.lib.stride_tricks.sliding_window_view(wave, 512)[::256] * np.hanning(512)
        p = np.log(np.mean(np.abs(np.fft.rfft(frames, axis=1)) ** 2, axis=0) + 1e-10)
        return p - p.mean()

    text = "The small blue square is above the big green triangle."
    first = [log_spectrum(espeak.synthesize(text, v)) for v in VOICES]
    second = [log_spectrum(espeak.synthesize(text, v)) for v in VOICES]
    same_voice = max(rms(a - b) for a, b in zip(first, second))
    across = min(rms(a - b) for i, a in enumerate(first) for b in first[i + 1:])
    assert across > 2 * same_voice, (across, same_voice)


def test_sample_voice_jitters_around_the_base_voices():
    rng = np.random.default_rng(0)
    voices = [sample_voice(rng) for _ in range(200)]
    assert {(v.language, v.variant) for v in voices} == {(v.language, v.variant) for v in VOICES}
    assert len({(v.rate, v.pitch) for v in voices}) > 100
    bases = {(v.language, v.variant): v for v in VOICES}
    for v in voices:
        base = bases[(v.language, v.variant)]
        assert abs(v.rate / base.rate - 1) <= speech.RATE_JITTER + 0.01
        assert abs(v.pitch - base.pitch) <= speech.PITCH_JITTER


def test_a_smaller_speech_world_draws_only_its_voices_and_all_of_them_draw_as_before():
    def before(rng):  # the draws of the version without voices / voice_jitter
        base = VOICES[int(rng.integers(len(VOICES)))]
        rate = round(base.rate * rng.uniform(1 - speech.RATE_JITTER, 1 + speech.RATE_JITTER))
        return (base.name, int(np.clip(rate, 80, 450)),
                int(np.clip(base.pitch + int(rng.integers(-speech.PITCH_JITTER, speech.PITCH_JITTER + 1)), 0, 99)),
                int(np.clip(base.range + int(rng.integers(-speech.RANGE_JITTER, speech.RANGE_JITTER + 1)), 0, 99)))

    old, new = np.random.default_rng(3), np.random.default_rng(3)
    for _ in range(500):
        v = sample_voice(new)
        assert (v.name, v.rate, v.pitch, v.range) == before(old)
    rng = np.random.default_rng(4)
    two = [sample_voice(rng, ("en-us+m3", "en+f2")) for _ in range(100)]
    assert {v.name for v in two} == {"en-us+m3", "en+f2"}
    fixed = {sample_voice(rng, ("en-us+m3",), jitter=0.0) for _ in range(20)}
    assert fixed == {VOICES[speech.VOICE_NAMES.index("en-us+m3")]}  # the base voice as it is
    half = [sample_voice(rng, ("en-us+m3",), jitter=0.5) for _ in range(200)]
    assert max(abs(v.rate / 175 - 1) for v in half) <= speech.RATE_JITTER / 2 + 0.01
    assert max(abs(v.pitch - 50) for v in half) <= speech.PITCH_JITTER / 2 + 0.5
    with pytest.raises(ValueError, match=r"voices=en-us\+m9: expected distinct names"):
        sample_voice(rng, ("en-us+m9",))


def test_bad_arguments_raise_value_error():
    with pytest.raises(ValueError, match="variant"):
        Voice("en-us", "no-such-variant")
    with pytest.raises(ValueError, match="English"):
        Voice("de", "m1")
    with pytest.raises(ValueError, match="rate"):
        Voice(rate=20)
    with pytest.raises(ValueError, match="non-empty"):
        Espeak().synthesize("   ", VOICES[0])
    with pytest.raises(ValueError, match=r"texts\[1\]"):
        synthesize_corpus(["fine", ""], seed=0)
    with pytest.raises(ValueError, match="sequence"):
        synthesize_corpus("one string", seed=0)
    with pytest.raises(ValueError, match="no audio"):  # raised in the worker, kept a ValueError
        synthesize_corpus(["..."], seed=0)


# --- resampling ------------------------------------------------------------------------------


@pytest.mark.parametrize("orig,new", [(22_050, 16_000), (16_000, 22_050), (48_000, 16_000)])
def test_resample_keeps_a_tone(orig, new):
    x = tone(1000.0, orig, 1.0)
    y = resample(x, orig, new)
    assert y.dtype == np.float32 and len(y) == round(len(x) * new / orig)
    assert abs(peak_hz(y, new) - 1000.0) <= new / len(y)  # within one FFT bin
    inner = y[new // 20: -new // 20]  # zero padding at the ends is not a passband property
    assert rms(inner) == pytest.approx(rms(x), rel=1e-3)


@pytest.mark.parametrize("freq", [8_200.0, 9_000.0, 10_500.0])
def test_resample_removes_tones_above_the_new_nyquist(freq):
    # the filter is designed for >= 80 dB above 7.8 kHz at 22.05 -> 16 kHz; demand 70 dB
    y = resample(tone(freq, 22_050, 1.0), 22_050, 16_000)
    assert rms(y[800:-800]) < 10 ** (-70 / 20) * 0.5 / np.sqrt(2)


@pytest.mark.parametrize("n", [1, 2, 3, 7, 441, 22_049, 22_051])
def test_resample_length_is_rounded_ratio(n):
    assert len(resample(np.ones(n, np.float32), 22_050, 16_000)) == int(n * 16_000 / 22_050 + 0.5)


def test_resample_rejects_bad_input():
    with pytest.raises(ValueError, match="1-D"):
        resample(np.zeros((2, 10), np.float32), 22_050, 16_000)
    with pytest.raises(ValueError, match="positive"):
        resample(np.zeros(10, np.float32), 0, 16_000)


# --- folder format ---------------------------------------------------------------------------


def test_write_read_round_trip(tmp_path, corpus):
    write_speech_folder(tmp_path, corpus)
    lines = (tmp_path / "transcripts.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["file"] for r in records] == ["wavs/000000.wav", "wavs/000001.wav", "wavs/000002.wav"]
    assert records[1]["voice"] == corpus[1].voice.to_dict()
    items, report = read_speech_folder(tmp_path, max_seconds=20.0)
    assert report.read == 3 and report.problems == []
    for (wave, text), utt in zip(items, corpus, strict=True):
        assert text == utt.text
        np.testing.assert_allclose(wave, utt.wave, atol=1.0 / 32768 + 1e-6)


def _make_folder(root, bad_kinds):
    """Two good records (one stored at 22.05 kHz) followed by one record per bad kind."""
    good = Utterance("a good one", Voice(), tone(440.0, 16_000, 0.5), 0.5)
    utts = [good, good] + [good] * len(bad_kinds)
    write_speech_folder(root, utts)
    sf.write(root / "wavs/000001.wav", tone(440.0, 22_050, 0.5), 22_050, subtype="PCM_16")
    lines = (root / "transcripts.jsonl").read_text().splitlines()
    bad_files = {}
    for i, kind in enumerate(bad_kinds, start=2):
        name = f"wavs/{i:06d}.wav"
        path, record = root / name, json.loads(lines[i])
        if kind == "truncated":
            os.truncate(path, path.stat().st_size // 2)
        elif kind == "garbage":
            path.write_bytes(b"not audio at all" * 64)
        elif kind == "empty_transcript":
            record["text"] = "  "
        elif kind == "too_long":
            sf.write(path, tone(440.0, 16_000, 3.0), 16_000, subtype="PCM_16")
        elif kind == "missing":
            path.unlink()
        lines[i] = json.dumps(record)
        bad_files[kind] = name
    (root / "transcripts.jsonl").write_text("\n".join(lines) + "\n")
    return bad_files


BAD_KINDS = ["truncated", "garbage", "empty_transcript", "too_long", "missing"]


def test_reader_skips_and_counts_bad_records(tmp_path):
    bad_files = _make_folder(tmp_path, BAD_KINDS)
    items, report = read_speech_folder(tmp_path, max_seconds=2.0)
    assert report.read == 2 and len(items) == 2
    assert (report.skipped_corrupt, report.skipped_empty_transcript, report.skipped_too_long,
            report.skipped_missing_file, report.skipped_bad_record) == (2, 1, 1, 1, 0)
    assert [p[0] for p in report.problems] == [str(tmp_path / bad_files[k]) for k in BAD_KINDS]
    assert "truncated" in report.problems[0][1]
    # the 22.05 kHz file came back resampled to 16 kHz
    assert all(len(wave) == 8000 for wave, _ in items)
    assert abs(peak_hz(items[1][0], 16_000) - 440.0) <= 2.0
    json.dumps(report.to_dict())  # reports are data


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_reader_strict_raises_naming_the_file(tmp_path, kind):
    bad_files = _make_folder(tmp_path, [kind])
    with pytest.raises(ValueError, match=bad_files[kind].replace(".", r"\.")):
        read_speech_folder(tmp_path, max_seconds=2.0, strict=True)


def test_reader_counts_malformed_lines_and_rejects_a_folder_without_manifest(tmp_path):
    _make_folder(tmp_path, [])
    with (tmp_path / "transcripts.jsonl").open("a") as f:
        f.write("{not json\n")
        f.write(json.dumps({"file": "wavs/000000.wav"}) + "\n")
    _, report = read_speech_folder(tmp_path, max_seconds=None)
    assert report.read == 2 and report.skipped_bad_record == 2
    with pytest.raises(ValueError, match="transcripts.jsonl"):
        read_speech_folder(tmp_path / "wavs", max_seconds=None)
