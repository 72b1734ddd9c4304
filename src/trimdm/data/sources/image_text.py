"""Image-text sources: captioned images.

Owns the formats
- webdataset: tar shards (a file, a glob, a brace range or the .tar files under a folder) with members
  KEY.jpg|jpeg|png|webp|bmp|gif|tif|tiff and KEY.txt or KEY.json (caption field, default "caption" then
  "text"); see tars.py. Key "SHARD/KEY".
- imagefolder: the images under a folder (Hugging Face "imagefolder" convention): captions from every
  `metadata.jsonl` / `metadata.csv` under it (a `file_name` relative to the metadata file's folder and a
  caption column), else from a .txt of the same stem beside the image. Key: the image's path relative to
  the folder; the record carries `media_path`. An image with neither caption is "missing caption"; a
  metadata row naming an absent file is "missing image file".
- parquet: an image column (default "image", then "jpg", "png", "img"; plain binary, or the struct
  {"bytes", "path"} that datasets' Image feature writes) and a caption column. Key "FILE:ROW".
A folder may hold several of these; each becomes its own source.

Does not decode images (records carry bytes or a path for trimdm.data.media) or normalise captions.
"""
from __future__ import annotations

import posixpath
from collections.abc import Iterator
from pathlib import Path

from trimdm.data.sources.base import (FileSource, Record, SourceOptions, clean_text, ext_of, first_present,
                                      resolve, sniff_ext, walk)
from trimdm.data.sources.tables import (delimited_header, first_jsonl_object, iter_delimited, iter_jsonl,
                                        iter_parquet, parquet_columns)
from trimdm.data.sources.tars import TAR_SUFFIX, read_shards

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff")
CAPTION_FIELDS = ("caption", "text")
IMAGE_COLUMNS = ("image", "jpg", "png", "img")
METADATA = ("metadata.jsonl", "metadata.csv")
EXPECTED = (".tar shards (webdataset: KEY.jpg|png|webp with KEY.txt or KEY.json), .parquet files with an "
            "image and a caption column, or a folder of images with metadata.jsonl / metadata.csv or a "
            ".txt caption beside each image")
NOUNS = ("image", "caption")
PARQUET_BATCH = 64  # rows of encoded images per read


def _read_tars(source: FileSource) -> Iterator[Record]:
    return read_shards(source, IMAGE_EXTS, NOUNS, CAPTION_FIELDS, "caption_field")


# ---------------------------------------------------------------------------------------------
# imagefolder


def _metadata_fields(path: Path, caption_field: str | None) -> tuple[list[str], str | None]:
    if path.suffix == ".csv":
        names = delimited_header(path)
    else:
        first = first_jsonl_object(path)
        names = list(first) if first is not None else []
    if caption_field:
        return names, caption_field if caption_field in names else None
    return names, first_present(names, CAPTION_FIELDS)


def _check_metadata(path: Path, caption_field: str | None) -> None:
    names, caption = _metadata_fields(path, caption_field)
    if "file_name" not in names or caption is None:
        wanted = repr(caption_field) if caption_field else " or ".join(map(repr, CAPTION_FIELDS))
        raise ValueError(f"{path}: an imagefolder metadata file needs a 'file_name' and a caption field "
                         f"({wanted}); it has {', '.join(names) or 'none'}")


def _metadata_captions(source: FileSource, path: Path) -> Iterator[tuple[str, tuple]]:
    """(image key, (caption, error)) for each row of one metadata file."""
    _, field = _metadata_fields(path, source.settings["caption_field"])
    base = posixpath.dirname(source.rel(path))
    rows = iter_delimited(path) if path.suffix == ".csv" else (
        (line, value) for line, value, _ in iter_jsonl(path) if isinstance(value, dict))
    for _, row in rows:
        name = row.get("file_name")
        if isinstance(name, str) and name.strip():
            yield posixpath.normpath(posixpath.join(base, name.strip())), clean_text(row.get(field), "caption")


def _read_imagefolder(source: FileSource) -> Iterator[Record]:
    images, sidecars, captions = {}, {}, {}
    for path in source.files:
        rel = source.rel(path)
        if path.name in METADATA:
            for key, caption in _metadata_captions(source, path):
                captions.setdefault(key, caption)
        elif path.suffix.lower() == ".txt":
            sidecars[rel[:-len(".txt")]] = path
        else:
            images[rel] = path
    for key in sorted(images.keys() | captions.keys()):
        path = images.get(key, source.root / key)
        if key in captions:
            text, error = captions[key]
        elif posixpath.splitext(key)[0] in sidecars:
            text, error = clean_text(sidecars[posixpath.splitext(key)[0]].read_bytes(), "caption")
        else:
            text, error = None, "missing caption"
        if key not in images:
            error = "missing image file"
        yield Record(key, source.spec, text, media_path=str(path), media_ext=ext_of(key), error=error)


