"""Deterministic, resumable batches over a mixture of row sources, ready for per-rank slicing.

Owns: which rows form each optimizer step's global batch. Tasks (text, image_text, audio_text) are
mixed by token share (`data.mix`): a task's share of rows is its token share divided by its mean
tokens per row (padding excluded), and rows are apportioned step by step so that the cumulative count
of every task stays within one row of its target (largest-remainder apportionment with memory). Within
a task, each epoch is a permutation from the named stream "<task> rows" (streams.py) and the epoch;
the global batch is put in a per-step random order (stream "step order": ranks see mixed tasks), and
rank r of W takes the r-th contiguous slice. The state is small (step, rows served per task, per-task epoch and cursor), so
resuming mid-epoch reproduces the exact sequence. Every row of an epoch is served once before the
next epoch begins; a batch may straddle two epochs.
Does not own the row layout (sequence/) or masking (diffusion/).
"""
from __future__ import annotations

import math
from typing import Protocol

import numpy as np
import torch

from trimdm.streams import stream_seed


class RowSource(Protocol):
    def __len__(self) -> int: ...

    def rows(self, index: np.ndarray) -> np.ndarray: ...


class MixtureLoader:
    def __init__(self, sources: dict[str, RowSource], row_shares: dict[str, float], global_rows: int, seed: int,
                 rank: int = 0, world: int = 1):
        tasks = [t for t in sources if row_shares.get(t, 0) > 0]
        if not tasks:
            raise ValueError("the data mixture gives no task a positive share")
        if global_rows % world:
            raise ValueError(f"{global_rows} rows per step do not split over {world} ranks")
        total = sum(row_shares[t] for t in tasks)
        self.tasks = tasks
        self.sources = sources
        self.p = {t: row_shares[t] / total for t in tasks}
        for t in tasks:
            if len(sources[t]) < 1:
                raise ValueError(f"task {t!r} has no rows")
        self.global_rows, self.seed, self.rank, self.world = global_rows, seed, rank, world
        self.step = 0
        self.served = {t: 0 for t in tasks}
        self.epoch = {t: 0 for t in tasks}
        self.cursor = {t: 0 for t in tasks}
        self._perms: dict[tuple[str, int], np.ndarray] = {}

    def _allocate(self) -> dict[str, int]:
        """Rows per task this step: cumulative counts track step·R·p_t within one row."""
        target = {t: (self.step + 1) * self.global_rows * self.p[t] - self.served[t] for t in self.tasks}
        n = {t: max(0, math.floor(target[t])) for t in self.tasks}
        left = self.global_rows - sum(n.values())
        for t in sorted(self.tasks, key=lambda t: (-(target[t] - n[t]), self.tasks.index(t)))[:left]:
            n[t] += 1
        return n

    def _perm(self, task: str, epoch: int) -> np.ndarray:
        key = (task, epoch)
        if key not in self._perms:
            self._perms = {k: v for k, v in self._perms.items() if k[0] != task}  # keep one epoch per task
            self._perms[key] = np.random.default_rng([stream_seed(self.seed, f"{task} rows"), epoch]).permutation(
                len(self.sources[task]))
        return self._perms[key]

    def _take(self, task: str, n: int) -> np.ndarray:
        size = len(self.sources[task])
        out = []
        while n > 0:
            if self.cursor[task] >= size:
                self.epoch[task], self.cursor[task] = self.epoch[task] + 1, 0
            k = min(n, size - self.cursor[task])
            out.append(self._perm(task, self.epoch[task])[self.cursor[task]:self.cursor[task] + k])
            self.cursor[task] += k
            n -= k
        return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)

    def next_global(self) -> list[tuple[str, np.ndarray]]:
        """(task, row index) pairs of the whole global batch, in its per-step order."""
        alloc = self._allocate()
        items = [(t, i) for t in self.tasks for i in self._take(t, alloc[t])]
        for t in self.tasks:
            self.served[t] += alloc[t]
        order = np.random.default_rng([stream_seed(self.seed, "step order"), self.step]).permutation(len(items))
        self.step += 1
        return [items[j] for j in order]

    def next(self) -> torch.Tensor:
        """This rank's clean rows of the next step, (global_rows / world, L)."""
        items = self.next_global()
        per = self.global_rows // self.world
        mine = items[self.rank * per:(self.rank + 1) * per]
        out = None
        for t in self.tasks:
            pos = [j for j, (task, _) in enumerate(mine) if task == t]
            if not pos:
                continue
            rows = self.sources[t].rows(np.array([mine[j][1] for j in pos]))
            if out is None:
                out = np.empty((len(mine), rows.shape[1]), dtype=np.int64)
            out[pos] = rows
        return torch.from_numpy(out)

    def state_dict(self) -> dict:
        return {"step": self.step, "served": dict(self.served), "epoch": dict(self.epoch),
                "cursor": dict(self.cursor)}

    def load_state_dict(self, state: dict) -> None:
        if set(state["served"]) != set(self.tasks):
            raise ValueError(f"loader state has tasks {sorted(state['served'])}, this run has {sorted(self.tasks)}")
        self.step = int(state["step"])
        self.served = {t: int(state["served"][t]) for t in self.tasks}
        self.epoch = {t: int(state["epoch"][t]) for t in self.tasks}
        self.cursor = {t: int(state["cursor"][t]) for t in self.tasks}


def row_shares(token_shares: dict[str, float], tokens_per_row: dict[str, float]) -> dict[str, float]:
    """Token shares -> row shares: a task with longer rows needs fewer of them for the same tokens."""
    return {t: s / tokens_per_row[t] for t, s in token_shares.items() if s > 0 and t in tokens_per_row}
