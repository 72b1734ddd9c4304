"""`trimdm` console script: parse, build the config, dispatch (method §1).

    trimdm prepare  --recipe NAME [key=value ...]        build the data a recipe needs (cached); with
                    [--mc FILE.jsonl]                    also multiple-choice questions from its val split
    trimdm prepare  --text SRC... --image-text SRC...    a corpus of your own data (docs/data.md); then
                    --audio-text SRC... --out DIR        train --recipe custom data.corpus=DIR
                    [tokenizers.*=V ingest.*=V ...]
    trimdm train    --recipe NAME --out DIR [key=value]  train; resumes DIR's last checkpoint
    trimdm generate --run DIR --task text|t2i|t2s|i2t|s2t|infill [--prompt ...] [--input FILE] [--span A:B]
    trimdm eval     --run DIR [--mc FILE.jsonl]          NELBO, generation metrics, report -> DIR/eval.json
                    [--out OUT]                          (or OUT/; a model folder needs --out)
    trimdm export   --run DIR --out MODEL_DIR            a self-describing model folder (docs/export.md),
                                                         loadable wherever a run is
    trimdm lm-eval  --model_args run=DIR[,mc_samples=64] lm-evaluation-harness tasks on a run (eval/lm_harness.py);
                    --tasks T [any lm_eval flag ...]     every flag is lm-eval's own (docs/eval.md)
    trimdm study    NAME --out DIR [--scale smoke|cpu|gpu] a grid of runs (study/sweep.py), then its analysis;
                    [--seeds K|A,B] [--jobs J] [--plan]   --launcher slurm --slurm KEY=VALUE ... submits them
                    [--launcher local|slurm] [--analyse]  with submitit
    trimdm serve    --run DIR [--host 127.0.0.1]         the HTTP API and web page of a run (docs/serve.md)
                    [--port 8000] [--queue 16]
    trimdm demo     [--out runs/demo]                    prepare, train, evaluate, generate

Errors in user input (config keys, values, files) are reported as one line and exit status 2; a
checkpoint that cannot be written (disk full, permission), or a study with failed runs (after every
run has finished), as a message and exit status 1.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

from trimdm.config import Config, CorpusConfig
from trimdm.data.ingest import prepare_corpus
from trimdm.data.prepare import prepare
from trimdm.data.tinyworld.questions import write_tinyworld_mc
from trimdm.demo import run_demo
from trimdm.distributed.env import finish, is_main_process
from trimdm.eval.run import evaluate_run
from trimdm.eval.summary import print_summary
from trimdm.recipes import RECIPES, get_recipe
from trimdm.sample.run import generate, generate_from_sidecar
from trimdm.study import STUDIES
from trimdm.study.sampling import run_sampling_study
from trimdm.study.sweep import LAUNCHERS, SCALES, SweepFailed, parse_seeds, parse_slurm, run_study
from trimdm.train.checkpoint import CheckpointWriteError
from trimdm.train.export import export_run
from trimdm.train.model_folder import is_model_folder
from trimdm.train.trainer import train


def build_config(recipe: str, overrides: list[str], base: Config | None = None) -> Config:
    cfg = base if base is not None else get_recipe(recipe)
    return cfg.override(overrides).derive()


def cmd_prepare(args) -> None:
    if args.text or args.image_text or args.audio_text:
        return cmd_prepare_corpus(args)
    extra = [f"data.dataset={args.dataset}"] if args.dataset else []
    extra += [f"data.root={args.out}"] if args.out else []
    extra += ["data.strict=true"] if args.strict else []
    cfg = build_config(args.recipe, [*args.overrides, *extra])
    if args.mc:  # checked before the (long) prepare
        if cfg.data.dataset != "tinyworld":
            raise ValueError(f"--mc {args.mc}: questions are drawn from a tinyworld data set, and recipe "
                             f"{args.recipe!r} prepares data.dataset={cfg.data.dataset!r}")
        if Path(args.mc).exists():
            raise ValueError(f"--mc {args.mc}: the file exists; choose another path or remove it")
        if args.mc_questions < 1:
            raise ValueError(f"--mc-questions {args.mc_questions}: expected a positive number")
    data = prepare(cfg.data)
    report = Path(data.directory) / "prepare_report.md"
    print(report.read_text() if report.exists() else json.dumps(data.manifest.get("shards"), indent=2))
    print(f"prepared: {data.directory}")
    if args.mc:
        n = args.mc_questions
        path = write_tinyworld_mc(data.directory, args.mc, n_image=n, n_audio=n, seed=args.mc_seed)
        print(f"multiple choice: {path}, {n} image and {n} speech questions from the val split "
              f"(evaluate with: trimdm eval --run DIR --mc {path})")


KEY_VALUE = re.compile(r"^[A-Za-z_][\w.]*=")

CORPUS_FLAGS = {"val_fraction": "ingest.val_fraction", "workers": "ingest.workers", "on_error": "ingest.on_error",
                "text_field": "ingest.text_field", "caption_field": "ingest.caption_field",
                "image_field": "ingest.image_field", "audio_field": "ingest.audio_field",
                "transcript_field": "ingest.transcript_field"}


def cmd_prepare_corpus(args) -> None:
    """`--text/--image-text/--audio-text`: a corpus of the user's own data (data/ingest.py)."""
    specs, overrides = {}, list(args.overrides)
    for kind in ("text", "image_text", "audio_text"):
        given = getattr(args, kind) or []
        # nargs="+" also takes the key=value settings that follow a source list
        overrides += [x for x in given if KEY_VALUE.match(x) and not Path(x).exists()]
        specs[kind] = [x for x in given if not (KEY_VALUE.match(x) and not Path(x).exists())]
    if not args.out:
        raise ValueError("prepare --text/--image-text/--audio-text needs --out DIR (the corpus directory)")
    if args.mc or args.dataset or args.strict:
        raise ValueError("--mc, --dataset and --strict belong to recipe data sets; a corpus takes "
                         "--on-error fail instead of --strict")
    flags = [f"{key}={getattr(args, name)}" for name, key in CORPUS_FLAGS.items() if getattr(args, name) is not None]
    flags += ["ingest.lowercase=true"] * args.lowercase + ["ingest.whitespace=collapse"] * args.collapse_whitespace
    flags += ["ingest.paragraphs=true"] * args.paragraphs
    settings = CorpusConfig().override([*overrides, *flags])
    out = prepare_corpus(args.out, specs, settings)
    print((out / "prepare_report.md").read_text())
    print(f"prepared: {out}\ntrain on it: trimdm train --recipe custom --out RUN data.corpus={out}")


