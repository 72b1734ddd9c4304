import pytest
import torch

from trimdm.diffusion.schedules import make_schedule, parse_schedule

SCHEDULES = [("linear", {}), ("polynomial", {"k": 2}), ("polynomial", {"k": 0.5}), ("cosine", {}),
             ("loglinear", {"eps": 1e-3})]
T = torch.linspace(0.01, 0.99, 99, dtype=torch.float64)


@pytest.mark.parametrize("name,params", SCHEDULES)
def test_endpoints_monotone_inverse(name, params):
    s = make_schedule(name, **params)
    assert float(s.beta(0.0)) == 0.0
    expected_end = 1 - params.get("eps", 0.0) if name == "loglinear" else 1.0
    assert float(s.beta(1.0)) == pytest.approx(expected_end, abs=1e-12)
    b = s.beta(T)
    assert (b.diff() > 0).all()
    torch.testing.assert_close(s.inverse(b), T, rtol=0, atol=1e-10)


@pytest.mark.parametrize("name,params", SCHEDULES)
def test_weight_is_dbeta_over_beta_by_finite_differences(name, params):
    s = make_schedule(name, **params)
    h = 1e-6
    fd = (s.beta(T + h) - s.beta(T - h)) / (2 * h)
    torch.testing.assert_close(s.dbeta(T), fd, rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(s.weight(T), fd / s.beta(T), rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(s.complement_weight(T), fd / (1 - s.beta(T)), rtol=1e-6, atol=1e-8)


def test_parse_specs():
    assert parse_schedule("polynomial:3").k == 3
    assert parse_schedule("polynomial:k=2").k == 2
    assert parse_schedule("loglinear:eps=0.01").eps == 0.01
    for bad, msg in [("quadratic", "unknown schedule"), ("polynomial:x", "not a number"),
                     ("cosine:2", "no positional"), ("polynomial:k=-1", "k > 0")]:
        with pytest.raises(ValueError, match=msg):
            parse_schedule(bad)


@pytest.mark.parametrize("spec", ["reverse-cosine", "reverse-polynomial:2", "reverse-polynomial:0.5"])
def test_a_reversed_schedule_is_the_point_reflection_and_a_schedule_in_its_own_right(spec):
    s, base = parse_schedule(spec), parse_schedule(spec.removeprefix("reverse-"))
    torch.testing.assert_close(s.beta(T), 1 - base.beta(1 - T), rtol=0, atol=1e-15)
    assert float(s.beta(0.0)) == pytest.approx(0.0, abs=1e-15)  # 1 − β(1): cosine's β(1) is 1 − 2⁻⁵³
    assert float(s.beta(1.0)) == pytest.approx(1.0, abs=1e-12)
    assert (s.beta(T).diff() > 0).all()
    torch.testing.assert_close(s.inverse(s.beta(T)), T, rtol=0, atol=1e-10)
    h = 1e-6
    torch.testing.assert_close(s.dbeta(T), (s.beta(T + h) - s.beta(T - h)) / (2 * h), rtol=1e-6, atol=1e-8)


def test_reverse_cosine_is_the_sine_and_linear_its_own_reverse():
    torch.testing.assert_close(parse_schedule("reverse-cosine").beta(T), torch.sin(torch.pi / 2 * T))
    torch.testing.assert_close(parse_schedule("reverse-linear").beta(T), T, rtol=0, atol=1e-15)
    with pytest.raises(ValueError, match="the reverse of a reverse is the schedule itself, 'cosine'"):
        parse_schedule("reverse-reverse-cosine")
    with pytest.raises(ValueError, match="unknown schedule 'sine'"):
        parse_schedule("reverse-sine")
