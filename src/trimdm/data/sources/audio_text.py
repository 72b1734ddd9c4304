"""Audio-text sources: transcribed speech.

Owns the formats
- librispeech: under a folder, every `SPEAKER-CHAPTER.trans.txt` (lines "UTT-ID TRANSCRIPT") with the
  audio files (.flac, .wav, .ogg) of its folder. Key: the utterance id. A listed utterance without a
  file is "missing audio file"; an audio file no transcript lists is "missing transcript".
- manifest: a .jsonl, .csv or .tsv file (or such files under a folder) with an audio path field (default
  the first of audio, path, file_name, audio_filepath (NeMo), file (tinyworld's transcripts.jsonl)) and a
  transcript field (default the first of text, transcript, transcription, sentence), resolved once per
  file from its first object or header. Relative paths resolve against the manifest's folder. Key
  "FILE:LINE". Whether the audio file exists is left to the pipeline, which opens it anyway.
- webdataset: tar shards with KEY.flac|wav|ogg and KEY.txt or KEY.json (transcript field as above).
In a folder, a .jsonl/.csv/.tsv without these fields is passed over (it may be a speaker list); named
alone it is refused.

Does not decode, resample or downmix audio (trimdm.data.media does) or normalise transcripts (LibriSpeech
is upper case; the pipeline decides).
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from trimdm.data.sources.base import (FileSource, Record, SourceOptions, clean_text, ext_of, first_present,
                                      resolve, walk)
from trimdm.data.sources.tables import delimited_header, first_jsonl_object, iter_delimited, iter_jsonl
from trimdm.data.sources.tars import TAR_SUFFIX, read_shards

AUDIO_EXTS = ("flac", "wav", "ogg")
AUDIO_FIELDS = ("audio", "path", "file_name", "audio_filepath", "file")
TRANSCRIPT_FIELDS = ("text", "transcript", "transcription", "sentence")
MANIFEST_SUFFIXES = (".jsonl", ".csv", ".tsv")
TRANS_SUFFIX = ".trans.txt"
EXPECTED = ("a LibriSpeech folder (SPEAKER/CHAPTER/SPEAKER-CHAPTER.trans.txt with the .flac files), "
            "a .jsonl/.csv/.tsv manifest with an audio path and a transcript field, or .tar shards "
            "(webdataset: KEY.flac|wav|ogg with KEY.txt or KEY.json)")
NOUNS = ("audio", "transcript")


def _read_tars(source: FileSource) -> Iterator[Record]:
    return read_shards(source, AUDIO_EXTS, NOUNS, TRANSCRIPT_FIELDS, "transcript_field")


# ---------------------------------------------------------------------------------------------
# LibriSpeech


def _transcripts(path: Path) -> Iterator[tuple[str, str]]:
    """(utterance id, rest of the line) per non-blank line of a .trans.txt."""
    with open(path, "rb") as f:
        for raw in f:
            parts = raw.decode("utf-8", "surrogateescape").strip().split(maxsplit=1)
            if parts:
                yield parts[0], parts[1] if len(parts) > 1 else ""


def _chapter(source: FileSource, folder: Path, paths: list[Path]) -> Iterator[Record]:
    audio = {p.stem: p for p in paths if ext_of(p) in AUDIO_EXTS}
    listed = set()
    for trans in (p for p in paths if p.name.endswith(TRANS_SUFFIX)):
        for utt, line in _transcripts(trans):
            listed.add(utt)
            text, error = clean_text(line, "transcript")
            path = audio.get(utt)
            if path is None:
                path, error = folder / f"{utt}.flac", "missing audio file"
            yield Record(utt, source.spec, text, media_path=str(path), media_ext=ext_of(path), error=error)
    for utt in sorted(audio.keys() - listed):
        yield Record(utt, source.spec, None, media_path=str(audio[utt]), media_ext=ext_of(audio[utt]),
                     error="missing transcript")


def _read_librispeech(source: FileSource) -> Iterator[Record]:
    by_folder: dict[Path, list[Path]] = {}
    for path in source.files:  # sorted by relative path, so each folder's files come together
        by_folder.setdefault(path.parent, []).append(path)
    for folder, paths in by_folder.items():
        yield from _chapter(source, folder, paths)


def _librispeech(spec: str, root: Path, files: list[Path]) -> FileSource | None:
    chapters = {p.parent for p in files if p.name.endswith(TRANS_SUFFIX)}
    if not chapters:
        return None
    chosen = [p for p in files if p.parent in chapters and (p.name.endswith(TRANS_SUFFIX) or ext_of(p) in AUDIO_EXTS)]
    return FileSource("audio_text", spec, "librispeech", root, tuple(chosen), _read_librispeech, {})


# ---------------------------------------------------------------------------------------------
# manifests


def manifest_fields(path: Path, settings: dict) -> tuple[str | None, str | None, list[str]]:
    """(audio field, transcript field, the file's field names): the user's fields if the file has them,
    else the first default present; None where there is none."""
    if path.suffix.lower() == ".jsonl":
        first = first_jsonl_object(path)
        names = list(first) if first is not None else []
    else:
        names = delimited_header(path)
    audio = settings["audio_field"] or first_present(names, AUDIO_FIELDS)
    transcript = settings["transcript_field"] or first_present(names, TRANSCRIPT_FIELDS)
    return (audio if audio in names else None), (transcript if transcript in names else None), names


def _manifest_problem(path: Path, settings: dict) -> str | None:
    """Why `path` is not an audio manifest, or None if it is one."""
    audio, transcript, names = manifest_fields(path, settings)
    roles = (("audio path", audio, settings["audio_field"], AUDIO_FIELDS, "--audio-field"),
             ("transcript", transcript, settings["transcript_field"], TRANSCRIPT_FIELDS, "--transcript-field"))
    missing = [f"no {role} field {repr(given) if given else ' or '.join(map(repr, defaults))} (name it with {flag})"
               for role, found, given, defaults, flag in roles if found is None]
    if not missing:
        return None
    return f"{path}: not an audio manifest: {'; '.join(missing)}; it has {', '.join(names) or 'no fields'}"


def _manifest_rows(path: Path) -> Iterator[tuple[int, object, str | None]]:
    if path.suffix.lower() == ".jsonl":
        return iter_jsonl(path)
    return ((line, row, None) for line, row in iter_delimited(path))


def _read_manifests(source: FileSource) -> Iterator[Record]:
    for path in source.files:
        rel = source.rel(path)
        audio_field, transcript_field, _ = manifest_fields(path, source.settings)
        for line, row, error in _manifest_rows(path):
            key = f"{rel}:{line}"
            if error or not isinstance(row, dict):
                yield Record(key, source.spec, None, error=error or "invalid JSON: not an object")
                continue
            text, error = clean_text(row.get(transcript_field), "transcript")
            audio = row.get(audio_field)
            if not isinstance(audio, str) or not audio.strip():
                yield Record(key, source.spec, text, error="missing audio field")
                continue
            media = path.parent / audio.strip()  # an absolute path stays as it is
            yield Record(key, source.spec, text, media_path=str(media), media_ext=ext_of(media), error=error)


# ---------------------------------------------------------------------------------------------


def open_audio_text(spec: str, options: SourceOptions) -> list[FileSource]:
    """The audio-text sources of one argument (librispeech, manifest, webdataset: one per format found),
    checked: another file type, a named file that is not a manifest and a folder with none of these are
    refused with a ValueError naming the path."""
    root, files = resolve(spec)
    named = files is not None
    files = files if named else walk(root)
    settings = {"audio_field": options.audio_field, "transcript_field": options.transcript_field}
    tars, manifests = [], []
    for path in files:
        if path.suffix.lower() == TAR_SUFFIX:
            tars.append(path)
        elif path.suffix.lower() in MANIFEST_SUFFIXES:
            problem = _manifest_problem(path, settings)
            if problem is None:
                manifests.append(path)
            elif named:
                raise ValueError(problem)
        elif named:
            raise ValueError(f"{path}: not a recognised audio-text source; expected {EXPECTED}")
    libri = None if named else _librispeech(spec, root, files)
    sources = [libri] if libri is not None else []
    sources += [FileSource("audio_text", spec, "manifest", root, tuple(manifests), _read_manifests, settings)
                ] if manifests else []
    sources += [FileSource("audio_text", spec, "webdataset", root, tuple(tars), _read_tars,
                           {"transcript_field": options.transcript_field})] if tars else []
    if not sources:
        raise ValueError(f"{spec}: no audio-text source found in this folder; expected {EXPECTED}")
    return sources
