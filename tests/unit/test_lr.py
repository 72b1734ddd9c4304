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


def test_wsd_holds_the_peak_then_decays_linearly_over_its_last_steps():
    steps, warmup, decay, floor = 100, 10, 20, 0.1
    f = [lr_factor(s, steps, warmup, "wsd", floor, decay) for s in range(steps)]
    assert f[:warmup] == [(s + 1) / warmup for s in range(warmup)]
    assert f[warmup:steps - decay + 1] == [1.0] * (steps - decay - warmup + 1)  # stable
    drops = [a - b for a, b in zip(f[steps - decay:], f[steps - decay + 1:])]
    assert all(d == pytest.approx((1 - floor) / decay) for d in drops)  # a straight line ...
    assert lr_factor(steps, steps, warmup, "wsd", floor, decay) == pytest.approx(floor)  # ... down to the floor


def test_wsd_decay_length_comes_from_its_fraction_of_the_horizon():
    from trimdm.recipes import tiny

    cfg = tiny().override(["optim.lr_schedule=wsd", "optim.decay_fraction=0.25"]).derive()
    assert cfg.derived.decay_steps == round(0.25 * cfg.derived.steps) > 0
    assert tiny().derive().derived.decay_steps == 0  # cosine: no decay phase of its own
    with pytest.raises(ValueError, match=r"optim.decay_fraction=0.0 must lie in \(0, 1\]"):
        tiny().override(["optim.lr_schedule=wsd", "optim.decay_fraction=0"]).derive()