def cmd_train(args) -> None:
    cfg = build_config(args.recipe, args.overrides)
    result = train(cfg, args.out)
    if is_main_process():
        print(json.dumps(result))
    finish()  # torchrun workers exit here; a single process returns


def cmd_eval(args) -> None:
    result = evaluate_run(args.run, args.overrides, mc=args.mc or [], generation=not args.no_generation,
                          out=args.out)
    print_summary(result)


def cmd_export(args) -> None:
    if args.overrides:
        raise ValueError(f"export takes no overrides, got {' '.join(args.overrides)}")
    out = export_run(args.run, args.out)
    print(f"exported: {out} (load it with --run {out}; its card: {out / 'README.md'})")


def cmd_lm_eval(args) -> None:
    try:  # an optional extra: only this command needs it
        import lm_eval  # noqa: F401
    except ImportError:
        raise ValueError("lm-evaluation-harness is not installed: pip install 'trimdm[lm-eval]'") from None
    from trimdm.eval.lm_harness import run_lm_eval

    run_lm_eval(args.lm_eval_args)


def cmd_generate(args) -> None:
    if args.sidecar:
        sidecars = generate_from_sidecar(args.sidecar, out=args.out)
    elif not args.run:
        raise ValueError("generate needs --run DIR (or --from SIDECAR.json)")
    else:
        sidecars = generate(args.run, args.task, args.prompt, args.n, args.seed, args.overrides,
                            input_path=args.input, span=args.span, out=args.out)
    for s in sidecars:
        shown = s.get("text", s["output"])
        print(f"--- sample {s['index']}: {shown}")


