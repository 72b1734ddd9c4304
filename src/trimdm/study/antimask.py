"""`trimdm study antimask`: do complementary masks help at equal compute (method §4, §11)?

Arms `diffusion.antimask` = none | complement | crossmodal, each trained from the same seeds on the same
recipe, tokens and batch: equal tokens through the model (a complement pair is two rows of the batch,
so it costs what two plain rows cost). Compared by the held-out NELBO per modality of the plain process
(anti-masking changes the training objective's variance, not what is evaluated) and by generation
where the scale evaluates it; each arm against `none` with a paired t-test over seeds (the arms of one
seed share initialisation and data order). Writes results.json, study.md and antimask_study.png.
"""
from __future__ import annotations

from pathlib import Path

from trimdm.study.measures import fmt_interval, generation_headline, mean_interval, nelbo, paired_test, verdict
from trimdm.study.plots import bar_panels
from trimdm.study.sweep import RunSpec, Study, load_run_results, write_results

ARMS = ("none", "complement", "crossmodal")
SCALES = {
    "smoke": {"recipe": "tiny_tri", "seeds": [0], "overrides": ["train.tokens=3072", "optim.base.tokens=3072"],
              "eval": ("--no-generation", "eval.reconstructions=false")},
    "cpu": {"recipe": "study_tri", "seeds": [0, 1, 2], "overrides": [],
            "eval": ("--no-generation", "eval.reconstructions=false")},
    "gpu": {"recipe": "tinyworld", "seeds": [0, 1, 2], "overrides": ["train.tokens=50000000"], "eval": ()},
}


def grid(scale: str, seeds: list[int] | None, overrides: list[str], arms: list[str] | None = None) -> list[RunSpec]:
    s = SCALES[scale]
    return [RunSpec(f"{arm}_s{seed}", s["recipe"], (*s["overrides"], *overrides, f"diffusion.antimask={arm}",
                                                    f"train.seed={seed}"), s["eval"])
            for arm in (arms or ARMS) for seed in (seeds if seeds is not None else s["seeds"])]


def analyse(out: Path, runs: list[RunSpec], scale: str = "cpu") -> dict:
    rows = []
    for spec in runs:
        res = load_run_results(spec.directory(out))
        rows.append({"run": spec.name, "arm": res["config"]["diffusion"]["antimask"],
                     "seed": res["config"]["train"]["seed"], "nelbo_bits": nelbo(res["eval"]),
                     "generation": generation_headline(res["eval"])})
    rows.sort(key=lambda r: (ARMS.index(r["arm"]) if r["arm"] in ARMS else 9, r["seed"]))
    arms = list(dict.fromkeys(r["arm"] for r in rows))
    modalities = [m for m in ("text", "image", "audio") if all(m in r["nelbo_bits"] for r in rows)]
    value = lambda arm, m: [r["nelbo_bits"][m] for r in rows if r["arm"] == arm]  # noqa: E731 - by seed
    per = {arm: {m: mean_interval(value(arm, m)) for m in modalities} for arm in arms}
    base = "none" if "none" in arms else arms[0]
    tests = {arm: {m: paired_test(value(arm, m), value(base, m)) for m in modalities} for arm in arms if arm != base}
    result = {"study": "antimask", "arms": arms, "baseline": base, "seeds": sorted({r["seed"] for r in rows}),
              "runs": rows, "nelbo": per, "vs_baseline": tests}
    bar_panels(out / "antimask_study.png", {m: {a: per[a][m] for a in arms} for m in modalities},
               "held-out NELBO (bits/token)")
    write_results(out, result, markdown(result))
    return result


def markdown(r: dict) -> str:
    mods = list(next(iter(r["nelbo"].values())))
    lines = [f"# Anti-masking study (seeds {r['seeds']})", "",
             "Question: at equal compute (equal tokens through the model), do complementary masks lower the "
             "held-out NELBO of each modality?", "",
             "Held-out NELBO of the plain process (bits/token), mean over seeds [95% t-interval]:", "",
             "| arm | " + " | ".join(mods) + " |", "|---|" + "---|" * len(mods)]
    for arm, v in r["nelbo"].items():
        lines.append(f"| {arm} | " + " | ".join(fmt_interval(v[m]) for m in mods) + " |")
    lines += ["", f"Against `{r['baseline']}`, paired over seeds (negative: lower NELBO than {r['baseline']}):", "",
              "| arm | " + " | ".join(mods) + " |", "|---|" + "---|" * len(mods)]
    for arm, t in r["vs_baseline"].items():
        cells = [f"{t[m]['mean_difference']:+.4f}" + (f" (p={t[m]['p']:.3f})" if t[m]["p"] is not None else "")
                 for m in mods]
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    lines += ["", "Paper: anti-masking (complementary masks) improves FID, FAD and text benchmarks at equal compute.",
              "", conclusion(r), ""]
    return "\n".join(lines)


def conclusion(r: dict) -> str:
    t = r["vs_baseline"].get("complement")
    if t is None:
        return verdict(None, "no complement arm in this grid.")
    better = [m for m, x in t.items() if x["p"] is not None and x["p"] < 0.05 and x["mean_difference"] < 0]
    worse = [m for m, x in t.items() if x["p"] is not None and x["p"] < 0.05 and x["mean_difference"] > 0]
    if worse:
        return verdict(False, f"complement is significantly worse (p < 0.05) for {worse}"
                       + (f" and better for {better}" if better else "") + " in held-out NELBO.")
    if better:
        return verdict(True, f"complement is significantly better (p < 0.05) for {better} in held-out NELBO.")
    return verdict(None, f"no significant difference (p >= 0.05) with {len(r['seeds'])} seeds; the mean "
                   f"differences are " + ", ".join(f"{m} {x['mean_difference']:+.4f}" for m, x in t.items()) + ".")


ANTIMASK = Study("antimask", grid, analyse, summary="none vs complement vs crossmodal anti-masking at equal compute",
                 options=("arms",))
