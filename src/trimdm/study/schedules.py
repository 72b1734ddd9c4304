"""`trimdm study schedule`: which training noise schedule suits which modality (method §3, §11)?

One run per (schedule, seed) at equal compute (same recipe, tokens and batch): `diffusion.schedule=S`
for every modality at once, so that one run answers for the three modalities (their losses share the
network, not their masks). Compared by the held-out NELBO per modality, which does not depend on the
training schedule (the exact NELBO of the model, evaluated on the same τ grid and seed for every run),
and by the generation metrics where the scale evaluates them. The ranking per modality carries a
Student-t interval over seeds, and the best schedule is tested against every other, paired by seed.
Writes results.json, study.md and schedule_study.png.
"""
from __future__ import annotations

from pathlib import Path

from trimdm.study.measures import fmt_interval, generation_headline, mean_interval, nelbo, paired_test, verdict
from trimdm.study.plots import bar_panels
from trimdm.study.sweep import RunSpec, Study, load_run_results, write_results

SCHEDULES = ("linear", "polynomial:0.5", "polynomial:2", "polynomial:3", "cosine", "loglinear")
SCALES = {
    "smoke": {"recipe": "tiny_tri", "seeds": [0], "overrides": ["train.tokens=3072", "optim.base.tokens=3072"],
              "eval": ("--no-generation", "eval.reconstructions=false"),
              "schedules": ("linear", "cosine", "polynomial:2")},
    "cpu": {"recipe": "study_tri", "seeds": [0, 1], "overrides": [],
            "eval": ("eval.gen_prompts=32", "eval.gen_utterances=16")},
    "gpu": {"recipe": "tinyworld", "seeds": [0, 1, 2], "overrides": ["train.tokens=50000000"], "eval": ()},
}


def name(schedule: str, seed: int) -> str:
    return f"{schedule.replace(':', '')}_s{seed}"


def grid(scale: str, seeds: list[int] | None, overrides: list[str], schedules: list[str] | None = None) -> list[RunSpec]:
    s = SCALES[scale]
    return [RunSpec(name(sch, seed), s["recipe"], (*s["overrides"], *overrides, f"diffusion.schedule={sch}",
                                                    f"train.seed={seed}"), s["eval"])
            for sch in (schedules or s.get("schedules", SCHEDULES)) for seed in (seeds if seeds is not None else s["seeds"])]


def analyse(out: Path, runs: list[RunSpec], scale: str = "cpu") -> dict:
    rows = []
    for spec in runs:
        res = load_run_results(spec.directory(out))
        rows.append({"run": spec.name, "schedule": res["config"]["diffusion"]["schedule"]["text"],
                     "seed": res["config"]["train"]["seed"], "nelbo_bits": nelbo(res["eval"]),
                     "generation": generation_headline(res["eval"])})
    schedules = list(dict.fromkeys(r["schedule"] for r in rows))
    modalities = [m for m in ("text", "image", "audio") if all(m in r["nelbo_bits"] for r in rows)]
    per = {sch: {m: mean_interval([r["nelbo_bits"][m] for r in rows if r["schedule"] == sch]) for m in modalities}
           for sch in schedules}
    ranking, tests = {}, {}
    for m in modalities:
        order = sorted(schedules, key=lambda sch: per[sch][m]["mean"])
        ranking[m] = order
        best = [r["nelbo_bits"][m] for r in sorted(rows, key=lambda r: r["seed"]) if r["schedule"] == order[0]]
        tests[m] = {sch: paired_test([r["nelbo_bits"][m] for r in sorted(rows, key=lambda r: r["seed"])
                                      if r["schedule"] == sch], best) for sch in order[1:]}
    gen = {sch: {k: mean_interval([r["generation"][k] for r in rows if r["schedule"] == sch])
                 for k in rows[0]["generation"]} for sch in schedules} if rows[0]["generation"] else {}
    result = {"study": "schedule", "schedules": schedules, "seeds": sorted({r["seed"] for r in rows}), "runs": rows,
              "nelbo": per, "ranking": ranking, "best_vs_others": tests, "generation": gen}
    bar_panels(out / "schedule_study.png", {m: {sch: per[sch][m] for sch in schedules} for m in modalities},
               "held-out NELBO (bits/token)")
    write_results(out, result, markdown(result))
    return result


def markdown(r: dict) -> str:
    lines = [f"# Training schedule study (seeds {r['seeds']})", "",
             "Question: at equal compute, which training noise schedule gives each modality the lowest "
             "held-out NELBO (and the best generations)?", "",
             "Grid: " + ", ".join(r["schedules"]) + " for every modality at once; one run per schedule and seed.", "",
             "Held-out NELBO (bits/token), mean over seeds [95% t-interval]:", "",
             "| schedule | " + " | ".join(r["ranking"]) + " |", "|---|" + "---|" * len(r["ranking"])]
    for sch in r["schedules"]:
        lines.append(f"| {sch} | " + " | ".join(fmt_interval(r["nelbo"][sch][m]) for m in r["ranking"]) + " |")
    lines += ["", "Best per modality, and each other schedule against it (paired over seeds):", ""]
    for m, order in r["ranking"].items():
        worse = [f"{sch} +{t['mean_difference']:.3f}" + (f" (p={t['p']:.3f})" if t["p"] is not None else "")
                 for sch, t in r["best_vs_others"][m].items()]
        lines.append(f"- {m}: **{order[0]}**; " + ", ".join(worse))
    if r["generation"]:
        keys = list(next(iter(r["generation"].values())))
        lines += ["", "Generation (mean over seeds):", "", "| schedule | " + " | ".join(keys) + " |",
                  "|---|" + "---|" * len(keys)]
        for sch, g in r["generation"].items():
            lines.append(f"| {sch} | " + " | ".join(f"{g[k]['mean']:.3f}" for k in keys) + " |")
    lines += ["", "Paper: the training schedule matters per modality (see docs/studies.md for its numbers).", "",
              conclusion(r), ""]
    return "\n".join(lines)


def conclusion(r: dict) -> str:
    separated = {m: any(t["p"] is not None and t["p"] < 0.05 for t in r["best_vs_others"][m].values())
                 for m in r["ranking"]}
    best = {m: order[0] for m, order in r["ranking"].items()}
    differs = len(set(best.values())) > 1
    if not any(separated.values()):
        return verdict(None, f"no schedule is significantly better than another for any modality at this scale "
                       f"(best by mean: {best}).")
    return verdict(differs, f"best by mean: {best}; significantly separated (p < 0.05) for "
                   f"{[m for m, s in separated.items() if s]}.")


SCHEDULE = Study("schedule", grid, analyse, summary="training noise schedule per modality at equal compute",
                 options=("schedules",))
