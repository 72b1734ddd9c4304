"""`trimdm study mixing`: how each modality's loss depends on the token shares of the mixture (method §11).

Runs on points of the simplex of token shares (text, image-text, audio-text), all at equal compute (same
recipe, tokens and batch), plus one held-out point that no fit sees. Per target modality the held-out
NELBO is fitted with the data-mixing law of Ye et al. (2024), L_i(r) = c_i + k_i·exp(Σ_j t_ij r_j)
(study/fits.py: least squares, multi-start L-BFGS, bootstrap intervals), and the fit's prediction at the
held-out point is set against its measurement (with the bootstrap interval of the prediction). The
Pareto front is the set of mixtures no other mixture beats on every modality at once.
Writes results.json, study.md and mixing_study.png.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from trimdm.study.fits import fit_mixing_law
from trimdm.study.measures import nelbo, verdict
from trimdm.study.plots import line_panels
from trimdm.study.sweep import RunSpec, Study, load_run_results, write_results

TASKS = ("text", "image_text", "audio_text")
TARGET = {"text": "text", "image_text": "image", "audio_text": "audio"}  # the modality a task's share feeds
POINTS = ((1 / 3, 1 / 3, 1 / 3), (0.6, 0.2, 0.2), (0.2, 0.6, 0.2), (0.2, 0.2, 0.6), (0.1, 0.45, 0.45),
          (0.45, 0.1, 0.45), (0.45, 0.45, 0.1), (0.15, 0.7, 0.15))
HELD_OUT = (0.3, 0.5, 0.2)
SCALES = {
    "smoke": {"recipe": "tiny_tri", "seeds": [0], "overrides": ["train.tokens=3072", "optim.base.tokens=3072"],
              "points": POINTS[:5], "bootstrap": 20},
    "cpu": {"recipe": "study_tri", "seeds": [0], "overrides": [], "points": POINTS, "bootstrap": 200},
    "gpu": {"recipe": "tinyworld", "seeds": [0], "overrides": ["train.tokens=50000000"], "points": POINTS,
            "bootstrap": 500},
}


def point_name(r: tuple) -> str:
    return "mix_" + "_".join(f"{x:.3f}" for x in r)


def grid(scale: str, seeds: list[int] | None, overrides: list[str]) -> list[RunSpec]:
    s = SCALES[scale]
    runs = []
    for point in (*s["points"], HELD_OUT):
        shares = [f"data.mix.{t}={x}" for t, x in zip(TASKS, point)]
        for seed in (seeds if seeds is not None else s["seeds"]):
            name = point_name(point) + ("_heldout" if point == HELD_OUT else "") + f"_s{seed}"
            runs.append(RunSpec(name, s["recipe"], (*s["overrides"], *overrides, *shares, f"train.seed={seed}")))
    return runs


def analyse(out: Path, runs: list[RunSpec], scale: str) -> dict:
    bootstrap = SCALES[scale]["bootstrap"]
    rows = []
    for spec in runs:
        res = load_run_results(spec.directory(out))
        mix = res["config"]["data"]["mix"]
        total = sum(mix[t] for t in TASKS)
        rows.append({"run": spec.name, "shares": [mix[t] / total for t in TASKS], "held_out": "_heldout" in spec.name,
                     "seed": res["config"]["train"]["seed"], "nelbo_bits": nelbo(res["eval"])})
    fit_rows = [r for r in rows if not r["held_out"]]
    held = [r for r in rows if r["held_out"]]
    R = np.array([r["shares"] for r in fit_rows])
    fits = {}
    for task in TASKS:
        m = TARGET[task]
        fit = fit_mixing_law(R, np.array([r["nelbo_bits"][m] for r in fit_rows]), bootstrap=bootstrap, seed=0)
        entry = {"c": fit.c, "k": fit.k, "t": [float(x) for x in fit.t], "intervals": fit.intervals, "sse": fit.loss,
                 "own_share_slope": own_share_slope(fit, TASKS.index(task))}
        if held:
            r_h = np.array(held[0]["shares"])
            draws = fit.samples[:, 0] + fit.samples[:, 1] * np.exp(fit.samples[:, 2:] @ r_h)
            measured = float(np.mean([h["nelbo_bits"][m] for h in held]))
            entry["held_out"] = {"shares": held[0]["shares"], "predicted": float(fit.predict(r_h)),
                                 "interval": [float(np.percentile(draws, 2.5)), float(np.percentile(draws, 97.5))],
                                 "measured": measured}
        fits[m] = entry
    result = {"study": "mixing", "tasks": list(TASKS), "runs": rows, "fits": fits, "pareto": pareto(rows)}
    _plot(out, rows, fits)
    write_results(out, result, markdown(result))
    return result


def own_share_slope(fit, j: int) -> dict:
    """dL/dx at the uniform mixture along the line that gives share x to task j and splits the rest
    equally (direction e_j − (others)/2), for the fit and each bootstrap draw: a modality's loss falls
    with its own share where the whole 95% interval is below zero."""
    r0, direction = np.full(3, 1 / 3), np.where(np.arange(3) == j, 1.0, -0.5)

    def slope(c_k_t: np.ndarray) -> np.ndarray:  # rows (c, k, t_0, t_1, t_2)
        t = c_k_t[:, 2:]
        return c_k_t[:, 1] * np.exp(t @ r0) * (t @ direction)

    point = float(slope(np.array([[fit.c, fit.k, *fit.t]]))[0])
    draws = slope(fit.samples) if len(fit.samples) else np.array([np.nan])
    return {"value": point, "interval": [float(np.nanpercentile(draws, 2.5)), float(np.nanpercentile(draws, 97.5))]}


def pareto(rows: list[dict]) -> list[str]:
    """Runs whose per-modality NELBOs no other run beats on every modality at once."""
    mods = list(rows[0]["nelbo_bits"])
    front = []
    for r in rows:
        x = np.array([r["nelbo_bits"][m] for m in mods])
        if not any(np.all(np.array([o["nelbo_bits"][m] for m in mods]) <= x) and
                   np.any(np.array([o["nelbo_bits"][m] for m in mods]) < x) for o in rows if o is not r):
            front.append(r["run"])
    return front


def _plot(out: Path, rows: list[dict], fits: dict) -> None:
    panels, curves = {}, {}
    for j, task in enumerate(TASKS):
        m = TARGET[task]
        pts = sorted((r["shares"][j], r["nelbo_bits"][m]) for r in rows)
        title, label = f"{m} NELBO vs {task} share", "runs (other shares vary)"
        panels[title] = {label: ([p[0] for p in pts], [p[1] for p in pts])}
        # the fit along the line where the other two shares split the rest equally
        xs = np.linspace(0.02, 0.98, 50)
        R = np.stack([np.where(np.arange(3)[None, :] == j, xs[:, None], (1 - xs[:, None]) / 2)[:, k] for k in range(3)], 1)
        f = fits[m]
        curves[title] = {label: (xs, f["c"] + f["k"] * np.exp(R @ np.array(f["t"])))}
    line_panels(out / "mixing_study.png", panels, "token share (dashed: the fit, other two shares equal)",
                "held-out NELBO (bits/token)", fits=curves, joined=False)


def markdown(r: dict) -> str:
    lines = ["# Mixing study", "", "Question: how does each modality's held-out NELBO depend on the token shares "
             "of text, image-text and audio-text, and does the data-mixing law (Ye et al. 2024) predict a "
             "mixture it was not fitted on?", "", "| shares (text, image-text, audio-text) | text | image | audio |",
             "|---|---|---|---|"]
    for row in r["runs"]:
        tag = " (held out)" if row["held_out"] else ""
        lines.append("| " + ", ".join(f"{x:.2f}" for x in row["shares"]) + tag + " | "
                     + " | ".join(f"{row['nelbo_bits'].get(m, float('nan')):.3f}" for m in ("text", "image", "audio"))
                     + " |")
    lines += ["", "Fits L(r) = c + k·exp(Σ t_j r_j), t centred (Σ t_j = 0), 95% bootstrap intervals:", ""]
    ok = []
    for m, f in r["fits"].items():
        t = ", ".join(f"{x:+.2f}" for x in f["t"])
        lo, hi = f["own_share_slope"]["interval"]
        lines.append(f"- {m}: c = {f['c']:.3f} {_iv(f['intervals']['c'])}, k = {f['k']:.3f} {_iv(f['intervals']['k'])}, "
                     f"t = ({t}); slope in its own share at the uniform mixture "
                     f"{f['own_share_slope']['value']:+.3g} [{lo:+.3g}, {hi:+.3g}] bits per unit share")
        if "held_out" in f:
            h = f["held_out"]
            inside = h["interval"][0] <= h["measured"] <= h["interval"][1]
            ok.append(inside)
            lines.append(f"  held-out mixture: predicted {h['predicted']:.3f} {_iv(h['interval'])}, measured "
                         f"{h['measured']:.3f} (error {h['measured'] - h['predicted']:+.3f}; "
                         f"{'inside' if inside else 'outside'} the interval)")
    lines += ["", f"Pareto front (no mixture better on every modality): {', '.join(r['pareto'])}", "",
              "Paper: it names the mixing ratio as a design axis; the text available to trimdm gives no law or "
              "ratio (docs/studies.md). Tested here instead: the data-mixing law's premise, that a modality's "
              "loss falls with its own share, and the law's prediction of a mixture it was not fitted on.",
              "", conclusion(r, ok), ""]
    return "\n".join(lines)


def _iv(pair) -> str:
    return f"[{pair[0]:.3f}, {pair[1]:.3f}]"


def conclusion(r: dict, ok: list[bool]) -> str:
    """Agree where every modality's own-share slope interval lies below zero, disagree where one lies
    above, inconclusive otherwise; the held-out prediction is reported beside it."""
    ivs = {m: f["own_share_slope"]["interval"] for m, f in r["fits"].items()}
    falls = [m for m, (lo, hi) in ivs.items() if hi < 0]
    rises = [m for m, (lo, hi) in ivs.items() if lo > 0]
    agree = False if rises else (True if len(falls) == len(ivs) else None)
    why = (f"the loss falls with the modality's own share (95% bootstrap interval of the slope below zero) for "
           f"{falls or 'none'}, rises for {rises or 'none'}, and is undetermined for the rest; the held-out "
           f"mixture is inside the prediction interval for {sum(ok)} of {len(ok)} modalities.")
    return verdict(agree, why)


MIXING = Study("mixing", grid, analyse, summary="per-modality loss against token shares; data-mixing law fit")
