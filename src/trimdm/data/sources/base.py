"""What every source reader shares: the Record a reader yields, the options a user gives, the Source a
reader is, and the helpers every format needs.

Owns: `Record`, `SourceOptions`, the `Source` protocol and its one implementation `FileSource` (a set of
files plus the function that reads them), `resolve` (a source argument -> root folder and files: a file,
a folder, a glob or a brace range such as `shards/{000..099}.tar`), `walk`, strict text checks
(`clean_text`), the file-set fingerprint, and `sniff_ext` (a media type from its first bytes).

Does not own any format (text.py, image_text.py, audio_text.py and tars.py do) or the dispatch on kinds
(__init__.py). Decodes no image or audio: a record carries encoded bytes or a path for the pipeline.

Text is checked, never repaired: bytes must be strict UTF-8 and a str must encode as UTF-8 (a lone
surrogate, as `surrogateescape` decoding or a JSON `\\ud800` escape makes, fails), otherwise the record
carries the error "non-UTF-8 text". Only leading and trailing whitespace is stripped.
"""
from __future__ import annotations

import glob
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path
from typing import Protocol

PATTERN_CHARS = frozenset("*?[{")
FINGERPRINT_LISTED = 1000  # a fingerprint lists its files up to this many; past it only the digest


@dataclass(frozen=True)
class Record:
    """One sample as read, before any decoding. `error` is set when the reader already knows it is bad;
    its text before the first ":" is a fixed reason ("empty caption", "corrupt tar", ...)."""

    key: str  # stable id within the source kind: "shard-000.tar/000123", "images/cat.png", "docs.jsonl:17"
    source: str  # the source argument as the user gave it
    text: str | None  # caption / transcript / document, stripped; None when missing or bad
    _: KW_ONLY  # the rest by name only, so a (text, error) pair can never land in media
    media: bytes | None = None  # encoded image or audio bytes (tars, parquet) ...
    media_path: str | None = None  # ... or the file holding them (folders, LibriSpeech, manifests)
    media_ext: str | None = None  # lower-case extension without dot: a decoding hint
    error: str | None = None


