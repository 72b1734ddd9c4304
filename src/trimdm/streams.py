"""Named random streams: every source of randomness gets its own seed from (seed, name).

A stream's seed depends on the run's seed and the stream's name only (crc32 is stable across processes,
platforms and versions), so adding a stream never shifts the draws of another, and no code derives one
seed from another by adding salts.
"""
from __future__ import annotations

import zlib


def stream_seed(seed: int, name: str) -> int:
    """The seed of stream `name` of a run seeded with `seed`."""
    return (seed * 1_000_003 + zlib.crc32(name.encode())) % (2**63)
