"""What the benchmarks that score a trained run share: the `--run` flag (runs/demo by default) and loading
it, with the way to make one when it is missing."""
from __future__ import annotations

import argparse

from trimdm.train.run import load_run


def add_run_flag(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--run", default="runs/demo", help="a trained run directory (`make demo` trains runs/demo)")


def load_trained_run(run: str):
    """`load_run(run)`, or exit with the message and how to make a run."""
    try:
        return load_run(run)
    except ValueError as e:
        raise SystemExit(f"{e}; `make demo` trains runs/demo, or pass --run DIR") from None
