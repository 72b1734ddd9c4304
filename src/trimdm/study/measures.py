"""What the design-space studies read from a finished run, and the statistics they compare runs with.

Owns: the per-modality held-out NELBO and the headline generation metrics of a run's eval.json, the
mean over seeds with a Student-t interval, and the paired test across seeds (two arms trained from the
same seeds share their data order and initialisation, so their difference is paired). Does not own
running (sweep.py) or any one study's question.
"""
from __future__ import annotations

import math

import numpy as np
from scipy import stats as sps

MODALITIES = ("text", "image", "audio")


def nelbo(ev: dict) -> dict[str, float]:
    """Held-out NELBO in bits/token per modality the run has."""
    return {m: v["bits_per_token"] for m, v in ev["nelbo"].items()}


def generation_headline(ev: dict) -> dict[str, float]:
    """The generation metrics a study ranks by, where eval measured them: T2I all attributes right on
    seen and held-out captions, I2T attribute match, T2S and S2T character error rates."""
    g, out = ev.get("generation") or {}, {}
    for group, v in (g.get("t2i", {}).get("groups") or {}).items():
        out[f"t2i_{group}_accuracy"] = v["accuracy"]
    if "i2t" in g:
        out["i2t_attribute_match"] = g["i2t"]["attribute_match"]
    for task in ("t2s", "s2t"):
        if task in g:
            out[f"{task}_cer"] = g[task]["cer"]
    return out


def mean_interval(values, level: float = 0.95) -> dict:
    """Mean over seeds with its standard error and a two-sided Student-t interval (None with one seed)."""
    x = np.asarray(values, dtype=np.float64)
    out = {"mean": float(x.mean()), "n": len(x), "values": [float(v) for v in x]}
    if len(x) < 2:
        return {**out, "se": None, "low": None, "high": None}
    se = float(x.std(ddof=1) / math.sqrt(len(x)))
    half = float(sps.t.ppf(0.5 + level / 2, len(x) - 1)) * se
    return {**out, "se": se, "low": out["mean"] - half, "high": out["mean"] + half}


def paired_test(a, b) -> dict:
    """Paired two-sided t-test of a − b over seeds (a[i], b[i] trained from seed i)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    d = a - b
    out = {"mean_difference": float(d.mean()), "n": len(d)}
    if len(d) < 2 or np.all(d == d[0]):
        return {**out, "t": None, "p": None, **mean_interval(d)}
    t, p = sps.ttest_rel(a, b)
    iv = mean_interval(d)
    return {**out, "t": float(t), "p": float(p), "se": iv["se"], "low": iv["low"], "high": iv["high"]}


def fmt_interval(s: dict, digits: int = 3) -> str:
    if s.get("low") is None:
        return f"{s['mean']:.{digits}f} (1 seed)"
    return f"{s['mean']:.{digits}f} [{s['low']:.{digits}f}, {s['high']:.{digits}f}]"


def verdict(agree: bool | None, why: str) -> str:
    word = {True: "agree", False: "disagree", None: "inconclusive"}[agree]
    return f"**{word}**: {why}"
