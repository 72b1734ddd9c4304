"""The run report: RUN/report.md and a self-contained RUN/report.html, built from the run's data files.

Owns: reading config.json, metrics.jsonl and eval.json of one run directory (results are data: nothing
is parsed from logs), the loss-curve figure (loss_curves.png), and rendering. It does not evaluate
anything; eval/run.py writes eval.json. Every section of eval.json is optional and rendered only when
present. The two numbers computed here are presentation, both stated where shown: an exact one-sided
binomial test behind "beats chance" for accuracies, and a training time estimated from the logged
throughput.

The page is built once as a list of blocks (heading, paragraph, table, figure, image beside a list)
and rendered twice: Markdown that references images and audio by path relative to the run directory,
and HTML that embeds every PNG and WAV as a base64 data URI, so report.html can be mailed or archived
alone. Embedded media are capped per section (MAX_IMAGES, MAX_CLIPS) to keep the page a sane size.
"""
from __future__ import annotations

import base64
import html
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from trimdm.eval.stats import difference_se, vs_chance
from trimdm.train.metrics import read_metrics

MAX_IMAGES = 16  # sample images embedded per section
MAX_CLIPS = 8  # audio clips embedded per section
MAX_EMBED_BYTES = 4 << 20  # a larger file is named, not embedded
MODALITY_ORDER = ("text", "image", "audio")
MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif",
        ".wav": "audio/wav", ".flac": "audio/flac", ".mp3": "audio/mpeg", ".ogg": "audio/ogg"}
SECTIONS = {"nelbo": dict, "conditional_nelbo": dict, "baselines": dict, "reconstructions": dict,
            "judges": dict, "generation": dict, "multiple_choice": (dict, list)}


def write_report(run_dir: str | Path) -> dict:
    """Write loss_curves.png, report.md and report.html into `run_dir`.

    Returns {"md": path, "html": path, "loss_png": path or None (no metrics.jsonl records)}."""
    run = Path(run_dir)
    if not run.is_dir():
        raise ValueError(f"{run}: not a run directory")
    ev = _read_eval(run / "eval.json")
    cfg = _read_json_optional(run / "config.json")
    records = _read_records(run / "metrics.jsonl")
    loss_png = plot_loss_curves(records, run / "loss_curves.png", ev.get("nelbo", {}))
    blocks = build_blocks(run, cfg, records, ev, loss_png)
    title = f"Run report: {run.resolve().name}"
    md, page = run / "report.md", run / "report.html"
    md.write_text(render_markdown(title, blocks, run), encoding="utf-8")
    page.write_text(render_html(title, blocks), encoding="utf-8")
    return {"md": md, "html": page, "loss_png": loss_png}


# ---------------------------------------------------------------- inputs

def _read_eval(path: Path) -> dict:
    if not path.exists():
        raise ValueError(f"{path}: missing; run `trimdm eval` on this run first")
    try:
        ev = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(ev, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(ev).__name__}")
    for name, kind in SECTIONS.items():
        if name in ev and not isinstance(ev[name], kind):
            raise ValueError(f"{path}: section {name!r} has the wrong type ({type(ev[name]).__name__})")
    return ev


def _read_json_optional(path: Path) -> dict:
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None


def _read_records(path: Path) -> list[dict]:
    if not path.exists():
        return []
    try:
        return read_metrics(path)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: a line is not valid JSON ({e})") from None


def _get(d: dict, dotted: str):
    for key in dotted.split("."):
        if not isinstance(d, dict) or key not in d:
            return None
        d = d[key]
    return d


def _find(run: Path, name: str | None) -> Path | None:
    """A file named in eval.json: absolute, relative to the run directory, relative to the working
    directory (eval/reconstruct.py writes its directory that way), or a tail of it under the run."""
    if not name:
        return None
    p = Path(name)
    if p.is_absolute():
        return p if p.exists() else None
    for candidate in (run / p, p):
        if candidate.exists():
            return candidate
    for i in range(1, len(p.parts)):
        candidate = run.joinpath(*p.parts[i:])
        if candidate.exists():
            return candidate
    return None


# ---------------------------------------------------------------- numbers

