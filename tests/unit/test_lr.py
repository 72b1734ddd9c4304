"""Learning-rate schedules in steps (optim/lr.py): warmup, cosine decay to its floor, constant."""
import math

import pytest

from trimdm.optim.lr import lr_factor


def test_warmup_is_linear_and_reaches_one():
    assert [lr_factor(s, 100, 4, "cosine", 0.1) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_factor(0, 100, 0, "constant", 0.1) == 1.0


def test_cosine_decays_from_one_to_its_floor():
    steps, warmup, floor = 100, 10, 0.1
    values = [lr_factor(s, steps, warmup, "cosine", floor) for s in range(warmup, steps + 5)]
    assert values[0] == 1.0
    assert all(a >= b for a, b in zip(values, values[1:]))  # never rises
    mid = lr_factor(warmup + (steps - warmup) // 2, steps, warmup, "cosine", floor)
    assert mid == pytest.approx(floor + (1 - floor) * 0.5, abs=1e-12)  # half way down at half time
    assert lr_factor(steps, steps, warmup, "cosine", floor) == pytest.approx(floor)
    assert lr_factor(steps + 50, steps, warmup, "cosine", floor) == pytest.approx(floor)  # held past the end
    assert lr_factor(37, steps, warmup, "cosine", floor) == pytest.approx(
        floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * 27 / 90)))


def test_constant_after_warmup_and_unknown_names():
    assert [lr_factor(s, 10, 2, "constant", 0.1) for s in range(4)] == [0.5, 1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="unknown lr schedule 'linear'"):
        lr_factor(5, 10, 0, "linear", 0.1)
