"""Small user corpora written on the fly, in every format trimdm.data.sources reads, for the source tests
and the ingest pipeline's tests. Not a test module: tests import it (tests/ is on sys.path through
conftest.py).

Every writer is deterministic and returns the paths it wrote. Captions and documents are plain ASCII
sentences numbered by sample, so a test can tell samples apart. The `corrupt=True` variants add a known
set of bad samples, listed in each docstring, on top of the good ones.

Speech is real: eSpeak NG through `synthesize_corpus`, one fresh synthesis worker for the whole process
(`speech_pool` is cached), so every audio fixture in a test session reuses the same few utterances.
"""
from __future__ import annotations

import csv
import functools
import io
import json
from pathlib import Path

import numpy as np
import soundfile as sf
from PIL import Image

SENTENCES = ("the cat sat on the mat.", "a red ball rolls down the hill.", "birds sing at dawn.",
             "open the door please.", "it is cold today.", "she reads a small book.")
SIZES = ((40, 30), (64, 64), (100, 80), (33, 47))


def caption(i: int) -> str:
    return f"picture number {i} of a small scene"


def document(i: int) -> str:
    return f"document number {i} says hello."


# ---------------------------------------------------------------------------------------------
# images


def image_bytes(i: int, fmt: str = "PNG", mode: str = "RGB", size: tuple[int, int] | None = None) -> bytes:
    """An encoded image of sample `i`: noise in `mode`, `size` (default: one of SIZES by i)."""
    w, h = size or SIZES[i % len(SIZES)]
    rgb = np.random.default_rng(i).integers(0, 256, (h, w, 3), dtype=np.uint8)
    im = Image.fromarray(rgb, "RGB")
    im = im.convert("P") if mode == "P" else im.convert(mode)
    buf = io.BytesIO()
    im.save(buf, format=fmt)
    return buf.getvalue()


TAR_IMAGES = (("png", "PNG", "RGB"), ("jpg", "JPEG", "L"), ("webp", "WEBP", "RGBA"), ("png", "PNG", "P"))


def write_image_tars(directory, n_per_shard: int, shards: int, corrupt: bool = False,
                     json_captions: bool = False) -> list[Path]:
    """`shards` webdataset shards `shard-NNN.tar` of `n_per_shard` samples each, keys `%06d` counting
    on across shards, images PNG/JPEG/WEBP of varied sizes and modes, captions `caption(i)` in KEY.txt
    (or KEY.json {"caption": ...} with `json_captions`).

    corrupt=True adds to the last shard: a sample whose png is garbage bytes (read fine, fails to
    decode), a sample with a whitespace caption ("empty caption"), a sample with a non-UTF-8 caption,
    and then cuts the shard in the middle of one more sample's image ("corrupt tar")."""
    from webdataset import TarWriter

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for s in range(shards):
        path = directory / f"shard-{s:03d}.tar"
        with TarWriter(str(path)) as writer:
            for i in range(s * n_per_shard, (s + 1) * n_per_shard):
                ext, fmt, mode = TAR_IMAGES[i % len(TAR_IMAGES)]
                sample = {"__key__": f"{i:06d}", ext: image_bytes(i, fmt, mode)}
                if json_captions:
                    sample["json"] = json.dumps({"caption": caption(i), "id": i}).encode()
                else:
                    sample["txt"] = caption(i)
                writer.write(sample)
            if corrupt and s == shards - 1:
                n = shards * n_per_shard
                writer.write({"__key__": f"{n:06d}", "png": b"this is not an image" * 10, "txt": caption(n)})
                writer.write({"__key__": f"{n + 1:06d}", "png": image_bytes(n + 1), "txt": "  \n"})
                writer.write({"__key__": f"{n + 2:06d}", "png": image_bytes(n + 2), "txt": b"caf\xe9 au lait"})
                writer.write({"__key__": f"{n + 3:06d}", "png": image_bytes(n + 3, size=(200, 200)),
                              "txt": caption(n + 3)})
        if corrupt and s == shards - 1:
            _cut_inside_last_member(path, ".png")
        paths.append(path)
    return paths


