"""`trimdm study critical-batch`: the critical batch against model size and against the horizon (method §6).

Two sweeps of the physical batch B under `optim.reparam=sde`, each run trained to its horizon D:
(a) several widths at one horizon, (b) several horizons at one width. B_crit is measured two ways per
(width, horizon):
  (i)  steps–tokens trade-off (McCandlish et al. 2018): every run's smoothed training-loss curve gives the
       steps S and tokens E at which it first reaches a common target (the highest final smoothed loss of
       the group, so that every run reaches it); (S/S_min − 1)(E/E_min − 1) = 1 is fitted across batches
       (study/fits.py), B_crit = E_min / S_min in sequences, with a bootstrap interval;
  (ii) the online gradient noise scale (`grad_noise_scale` in metrics.jsonl, B_simple of McCandlish et al.),
       its median over the second half of training, in sequences.
Beside them, the loss at the horizon against B shows where it starts to degrade (the SDE rule keeps it
flat below B_crit). Then γ of B_crit(D) ∝ D^γ from (b) with a bootstrap interval, next to the paper's
γ ≈ 0.44, and the slope of B_crit against model size from (a), next to its claim of independence.
Writes results.json, study.md and critical_batch_study.png.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from trimdm.study.fits import fit_power_law, fit_steps_tokens, steps_to_target
from trimdm.study.measures import nelbo, verdict
from trimdm.study.plots import line_panels
from trimdm.study.sweep import RunSpec, Study, load_run_results, write_results

SMOOTHING = 0.9  # EMA of the training loss before the target crossing (as the batch study plots it)
SCALES = {
    "smoke": {"recipe": "tiny", "widths": (32,), "horizons": (2048, 4096), "width": 32, "horizon": 2048,
              "batches": (4, 8, 16), "bootstrap": 20},
    "cpu": {"recipe": "study_batch", "widths": (64, 128, 256), "horizons": (500_000, 1_000_000, 2_000_000),
            "width": 128, "horizon": 1_000_000, "batches": (8, 16, 32, 64, 128), "bootstrap": 200},
    "gpu": {"recipe": "study_batch", "widths": (128, 256, 512), "horizons": (10_000_000, 30_000_000, 100_000_000),
            "width": 256, "horizon": 30_000_000, "batches": (16, 32, 64, 128, 256, 512), "bootstrap": 500},
}


def grid(scale: str, seeds: list[int] | None, overrides: list[str]) -> list[RunSpec]:
    s = SCALES[scale]
    cells = {(w, s["horizon"]) for w in s["widths"]} | {(s["width"], d) for d in s["horizons"]}
    runs = []
    for w, d in sorted(cells):
        for b in s["batches"]:
            for seed in (seeds if seeds is not None else [0]):
                heads = max(1, w // 64) if w >= 64 else 2
                # two micro-batches per step: the online noise scale compares their gradients with the
                # step's (one process measures it only under accumulation; same update as one pass)
                runs.append(RunSpec(f"w{w}_D{d}_b{b}_s{seed}", s["recipe"], (
                    f"model.d_model={w}", f"model.n_heads={heads}", f"train.tokens={d}", f"train.batch_size={b}",
                    f"train.micro_batch_size={max(1, b // 2)}", "train.noise_scale_every=2",
                    "optim.reparam=sde", f"train.seed={seed}", "train.log_every=1", *overrides)))
    return runs


def _row(spec: RunSpec, res: dict) -> dict:
    cfg, metrics = res["config"], res["metrics"]
    records = [r for r in metrics if "loss" in r]
    half = [r["grad_noise_scale"] for r in records[len(records) // 2:] if r.get("grad_noise_scale") is not None]
    return {"run": spec.name, "width": cfg["model"]["d_model"], "horizon": cfg["train"]["tokens"],
            "batch": cfg["train"]["batch_size"], "seed": cfg["train"]["seed"], "seq_len": cfg["data"]["seq_len"],
            "nelbo_bits": nelbo(res["eval"]), "noise_scale": float(np.median(half)) if half else None,
            "curve": ([r["tokens"] for r in records], [r["loss"] for r in records])}


def _group(rows: list[dict], bootstrap: int) -> dict:
    """B_crit of one (width, horizon) group of runs at several batches, both ways."""
    final = []
    for r in rows:
        ema = r["curve"][1][0]
        for x in r["curve"][1]:
            ema = SMOOTHING * ema + (1 - SMOOTHING) * x
        final.append(ema)
    target = max(final)
    S, E, used = [], [], []
    for r in rows:
        tokens = steps_to_target(r["curve"][0], r["curve"][1], target, smoothing=SMOOTHING)
        if tokens is not None:
            per_step = r["batch"] * r["seq_len"]
            S.append(tokens / per_step)
            E.append(tokens / r["seq_len"])  # sequences
            used.append(r["batch"])
    out = {"target_loss": target, "batches": [r["batch"] for r in rows],
           "loss_at_horizon": [r["nelbo_bits"]["text"] for r in rows],
           "noise_scale": float(np.median([r["noise_scale"] for r in rows if r["noise_scale"] is not None]))
           if any(r["noise_scale"] is not None for r in rows) else None}
    try:
        fit = fit_steps_tokens(S, E, bootstrap=bootstrap, seed=0)
        out.update(b_crit=fit.B_crit, b_crit_interval=list(fit.intervals["B_crit"]), s_min=fit.S_min, e_min=fit.E_min)
    except ValueError as e:  # too few runs reach the target at distinct batches
        out.update(b_crit=None, b_crit_interval=None, fit_error=str(e))
    return out


def analyse(out: Path, runs: list[RunSpec], scale: str) -> dict:
    bootstrap = SCALES[scale]["bootstrap"]
    rows = [_row(spec, load_run_results(spec.directory(out))) for spec in runs]
    groups = {}
    for key in sorted({(r["width"], r["horizon"]) for r in rows}):
        groups[f"w{key[0]}_D{key[1]}"] = {"width": key[0], "horizon": key[1],
                                          **_group([r for r in rows if (r["width"], r["horizon"]) == key],
                                                   bootstrap)}
    widths = sorted({g["width"] for g in groups.values()})
    horizons = sorted({g["horizon"] for g in groups.values()})
    fixed_d = max(horizons, key=lambda d: sum(g["horizon"] == d for g in groups.values()))
    fixed_w = max(widths, key=lambda w: sum(g["width"] == w for g in groups.values()))
    result = {"study": "critical-batch", "groups": groups, "runs": [{k: v for k, v in r.items() if k != "curve"}
                                                                   for r in rows],
              "vs_horizon": _trend([g for g in groups.values() if g["width"] == fixed_w], "horizon", bootstrap),
              "vs_width": _trend([g for g in groups.values() if g["horizon"] == fixed_d], "width", bootstrap),
              "paper": {"gamma": 0.44, "b_crit_depends_on_model_size": False}}
    _plot(out, groups)
    write_results(out, result, markdown(result))
    return result


IDENTIFIED = 10.0  # a steps–tokens B_crit counts when its bootstrap interval spans at most this factor


def identified(g: dict) -> bool:
    """Whether a group's steps–tokens B_crit is pinned down: a positive interval at most IDENTIFIED wide
    (a flat steps–tokens curve fits any B_crit, and its interval then runs from 0 to ~1e13)."""
    iv = g.get("b_crit_interval")
    return bool(g.get("b_crit")) and iv is not None and iv[0] > 0 and iv[1] / iv[0] <= IDENTIFIED


def _trend(groups: list[dict], key: str, bootstrap: int) -> dict:
    """Power-law slope of B_crit (both measures) against `key` across groups; the steps–tokens measure
    only from groups where it is identified."""
    out = {}
    for measure in ("b_crit", "noise_scale"):
        pts = [(g[key], g[measure]) for g in groups if (identified(g) if measure == "b_crit" else g.get(measure))]
        if len(pts) >= 3:
            fit = fit_power_law([p[0] for p in pts], [p[1] for p in pts], bootstrap=bootstrap, seed=0)
            out[measure] = {"slope": fit.k, "interval": list(fit.intervals["k"]), "points": pts}
        else:
            out[measure] = {"slope": None, "interval": None, "points": pts}
    return out


def _plot(out: Path, groups: dict) -> None:
    panels = {"loss at the horizon": {name: (g["batches"], g["loss_at_horizon"]) for name, g in groups.items()}}
    line_panels(out / "critical_batch_study.png", panels, "physical batch (sequences)", "held-out NELBO (bits/token)",
                logx=True)


def markdown(r: dict) -> str:
    lines = ["# Critical batch study", "", "Question: how does the critical batch depend on the horizon D and on "
             "the model size, and is it where the loss at the horizon starts to degrade under the SDE rule?", "",
             "| group | B_crit (steps–tokens fit) | 95% interval | gradient noise scale | loss at horizon by batch |",
             "|---|---|---|---|---|"]
    for name, g in r["groups"].items():
        bc = f"{g['b_crit']:.1f}" if g.get("b_crit") else "n/a"
        iv = "[{:.1f}, {:.1f}]".format(*g["b_crit_interval"]) if g.get("b_crit_interval") else "n/a"
        ns = f"{g['noise_scale']:.1f}" if g.get("noise_scale") else "n/a"
        losses = ", ".join(f"B={b}: {x:.3f}" for b, x in zip(g["batches"], g["loss_at_horizon"]))
        lines.append(f"| {name} | {bc} | {iv} | {ns} | {losses} |")
    g_d, g_w = r["vs_horizon"]["b_crit"], r["vs_width"]["b_crit"]
    lines += ["", f"γ (B_crit ∝ D^γ, steps–tokens fit): {_slope(g_d)}; noise scale: {_slope(r['vs_horizon']['noise_scale'])}",
              f"Slope against width: {_slope(g_w)}; noise scale: {_slope(r['vs_width']['noise_scale'])}", "",
              "Paper: γ ≈ 0.44, and B_crit does not depend on model size.", "", conclusion(r), ""]
    return "\n".join(lines)


def _slope(t: dict) -> str:
    if t["slope"] is None:
        return f"n/a ({len(t['points'])} groups with a measure)"
    return f"{t['slope']:.2f} [{t['interval'][0]:.2f}, {t['interval'][1]:.2f}]"


def conclusion(r: dict) -> str:
    g, w = r["vs_horizon"]["b_crit"], r["vs_width"]["b_crit"]
    if g["slope"] is None or w["slope"] is None:
        return verdict(None, "too few groups gave an identified steps–tokens B_crit (interval within a factor "
                       f"{IDENTIFIED:g}) to estimate both slopes; the noise-scale slopes are reported above.")
    gamma_ok = g["interval"][0] <= 0.44 <= g["interval"][1]
    flat = w["interval"][0] <= 0.0 <= w["interval"][1]
    return verdict(gamma_ok and flat, f"γ interval [{g['interval'][0]:.2f}, {g['interval'][1]:.2f}] "
                   f"{'contains' if gamma_ok else 'excludes'} 0.44; the width slope interval "
                   f"[{w['interval'][0]:.2f}, {w['interval'][1]:.2f}] {'contains' if flat else 'excludes'} 0.")


CRITICAL_BATCH = Study("critical-batch", grid, analyse, summary="B_crit against model size and horizon; γ fit")
