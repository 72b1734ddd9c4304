"""Source readers for "bring your own data": user corpora enumerated as Records, cheaply and in a fixed
order, for the ingest pipeline to decode, filter and tokenise.

Owns `open_sources` (arguments of one kind -> checked Sources) and re-exports the shared interface
(`Record`, `SourceOptions`, `Source`, `FileSource`). The formats live in text.py, image_text.py and
audio_text.py (tar shards in tars.py, table files in tables.py). Does not own decoding media, text
normalisation, filtering, splitting, tokenisation or writing shards: the pipeline does all of that.

Record keys are stable as data grows (appending files, shards or lines leaves existing keys alone) and
never hold the absolute path typed: they are relative to the source's root folder (a single file's root is
its folder). Two arguments may yield the same key (two folders each with docs.jsonl); a key is unique
within one argument.

Reasons in `Record.error`; the text before the first ":" is fixed, so they can be counted:
  missing / empty {document | caption | transcript}, "non-UTF-8 text", "{noun} is not a string: T",
  "invalid JSON: ...", "missing image", "image is not bytes: T", "missing image file", "missing audio",
  "missing audio file", "missing audio field", "corrupt tar: ...".
A record without an error may still hold media the pipeline cannot decode (a garbage image member) or a
path that does not exist (manifests are not checked here).
"""
from __future__ import annotations

from collections import Counter

from trimdm.data.sources.audio_text import open_audio_text
from trimdm.data.sources.base import FileSource, Record, Source, SourceOptions
from trimdm.data.sources.image_text import open_image_text
from trimdm.data.sources.text import open_text

__all__ = ["KINDS", "FileSource", "Record", "Source", "SourceOptions", "open_sources"]

KINDS = {"text": open_text, "image_text": open_image_text, "audio_text": open_audio_text}


def _check_not_empty(source: FileSource) -> None:
    """Read up to the first usable record (one without an error): a source with none is refused, with
    the reasons its records were rejected. Cheap unless nearly every record is bad."""
    reasons: Counter[str] = Counter()
    for record in source.records():
        if record.error is None:
            return
        reasons[record.error.split(":")[0]] += 1
    where = f"{source.spec}: the {source.format} source"
    if not reasons:
        raise ValueError(f"{where} holds no records")
    counted = ", ".join(f"{reason}: {n}" for reason, n in reasons.most_common())
    raise ValueError(f"{where} holds no usable record; all {sum(reasons.values())} are rejected ({counted})")


def open_sources(kind: str, specs: list[str], options: SourceOptions = SourceOptions()) -> list[Source]:
    """The sources of `specs` (files, folders, globs, brace ranges) of one kind, in argument order, one
    per format found in each argument. Every argument is checked before anything is decoded: a missing
    path, a pattern matching nothing, a file or folder of no recognised format, missing fields or
    columns, and a source without a usable record raise ValueError naming the path."""
    if kind not in KINDS:
        raise ValueError(f"data/sources: unknown source kind {kind!r}; expected one of {', '.join(KINDS)}")
    if isinstance(specs, str) or not specs:
        raise ValueError(f"data/sources: give the {kind} sources as a non-empty list of paths, got {specs!r}")
    if not isinstance(options, SourceOptions):
        raise ValueError(f"data/sources: options must be a SourceOptions, got {type(options).__name__}")
    sources = []
    for spec in specs:
        for source in KINDS[kind](spec, options):
            _check_not_empty(source)
            sources.append(source)
    return sources
