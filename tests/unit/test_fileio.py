"""Atomic text writes: two writers of one path, and a failed write."""
from __future__ import annotations

import pytest

import trimdm.fileio as fileio


def test_interleaved_writers_of_one_path_both_finish(tmp_path, monkeypatch):
    # writer A is between its write and its rename when writer B writes the same path (two runs checking
    # one prepared data set at once): each renames its own whole file and the last rename wins
    target = tmp_path / "spec.json"
    real_fsync = fileio.fsync_file
    calls = []

    def fsync_then_interleave(path):
        real_fsync(path)
        calls.append(path)
        if len(calls) == 1:
            fileio.atomic_write_text(target, "B\n")

    monkeypatch.setattr(fileio, "fsync_file", fsync_then_interleave)
    fileio.atomic_write_text(target, "A\n")
    assert len(calls) == 2 and calls[0] != calls[1]
    assert target.read_text() == "A\n"
    assert [p.name for p in tmp_path.iterdir()] == ["spec.json"]


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "latest"
    fileio.atomic_write_text(target, "step_00000010\n")
    with pytest.raises(UnicodeEncodeError):
        fileio.atomic_write_text(target, "\udcff")  # a lone surrogate cannot be encoded
    assert target.read_text() == "step_00000010\n"
    assert [p.name for p in tmp_path.iterdir()] == ["latest"]