def cmd_study(args) -> None:
    if args.study == "sampling":
        if not args.run:
            raise ValueError("study sampling needs --run DIR (a trained tinyworld run)")
        if not args.out and is_model_folder(args.run):
            raise ValueError(f"--run {args.run} is a model folder, which trimdm does not write into: pass --out DIR")
        out = Path(args.out) if args.out else Path(args.run) / "sampling_study"
        run_sampling_study(args.run, out, n=args.prompts, modalities=tuple(args.modalities.split(",")))
        print((out / "sampling_study.md").read_text())
        print(f"table: {out / 'sampling_study.json'}; plot: {out / 'sampling_study.png'}")
        return
    if args.study not in STUDIES:
        raise ValueError(f"unknown study {args.study!r}; this version has: {', '.join(sorted(STUDIES))}, sampling")
    if not args.out:
        raise ValueError(f"study {args.study} needs --out DIR")
    # --slurm takes KEY=VALUE items; config overrides (section.key=value) after it are overrides
    slurm_items = [x for x in args.slurm or [] if "." not in x.split("=", 1)[0]]
    overrides = [*args.overrides, *(x for x in args.slurm or [] if x not in slurm_items)]
    ints = lambda text: [int(x) for x in text.split(",") if x]  # noqa: E731
    options = {"recipe": args.recipe, "batches": ints(args.batches) if args.batches else None,
               "arms": args.arms.split(",") if args.arms else None}
    result = run_study(STUDIES[args.study], Path(args.out), scale=args.scale or "cpu",
                       seeds=parse_seeds(args.seeds) if args.seeds else None, overrides=overrides,
                       options=options, analyse_only=args.analyse, jobs=args.jobs, launcher=args.launcher,
                       slurm=parse_slurm(slurm_items), plan_only=args.plan)
    if args.plan:
        print(f"plan: {Path(args.out) / 'plan.json'} ({len(result.runs)} runs; nothing was run)")
        return
    print((Path(args.out) / "study.md").read_text())
    print(f"results: {Path(args.out) / 'results.json'}; runs: {Path(args.out) / 'sweep.json'}")


def cmd_serve(args) -> None:
    from trimdm.serve.app import serve  # fastapi and uvicorn load for this command only

    if getattr(args, "overrides", None):
        raise ValueError(f"serve takes no key=value settings ({' '.join(args.overrides)}); a request sets its own")
    serve(args.run, host=args.host, port=args.port, max_queue=args.queue)


def cmd_demo(args) -> None:
    run_demo(Path(args.out), args.overrides, args.recipe)


def _corpus_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("a corpus of your own data (docs/data.md)")
    src = "files, folders, globs or brace ranges"
    g.add_argument("--text", nargs="+", action="extend", help=f"text: .txt, .jsonl, .json, .parquet, a saved "
                   f"datasets folder ({src})")
    g.add_argument("--image-text", nargs="+", action="extend", help=f"image-text: webdataset tars, an image "
                   f"folder with metadata.jsonl/.csv or .txt captions, parquet ({src})")
    g.add_argument("--audio-text", nargs="+", action="extend", help=f"audio-text: a LibriSpeech tree, a "
                   f".jsonl/.csv/.tsv manifest, webdataset tars ({src})")
    g.add_argument("--val-fraction", type=float, default=None, help="share of samples held out (default 0.01)")
    g.add_argument("--workers", type=int, default=None, help="tokenising processes (default 1)")
    g.add_argument("--on-error", choices=("skip", "fail"), default=None,
                   help="a bad sample: skip it into DIR/rejects.jsonl (default) or stop")
    g.add_argument("--lowercase", action="store_true", help="lowercase every text")
    g.add_argument("--collapse-whitespace", action="store_true", help="every run of whitespace to one space")
    g.add_argument("--paragraphs", action="store_true", help=".txt: a document per blank-line paragraph")
    for name in ("text", "caption", "image", "audio", "transcript"):
        g.add_argument(f"--{name}-field", default=None, help=f"the {name} field or column")


