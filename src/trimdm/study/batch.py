"""`trimdm study batch`: does the SDE reparameterization make the physical batch a hardware choice?

The paper's claim (method §6, §11): with hyperparameters rescaled by κ = B/B_log (`reparam=sde`), runs at
any physical batch B below the critical batch train like the logical batch, so loss-versus-tokens
curves nearly coincide; with the base hyperparameters at every B (`reparam=none`) they do not.
This study trains one recipe at several physical batches to the same token horizon under each arm and
seed (one run per point, named ARM_bB_sS, run by the sweep runner: study/sweep.py), evaluates each run's
held-out NELBO (fixed τ grid and seed), and writes
    batch_study.json   one row per run + per-arm spread across batch sizes (mean over seeds); also as
                       results.json, the file every study writes
    batch_study.png    training loss (smoothed) against tokens, one panel per arm
    batch_study.md     the table and a short conclusion; also as study.md
Scales: smoke (the tiny recipe, batches 4 and 8, one seed, 2048 tokens: seconds a run), cpu (the
study_batch recipe at batches 8-64, seeds 0 and 1: the LOG.md numbers), gpu (study_batch widened to
d_model 256 × 4 layers, 10M tokens, batches 16-256, three seeds). Done runs are skipped, so the study can
be resumed or extended. Results are read from each run's config.json, metrics.jsonl and eval.json.
"""
from __future__ import annotations

import json
import statistics
from pathlib import Path

from trimdm.study.sweep import RunSpec, Study, load_run_results, run_sweep, write_results

ARMS = ("sde", "none")
GRID_KEYS = ("optim.reparam", "train.batch_size", "train.seed")  # what varies across the runs
SCALES = {
    "smoke": {"recipe": "tiny", "batches": [4, 8], "seeds": [0],
              "overrides": ["train.tokens=2048", "optim.base.tokens=2048"]},
    "cpu": {"recipe": "study_batch", "batches": [8, 16, 32, 64], "seeds": [0, 1], "overrides": []},
    "gpu": {"recipe": "study_batch", "batches": [16, 32, 64, 128, 256], "seeds": [0, 1, 2],
            "overrides": ["model.d_model=256", "model.n_layers=4", "model.n_heads=4", "train.tokens=10000000",
                          "optim.base.tokens=10000000"]},
}


def run_dir(out: Path, arm: str, batch: int, seed: int) -> Path:
    return Path(out) / run_name(arm, batch, seed)


def run_name(arm: str, batch: int, seed: int) -> str:
    return f"{arm}_b{batch}_s{seed}"


def batch_runs(recipe: str, batches: list[int], arms: list[str], seeds: list[int], overrides: list[str]) -> list[RunSpec]:
    """One run per (arm, batch, seed), arms outermost: the grid of the study."""
    if not batches or any(not isinstance(b, int) or b < 1 for b in batches):
        raise ValueError(f"--batches {batches}: expected positive batch sizes")
    if not arms or not seeds:
        raise ValueError(f"study batch needs at least one arm and one seed (got arms {arms}, seeds {seeds})")
    return [RunSpec(run_name(arm, b, seed), recipe,
                    (*overrides, f"optim.reparam={arm}", f"train.batch_size={b}", f"train.seed={seed}"))
            for arm in arms for b in batches for seed in seeds]


def grid(scale: str, seeds: list[int] | None, overrides: list[str], recipe: str | None = None,
         batches: list[int] | None = None, arms: list[str] | None = None) -> list[RunSpec]:
    """The study's runs at `scale`; `recipe`, `batches`, `arms` and `seeds` replace the scale's, and
    `overrides` come after the scale's own."""
    s = SCALES[scale]
    return batch_runs(recipe or s["recipe"], batches or s["batches"], arms or list(ARMS),
                      seeds if seeds is not None else s["seeds"], [*s["overrides"], *overrides])


def analyse(out: Path, runs: list[RunSpec], scale: str = "cpu") -> dict:
    """The table, plot and conclusion from the runs' JSON files."""
    out, rows, curves, recipes = Path(out), [], {}, []
    for spec in runs:
        res = load_run_results(spec.directory(out))
        cfg, ev = res["config"], res["eval"]
        recipes.append(cfg["recipe"])
        rows.append({"arm": cfg["optim"]["reparam"], "batch": cfg["train"]["batch_size"], "seed": cfg["train"]["seed"],
                     "run": spec.name,
                     "heldout_nelbo_bits": {m: v["bits_per_token"] for m, v in ev["nelbo"].items()},
                     "kappa": cfg["derived"]["kappa"], "lr": cfg["derived"]["lr"],
                     "logical_batch": cfg["derived"]["logical_batch"], "steps": cfg["derived"]["steps"]})
        curves[spec.name] = res["metrics"]
    first = lambda key: list(dict.fromkeys(r[key] for r in rows))  # noqa: E731 - in grid order
    shared = [x for x in runs[0].overrides if x.split("=", 1)[0] not in GRID_KEYS and all(x in r.overrides for r in runs)]
    result = {"recipe": ",".join(dict.fromkeys(recipes)), "overrides": shared, "batches": first("batch"), "arms": first("arm"),
              "seeds": first("seed"), "runs": rows, "summary": summarize(rows)}
    text = markdown(result)
    write_results(out, result, text)
    write_results_as(out, "batch_study", result, text)
    plot(out, rows, curves)
    return result


