"""Free text by the KJV's text judge under several text sampling settings (semi-autoregressive block
size, steps, temperature): the measurement behind the text row of config.SAMPLING_DEFAULTS. Prints JSON.

    python benchmarks/text_blocks.py [--run runs/demo] [--n 64] [--seeds 0] [--setting NAME KEY=VALUE ...]

The run defaults to runs/demo, which `make demo` trains; without it the script says so and stops. Every
setting starts from today's text row of config.SAMPLING_DEFAULTS (so the row measured is the one a new
run would get), then applies its `sample.*` overrides; the setting named `run` is the run's own row
instead (what `trimdm eval` of that run decodes with), plus its overrides. Without `--setting`: `run`,
`defaults` and the defaults with blocks of 4, 8, 16 and 32 tokens. Each setting draws `n` texts without
a prompt per seed, as `trimdm eval` does (eval/generation.py:text_metrics); the held-out KJV reference
of the same length is scored once. A run whose text is not the KJV (a corpus of your own) has no text
judge.
"""
from __future__ import annotations

import argparse
import copy
import json
import time

from trimdm.config import SAMPLING_DEFAULTS
from trimdm.data.kjv_judge import score_texts
from trimdm.data.prepare import text_judge
from trimdm.eval.generation import text_figures
from trimdm.sample.tasks import Tasks

from trained_run import add_run_flag, load_trained_run

DEFAULT_ROW = [f"sample.text.{k}={v}" for k, v in SAMPLING_DEFAULTS["text"].items()]
DEFAULT_SETTINGS = [["run"], ["defaults"]] + [[f"block{b}", f"sample.text.block={b}"] for b in (4, 8, 16, 32)]


def main() -> None:
    ap = argparse.ArgumentParser()
    add_run_flag(ap)
    ap.add_argument("--n", type=int, default=64, help="texts per setting and seed")
    ap.add_argument("--seeds", default="0", help="decoding seeds, comma-separated")
    ap.add_argument("--setting", nargs="+", action="append", metavar=("NAME", "KEY=VALUE"),
                    help="a named setting: sample.* overrides on today's default text row (repeatable)")
    args = ap.parse_args()
    t0 = time.time()
    loaded = load_trained_run(args.run)
    judge = text_judge(loaded.cfg.data)
    if judge is None:
        raise SystemExit(f"{args.run}: its text is not the KJV, so there is no text judge for it")
    seeds = [int(s) for s in args.seeds.split(",")]
    result = {"run": str(args.run), "checkpoint": str(loaded.checkpoint), "n": args.n, "seeds": seeds,
              "judge": judge.describe(), "settings": []}
    for name, *overrides in args.setting or DEFAULT_SETTINGS:
        given = overrides if name == "run" else DEFAULT_ROW + overrides
        cfg = copy.deepcopy(loaded.cfg).override(given, only="sample")
        cfg.validate()
        tasks = Tasks(loaded, cfg.sample)
        if "reference" not in result:
            gen_len = cfg.sample.gen_len
            reference = [tasks.text_tok.decode(tasks.text_tok.encode(d).tolist()[:gen_len]) for d in judge.heldout]
            result["reference"] = {"gen_len": gen_len, **text_figures(score_texts(judge.lm, reference))}
        for seed in seeds:
            t1 = time.time()
            texts = tasks.text("", args.n, seed)
            result["settings"].append({"name": name, "overrides": overrides, "seed": seed,
                                       "row": vars(cfg.sample.text).copy(), "gen_len": cfg.sample.gen_len,
                                       **text_figures(score_texts(judge.lm, texts)),
                                       "seconds": round(time.time() - t1, 1), "examples": texts[:3]})
    result["seconds"] = round(time.time() - t0, 1)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
