"""Row-by-row reading of the table files sources are made of: JSON Lines, CSV, TSV and Parquet.

Owns: iterating rows with their position (1-based line for text files, as editors show them; 0-based
row for Parquet, as Arrow shows it), the field names of a file (a header, the first object's keys, a
Parquet schema) for checks before reading, and Parquet in record batches (never a whole file at once).

A file that breaks mid-read (a damaged Parquet page, a CSV field past the csv module's limit) raises
ValueError naming it: neither reader can go on past it.

Does not own what a field means (the format readers pick text, caption, image and audio fields) or the
text checks (base.clean_text). Text is decoded with `surrogateescape`, so a non-UTF-8 byte becomes a lone
surrogate in that one value and clean_text reports "non-UTF-8 text" for the field that holds it, not for
the whole file; Parquet string columns come out as bytes for clean_text to decode strictly.
"""
from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

DELIMITERS = {".csv": ",", ".tsv": "\t"}


def iter_jsonl(path: Path) -> Iterator[tuple[int, object, str | None]]:
    """(line, value, None) for every non-blank line of a JSON Lines file, or (line, None, reason) for a
    line that is not JSON. Blank lines are not records."""
    with open(path, "rb") as f:
        for line, raw in enumerate(f, 1):
            if line == 1:
                raw = raw.removeprefix(b"\xef\xbb\xbf")
            if not raw.strip():
                continue
            try:
                value = json.loads(raw.decode("utf-8", "surrogateescape"))
            except json.JSONDecodeError as e:
                yield line, None, f"invalid JSON: {e.msg}"
                continue
            yield line, value, None


def first_jsonl_object(path: Path) -> dict | None:
    """The first non-blank line of a JSON Lines file if it is a JSON object, else None."""
    for _, value, _ in iter_jsonl(path):
        return value if isinstance(value, dict) else None
    return None


def _csv_reader(f, delimiter: str):
    # TSV corpora (Common Voice and the like) hold quotes inside sentences: no quoting there
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    return csv.DictReader(f, delimiter=delimiter, quoting=quoting)


def iter_delimited(path: Path) -> Iterator[tuple[int, dict]]:
    """(line, {column: value}) for every row of a CSV or TSV file with a header row; `line` is the file
    line where the row ends (the header is line 1). Missing cells are None."""
    with open(path, encoding="utf-8-sig", errors="surrogateescape", newline="") as f:
        reader = _csv_reader(f, DELIMITERS[path.suffix.lower()])
        try:
            for row in reader:
                yield reader.line_num, row
        except csv.Error as e:  # the reader cannot go on past it
            raise ValueError(f"{path}: unreadable at line {reader.line_num} ({e})") from None


def delimited_header(path: Path) -> list[str]:
    with open(path, encoding="utf-8-sig", errors="surrogateescape", newline="") as f:
        return list(_csv_reader(f, DELIMITERS[path.suffix.lower()]).fieldnames or [])


def parquet_columns(path: Path) -> list[str]:
    """The top-level column names of a Parquet file, from its footer alone."""
    try:
        return list(pq.read_schema(path).names)
    except (pa.ArrowException, OSError) as e:
        raise ValueError(f"{path}: not a readable Parquet file ({e})") from None


def _values(array: pa.Array) -> list:
    if pa.types.is_string(array.type) or pa.types.is_large_string(array.type):
        # as bytes: clean_text decodes strictly instead of Arrow trusting the file to be UTF-8
        array = array.cast(pa.large_binary() if pa.types.is_large_string(array.type) else pa.binary())
    return array.to_pylist()


def iter_parquet(path: Path, columns: list[str], batch_size: int) -> Iterator[tuple[int, dict]]:
    """(row, {column: value}) for every row of a Parquet file, reading `columns` only, `batch_size` rows
    at a time. Binary and string values come as bytes; structs as dicts."""
    row = 0
    try:
        with pq.ParquetFile(path) as pf:
            for batch in pf.iter_batches(batch_size=batch_size, columns=columns):
                values = {name: _values(batch.column(name)) for name in columns}
                for i in range(batch.num_rows):
                    yield row, {name: values[name][i] for name in columns}
                    row += 1
    except (pa.ArrowException, OSError) as e:  # a damaged page: the file cannot be read on
        raise ValueError(f"{path}: unreadable from row {row} on ({e})") from None
