"""Deterministic, resumable row loader with per-rank slicing.

Owns: which rows form each batch. Each epoch is a permutation of the rows drawn from
`np.random.default_rng([seed, epoch])`; the state is (epoch, cursor), so resuming mid-epoch reproduces
the exact sequence. With world size W, each step consumes W·rows_per_rank rows of the permutation and
rank r takes the r-th contiguous slice, so the union over ranks equals the single-process batch.
The incomplete tail of an epoch is dropped. Does not own the row layout (sequence/) or masking.
"""
from __future__ import annotations

from typing import Protocol

import numpy as np
import torch


class RowSource(Protocol):
    def __len__(self) -> int: ...

    def rows(self, index: np.ndarray) -> np.ndarray: ...


class RowLoader:
    def __init__(self, source: RowSource, rows_per_rank: int, seed: int, rank: int = 0, world: int = 1):
        if rows_per_rank * world > len(source):
            raise ValueError(f"a batch of {rows_per_rank * world} rows exceeds the {len(source)} rows of the data")
        self.source, self.rows_per_rank, self.seed = source, rows_per_rank, seed
        self.rank, self.world = rank, world
        self.epoch, self.cursor = 0, 0
        self._perm_epoch, self._perm = -1, None

    def _permutation(self) -> np.ndarray:
        if self._perm_epoch != self.epoch:
            self._perm = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.source))
            self._perm_epoch = self.epoch
        return self._perm

    def next(self) -> torch.Tensor:
        step_rows = self.rows_per_rank * self.world
        if self.cursor + step_rows > len(self.source):
            self.epoch, self.cursor = self.epoch + 1, 0
        start = self.cursor + self.rank * self.rows_per_rank
        index = self._permutation()[start:start + self.rows_per_rank]
        self.cursor += step_rows
        return torch.from_numpy(self.source.rows(index))

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "cursor": self.cursor}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.cursor = int(state["epoch"]), int(state["cursor"])
