"""WebDataset tar shards, for image-text and audio-text sources alike.

Owns reading shards with webdataset's own tar iterators (`tar_file_expander` + `group_by_keys`: members
grouped into samples by `__key__`, raw bytes per lower-case extension, nothing decoded) and turning each
sample into a Record keyed "SHARD/__key__" (SHARD relative to the source root). The media member is the
first of the kind's extensions present; the text is `KEY.txt`, else a field of `KEY.json`.

Damage never stops a read. webdataset skips a bad member or an unreadable shard only through its
`handler`; ours collects the exceptions, and each run of them between two samples becomes one Record
keyed "SHARD/?N" (N counts from 1 within the shard) with error "corrupt tar: ...". Python's tarfile in
stream mode takes a garbled header for the end of the archive and stops without a word, so after the last
sample the rest of the shard is read: anything but zero padding there is reported the same way.

Reasons: "missing image"/"missing audio" (a sample without a media member), "missing caption"/"missing
transcript", "empty ...", "non-UTF-8 text", "invalid JSON: ...", "corrupt tar: ...".
Does not own which files are shards (image_text.py, audio_text.py) or decoding the media.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from trimdm.data.sources.base import FileSource, Record, clean_text, json_text

TAR_SUFFIX = ".tar"


def _message(exn: BaseException) -> str:
    # webdataset appends " @ <stream>" to the first argument and the stream and url as further arguments
    first = str(exn.args[0]).split(" @ ")[0] if exn.args else ""
    return f"{type(exn).__name__}: {first}" if first else type(exn).__name__


def _zero_tail(f) -> bool:
    """True if what is left of the open file holds only zero bytes (the archive's end padding)."""
    while chunk := f.read(1 << 20):
        if chunk.strip(b"\0"):
            return False
    return True


def _sample(source: FileSource, shard: str, sample: dict, media_exts: tuple[str, ...],
            text_fields: tuple[str, ...], nouns: tuple[str, str]) -> Record:
    media_noun, text_noun = nouns
    key = f"{shard}/{sample['__key__']}"
    if "txt" in sample:
        text, error = clean_text(sample["txt"], text_noun)
    elif "json" in sample:
        text, error = json_text(sample["json"], text_fields, text_noun)
    else:
        text, error = None, f"missing {text_noun}"
    ext = next((e for e in media_exts if e in sample), None)
    if ext is None:
        return Record(key, source.spec, text, error=f"missing {media_noun}")
    return Record(key, source.spec, text, media=sample[ext], media_ext=ext, error=error)


def read_shard(source: FileSource, path: Path, media_exts: tuple[str, ...], text_fields: tuple[str, ...],
               nouns: tuple[str, str]) -> Iterator[Record]:
    """The records of one shard, damage included (see the module docstring)."""
    from webdataset import tariterators  # imports torch: only when a shard is read

    shard, errors, n_corrupt = source.rel(path), [], 0

    def handler(exn: BaseException) -> bool:
        errors.append(exn)
        return True  # go on with the next member or shard

    def corrupt(message: str) -> Record:
        nonlocal n_corrupt
        n_corrupt += 1
        return Record(f"{shard}/?{n_corrupt}", source.spec, None, error=f"corrupt tar: {message}")

    with open(path, "rb") as f:
        members = tariterators.tar_file_expander([{"url": shard, "stream": f}], handler=handler)
        for sample in tariterators.group_by_keys(members, handler=handler):
            if errors:
                yield corrupt(_message(errors[0]))
                errors.clear()
            yield _sample(source, shard, sample, media_exts, text_fields, nouns)
        if errors:
            yield corrupt(_message(errors[0]))
        elif not _zero_tail(f):
            yield corrupt("unreadable data after the last readable member (a garbled member header?)")


def read_shards(source: FileSource, media_exts: tuple[str, ...], nouns: tuple[str, str],
                default_fields: tuple[str, ...], option: str) -> Iterator[Record]:
    """The records of every shard of `source`, in order; the JSON text field is settings[option] if
    the user gave one, else the first of `default_fields` a sample's JSON has."""
    given = source.settings.get(option)
    fields = (given,) if given else default_fields
    for path in source.files:
        yield from read_shard(source, path, media_exts, fields, nouns)