def write_results_as(out: Path, stem: str, result: dict, text: str) -> None:
    """This study's own names for results.json and study.md, kept for the readers of earlier studies."""
    (out / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / f"{stem}.md").write_text(text)


def run_batch_study(out: Path, recipe: str, batches: list[int], arms: list[str], seeds: list[int],
                    overrides: list[str], log=print, **sweep) -> dict:
    """Run the grid through the sweep runner (`sweep`: run_sweep's keyword arguments) and analyse it;
    SweepFailed (after every run has finished) when a run failed."""
    runs = batch_runs(recipe, batches, arms, seeds, overrides)
    run_sweep(Path(out), runs, log=log, **sweep).check()
    return analyse(Path(out), runs)


def summarize(rows: list[dict]) -> dict:
    summary = {}
    for arm in sorted({r["arm"] for r in rows}):
        per_batch = {}
        for b in sorted({r["batch"] for r in rows if r["arm"] == arm}):
            vals = [r["heldout_nelbo_bits"]["text"] for r in rows if r["arm"] == arm and r["batch"] == b]
            per_batch[b] = {"mean": statistics.fmean(vals), "seeds": vals,
                            "seed_range": max(vals) - min(vals)}
        means = [v["mean"] for v in per_batch.values()]
        summary[arm] = {"per_batch": per_batch, "spread_across_batches": max(means) - min(means),
                        "mean_seed_range": statistics.fmean(v["seed_range"] for v in per_batch.values())}
    return summary


def plot(out: Path, rows: list[dict], curves: dict[str, list[dict]]) -> None:
    """batch_study.png from the rows and each run's metrics.jsonl records (`curves`, by run name)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = sorted({r["arm"] for r in rows})
    fig, axes = plt.subplots(1, len(arms), figsize=(5.5 * len(arms), 4), sharey=True, squeeze=False)
    batches = sorted({r["batch"] for r in rows})
    colors = plt.cm.viridis([i / max(1, len(batches) - 1) for i in range(len(batches))])
    for ax, arm in zip(axes[0], arms):
        for r in (r for r in rows if r["arm"] == arm):
            tokens, loss, ema = [], [], None
            for rec in curves[r["run"]]:
                ema = rec["loss"] if ema is None else 0.9 * ema + 0.1 * rec["loss"]
                tokens.append(rec["tokens"])
                loss.append(ema)
            ax.plot(tokens, loss, color=colors[batches.index(r["batch"])], alpha=0.8,
                    label=f"B={r['batch']}" if r["seed"] == min(x["seed"] for x in rows) else None)
        ax.set_title(f"reparam={arm}")
        ax.set_xlabel("tokens")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("training loss (nats/token, EMA 0.9)")
    axes[0][-1].legend()
    fig.tight_layout()
    fig.savefig(out / "batch_study.png", dpi=120)
    plt.close(fig)


def markdown(result: dict) -> str:
    lines = [f"# Batch study ({result['recipe']}, seeds {result['seeds']})", "",
             "Held-out text NELBO (bits/token), mean over seeds (range across seeds in brackets):", "",
             "| arm | " + " | ".join(f"B={b}" for b in result["batches"]) + " | spread across B |",
             "|---|" + "---|" * (len(result["batches"]) + 1)]
    for arm, s in result["summary"].items():
        cells = [f"{s['per_batch'][b]['mean']:.4f} [{s['per_batch'][b]['seed_range']:.4f}]"
                 for b in result["batches"]]
        lines.append(f"| {arm} | " + " | ".join(cells) + f" | {s['spread_across_batches']:.4f} |")
    lines += ["", "Expected (method §6): under `sde` the spread across batch sizes is small (comparable to the",
              "seed range) below the critical batch; under `none` it is larger.", ""]
    s = result["summary"]
    if "sde" in s and "none" in s:
        verdict = ("consistent with" if s["sde"]["spread_across_batches"] < s["none"]["spread_across_batches"]
                   else "contradicts")
        lines.append(f"Measured: spread {s['sde']['spread_across_batches']:.4f} (sde) vs "
                     f"{s['none']['spread_across_batches']:.4f} (none) bits/token: {verdict} the expectation.")
    return "\n".join(lines) + "\n"


BATCH = Study("batch", grid, analyse, summary="held-out NELBO against the physical batch under optim.reparam "
              "sde vs none", options=("recipe", "batches", "arms"))