def _imagefolder(spec: str, root: Path, files: list[Path], options: SourceOptions) -> FileSource | None:
    images = [p for p in files if ext_of(p) in IMAGE_EXTS]
    if not images:
        return None
    metadata = [p for p in files if p.name in METADATA]
    for path in metadata:
        _check_metadata(path, options.caption_field)
    stems = {p.with_suffix("") for p in images}
    sidecars = [p for p in files if p.suffix.lower() == ".txt" and p.with_suffix("") in stems]
    chosen = sorted(images + metadata + sidecars, key=lambda p: p.relative_to(root).as_posix())
    return FileSource("image_text", spec, "imagefolder", root, tuple(chosen), _read_imagefolder,
                      {"caption_field": options.caption_field})


# ---------------------------------------------------------------------------------------------
# parquet


def _parquet_fields(path: Path, settings: dict) -> tuple[str, str]:
    """(image column, caption column) of one Parquet file; ValueError naming it if one is missing."""
    names = parquet_columns(path)
    image = settings["image_field"] or first_present(names, IMAGE_COLUMNS)
    caption = settings["caption_field"] or first_present(names, CAPTION_FIELDS)
    for role, name, flag, defaults in (("image", image, "--image-field", IMAGE_COLUMNS),
                                       ("caption", caption, "--caption-field", CAPTION_FIELDS)):
        if name is None or name not in names:
            wanted = repr(name) if name else " or ".join(map(repr, defaults))
            raise ValueError(f"{path}: no {role} column {wanted} (it has {', '.join(names)}); name it with {flag}")
    return image, caption


def _image_value(value: object, folder: Path) -> tuple[dict, str | None]:
    """(Record media fields, error) of one image cell: bytes, or {"bytes", "path"}."""
    if isinstance(value, dict):
        data, path = value.get("bytes"), value.get("path")
        if data is None and isinstance(path, str) and path:
            return {"media_path": str(folder / path), "media_ext": ext_of(path)}, None
        value = data
    if value is None:
        return {}, "missing image"
    if not isinstance(value, bytes):
        return {}, f"image is not bytes: {type(value).__name__}"
    return {"media": value, "media_ext": sniff_ext(value)}, None


def _read_parquet(source: FileSource) -> Iterator[Record]:
    for path in source.files:
        rel = source.rel(path)
        image, caption = _parquet_fields(path, source.settings)
        for row, values in iter_parquet(path, [image, caption], PARQUET_BATCH):
            media, image_error = _image_value(values[image], path.parent)
            text, error = clean_text(values[caption], "caption")
            yield Record(f"{rel}:{row}", source.spec, text, error=image_error or error, **media)


# ---------------------------------------------------------------------------------------------


def open_image_text(spec: str, options: SourceOptions) -> list[FileSource]:
    """The image-text sources of one argument (webdataset, parquet, imagefolder: one per format found),
    checked: another file type, a folder with none of these, and missing columns or metadata fields are
    refused with a ValueError naming the path."""
    root, files = resolve(spec)
    named = files is not None
    files = files if named else walk(root)
    tars = [p for p in files if p.suffix.lower() == TAR_SUFFIX]
    parquets = [p for p in files if p.suffix.lower() == ".parquet"]
    settings = {"caption_field": options.caption_field, "image_field": options.image_field}
    for path in parquets:
        _parquet_fields(path, settings)
    if named:
        other = [p for p in files if p.suffix.lower() not in (TAR_SUFFIX, ".parquet")]
        if other:
            raise ValueError(f"{other[0]}: not a recognised image-text source; expected {EXPECTED}")
        folder = None
    else:
        folder = _imagefolder(spec, root, [p for p in files if p.suffix.lower() not in (TAR_SUFFIX, ".parquet")],
                              options)
    sources = [FileSource("image_text", spec, "webdataset", root, tuple(tars), _read_tars,
                          {"caption_field": options.caption_field})] if tars else []
    sources += [FileSource("image_text", spec, "parquet", root, tuple(parquets), _read_parquet, settings)
                ] if parquets else []
    sources += [folder] if folder is not None else []
    if not sources:
        raise ValueError(f"{spec}: no image-text source found in this folder; expected {EXPECTED}")
    return sources
