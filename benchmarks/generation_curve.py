"""Generation quality along a run: every kept checkpoint scored by the data set's judges. Prints JSON.

    python benchmarks/generation_curve.py [--run runs/demo] [--prompts 64] [--utterances 16]
                                          [--tasks t2i,i2t,t2s; also i2t_single] [--steps 1000,5000]
                                          [key=value sample overrides]

Per checkpoint (step, tokens): T2I all-attributes-right on held-out single-object prompts, split into
seen and held-out (colour, shape) compositions, I2T caption all right (val images in order; with
`i2t_single`, also on single-object images alone, the issue's I2T target), T2S character error rate
(also on spoken captions and on sentences apart), with the run's sampling settings, the same prompts
and seed at every checkpoint (or at the `--steps` chosen).
With `train.ckpt_every` and `train.keep_checkpoints` this is the learning curve of the generation tasks,
the quantity a recipe's token budget is sized by (tinyworld runs only: the judges score the samples).
Each checkpoint's point is also written to stderr as it is scored. The run defaults to runs/demo, which
`make demo` trains; without it the script says so and stops.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

from trimdm.data.prepare import prepare
from trimdm.data.tinyworld.judges.speech import cer
from trimdm.data.tinyworld.scenes import HELDOUT_PAIRS
from trimdm.eval.generation import source_subsets
from trimdm.sample.tasks import Tasks
from trimdm.study.sampling import heldout_prompts, score_modality
from trimdm.train.run import load_run


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", default="runs/demo", help="a trained run directory (`make demo` trains runs/demo)")
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--utterances", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tasks", default="t2i,i2t,t2s", help="comma-separated subset of t2i, i2t, t2s")
    ap.add_argument("--steps", default="", help="comma-separated checkpoint steps to score (default: every one)")
    ap.add_argument("overrides", nargs="*", help="sample.* overrides")
    args = ap.parse_args()
    steps = dict(sorted((int(p.name.split("_")[1]), p) for p in Path(args.run, "checkpoints").glob("step_*")))
    if not steps:
        raise SystemExit(f"{args.run}: no trained run there (no checkpoints/step_* to score); `make demo` trains "
                         "runs/demo, or pass --run DIR")
    if args.steps:
        try:
            wanted = sorted({int(s) for s in args.steps.split(",")})
        except ValueError:
            raise SystemExit(f"--steps {args.steps}: expected comma-separated integers") from None
        missing = [s for s in wanted if s not in steps]
        if missing:
            raise SystemExit(f"{args.run}: no checkpoint at step {missing} (kept: {sorted(steps)})")
        steps = {s: steps[s] for s in wanted}
    first = load_run(next(iter(steps.values())))
    data = prepare(first.cfg.data)  # every checkpoint of a run shares its data set
    judges = data.judges()
    held = heldout_prompts(data.directory, 8 * args.prompts)
    unseen = [(o.color, o.shape) in HELDOUT_PAIRS for o in (it[2].objects[0] for it in held["image"])]
    single = {"seen": [it for it, u in zip(held["image"], unseen) if not u][:args.prompts],
              "heldout": [it for it, u in zip(held["image"], unseen) if u][:args.prompts]}
    chosen = set(args.tasks.split(","))
    if not chosen <= {"t2i", "i2t", "i2t_single", "t2s"}:
        raise SystemExit(f"--tasks {args.tasks}: choose from t2i, i2t, i2t_single, t2s")
    points, settings = [], None
    for i, (step, path) in enumerate(steps.items()):
        t0 = time.time()
        loaded = first if i == 0 else load_run(path)
        tasks = Tasks(loaded, loaded.cfg.override(list(args.overrides), only="sample").sample)
        settings = {m: dataclasses.asdict(tasks.cfg[m]) for m in ("text", "image", "audio")}
        point = {"checkpoint": path.name, "step": step}
        for name, items in single.items() if "t2i" in chosen else ():
            match, right = score_modality("image", tasks, {"image": items}, judges, args.seed)
            point[f"t2i_{name}"], point[f"t2i_{name}_attribute_match"], point[f"t2i_{name}_n"] = right, match, len(items)
        if "i2t" in chosen:
            match, right = score_modality("text", tasks, {"text": held["text"][:args.prompts]}, judges, args.seed)
            point["i2t"], point["i2t_attribute_match"] = right, match
        if "i2t_single" in chosen:  # held["image"] holds the single-object val scenes
            match, right = score_modality("text", tasks, {"text": held["image"][:args.prompts]}, judges, args.seed)
            point["i2t_single"], point["i2t_single_attribute_match"] = right, match
        if "t2s" in chosen:  # as score_modality("audio", ...), and on spoken captions and sentences apart
            texts = held["audio"][:args.utterances]
            heard = judges["speech"].transcribe(tasks.t2s(texts, args.seed)[0])
            point["t2s_cer"] = cer(heard, texts)
            for key, sub in source_subsets(texts).items():
                point[f"t2s_cer_{key}"] = cer([heard[j] for j in sub], [texts[j] for j in sub])
                point[f"t2s_{key}_n"] = len(sub)
        point["seconds"] = round(time.time() - t0, 1)
        points.append(point)
        # progress on stderr: stdout is the one JSON document below
        print(json.dumps(point), file=sys.stderr, flush=True)
    print(json.dumps({"run": args.run, "prompts": args.prompts, "utterances": args.utterances,
                      "sample": settings,
                      "points": points}, indent=2))


if __name__ == "__main__":
    main()
