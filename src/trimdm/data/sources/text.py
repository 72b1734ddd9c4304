"""Text sources: documents for the text-only stream.

Owns the formats
- txt: a document per file (key: the file's path), or with `paragraphs` a document per run of non-blank
  lines (key "file:LINE", the paragraph's first line, 1-based);
- jsonl: a JSON object per line holding the text field (default "text") or a JSON string (key "file:LINE");
- json: one JSON array of such objects or strings (key "file:INDEX", 0-based);
- parquet: the text column, read in record batches (key "file:ROW", 0-based);
- hf-dataset: a folder written by `datasets` `Dataset.save_to_disk` / `DatasetDict.save_to_disk` (key
  "ROW", or "SPLIT:ROW" for every split of a DatasetDict; prefixed by the folder's path when it lies
  inside a folder given as the source), read with `datasets.load_from_disk` (the optional extra `hf`).
A folder is every file of these formats under it, recursively; a .json that is not an array (a config
file) is passed over in a folder and refused when named alone.

Reasons a record carries: "missing document", "empty document", "non-UTF-8 text", "document is not a
string: T", "invalid JSON: ...". Does not own tokenisation or any normalisation of the text.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from trimdm.data.sources.base import FileSource, Record, SourceOptions, clean_text, relative, resolve, walk
from trimdm.data.sources.tables import first_jsonl_object, iter_jsonl, iter_parquet, parquet_columns

SUFFIXES = {".txt": "txt", ".jsonl": "jsonl", ".json": "json", ".parquet": "parquet"}
EXPECTED = (".txt, .jsonl, .json (an array of objects or strings) or .parquet files, a folder of them, "
            "or a folder written by Hugging Face datasets' save_to_disk")
NOUN = "document"
PARQUET_BATCH = 1024
HF_BATCH = 1024


def _record(key: str, spec: str, checked: tuple[str | None, str | None]) -> Record:
    text, error = checked
    return Record(key, spec, text, error=error)


def _txt_documents(source: FileSource, path: Path) -> Iterator[Record]:
    text, error = clean_text(path.read_bytes(), NOUN)
    yield Record(source.rel(path), source.spec, text, error=error)


def _txt_paragraphs(source: FileSource, path: Path) -> Iterator[Record]:
    rel, lines, start = source.rel(path), [], 0
    with open(path, "rb") as f:
        for line, raw in enumerate(f, 1):
            if raw.strip():
                start = start or line
                lines.append(raw)
                continue
            if lines:
                yield _record(f"{rel}:{start}", source.spec, clean_text(b"".join(lines), NOUN))
            lines, start = [], 0
    if lines:
        yield _record(f"{rel}:{start}", source.spec, clean_text(b"".join(lines), NOUN))


def _document(value: object, field: str) -> tuple[str | None, str | None]:
    if isinstance(value, dict):
        value = value.get(field)
    elif not isinstance(value, str):
        return None, f"{NOUN} is not a string: {type(value).__name__}"
    return clean_text(value, NOUN)


def _read_files(source: FileSource) -> Iterator[Record]:
    field = source.settings["text_field"]
    for path in source.files:
        rel = source.rel(path)
        if source.format == "txt":
            yield from (_txt_paragraphs if source.settings["paragraphs"] else _txt_documents)(source, path)
        elif source.format == "jsonl":
            for line, value, error in iter_jsonl(path):
                text, error = (None, error) if error else _document(value, field)
                yield Record(f"{rel}:{line}", source.spec, text, error=error)
        elif source.format == "json":
            yield from _read_json(source, path, field)
        else:
            for row, values in iter_parquet(path, [field], PARQUET_BATCH):
                yield _record(f"{rel}:{row}", source.spec, clean_text(values[field], NOUN))


def _read_json(source: FileSource, path: Path, field: str) -> Iterator[Record]:
    rel = source.rel(path)
    try:
        items = json.loads(path.read_bytes().decode("utf-8", "surrogateescape"))
    except json.JSONDecodeError as e:
        yield Record(rel, source.spec, None, error=f"invalid JSON: {e.msg} (line {e.lineno})")
        return
    if not isinstance(items, list):
        yield Record(rel, source.spec, None, error=f"invalid JSON: not an array but {type(items).__name__}")
        return
    for i, value in enumerate(items):
        yield _record(f"{rel}:{i}", source.spec, _document(value, field))


def _json_is_array(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(4096).removeprefix(b"\xef\xbb\xbf").lstrip()
    return head.startswith(b"[")


def _check_field(path: Path, fmt: str, field: str) -> None:
    """A jsonl whose first object or a parquet whose schema lacks the text field is refused up front."""
    if fmt == "parquet":
        names = parquet_columns(path)
    elif fmt == "jsonl":
        first = first_jsonl_object(path)
        names = None if first is None else list(first)
    else:
        return
    if names is not None and field not in names:
        raise ValueError(f"{path}: no text field {field!r} (it has {', '.join(map(str, names)) or 'none'}); "
                         f"name the right one with --text-field")


# ---------------------------------------------------------------------------------------------
# Hugging Face datasets folders


def is_hf_dataset(folder: Path) -> bool:
    return (folder / "dataset_dict.json").is_file() or (
        (folder / "state.json").is_file() and (folder / "dataset_info.json").is_file())


def _import_datasets(where: Path):
    try:
        import datasets
    except ImportError:
        raise ValueError(f"{where}: reading a Hugging Face datasets folder needs the optional extra 'hf' "
                         f"(pip install 'trimdm[hf]')") from None
    return datasets


def _hf_splits(folder: Path):
    datasets = _import_datasets(folder)
    loaded = datasets.load_from_disk(str(folder))
    if isinstance(loaded, datasets.DatasetDict):
        return [(f"{name}:", split) for name, split in loaded.items()]
    return [("", loaded)]


def _read_hf(source: FileSource) -> Iterator[Record]:
    folder = source.root / source.settings["dataset"]
    prefix = "" if source.settings["dataset"] == "." else source.settings["dataset"] + "/"
    field = source.settings["text_field"]
    for split, ds in _hf_splits(folder):
        row = 0
        for batch in ds.select_columns([field]).iter(batch_size=HF_BATCH):
            for value in batch[field]:
                yield _record(f"{prefix}{split}{row}", source.spec, clean_text(value, NOUN))
                row += 1


def _hf_source(spec: str, root: Path, folder: Path, field: str) -> FileSource:
    for split, ds in _hf_splits(folder):
        if field not in ds.column_names:
            raise ValueError(f"{folder}: split {split.rstrip(':') or '(the dataset)'} has no text column "
                             f"{field!r} (it has {', '.join(ds.column_names)}); name it with --text-field")
    return FileSource("text", spec, "hf-dataset", root, tuple(walk(folder)), _read_hf,
                      {"text_field": field, "dataset": relative(folder, root) if folder != root else "."})


def _split_hf_folders(root: Path, files: list[Path]) -> tuple[list[Path], list[Path]]:
    """(outermost datasets folders under root, the files outside them)."""
    folders: list[Path] = []
    for folder in sorted({p.parent for p in files}, key=lambda p: relative(p, root)):
        if not any(f in folder.parents for f in folders) and is_hf_dataset(folder):
            folders.append(folder)
    return folders, [p for p in files if not any(f in p.parents for f in folders)]


# ---------------------------------------------------------------------------------------------


def open_text(spec: str, options: SourceOptions) -> list[FileSource]:
    """The text sources of one argument, one per format found, checked: a file of another format, a
    folder with none of these formats, and a jsonl/parquet/datasets folder without the text field are
    refused with a ValueError naming the path."""
    field = options.text_field or "text"
    root, files = resolve(spec)
    if files is None and is_hf_dataset(root):
        return [_hf_source(spec, root, root, field)]
    named = files is not None
    hf_folders, files = ([], files) if named else _split_hf_folders(root, walk(root))
    by_format: dict[str, list[Path]] = {}
    for path in files:
        fmt = SUFFIXES.get(path.suffix.lower())
        if fmt == "json" and not _json_is_array(path):
            if named:
                raise ValueError(f"{path}: a .json text source must hold one JSON array of objects or strings")
            continue
        if fmt is None:
            if named:
                raise ValueError(f"{path}: not a recognised text source; expected {EXPECTED}")
            continue
        _check_field(path, fmt, field)
        by_format.setdefault(fmt, []).append(path)
    settings = {"text_field": field, "paragraphs": options.paragraphs}
    sources = [FileSource("text", spec, fmt, root, tuple(by_format[fmt]), _read_files, dict(settings))
               for fmt in SUFFIXES.values() if fmt in by_format]
    sources += [_hf_source(spec, root, folder, field) for folder in hf_folders]
    if not sources:
        raise ValueError(f"{spec}: no text source found in this folder; expected {EXPECTED}")
    return sources
