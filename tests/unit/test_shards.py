"""Token shards and stage manifests (data/shards.py): round trips, dtypes, and every integrity check."""
import json

import numpy as np
import pytest

from trimdm.data.shards import MANIFEST, Shard, finish_stage, new_stage_dir, verify_stage, write_shard


def test_shard_round_trip_and_dtype(tmp_path):
    docs = [np.array([1, 2, 3]), np.array([], dtype=np.int64), np.array([65_535, 0])]
    meta = write_shard(tmp_path, "small", docs, vocab_size=65_536)
    assert meta == {"docs": 3, "tokens": 5, "dtype": "uint16"}
    shard = Shard(tmp_path, "small", meta)
    assert len(shard) == 3 and [shard.doc(i).tolist() for i in range(3)] == [[1, 2, 3], [], [65_535, 0]]
    big = write_shard(tmp_path, "big", [np.array([70_000])], vocab_size=70_001)
    assert big["dtype"] == "uint32" and Shard(tmp_path, "big", big).doc(0).tolist() == [70_000]
    empty = write_shard(tmp_path, "empty", [], vocab_size=10)
    assert len(Shard(tmp_path, "empty", empty)) == 0


def test_a_shard_whose_index_disagrees_is_an_error(tmp_path):
    meta = write_shard(tmp_path, "s", [np.array([1, 2, 3, 4])], vocab_size=10)
    (tmp_path / "s.tokens.bin").write_bytes(np.array([1, 2], np.uint16).tobytes())
    with pytest.raises(ValueError, match="holds 2 tokens but its index says 4"):
        Shard(tmp_path, "s", meta)


def test_a_stage_is_verified_by_its_manifest(tmp_path):
    final = tmp_path / "stage"
    tmp = new_stage_dir(final)
    write_shard(tmp, "train", [np.arange(10)], vocab_size=16)
    finish_stage(tmp, final, {"stage": "test"})
    assert not tmp.exists()
    manifest, reason = verify_stage(final, deep=True)
    assert reason == "" and manifest["stage"] == "test" and set(manifest["files"]) == {"train.tokens.bin",
                                                                                         "train.offsets.npy"}
    tokens = final / "train.tokens.bin"
    data = bytearray(tokens.read_bytes())
    data[0] ^= 1  # same size, other bytes: only the deep check sees it
    tokens.write_bytes(bytes(data))
    assert verify_stage(final)[0] is not None
    assert verify_stage(final, deep=True) == (None, f"{tokens} does not match its SHA-256 in the manifest")
    tokens.write_bytes(bytes(data[:-2]))
    assert "has 18 bytes, manifest says 20" in verify_stage(final)[1]
    tokens.unlink()
    assert verify_stage(final) == (None, f"{tokens} is missing")
    (final / MANIFEST).write_text("{broken")
    assert "unreadable" in verify_stage(final)[1]
    (final / MANIFEST).unlink()
    assert verify_stage(final) == (None, f"{final / MANIFEST} is missing")


def test_finishing_replaces_an_old_stage_whole(tmp_path):
    final = tmp_path / "stage"
    for value in (1, 2):
        tmp = new_stage_dir(final)
        (tmp / "x.txt").write_text(str(value))
        finish_stage(tmp, final, {"value": value})
    assert json.loads((final / MANIFEST).read_text())["value"] == 2 and (final / "x.txt").read_text() == "2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stage"]