@dataclass(frozen=True)
class SourceOptions:
    """Field names a user may give; None means the per-format defaults listed in each reader."""

    text_field: str | None = None
    paragraphs: bool = False
    caption_field: str | None = None
    image_field: str | None = None
    audio_field: str | None = None
    transcript_field: str | None = None

    def __post_init__(self) -> None:
        for name in ("text_field", "caption_field", "image_field", "audio_field", "transcript_field"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise ValueError(f"data/sources: SourceOptions.{name} must be a non-empty string, got {value!r}")
        if not isinstance(self.paragraphs, bool):
            raise ValueError(f"data/sources: SourceOptions.paragraphs must be a bool, got {self.paragraphs!r}")


class Source(Protocol):
    kind: str  # "text" | "image_text" | "audio_text"
    spec: str  # the argument as given
    format: str  # "txt", "jsonl", "json", "parquet", "hf-dataset", "webdataset", "imagefolder", ...

    def fingerprint(self) -> dict: ...

    def records(self) -> Iterator[Record]: ...


@dataclass(frozen=True, eq=False)
class FileSource:
    """A source that is a sorted set of files under `root` read by `read`. Keys are made relative to
    `root`, so they do not depend on where the data lies or how the user spelled the path."""

    kind: str
    spec: str
    format: str
    root: Path
    files: tuple[Path, ...]  # every file the reader reads, sorted by path relative to root
    read: Callable[[FileSource], Iterator[Record]]  # a module-level function of the format
    settings: dict = field(default_factory=dict)  # the options this format uses, as given

    def records(self) -> Iterator[Record]:
        """Every record, in file order and order within each file."""
        return self.read(self)

    def rel(self, path: Path) -> str:
        return relative(path, self.root)

    def fingerprint(self) -> dict:
        """{kind, format, settings, n_files, n_bytes, sha256, files?}: sha256 over the sorted
        [path relative to root, size, mtime_ns] rows; `files` lists the rows themselves while there are
        at most FINGERPRINT_LISTED. A vanished file is listed with size and mtime None."""
        rows = []
        for path in self.files:
            try:
                st = path.stat()
                rows.append([self.rel(path), st.st_size, st.st_mtime_ns])
            except FileNotFoundError:
                rows.append([self.rel(path), None, None])
        digest = hashlib.sha256(json.dumps(rows).encode()).hexdigest()
        out = {"kind": self.kind, "format": self.format, "settings": dict(self.settings),
               "n_files": len(rows), "n_bytes": sum(r[1] or 0 for r in rows), "sha256": digest}
        if len(rows) <= FINGERPRINT_LISTED:
            out["files"] = rows
        return out


def relative(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def walk(folder: Path) -> list[Path]:
    """Every file under `folder`, recursively, sorted by relative path; hidden files and folders (a
    leading ".", e.g. .cache, .ipynb_checkpoints) are left out."""
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        out += [Path(dirpath, f) for f in filenames if not f.startswith(".")]
    return sorted(out, key=lambda p: relative(p, folder))


def _pattern_root(spec: str) -> Path:
    """The folder part of a pattern before its first glob or brace character."""
    parts = Path(spec).parts
    plain = 0
    while plain < len(parts) and not PATTERN_CHARS & set(parts[plain]):
        plain += 1
    return Path(*parts[:plain]) if plain else Path(".")


def _expand_braces(spec: str) -> list[str]:
    from braceexpand import braceexpand  # a dependency of webdataset, named in pyproject

    return list(braceexpand(spec))


def resolve(spec: str) -> tuple[Path, list[Path] | None]:
    """(root, files) of a source argument: a folder gives (folder, None), a file (its folder, [file]),
    a glob or brace range (its leading plain folder, the matching files sorted). ValueError for a path
    that does not exist, a pattern matching no file, or a brace range naming a missing file."""
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"data/sources: a source must be a non-empty path string, got {spec!r}")
    path = Path(spec)
    if path.is_dir():
        return path, None
    if path.is_file():
        return path.parent, [path]
    if not PATTERN_CHARS & set(spec):
        raise ValueError(f"{spec}: no such file or folder")
    patterns = _expand_braces(spec) if "{" in spec else [spec]
    files: set[Path] = set()
    missing = []
    for pattern in patterns:
        if PATTERN_CHARS & set(pattern):
            files.update(Path(p) for p in glob.glob(pattern, recursive=True) if os.path.isfile(p))
        elif os.path.isfile(pattern):
            files.add(Path(pattern))
        else:
            missing.append(pattern)
    if not files:
        raise ValueError(f"{spec}: the pattern matches no file")
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise ValueError(f"{spec}: {len(missing)} of the {len(patterns)} files it names do not exist: {shown}")
    root = _pattern_root(spec)
    return root, sorted(files, key=lambda p: relative(p, root))


def clean_text(value: object, noun: str) -> tuple[str | None, str | None]:
    """(text, None) for a usable text, else (None, reason): "missing {noun}", "empty {noun}",
    "non-UTF-8 text" or "{noun} is not a string". Bytes are decoded as strict UTF-8."""
    if value is None:
        return None, f"missing {noun}"
    if isinstance(value, (bytes, bytearray, memoryview)):
        try:
            value = bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            return None, "non-UTF-8 text"
    if not isinstance(value, str):
        return None, f"{noun} is not a string: {type(value).__name__}"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return None, "non-UTF-8 text"
    text = value.strip()
    return (text, None) if text else (None, f"empty {noun}")


def json_text(raw: bytes, fields: tuple[str, ...], noun: str) -> tuple[str | None, str | None]:
    """(text, error) from a JSON object held in `raw`: the first of `fields` it has."""
    try:
        obj = json.loads(raw.decode("utf-8", "surrogateescape"))
    except json.JSONDecodeError as e:
        return None, f"invalid JSON: {e.msg}"
    if not isinstance(obj, dict):
        return None, f"invalid JSON: not an object but {type(obj).__name__}"
    name = first_present(obj, fields)
    return clean_text(obj[name], noun) if name is not None else (None, f"missing {noun}")


def first_present(names, candidates: tuple[str, ...]) -> str | None:
    """The first of `candidates` that is among `names` (a header, a dict's keys)."""
    return next((c for c in candidates if c in names), None)


_MAGIC = ((b"\x89PNG\r\n\x1a\n", "png"), (b"\xff\xd8\xff", "jpg"), (b"GIF8", "gif"), (b"BM", "bmp"),
          (b"II*\x00", "tif"), (b"MM\x00*", "tif"), (b"fLaC", "flac"), (b"OggS", "ogg"), (b"ID3", "mp3"))


def sniff_ext(data: bytes | None) -> str | None:
    """The usual extension of an encoded image or audio file from its first bytes, None if unknown."""
    if not data:
        return None
    if data[:4] == b"RIFF" and data[8:12] in (b"WEBP", b"WAVE"):
        return "webp" if data[8:12] == b"WEBP" else "wav"
    return next((ext for magic, ext in _MAGIC if data.startswith(magic)), None)


def ext_of(path: str | Path) -> str | None:
    suffix = Path(path).suffix.lower().lstrip(".")
    return suffix or None
