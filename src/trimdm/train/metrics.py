"""metrics.jsonl (one JSON object per logged step) and the console progress bar.

Results are data: every number a study or report needs is in metrics.jsonl, never only in the log.
On resume the file is cut back to the checkpoint's step, so a resumed run's file equals an
uninterrupted run's (apart from timings).
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

_PEAKS: dict = {}


def matmul_peak_flops(device: torch.device, dtype: torch.dtype, n: int = 2048, seconds: float = 1.0) -> float:
    """Measured dense matmul FLOP/s of this device and dtype (the denominator of MFU), once per process."""
    key = (str(device), dtype)
    if key not in _PEAKS:
        _PEAKS[key] = matmul_flops(device, dtype, n, seconds)
    return _PEAKS[key]


def matmul_flops(device: torch.device, dtype: torch.dtype, n: int = 2048, seconds: float = 1.0,
                 clock=time.perf_counter) -> float:
    """One fresh measurement of n×n matmul FLOP/s over about `seconds` of `clock` (not cached: a
    benchmark on a shared machine takes the median of several, interleaved with what it times; with
    `clock=time.process_time` on a CPU, FLOPs per second of this process's CPU time)."""
    a = torch.randn(n, n, dtype=dtype, device=device)
    b = torch.randn(n, n, dtype=dtype, device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(3):
        a @ b
    sync()
    reps, t0 = 0, clock()
    while clock() - t0 < seconds:
        a @ b
        reps += 1
        if device.type == "cuda" and reps % 50:
            continue
        sync()
    sync()
    return 2 * n**3 * reps / (clock() - t0)


class MetricsLog:
    def __init__(self, path: Path, resume_step: int):
        self.path = Path(path)
        kept = []
        if resume_step > 0 and self.path.exists():
            for line in self.path.read_text().splitlines():
                try:
                    if json.loads(line).get("step", 0) <= resume_step:
                        kept.append(line)
                except json.JSONDecodeError:
                    break  # a line cut by a crash: drop it and everything after
        self.path.write_text("".join(line + "\n" for line in kept))
        self.file = open(self.path, "a", buffering=1)

    def write(self, record: dict) -> None:
        self.file.write(json.dumps(record) + "\n")

    def close(self) -> None:
        self.file.close()


def read_metrics(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


class Progress:
    """One status line: step, tokens/s, loss, ETA. Redrawn in place on a terminal, printed every
    `every` steps otherwise (logs of batch jobs stay readable)."""

    def __init__(self, total_steps: int, start_step: int, every: int, stream=sys.stderr):
        self.total, self.start, self.every, self.stream = total_steps, start_step, max(1, every), stream
        self.tty = stream.isatty()
        self.t0 = time.time()

    def update(self, step: int, loss: float, tokens_per_s: float) -> None:
        done = step + 1
        if not self.tty and done % self.every and done != self.total:
            return
        elapsed = time.time() - self.t0
        rate = (done - self.start) / max(elapsed, 1e-9)
        eta = (self.total - done) / max(rate, 1e-9)
        width = 24
        filled = int(width * done / self.total)
        line = (f"[{'#' * filled}{'.' * (width - filled)}] step {done}/{self.total} "
                f"loss {loss:.4f} {tokens_per_s:,.0f} tok/s ETA {_fmt(eta)}")
        self.stream.write(("\r" + line) if self.tty else line + "\n")
        if self.tty and done == self.total:
            self.stream.write("\n")
        self.stream.flush()


def _fmt(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