def _study_parser(sub) -> None:
    p = sub.add_parser("study", help="design-space studies: sweeps of runs (batch) and sampling")
    p.add_argument("study", help=f"which study: {' | '.join(sorted(STUDIES))} | sampling")
    p.add_argument("--out", default=None, help="output folder (sampling: default RUN/sampling_study; required "
                   "for a model folder)")
    g = p.add_argument_group("sweeps (every study but sampling)")
    g.add_argument("--scale", choices=SCALES, default=None, help="smoke (seconds), cpu (default), gpu")
    g.add_argument("--seeds", default=None, help="a count K (seeds 0..K-1) or a comma list (0,1; one seed: 7,); "
                   "default: the scale's")
    g.add_argument("--jobs", type=int, default=1, help="runs at a time; each gets cores/jobs threads")
    g.add_argument("--launcher", choices=LAUNCHERS, default="local", help="local subprocesses or submitit (Slurm)")
    g.add_argument("--slurm", nargs="+", action="extend", metavar="KEY=VALUE",
                   help="submitit options: partition=, timeout_min=, gpus_per_node=, cpus_per_task=, ...; "
                   "cluster=local runs the same jobs on this machine")
    g.add_argument("--plan", action="store_true", help="write OUT/plan.json and print the commands; run nothing")
    g.add_argument("--analyse", action="store_true", help="only redo the analysis from the run directories")
    g = p.add_argument_group("study batch")
    g.add_argument("--recipe", default=None, help="default: the scale's (cpu: study_batch)")
    g.add_argument("--batches", default=None, help="physical batch sizes, e.g. 8,16,32,64 (default: the scale's)")
    g.add_argument("--arms", default=None, help="optim.reparam arms (default sde,none)")
    g = p.add_argument_group("study sampling")
    g.add_argument("--run", default=None, help="the trained run whose sampling defaults to sweep")
    g.add_argument("--prompts", type=int, default=48, help="held-out prompts per grid point")
    g.add_argument("--modalities", default="image,audio,text", help="which modalities to sweep")
    p.add_argument("overrides", nargs="*", help="config key=value overrides for every run")
    p.set_defaults(fn=cmd_study)


def _lm_eval_parser(sub) -> None:
    # -h too is lm-eval's: `trimdm lm-eval -h` prints the flags of `lm-eval run`
    p = sub.add_parser("lm-eval", add_help=False, help="lm-evaluation-harness tasks on a run: lm-eval's own flags, "
                       "--model trimdm put in; --model_args run=DIR,mc_samples=64 (docs/eval.md)")
    p.add_argument("lm_eval_args", nargs=argparse.REMAINDER, help="every flag of `lm-eval run`")
    p.set_defaults(fn=cmd_lm_eval)


