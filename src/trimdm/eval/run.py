"""`trimdm eval`: evaluate a run into RUN/eval.json, RUN/report.md and a self-contained RUN/report.html.

Held-out NELBO per modality and the conditional NELBOs (diffusion/likelihood.py) next to the text's unigram
baseline (every data set, a corpus of the user's own data included); on tinyworld also tokenizer
reconstructions (reconstruct.py), the judges' own accuracy and their ceiling on reconstructions (from the
prepared data set), generation metrics (generation.py); on a data set whose text is the KJV (kjv, tinyworld)
free text judged by its text judge (generation.py: `text_metrics`, under generation.text) and, with `--mc
FILE.jsonl`, multiple choice (multiple_choice.py). The report is rendered from eval.json, metrics.jsonl and
the samples (report.py). eval.json is replaced whole, except that an eval without generation keeps the
generation metrics an earlier eval of the same checkpoint wrote. With `out` (`--out DIR`) these files and
the samples go to DIR instead of the run directory; a model folder written by `trimdm export` is never
written into, so evaluating one needs `--out`.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from trimdm.data.prepare import prepare, text_judge
from trimdm.diffusion.likelihood import heldout_nelbo
from trimdm.eval.generation import generation_metrics, text_metrics
from trimdm.eval.multiple_choice import run_multiple_choice
from trimdm.eval.reconstruct import write_reconstructions
from trimdm.eval.report import write_report
from trimdm.fileio import atomic_write_text
from trimdm.model.flops import param_counts
from trimdm.train.model_folder import is_model_folder
from trimdm.train.run import load_run


def evaluate_run(run: str | Path, overrides: list[str] = (), mc: list[str] = (), generation: bool = True,
                 log=print, out: str | Path | None = None) -> dict:
    t0 = time.time()
    if out is not None and is_model_folder(out):
        raise ValueError(f"--out {out}: a model folder, which trimdm does not write into; choose another folder")
    loaded = load_run(run)
    cfg = loaded.cfg.override(list(overrides), only=("eval", "sample"))  # sample.*: decode differently
    cfg.validate()
    run_dir = Path(out) if out is not None else loaded.output_dir()
    data = prepare(cfg.data)
    val = data.sources("val", loaded.vocab, cfg.data.seq_len)
    e = cfg.eval
    result = heldout_nelbo(loaded.model, loaded.vocab, val, tau_points=e.tau_points, seed=e.seed,
                           batch_size=e.batch_size, max_rows=e.max_rows, device=loaded.device,
                           dtype=cfg.train.dtype, conditional=True)
    result["baselines"] = {"text_unigram_bits": data.unigram_bits()}
    result["params"] = sum(p.numel() for p in loaded.model.parameters())
    result["param_counts"] = param_counts(loaded.model.args)  # embedding / non-embedding, for scaling fits
    run_dir.mkdir(parents=True, exist_ok=True)
    log(f"eval: held-out NELBO ({time.time() - t0:.0f}s)")
    if hasattr(data, "judges"):  # tinyworld: its tokenizers' reconstructions and its judges' scores
        if e.reconstructions:
            result["reconstructions"] = write_reconstructions(run_dir, data)
        judges = data.judges()
        result["judges"] = data.judge_report()
        if generation and cfg.eval.gen_prompts > 0:
            result["generation"] = generation_metrics(loaded, data.directory, judges, run_dir, cfg.eval.gen_prompts,
                                                      cfg.eval.gen_utterances, seed=cfg.sample.seed, log=log,
                                                      sample=cfg.sample)
    judge = text_judge(cfg.data) if generation and e.gen_texts > 0 else None
    if judge is not None:  # a data set whose text is the KJV
        result.setdefault("generation", {})["text"] = text_metrics(loaded, judge, e.gen_texts, seed=cfg.sample.seed,
                                                                   sample=cfg.sample, log=log)
    if mc:
        result["multiple_choice"] = [run_multiple_choice(loaded, path, n_samples=cfg.eval.mc_samples) for path in mc]
    result["checkpoint"] = str(loaded.checkpoint)
    if "generation" not in result and not generation:
        kept = _previous_generation(run_dir / "eval.json", result["checkpoint"])
        if kept is not None:
            result["generation"] = kept
            log("eval: generation metrics kept from the previous eval of this checkpoint (--no-generation)")
    result["seconds"] = round(time.time() - t0, 2)
    atomic_write_text(run_dir / "eval.json", json.dumps(result, indent=2) + "\n")
    result["report"] = {k: str(v) for k, v in write_report(run_dir).items() if v is not None}
    return result


def _previous_generation(path: Path, checkpoint: str) -> dict | None:
    """The generation metrics of an earlier eval.json of the same checkpoint, which a `--no-generation`
    eval keeps rather than drops; None when there are none (or the file is unreadable: it is rewritten)."""
    try:
        previous = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(previous, dict) or previous.get("checkpoint") != checkpoint:
        return None
    return previous.get("generation") if isinstance(previous.get("generation"), dict) else None
