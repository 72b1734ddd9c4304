"""`trimdm study sampling --run DIR`: the per-modality sampling-default sweep (method §8, §9).

For each generated modality the sweep varies one setting at a time around the current table
(config.SAMPLING_DEFAULTS): steps, inference schedule, temperature, guidance, remasking and, for
audio, the decoding order (joint or level by level), each scored on held-out prompts with the data
set's judges:

    image: T2I attribute match on single-object captions (seen and held-out pairs): the fraction of
           named attributes the judge finds; all-attributes-right is recorded beside it
    audio: T2S character error rate read by the speech judge (lower is better)
    text:  I2T attribute match of the captions of held-out images (all-right recorded beside it)

The best value of each setting (ties: the cheaper or the current one) forms the recommended row, which
is then scored whole against the current row on two decoding seeds (`score_together`). One
pass of coordinate search, not a full grid: 5–6 settings × 2–4 values per modality instead of ~300
combinations, which is what a CPU can afford. Writes OUT/sampling_study.json (every point), .md (the
table and the recommended defaults) and .png (one panel per setting). The defaults table cites it.
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from trimdm.config import sampling_choices
from trimdm.data.prepare import prepare
from trimdm.data.tinyworld.judges.image import judge_caption
from trimdm.data.tinyworld.judges.speech import cer
from trimdm.data.tinyworld.scenes import read_image_folder
from trimdm.data.tinyworld.speech import read_speech_folder
from trimdm.eval.generation import attribute_match
from trimdm.sample.tasks import Tasks
from trimdm.tokenizers.vocab import MODALITIES
from trimdm.train.run import load_run

GRID = {
    "steps": [8, 16, 32, 64],
    # both directions (docs/sampling.md, "Inference schedules"): few tokens revealed first (MaskGIT's
    # cosine and square), evenly, and many first (their reverses: the τ-uniform ancestral sampler)
    "schedule": ["cosine", "polynomial:2", "linear", "reverse-cosine", "reverse-polynomial:2"],
    "temperature": [0.5, 0.7, 1.0],
    "guidance": [1.0, 1.5, 2.0, 3.0],  # 1: the conditional model (0 would score the unconditional one)
    "remasking": ["confidence", "random"],
    "order": ["joint", "levels"],  # `levels` is audio's only (config.sampling_choices)
}
SWEPT = ("image", "audio", "text")  # the modalities the sweep covers, in its order
METRIC = {"image": ("t2i_attribute_match", True), "audio": ("t2s_cer", False),
          "text": ("i2t_attribute_match", True)}


def heldout_prompts(data_dir: Path, n: int) -> dict:
    """The held-out prompts of every modality, read once for the whole sweep."""
    raw = Path(data_dir) / "raw"
    items, _ = read_image_folder(raw / "images_val")
    speech, _ = read_speech_folder(raw / "speech_val", max_seconds=None)
    return {"image": [it for it in items if len(it[2].objects) == 1][:n], "text": items[:n],
            "audio": [t for _, t in speech[:n]]}


def score_modality(modality: str, tasks, heldout: dict, judges: dict, seed: int) -> tuple[float, float | None]:
    """(the sweep's metric, all-attributes-right accuracy or None for audio)."""
    if modality == "audio":
        texts = heldout["audio"]
        waves, _ = tasks.t2s(texts, seed)
        return cer(judges["speech"].transcribe(waves), texts), None
    if modality == "image":
        single = heldout["image"]
        images, _ = tasks.t2i([c for _, c, _ in single], seed)
        read = judges["image"].predict(np.stack(images))
        pairs = [(c, s) for (_, c, _), s in zip(single, read)]
    else:
        chosen = heldout["text"]
        captions = tasks.i2t(np.stack([im for im, _, _ in chosen]), seed)
        pairs = [(c, s) for c, (_, _, s) in zip(captions, chosen)]
    return (float(np.mean([attribute_match(c, s) for c, s in pairs])),
            float(np.mean([not judge_caption(c, s) for c, s in pairs])))


def run_sampling_study(run: str, out: Path, n: int = 48, seed: int = 0, modalities=SWEPT,
                       grid: dict | None = None, log=print) -> dict:

    loaded = load_run(run)
    data = prepare(loaded.cfg.data)
    if not hasattr(data, "judges"):
        raise ValueError(f"run {run}: the sampling study needs a tinyworld run (its judges score the samples)")
    judges = data.judges()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    grid = grid or GRID
    unknown = set(modalities) - set(SWEPT)
    if unknown:
        raise ValueError(f"unknown modalities {sorted(unknown)}; choose from {', '.join(SWEPT)}")
    heldout = heldout_prompts(data.directory, n)
    points, best = [], {}
    for key, values in grid.items():
        if len(set(values)) != len(values):
            raise ValueError(f"grid {key}={values}: a value appears twice")
    for m in modalities:
        base = dataclasses.asdict(loaded.cfg.sample[m])
        name, higher = METRIC[m]
        best[m] = dict(base)
        for key, values in grid.items():
            choices = sampling_choices(m, key)
            if choices is not None:
                known = list(dict.fromkeys(c for mod in MODALITIES for c in sampling_choices(mod, key)))
                if not set(values) <= set(known):
                    raise ValueError(f"grid {key}={values}: expected values among {' | '.join(known)}")
                if len(choices) == 1:
                    continue  # one choice for this modality (order for text and image): nothing to sweep
            scored = []
            for value in values:
                setting = {**base, key: value}
                cfg = dataclasses.replace(loaded.cfg.sample, **{m: type(loaded.cfg.sample[m])(**setting)})
                t0 = time.time()
                score, all_right = score_modality(m, Tasks(loaded, cfg), heldout, judges, seed)
                points.append({"modality": m, "setting": key, "value": value, name: score, "all_right": all_right,
                               "n": n, "seconds": round(time.time() - t0, 1), "settings": setting})
                scored.append((value, score))
                log(f"study sampling: {m} {key}={value}: {name} {score:.3f} ({time.time() - t0:.0f}s)")
            pick = max(scored, key=lambda vs: vs[1]) if higher else min(scored, key=lambda vs: vs[1])
            ties = [v for v, s in scored if s == pick[1]]
            best[m][key] = base[key] if base[key] in ties else ties[0]
    current = {m: dataclasses.asdict(loaded.cfg.sample[m]) for m in modalities}
    result = {"run": str(run), "checkpoint": str(loaded.checkpoint), "n": n, "seed": seed, "grid": grid,
              "points": points, "recommended": best, "current": current,
              "together": score_together(loaded, heldout, judges, current, best, (seed, seed + 1), log)}
    (out / "sampling_study.json").write_text(json.dumps(result, indent=2) + "\n")
    _write_md(result, out / "sampling_study.md")
    _plot(result, grid, out / "sampling_study.png")
    return result


def score_together(loaded, heldout: dict, judges: dict, current: dict, recommended: dict, seeds: tuple[int, ...],
                   log=print) -> dict:
    """Per modality whose recommended row differs from the current one: both rows scored whole on every
    decoding seed in `seeds`. Settings picked one at a time can lose together, and a single seed's
    difference is often noise: adopt a row that wins on each."""
    out = {}
    for m, row in recommended.items():
        if row == current[m]:
            continue
        out[m] = {}
        for which, setting in (("current", current[m]), ("recommended", row)):
            cfg = dataclasses.replace(loaded.cfg.sample, **{m: type(loaded.cfg.sample[m])(**setting)})
            out[m][which] = [score_modality(m, Tasks(loaded, cfg), heldout, judges, s)[0] for s in seeds]
            log(f"study sampling: {m} {which} row: {out[m][which]}")
    return out


def _write_md(result: dict, path: Path) -> None:
    lines = [f"# Sampling-default sweep: {result['checkpoint']}", "",
             f"{result['n']} held-out prompts per point, seed {result['seed']}; one setting varied at a time "
             "around the current defaults.", "", "| modality | setting | value | metric | score | all right | seconds |",
             "|---|---|---|---|---|---|---|"]
    for p in result["points"]:
        name = METRIC[p["modality"]][0]
        right = "" if p["all_right"] is None else f"{p['all_right']:.3f}"
        lines.append(f"| {p['modality']} | {p['setting']} | {p['value']} | {name} | {p[name]:.3f} | {right} | "
                     f"{p['seconds']} |")
    keys = ("steps", "schedule", "temperature", "guidance", "remasking", "order")
    lines += ["", "## Recommended defaults", "", "| modality | " + " | ".join(keys) + " |",
              "|---" * (len(keys) + 1) + "|"]
    for m, s in result["recommended"].items():
        lines.append(f"| {m} | " + " | ".join(str(s.get(k, "—")) for k in keys) + " |")
    if result["together"]:
        lines += ["", "## The recommended rows scored together", "",
                  f"Seeds {result['seed']} and {result['seed'] + 1}; adopt a row that wins on each.", "",
                  "| modality | metric | current row | recommended row |", "|---|---|---|---|"]
        for m, both in result["together"].items():
            fmt = lambda v: " / ".join(f"{x:.3f}" for x in v)  # noqa: E731
            lines.append(f"| {m} | {METRIC[m][0]} | {fmt(both['current'])} | {fmt(both['recommended'])} |")
    path.write_text("\n".join(lines) + "\n")


def _plot(result: dict, grid: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mods = list(result["recommended"])
    fig, axes = plt.subplots(len(mods), len(grid), figsize=(3.2 * len(grid), 2.6 * len(mods)), squeeze=False)
    for r, m in enumerate(mods):
        name = METRIC[m][0]
        for c, key in enumerate(grid):
            pts = [p for p in result["points"] if p["modality"] == m and p["setting"] == key]
            ax = axes[r][c]
            if not pts:  # a setting this modality does not have (order: audio only)
                ax.axis("off")
                continue
            ax.plot([str(p["value"]) for p in pts], [p[name] for p in pts], "o-")
            ax.set_title(f"{m}: {key}", fontsize=9)
            ax.set_ylabel(name, fontsize=8)
            ax.tick_params(labelsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