def _serve_parser(sub) -> None:
    p = sub.add_parser("serve", help="serve a run: HTTP API and a web page (binds 127.0.0.1 unless --host)")
    p.add_argument("--run", required=True, help="run directory, checkpoint directory or model folder")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--queue", type=int, default=16, help="requests that may wait; more are answered 503")
    p.set_defaults(fn=cmd_serve)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trimdm", description="Tri-modal masked diffusion models.")
    sub = parser.add_subparsers(dest="command", required=True)
    recipes = ", ".join(sorted(RECIPES))

    p = sub.add_parser("prepare", help="build the data set a recipe needs")
    p.add_argument("--recipe", default="demo", help=f"one of: {recipes} (sizes of the data set)")
    p.add_argument("--dataset", default=None, help="kjv | tinyworld (default: the recipe's)")
    p.add_argument("--out", default=None, help="data root directory (default: the recipe's data.root); "
                   "with --text/--image-text/--audio-text: the corpus directory")
    p.add_argument("--strict", action="store_true", help="stop at the first bad input file")
    p.add_argument("--mc", default=None, help="also write a multiple-choice JSONL file (tinyworld: which caption "
                   "matches this image or this utterance) for `trimdm eval --mc`")
    p.add_argument("--mc-questions", type=int, default=32, help="--mc: image and speech questions, each")
    p.add_argument("--mc-seed", type=int, default=0, help="--mc: which val items and distractors")
    _corpus_arguments(p)
    p.add_argument("overrides", nargs="*", help="config key=value overrides (a corpus: tokenizers.* and ingest.*)")
    p.set_defaults(fn=cmd_prepare)

    p = sub.add_parser("train", help="train a model from a recipe plus key=value overrides")
    p.add_argument("--recipe", required=True, help=f"one of: {recipes}")
    p.add_argument("--out", required=True, help="run directory (resumed if it holds a checkpoint)")
    p.add_argument("overrides", nargs="*", help="config key=value overrides, e.g. train.tokens=2e6")
    p.set_defaults(fn=cmd_train)

    p = sub.add_parser("generate", help="generate from a trained run, checkpoint or model folder")
    p.add_argument("--run", default=None, help="run directory, checkpoint directory or model folder")
    p.add_argument("--task", default="text", help="text | t2i | t2s | i2t | s2t | infill")
    p.add_argument("--prompt", default="", help="prompt text, caption to draw or speak, or text to infill")
    p.add_argument("--input", default=None, help="PNG (i2t, image infill) or WAV (s2t, audio infill)")
    p.add_argument("--span", default=None, help="infill span START:END: characters (text), image token "
                   "indices, or seconds (audio)")
    p.add_argument("--n", type=int, default=4)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--out", default=None, help="output folder (default RUN/samples/generate/TASK-seedS; "
                   "required for a model folder)")
    p.add_argument("--from", dest="sidecar", default=None, help="reproduce the call a sidecar JSON records")
    p.add_argument("overrides", nargs="*", help="sample.* overrides, e.g. sample.image.guidance=2")
    p.set_defaults(fn=cmd_generate)

    p = sub.add_parser("eval", help="evaluate a run into RUN/eval.json, report.md and report.html")
    p.add_argument("--run", required=True, help="run directory, checkpoint directory or model folder")
    p.add_argument("--mc", action="append", help="a multiple-choice JSONL file (context, options, answer); "
                   "repeatable")
    p.add_argument("--no-generation", action="store_true", help="skip generation metrics (likelihood only)")
    p.add_argument("--out", default=None, help="folder for eval.json, the report and the samples (default: the "
                   "run directory; required for a model folder)")
    p.add_argument("overrides", nargs="*", help="eval.* and sample.* overrides")
    p.set_defaults(fn=cmd_eval)

    p = sub.add_parser("export", help="write a run's checkpoint as a self-describing model folder")
    p.add_argument("--run", required=True, help="run directory (its latest checkpoint) or checkpoint directory")
    p.add_argument("--out", required=True, help="the model folder to write (absent or empty)")
    p.add_argument("overrides", nargs="*", help=argparse.SUPPRESS)
    p.set_defaults(fn=cmd_export)

    _lm_eval_parser(sub)
    _study_parser(sub)

    _serve_parser(sub)
    p = sub.add_parser("demo", help="the main job: prepare, train, evaluate and sample on the embedded data")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--recipe", default="demo", help="demo (tri-modal tinyworld) or demo_text (KJV only)")
    p.add_argument("overrides", nargs="*")
    p.set_defaults(fn=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    # key=value overrides may come before, between or after options: collect the ones argparse leaves
    argv = sys.argv[1:] if argv is None else list(argv)
    args, extra = parser.parse_known_args(argv)
    if args.command == "lm-eval":  # every flag is lm-eval's: all of them, in order (argparse keeps some aside)
        args.lm_eval_args = argv[argv.index("lm-eval") + 1:]
        extra = []
    stray = [x for x in extra if x.startswith("-") or "=" not in x]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    if extra:
        args.overrides = list(getattr(args, "overrides", [])) + extra
    t0 = time.time()
    try:
        args.fn(args)
    except ValueError as e:
        print(f"trimdm {args.command}: error: {e}", file=sys.stderr)
        return 2
    except (CheckpointWriteError, SweepFailed) as e:
        print(f"trimdm {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"trimdm {args.command}: interrupted after {time.time() - t0:.0f}s", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