def _cut_inside_last_member(path: Path, suffix: str) -> None:
    import tarfile

    with tarfile.open(path) as tar:
        last = [m for m in tar.getmembers() if m.name.endswith(suffix)][-1]
    data = path.read_bytes()
    path.write_bytes(data[:last.offset_data + last.size // 2])


IMAGEFOLDER_MODES = (("L", "PNG"), ("LA", "PNG"), ("P", "PNG"), ("RGBA", "PNG"), ("CMYK", "JPEG"), ("RGB", "JPEG"))


def write_imagefolder(directory, n: int, metadata: str = "jsonl", corrupt: bool = False) -> Path:
    """An imagefolder at `directory` with `n` images (modes L, LA, P, RGBA, CMYK, RGB; PNG or JPEG;
    sizes varied), every third one in `sub/`, captions `caption(i)` in metadata.jsonl or metadata.csv
    (file_name, caption) or in a .txt beside each image (metadata="txt").

    corrupt=True adds `broken.png` (garbage bytes, with a caption: fails to decode) and `nocaption.png`
    (a good image with no caption anywhere: "missing caption")."""
    if metadata not in ("jsonl", "csv", "txt"):
        raise ValueError(f"tests/corpora.py: metadata must be jsonl, csv or txt, got {metadata!r}")
    root = Path(directory)
    (root / "sub").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        mode, fmt = IMAGEFOLDER_MODES[i % len(IMAGEFOLDER_MODES)]
        name = f"{'sub/' if i % 3 == 2 else ''}img{i:03d}.{'png' if fmt == 'PNG' else 'jpg'}"
        (root / name).write_bytes(image_bytes(i, fmt, mode))
        rows.append((name, caption(i)))
    if corrupt:
        (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage, not an image")
        rows.append(("broken.png", caption(n)))
        (root / "nocaption.png").write_bytes(image_bytes(n + 1))
    _write_captions(root, rows, metadata)
    return root


def _write_captions(root: Path, rows: list[tuple[str, str]], metadata: str) -> None:
    if metadata == "txt":
        for name, text in rows:
            (root / name).with_suffix(".txt").write_text(text + "\n", encoding="utf-8")
    elif metadata == "jsonl":
        with open(root / "metadata.jsonl", "w", encoding="utf-8") as f:
            f.writelines(json.dumps({"file_name": name, "caption": text}) + "\n" for name, text in rows)
    else:
        with open(root / "metadata.csv", "w", encoding="utf-8", newline="") as f:
            out = csv.writer(f)
            out.writerow(["file_name", "caption"])
            out.writerows(rows)


def write_image_parquet(directory, n: int, struct: bool = True, image_field: str = "image",
                        caption_field: str = "caption", row_group_size: int = 3) -> Path:
    """`images.parquet` with `n` rows: `image_field` as the {"bytes", "path"} struct of datasets' Image
    feature (or plain binary with struct=False) and `caption_field` = caption(i); small row groups."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    images = [image_bytes(i, *(("JPEG", "RGB") if i % 2 else ("PNG", "RGBA"))) for i in range(n)]
    column = pa.array([{"bytes": b, "path": None} for b in images],
                      pa.struct([("bytes", pa.binary()), ("path", pa.string())])) if struct else pa.array(images)
    path = Path(directory) / "images.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({image_field: column, caption_field: [caption(i) for i in range(n)]}), path,
                   row_group_size=row_group_size)
    return path


# ---------------------------------------------------------------------------------------------
# text


def write_text_files(directory) -> dict[str, Path]:
    """One file per text format in `directory`; returns {"txt", "txt2", "jsonl", "json", "parquet"}.

    - notes/a.txt: 3 paragraphs (the second of two lines) split by blank lines; notes/b.txt: 1 paragraph
    - docs.jsonl: 6 lines with documents 0..3 (one as a bare JSON string), then one non-UTF-8 line
      ("non-UTF-8 text") and one whitespace document ("empty document"), and a blank line (no record)
    - docs.json: an array of 3 (2 objects, 1 string)
    - docs.parquet: 5 rows in row groups of 2, row 3 null ("missing document")"""
    import pyarrow as pa
    import pyarrow.parquet as pq

    d = Path(directory)
    (d / "notes").mkdir(parents=True, exist_ok=True)
    paths = {"txt": d / "notes" / "a.txt", "txt2": d / "notes" / "b.txt", "jsonl": d / "docs.jsonl",
             "json": d / "docs.json", "parquet": d / "docs.parquet"}
    paths["txt"].write_text("First paragraph here.\n\nSecond paragraph,\nover two lines.\n\n\n"
                            "Third one.\n", encoding="utf-8")
    paths["txt2"].write_text("Only one paragraph in this file.\n", encoding="utf-8")
    lines = [json.dumps({"text": document(i), "id": i}).encode() for i in range(3)] + [json.dumps(document(3)).encode()]
    lines += [b'{"text": "caf\xe9 cr\xe8me", "id": 4}', b'{"text": "   ", "id": 5}', b""]
    paths["jsonl"].write_bytes(b"\n".join(lines) + b"\n")
    paths["json"].write_text(json.dumps([{"text": document(10)}, document(11), {"text": document(12)}]),
                             encoding="utf-8")
    texts = [document(20 + i) if i != 3 else None for i in range(5)]
    pq.write_table(pa.table({"text": texts, "n": list(range(5))}), paths["parquet"], row_group_size=2)
    return paths


def write_hf_text_dataset(directory, splits: bool = False, n: int = 5) -> Path:
    """A datasets folder (save_to_disk) with columns text = document(i), i < n, and id; with `splits` a
    DatasetDict of "train" (n rows) and "validation" (2 rows)."""
    import datasets

    datasets.disable_progress_bars()

    def make(rows):
        return datasets.Dataset.from_dict({"text": [document(i) for i in rows], "id": list(rows)})

    path = Path(directory)
    data = datasets.DatasetDict({"train": make(range(n)), "validation": make(range(100, 102))}) if splits \
        else make(range(n))
    data.save_to_disk(str(path))
    return path


# ---------------------------------------------------------------------------------------------
# speech


@functools.cache
def speech_pool() -> tuple:
    """Utterances of SENTENCES at 16 kHz, synthesised once per process (one fresh eSpeak worker)."""
    from trimdm.data.tinyworld.speech import synthesize_corpus

    return tuple(synthesize_corpus(SENTENCES, seed=0))


def spoken(i: int) -> tuple[str, np.ndarray]:
    """(transcript, float32 mono 16 kHz wave) of sample i, cycling through the pool."""
    utt = speech_pool()[i % len(SENTENCES)]
    return utt.text, utt.wave


def _audio_variant(i: int, wave: np.ndarray) -> tuple[np.ndarray, int]:
    """Every third file at 22.05 kHz (linear interpolation will do for a fixture), every fourth stereo."""
    rate = 22_050 if i % 3 == 1 else 16_000
    if rate != 16_000:
        t = np.arange(round(len(wave) * rate / 16_000)) * (16_000 / rate)
        wave = np.interp(t, np.arange(len(wave)), wave).astype(np.float32)
    if i % 4 == 3:
        wave = np.stack([wave, 0.8 * wave], axis=1)
    return wave, rate


def write_audio(path: Path, i: int, wave: np.ndarray | None = None) -> str:
    """Write sample i's speech (or `wave`) to `path` (format from its suffix); returns the transcript."""
    text, spoken_wave = spoken(i)
    data, rate = _audio_variant(i, spoken_wave if wave is None else wave)
    fmt = {".flac": "FLAC", ".wav": "WAV", ".ogg": "OGG"}[path.suffix]
    sf.write(path, data, rate, format=fmt, subtype="VORBIS" if fmt == "OGG" else "PCM_16")
    return text


def write_librispeech(directory, speakers: int = 2, chapters: int = 1, utterances: int = 3,
                      corrupt: bool = False, first_speaker: int = 100) -> Path:
    """LibriSpeech layout under `directory`: SPEAKER/CHAPTER/SPEAKER-CHAPTER-UUUU.flac with
    SPEAKER-CHAPTER.trans.txt (upper-case transcripts, as LibriSpeech has them); speakers first_speaker,
    first_speaker + 1, ..., chapters 200, 201, ...; some files at 22.05 kHz, some stereo.

    corrupt=True adds to the first chapter: a listed FLAC cut in half (fails to decode), a listed
    utterance with no file ("missing audio file") and a FLAC no transcript lists ("missing transcript")."""
    root = Path(directory)
    i = 0
    for s in range(speakers):
        for c in range(chapters):
            spk, chap = first_speaker + s, 200 + c
            folder = root / str(spk) / str(chap)
            folder.mkdir(parents=True, exist_ok=True)
            lines = []
            for u in range(utterances):
                utt = f"{spk}-{chap}-{u:04d}"
                lines.append(f"{utt} {write_audio(folder / f'{utt}.flac', i).upper().rstrip('.')}")
                i += 1
            if corrupt and s == 0 and c == 0:
                lines += _librispeech_damage(folder, spk, chap, utterances, i)
            (folder / f"{spk}-{chap}.trans.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def _librispeech_damage(folder: Path, spk: int, chap: int, utterances: int, i: int) -> list[str]:
    cut = folder / f"{spk}-{chap}-{utterances:04d}.flac"
    text = write_audio(cut, i)
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    write_audio(folder / f"{spk}-{chap}-{utterances + 2:04d}.flac", i + 1)  # not in the transcript
    return [f"{cut.stem} {text.upper().rstrip('.')}", f"{spk}-{chap}-{utterances + 1:04d} A FILE THAT IS NOT THERE"]


def write_audio_manifest(directory, fmt: str = "jsonl", n: int = 4, audio_field: str = "audio",
                         transcript_field: str = "text", absolute: bool = False, corrupt: bool = False) -> Path:
    """`manifest.{fmt}` (jsonl, csv or tsv) in `directory` listing `n` files `clips/NNN.{flac,wav,ogg}`
    (relative to the manifest's folder, or absolute) with their transcripts.

    corrupt=True adds three rows: a file that does not exist (left for the pipeline: no reader error), a
    whitespace transcript ("empty transcript") and an empty audio path ("missing audio field")."""
    if fmt not in ("jsonl", "csv", "tsv"):
        raise ValueError(f"tests/corpora.py: fmt must be jsonl, csv or tsv, got {fmt!r}")
    root = Path(directory)
    (root / "clips").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        rel = f"clips/{i:03d}.{('flac', 'wav', 'ogg')[i % 3]}"
        text = write_audio(root / rel, i)
        rows.append({audio_field: str((root / rel).resolve()) if absolute else rel, transcript_field: text})
    if corrupt:
        rows += [{audio_field: "clips/missing.wav", transcript_field: "no file here"},
                 {audio_field: f"clips/{0:03d}.flac", transcript_field: "  "},
                 {audio_field: "", transcript_field: "no audio path"}]
    path = root / f"manifest.{fmt}"
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    else:
        with open(path, "w", encoding="utf-8", newline="") as f:
            out = csv.DictWriter(f, [audio_field, transcript_field], delimiter="," if fmt == "csv" else "\t")
            out.writeheader()
            out.writerows(rows)
    return path


def write_audio_tars(directory, n_per_shard: int, shards: int, corrupt: bool = False,
                     json_transcripts: bool = False) -> list[Path]:
    """Webdataset shards `speech-NNN.tar` with KEY.flac|wav|ogg (cycling) and KEY.txt (or KEY.json
    {"text": ...}); corrupt=True adds to the last shard a sample with a transcript but no audio ("missing
    audio") and one with audio but no transcript ("missing transcript")."""
    import tempfile

    from webdataset import TarWriter

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    with tempfile.TemporaryDirectory() as tmp:
        for s in range(shards):
            path = directory / f"speech-{s:03d}.tar"
            with TarWriter(str(path)) as writer:
                for i in range(s * n_per_shard, (s + 1) * n_per_shard):
                    ext = ("flac", "wav", "ogg")[i % 3]
                    text = write_audio(Path(tmp, f"x.{ext}"), i)
                    sample = {"__key__": f"{i:06d}", ext: Path(tmp, f"x.{ext}").read_bytes()}
                    sample.update({"json": json.dumps({"text": text}).encode()} if json_transcripts else {"txt": text})
                    writer.write(sample)
                if corrupt and s == shards - 1:
                    n = shards * n_per_shard
                    write_audio(Path(tmp, "y.flac"), n)
                    writer.write({"__key__": f"{n:06d}", "txt": "words without audio"})
                    writer.write({"__key__": f"{n + 1:06d}", "flac": Path(tmp, "y.flac").read_bytes()})
            paths.append(path)
    return paths