def fmt(x) -> str:
    """One number as the report shows it: ints with thousands separators, floats to 4 significant
    digits (1 decimal from 1000 up), None as an em dash."""
    if x is None:
        return "—"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return f"{x:,}"
    if isinstance(x, float):
        if not math.isfinite(x):
            return str(x)
        if x.is_integer() and abs(x) < 1e15:
            return f"{int(x):,}"
        return f"{x:,.1f}" if abs(x) >= 1000 else f"{x:.4g}"
    if isinstance(x, str):
        return x
    return json.dumps(x)


def _flatten(d: dict, prefix: str = "") -> list[tuple[str, object]]:
    out = []
    for k, v in d.items():
        if isinstance(v, dict):
            out += _flatten(v, f"{prefix}{k}.")
        else:
            out.append((f"{prefix}{k}", v))
    return out


def _duration(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def _train_seconds(records: list[dict]) -> float | None:
    """Training time from the logged throughput: each record's tokens_per_s covers the tokens since
    the previous record (periodic evaluation falls outside those windows, so it is not counted)."""
    total, prev, seen = 0.0, 0, False
    for r in records:
        tokens, tps = r.get("tokens"), r.get("tokens_per_s")
        if tokens is None:
            continue
        if tps:
            total += (tokens - prev) / tps
            seen = True
        prev = tokens
    return total if seen else None


def _modalities(keys) -> list[str]:
    found = {k[len(p):] for k in keys for p in ("nelbo_", "val_nelbo_") if k.startswith(p)}
    return [m for m in MODALITY_ORDER if m in found] + sorted(found - set(MODALITY_ORDER))


# ---------------------------------------------------------------- figure

def plot_loss_curves(records: list[dict], out: Path, final_nelbo: dict | None = None) -> Path | None:
    """Training NELBO per modality (bits/token of each logged batch, and a moving average) against
    tokens, with the periodic held-out NELBO and eval.json's final held-out NELBO overlaid; one panel
    per modality. Falls back to the training loss when no per-modality NELBO was logged."""
    if not records:
        return None
    import numpy as np
    from matplotlib.figure import Figure  # no pyplot: the caller's backend and global state stay as they are

    keys = {k for r in records for k in r}
    xkey = "tokens" if "tokens" in keys else "step"
    mods = _modalities(keys)
    panels = [(m, f"nelbo_{m}", f"val_nelbo_{m}") for m in mods] or [("loss", "loss", None)]
    fig = Figure(figsize=(4.6 * len(panels), 3.6), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (name, train_key, val_key) in zip(axes, panels):
        pts = [(r[xkey], r[train_key]) for r in records if r.get(train_key) is not None and xkey in r]
        if pts:
            x, y = np.array(pts, dtype=float).T
            w = max(1, len(y) // 20)  # smooth only when there are enough logs for it to help
            ax.plot(x, y, color="tab:blue", alpha=0.3 if w > 1 else 0.9, lw=1, label="train batch")
            if w > 1:
                smooth = np.convolve(y, np.ones(w) / w, mode="valid")
                ax.plot(x[w - 1:], smooth, color="tab:blue", lw=2, label=f"train, mean of {w} logs")
        vals = [(r[xkey], r[val_key]) for r in records if val_key and r.get(val_key) is not None and xkey in r]
        if vals:
            vx, vy = zip(*vals)
            ax.plot(vx, vy, "o-", color="tab:orange", ms=4, label="held-out (periodic)")
        final = (final_nelbo or {}).get(name, {}).get("bits_per_token") if val_key else None
        if final is not None:
            last_x = max(r[xkey] for r in records if xkey in r)
            ax.plot([last_x], [final], "*", color="tab:red", ms=12, label="held-out (eval.json)")
        ax.set_title(name)
        ax.set_xlabel(xkey)
        ax.set_ylabel("NELBO (bits/token)" if val_key else "training loss (nats/token)")
        ax.xaxis.set_major_formatter(_eng_formatter())
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.savefig(out, dpi=110)
    return out


def _eng_formatter():
    from matplotlib.ticker import EngFormatter

    return EngFormatter(sep="")


# ---------------------------------------------------------------- blocks

@dataclass
class Media:
    """An image or audio file shown in the report; `path` is None when the named file is absent."""
    path: Path | None
    name: str
    alt: str = ""

    @property
    def kind(self) -> str:
        return "audio" if MIME.get(Path(self.name).suffix.lower(), "").startswith("audio") else "image"


@dataclass
class Heading:
    text: str
    level: int = 2


@dataclass
class Para:
    text: str


@dataclass
class Table:
    header: list[str]
    rows: list[list]  # cells: str or Media


@dataclass
class Figure:
    media: Media
    caption: str = ""


@dataclass
class Beside:
    """An image with an ordered list next to it (the T2I grid and its prompts)."""
    media: Media
    items: list[str] = field(default_factory=list)
    caption: str = ""


def build_blocks(run: Path, cfg: dict, records: list[dict], ev: dict, loss_png: Path | None) -> list:
    blocks = _summary(run, cfg, records, ev)
    blocks += _training(records, loss_png)
    blocks += _likelihood(ev)
    if "multiple_choice" in ev:
        blocks += _multiple_choice(ev["multiple_choice"])
    if "generation" in ev:
        blocks += _generation(run, ev["generation"])
    if "judges" in ev:
        blocks += _judges(ev["judges"])
    if "reconstructions" in ev:
        blocks += _reconstructions(run, ev["reconstructions"])
    return blocks


def _params(run: Path, cfg: dict, ev: dict) -> tuple[str | None, str]:
    given = ev.get("params", cfg.get("params"))
    if isinstance(given, dict):
        return ", ".join(f"{k.replace('_', '-')} {fmt(v)}" for k, v in given.items()), "eval.json"
    if given is not None:
        return fmt(given), "eval.json"
    m = cfg.get("model")
    if not isinstance(m, dict) or not (run / "vocab.json").exists():
        return None, ""
    from trimdm.model.flops import param_counts
    from trimdm.model.transformer import TransformerArgs
    from trimdm.tokenizers.vocab import JointVocab

    vocab = JointVocab.load(run / "vocab.json")
    n = param_counts(TransformerArgs(vocab_size=vocab.size, d_model=m["d_model"], n_layers=m["n_layers"],
                                     n_heads=m["n_heads"], mlp_hidden=m.get("mlp_hidden", 0)))
    return (f"{fmt(n['non_embedding'])} non-embedding + {fmt(n['embedding'])} embedding = {fmt(n['total'])}",
            "config.json and vocab.json")


def _summary(run: Path, cfg: dict, records: list[dict], ev: dict) -> list:
    rows = [["run directory", run.resolve().name], ["recipe", _get(cfg, "recipe")]]
    m = cfg.get("model") or {}
    if m:
        rows.append(["model", f"d_model {m.get('d_model')}, {m.get('n_layers')} layers, {m.get('n_heads')} heads"])
    params, source = _params(run, cfg, ev)
    if params:
        rows.append([f"parameters (from {source})", params])
    data = cfg.get("data") or {}
    if data:
        mix = ", ".join(f"{k} {fmt(v)}" for k, v in (data.get("mix") or {}).items() if v)
        rows.append(["data", f"{data.get('dataset')}, seq_len {data.get('seq_len')}"
                     + (f", mix: {mix}" if mix else "")])
    sched = _get(cfg, "diffusion.schedule")
    if isinstance(sched, dict):
        rows.append(["masking schedule", ", ".join(f"{k} {v}" for k, v in sched.items())
                     + f"; anti-masking {_get(cfg, 'diffusion.antimask')}"])
    d = cfg.get("derived") or {}
    if d:
        rows.append(["batch × steps", f"{fmt(d.get('batch'))} rows × {fmt(d.get('steps'))} steps, "
                     f"peak lr {fmt(d.get('lr'))}, reparam {_get(cfg, 'optim.reparam')}"])
    rows.append(["tokens (planned)", fmt(_get(cfg, "train.tokens")) if _get(cfg, "train.tokens") else None])
    if records:
        last = records[-1]
        rows.append(["tokens (trained)", f"{fmt(last.get('tokens'))} at step {fmt(last.get('step'))}"])
        secs = _train_seconds(records)
        if secs:
            rate = last.get("tokens", 0) / secs
            rows.append(["training time (from logged throughput, periodic eval excluded)",
                         f"{_duration(secs)} ({fmt(round(rate))} tokens/s)"])
        mfu = [r["mfu"] for r in records if isinstance(r.get("mfu"), (int, float))]
        if mfu:
            rows.append(["mean MFU", fmt(sum(mfu) / len(mfu))])
    rows.append(["evaluated checkpoint", ev.get("checkpoint")])
    if isinstance(ev.get("seconds"), (int, float)):
        rows.append(["evaluation time", _duration(ev["seconds"])])
    rows = [[k, fmt(v)] for k, v in rows if v is not None]
    return [Heading("Summary"), Table(["", ""], rows)]


def _training(records: list[dict], loss_png: Path | None) -> list:
    if loss_png is None:
        return []
    out = [Heading("Training curves"),
           Figure(Media(loss_png, loss_png.name, "loss curves"),
                  "NELBO of each logged training batch (bits/token) against tokens; held-out NELBO overlaid.")]
    rows = []
    for m in _modalities({k for r in records for k in r}):
        train = [r[f"nelbo_{m}"] for r in records if r.get(f"nelbo_{m}") is not None]
        tail = train[-max(1, len(train) // 10):]
        val = [r for r in records if r.get(f"val_nelbo_{m}") is not None]
        rows.append([m, fmt(sum(tail) / len(tail)) if tail else "—",
                     fmt(val[-1][f"val_nelbo_{m}"]) if val else "—",
                     fmt(val[-1].get("tokens", val[-1].get("step"))) if val else "—"])
    if rows:
        out += [Para("Last logged values (training: mean over the last 10% of logs)."),
                Table(["modality", "train NELBO (bits/token)", "last periodic held-out NELBO", "at tokens"], rows)]
    return out


def _likelihood(ev: dict) -> list:
    nelbo, cond, base = ev.get("nelbo"), ev.get("conditional_nelbo"), dict(ev.get("baselines") or {})
    if not (nelbo or cond or base):
        return []
    out = [Heading("Held-out likelihood")]
    if nelbo:
        rows = []
        for mod, r in nelbo.items():
            named = [(k[len(mod) + 1:-len("_bits")], base.pop(k)) for k in list(base)
                     if k.startswith(f"{mod}_") and k.endswith("_bits")]
            bits = r.get("bits_per_token")
            cmp = "; ".join(f"{name} {fmt(v)}: " + ("below by " if bits < v else "above by ") + fmt(abs(bits - v))
                            for name, v in named) if isinstance(bits, (int, float)) else ""
            rows.append([mod, fmt(bits), fmt(r.get("perplexity_bound")), fmt(r.get("tokens")), cmp or "—"])
        note = "NELBO upper-bounds the negative log-likelihood; lower is better."
        if "tau_points" in ev:
            note += f" Estimated with {ev['tau_points']} τ points (Gauss–Legendre), seed {ev.get('seed')}"
            rows_used = ev.get("rows") or {}
            if rows_used:
                note += ", rows per task: " + ", ".join(f"{k} {fmt(v)}" for k, v in rows_used.items())
            note += "."
        out += [Para(note),
                Table(["modality", "bits/token", "perplexity bound", "tokens", "baseline (bits/token)"], rows)]
    if cond:
        rows = []
        for key, r in cond.items():
            target, _, given = key.partition("|")
            uncond = _get(nelbo or {}, f"{target}.bits_per_token")
            rows.append([target, given or "—", fmt(r.get("bits_per_token")), fmt(r.get("perplexity_bound")),
                         fmt(r.get("tokens")), fmt(uncond)])
        out += [Heading("Conditional NELBO", 3),
                Para("One modality masked, the other given clean, on paired held-out rows. The unconditional "
                     "column pools every held-out row of that modality, so the two are not on identical data."),
                Table(["target", "given", "bits/token", "perplexity bound", "tokens", "unconditional bits/token"],
                      rows)]
    if base:
        out += [Heading("Baselines", 3), Table(["baseline", "value"], [[k, fmt(v)] for k, v in _flatten(base)])]
    return out


def pairing(r: dict, metric: str, percent: bool = False) -> str:
    """The pairing test eval records beside a metric (eval/stats.py:pairing_test): the metric with
    the outputs paired with other items' references, and the one-sided permutation p-value."""
    key = "" if metric in ("accuracy", "cer") else f"{metric}_"
    shuffled, p = r.get(f"{key}shuffled"), r.get(f"{key}shuffled_p")
    if not isinstance(shuffled, (int, float)) or not isinstance(p, (int, float)) or math.isnan(p):
        return "—"
    return f"{shuffled:.1%} p={p:.2g}" if percent else f"{fmt(shuffled)}, p={p:.2g}"


def _score_row(task: str, metric: str, r: dict, higher_is_better: bool) -> list:
    value, chance, n = r.get(metric), r.get("chance"), r.get("n")
    return [task, metric, fmt(value), fmt(n), fmt(chance),
            vs_chance(value, chance, n, higher_is_better, se=difference_se(r, metric)), pairing(r, metric)]


SCORE_HEADER = ["task", "metric", "value", "n", "chance", "beats chance", "outputs shuffled, pairing p"]
# subsets of a task's items that eval.json may hold (eval/generation.py), with the label they are shown
# under: I2T on single-object images, T2S and S2T on spoken captions and on sentences apart
SUBSETS = (("single", "single-object"), ("single_heldout", "held-out single"),
           ("captions", "captions"), ("sentences", "sentences"))


def _generation(run: Path, gen: dict) -> list:
    out = [Heading("Generation")]
    rows = []
    t2i = gen.get("t2i") or {}
    for group, r in (t2i.get("groups") or {}).items():
        rows.append(_score_row(f"text→image ({group})", "accuracy", r, True))
    if "accuracy" in t2i:
        rows.append(_score_row("text→image", "accuracy", t2i, True))
    for task, label, metric, higher in (("i2t", "image→text", "accuracy", True),
                                        ("t2s", "text→speech", "cer", False), ("s2t", "speech→text", "cer", False)):
        if isinstance(gen.get(task), dict) and metric in gen[task]:
            rows.append(_score_row(label, metric, gen[task], higher))
            for key, sub in SUBSETS:
                if isinstance(gen[task].get(key), dict):
                    rows.append(_score_row(f"{label} ({sub})", metric, gen[task][key], higher))
    for key, label in (("fid_image", "FID (image)"), ("fad_audio", "FAD (audio)")):
        if key in gen:
            rows.append([label, key.split("_")[0].upper(), fmt(gen[key]), "—", "—", "— (lower is better)", "—"])
    if rows:
        out += [Para("Accuracies are judged by the offline judges; \"beats chance\" for an accuracy needs a one-sided "
                     "exact binomial test p < 0.05. CER is the character error rate (lower is better); "
                     "\"beats chance\" for it needs a one-sided z-test p < 0.05 with the standard errors of the "
                     "CER and of its chance level over utterances. The chance levels pair real media or text with "
                     "another item's reference, averaged over every such pairing. Speech rows are also given "
                     "on spoken captions and on sentences apart. The last column asks whether the outputs depend on their inputs: "
                     "the metric of the model's own outputs paired with other items' references, and the "
                     "one-sided permutation p-value of the true pairing against 999 random ones."),
                Table(SCORE_HEADER, rows)]
    out += _error_kinds(gen)
    if isinstance(gen.get("text"), dict):
        out += _text_judge(gen["text"])
    settings = gen.get("settings")
    if isinstance(settings, dict) and settings:
        srows = [[k, ", ".join(f"{a}={fmt(b)}" for a, b in _flatten(v))] if isinstance(v, dict) else [k, fmt(v)]
                 for k, v in settings.items()]
        out += [Heading("Sampling settings", 3), Table(["task", "settings"], srows)]
    if t2i:
        out += _t2i_samples(run, t2i)
    for task, title, cols in (
            ("i2t", "Image → text", [("png", "image"), ("caption", "caption"), ("reference", "reference"),
                                     ("correct", "correct")]),
            ("t2s", "Text → speech", [("prompt", "prompt"), ("wav", "audio"), ("heard", "judge heard")]),
            ("s2t", "Speech → text", [("wav", "audio"), ("transcript", "transcript"), ("reference", "reference")])):
        samples = (gen.get(task) or {}).get("samples") if isinstance(gen.get(task), dict) else None
        if samples:
            out += [Heading(title, 3)] + _sample_table(run, samples, cols)
    return out if len(out) > 1 else []


def _pm(r: dict, key: str) -> str:
    """A figure with its standard error, as `value ± se`."""
    se = r.get(f"{key}_se")
    return fmt(r.get(key)) + (f" ± {fmt(se)}" if isinstance(se, (int, float)) and math.isfinite(se) else "")


def _text_judge(text: dict) -> list:
    """Free text against held-out text of the same length, by the text judge (eval/generation.py)."""
    judge = text.get("judge") or {}
    rows = [[label, fmt(r.get("n")), fmt(r.get("words_per_text")), _pm(r, "perplexity"), _pm(r, "bits_per_word"),
             _pm(r, "unigram_entropy"), fmt(r.get("unseen_word_rate"))]
            for label, r in (("generated, no prompt", text.get("samples")), ("held-out KJV, same length",
                                                                              text.get("reference")))
            if isinstance(r, dict)]
    if not rows:
        return []
    settings = text.get("settings") or {}
    out = [Heading("Free text", 3),
           Para(f"Does the text read as text? Judged by a {judge.get('model', 'word n-gram')} fitted on the "
                f"{judge.get('corpus', 'training text')} ({fmt(judge.get('train_words'))} words, vocabulary "
                f"{fmt(judge.get('vocabulary'))}): the perplexity of all texts' words (lower reads more like the "
                "corpus; held-out text of the corpus is the mark to reach) and each text's unigram entropy "
                "(bits; far below the held-out text's: repetition). Generated texts have no prompt and "
                f"{fmt(settings.get('gen_len'))} tokens; the held-out ones are the first as many tokens of each "
                "held-out chapter. ± one standard error over texts. Unseen words are words the judge never saw "
                "in training (mostly non-words), each costing 21 to 25 bits. Sampled with "
                + ", ".join(f"{k} {fmt(v)}" for k, v in settings.items() if k != "gen_len") + "."),
           Table(["text", "n", "words/text", "perplexity", "bits/word", "unigram entropy (bits)", "unseen words"],
                 rows)]
    items = [i for i in text.get("items") or [] if isinstance(i, dict)][:MAX_IMAGES // 2]
    if items:
        out += [Table(["generated text", "perplexity", "unigram entropy (bits)"],
                      [[fmt(i.get("text")), fmt(i.get("perplexity")), fmt(i.get("unigram_entropy"))] for i in items])]
    return out


def _error_kinds(gen: dict) -> list:
    """Per task (and T2I group), how many of its items have each kind of error."""
    scored = [(f"T2I {g}", r) for g, r in ((gen.get("t2i") or {}).get("groups") or {}).items()]
    scored += [("I2T", gen.get("i2t"))]
    scored = [(label, r) for label, r in scored if isinstance(r, dict) and isinstance(r.get("errors"), dict)]
    if not scored:
        return []
    kinds = list(dict.fromkeys(k for _, r in scored for k in r["errors"]))
    rows = [[label, fmt(r.get("n"))] + [fmt(r["errors"].get(k, 0)) for k in kinds] for label, r in scored]
    return [Heading("What the wrong ones got wrong", 3),
            Para("Items with at least one error of each kind (an item can count under several kinds; the "
                 "judge reads generated images, the true scene is used for captions)."),
            Table(["task", "n"] + kinds, rows)]


def _mark(correct) -> str:
    return "✓" if correct is True else "✗" if correct is False else ""


def _t2i_samples(run: Path, t2i: dict) -> list:
    samples = t2i.get("samples") or []
    out = [Heading("Text → image", 3)]
    if t2i.get("grid"):
        items = [f"{s.get('prompt', '')} {_mark(s.get('correct'))}".strip() for s in samples]
        out.append(Beside(Media(_find(run, t2i["grid"]), t2i["grid"], "text-to-image samples"), items,
                          "Prompts in the order of the samples in the grid, with the judge's verdict."))
    elif samples:
        out += _sample_table(run, samples, [("png", "image"), ("prompt", "prompt"), ("correct", "correct")])
    return out if len(out) > 1 else []


def _sample_table(run: Path, samples: list[dict], cols: list[tuple[str, str]]) -> list:
    """A table of samples; file columns become media cells. Extra scalar keys found in the samples are
    appended as columns, so a field added by the evaluator shows up without a change here."""
    known = {k for k, _ in cols}
    extra = [k for k in dict.fromkeys(k for s in samples for k in s) if k not in known
             and all(not isinstance(s.get(k), (dict, list)) for s in samples)]
    cols = cols + [(k, k) for k in extra]
    has_audio = any(Path(str(s.get(k, ""))).suffix.lower() in (".wav", ".flac", ".mp3", ".ogg")
                    for s in samples for k, _ in cols)
    cap = MAX_CLIPS if has_audio else MAX_IMAGES
    rows = []
    for s in samples[:cap]:
        row = []
        for k, _ in cols:
            v = s.get(k)
            if k in ("png", "wav", "original", "codec") and isinstance(v, str):
                row.append(Media(_find(run, v), v, s.get("prompt") or s.get("text") or v))
            elif k == "correct":
                row.append(_mark(v))
            else:
                row.append(fmt(v))
        rows.append(row)
    out = [Table([label for _, label in cols], rows)]
    if len(samples) > cap:
        out.append(Para(f"Showing {cap} of {len(samples)} samples."))
    return out


def _judges(judges: dict) -> list:
    rows = [[name, k, fmt(v)] for name, d in judges.items() if isinstance(d, dict) for k, v in _flatten(d)]
    if not rows:
        return []
    return [Heading("Judges"),
            Para("Accuracy of the offline judges that score generation, and their ceilings on tokenizer "
                 "reconstructions (about the best a generator can score through the tokenizers)."),
            Table(["judge", "metric", "value"], rows)]


def _reconstructions(run: Path, rec: dict) -> list:
    out = [Heading("Tokenizer reconstructions")]
    directory = _find(run, rec.get("directory"))
    base = directory if directory is not None else run

    def media(name):
        return Media(_find(base, name) if directory is not None else None, name, name)

    if rec.get("image_grid"):
        out.append(Figure(media(rec["image_grid"]),
                          "Held-out images (top) and their tokenizer reconstructions (bottom)."))
    metric_rows = [[kind, k, fmt(v)] for kind in ("image", "audio")
                   for k, v in _flatten(rec.get(f"{kind}_metrics") or {})]
    if metric_rows:
        out.append(Table(["tokenizer", "metric", "value"], metric_rows))
    utts = rec.get("utterances") or []
    if utts:
        cap = MAX_CLIPS // 2  # two clips per utterance
        rows = [[fmt(u.get("text")), media(u["original"]) if u.get("original") else "—",
                 media(u["codec"]) if u.get("codec") else "—"] for u in utts[:cap]]
        out.append(Table(["text", "original", "codec"], rows))
        if len(utts) > cap:
            out.append(Para(f"Showing {cap} of {len(utts)} utterances."))
    return out if len(out) > 1 else []


def _multiple_choice(mc) -> list:
    items = mc if isinstance(mc, list) else [mc]
    rows = [[fmt(Path(str(r.get("file", "—"))).name), fmt(r.get("questions")), fmt(r.get("accuracy")),
             fmt(r.get("chance")), vs_chance(r.get("accuracy"), r.get("chance"), r.get("questions"))]
            for r in items if isinstance(r, dict)]
    if not rows:
        return []
    return [Heading("Multiple choice"),
            Para("\"Beats chance\" needs a one-sided exact binomial test p < 0.05 over the questions."),
            Table(["file", "questions", "accuracy", "chance", "beats chance"], rows)]


# ---------------------------------------------------------------- Markdown

def _md_cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("<", "\\<").replace("\n", " ")


def _md_media(m: Media, run: Path) -> str:
    if m.path is None:
        return f"*(missing file: {_md_cell(m.name)})*"
    rel = Path(os.path.relpath(m.path, run)).as_posix()
    target = f"<{rel}>" if " " in rel else rel
    if m.kind == "audio":
        return f"[{_md_cell(Path(m.name).name)}]({target})"
    return f"![{_md_cell(m.alt)}]({target})"


def render_markdown(title: str, blocks: list, run: Path) -> str:
    lines = [f"# {title}", ""]
    for b in blocks:
        if isinstance(b, Heading):
            lines += ["#" * b.level + " " + b.text, ""]
        elif isinstance(b, Para):
            lines += [b.text, ""]
        elif isinstance(b, Table):
            cell = lambda c: _md_media(c, run) if isinstance(c, Media) else _md_cell(c)  # noqa: E731
            lines.append("| " + " | ".join(_md_cell(h) for h in b.header) + " |")
            lines.append("|" + "---|" * len(b.header))
            lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in b.rows]
            lines.append("")
        elif isinstance(b, Figure):
            lines += [_md_media(b.media, run), ""] + ([f"*{b.caption}*", ""] if b.caption else [])
        elif isinstance(b, Beside):
            lines += [_md_media(b.media, run), ""] + ([f"*{b.caption}*", ""] if b.caption else [])
            lines += [f"{i}. {_md_cell(t)}" for i, t in enumerate(b.items, 1)] + [""]
    return "\n".join(lines)


# ---------------------------------------------------------------- HTML

CSS = """
body { font-family: system-ui, sans-serif; max-width: 1200px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: .6em 0 1em; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: left; vertical-align: middle; }
th { background: #f3f3f3; }
img { image-rendering: pixelated; max-width: 100%; }
figure { margin: .5em 0; } figcaption { color: #555; font-size: .9em; }
.beside { display: flex; gap: 1.5em; align-items: flex-start; flex-wrap: wrap; }
.beside ol { margin: 0; columns: 2; font-size: .9em; }
.missing { color: #a00; font-style: italic; }
audio { height: 32px; }
"""


def _html_media(m: Media) -> str:
    if m.path is None:
        return f'<span class="missing">missing file: {html.escape(m.name)}</span>'
    size = m.path.stat().st_size
    if size > MAX_EMBED_BYTES:
        return f'<span class="missing">not embedded ({size / 2**20:.1f} MiB): {html.escape(m.name)}</span>'
    mime = MIME.get(m.path.suffix.lower(), "application/octet-stream")
    uri = f"data:{mime};base64," + base64.b64encode(m.path.read_bytes()).decode("ascii")
    if m.kind == "audio":
        return f'<audio controls preload="none" src="{uri}" title="{html.escape(m.name)}"></audio>'
    width = _display_width(m.path)
    w = f' width="{width}"' if width else ""
    return f'<img src="{uri}" alt="{html.escape(m.alt)}"{w}>'


def _display_width(path: Path) -> int | None:
    """Small images (32-pixel samples) are enlarged by a whole factor so their pixels stay square."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            w = im.size[0]
    except OSError:
        return None
    return w * max(1, min(4, 768 // max(w, 1)))


def render_html(title: str, blocks: list) -> str:
    esc = html.escape
    body = [f"<h1>{esc(title)}</h1>"]
    for b in blocks:
        if isinstance(b, Heading):
            body.append(f"<h{b.level}>{esc(b.text)}</h{b.level}>")
        elif isinstance(b, Para):
            body.append(f"<p>{esc(b.text)}</p>")
        elif isinstance(b, Table):
            cell = lambda c: _html_media(c) if isinstance(c, Media) else esc(c)  # noqa: E731
            head = "".join(f"<th>{esc(h)}</th>" for h in b.header) if any(b.header) else ""
            rows = "".join("<tr>" + "".join(f"<td>{cell(c)}</td>" for c in row) + "</tr>" for row in b.rows)
            head = f"<thead><tr>{head}</tr></thead>" if head else ""
            body.append(f"<table>{head}<tbody>{rows}</tbody></table>")
        elif isinstance(b, Figure):
            cap = f"<figcaption>{esc(b.caption)}</figcaption>" if b.caption else ""
            body.append(f"<figure>{_html_media(b.media)}{cap}</figure>")
        elif isinstance(b, Beside):
            cap = f"<figcaption>{esc(b.caption)}</figcaption>" if b.caption else ""
            items = "".join(f"<li>{esc(t)}</li>" for t in b.items)
            body.append(f'<div class="beside"><figure>{_html_media(b.media)}{cap}</figure><ol>{items}</ol></div>')
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{esc(title)}</title><style>{CSS}</style></head>\n<body>\n"
            + "\n".join(body) + "\n</body></html>\n")
