"""`trimdm export`: a run's checkpoint as a self-describing model folder (layout: model_folder.py).

Owns writing the folder: the fp32 weights (no optimizer state; the run's EMA of its weights where it kept
one, `train.ema`, as sampling and evaluation of the run use it), the resolved config and vocabulary, the
sampling defaults, the run's tokenizers copied, its eval.json where that evaluates the exported
checkpoint, the manifest of sizes and SHA-256s, and the model card (README.md, Hugging Face style: YAML
front matter, then architecture, data, training, evaluation, sampling, use). Everything is written into
a temporary sibling folder, fsynced, and renamed into place; an existing non-empty folder is never
overwritten. Nothing is uploaded and huggingface_hub is not needed. Reading is model_folder.py's.
"""
from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

from trimdm import __version__
from trimdm.config import Config
from trimdm.fileio import fsync_file, sha256_file
from trimdm.tokenizers.vocab import JointVocab
from trimdm.train.checkpoint import load_checkpoint
from trimdm.train.model_folder import (CARD, CONFIG, FORMAT, FORMAT_VERSION, MEDIA_TOKENIZERS, SAMPLING,
                                       TEXT_TOKENIZER, WEIGHTS, is_model_folder)

EVAL = "eval.json"
UNLISTED = (CONFIG, CARD)  # the manifest lives in config.json; the card may be edited


def export_run(run: str | Path, out: str | Path, log=print) -> Path:
    """Write the model folder `out` from a run directory (its latest checkpoint) or a checkpoint."""
    run, out = Path(run), Path(out)
    if is_model_folder(run):
        raise ValueError(f"--run {run}: a model folder already; export reads a run directory or a checkpoint")
    _check_free(out)
    ckpt = load_checkpoint(run, with_optimizer=False)
    home = ckpt["path"].parent.parent
    ev = matching_eval(home / EVAL, ckpt["path"], log)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        write_folder(tmp, ckpt, home, ev, name=out.name)
        _check_free(out)  # nothing appeared there meanwhile
        os.replace(tmp, out)  # an empty folder is replaced whole
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(f"export: {ckpt['path']} -> {out} ({len(list(out.rglob('*')))} entries)")
    return out


def _check_free(out: Path) -> None:
    if out.exists() and not (out.is_dir() and not any(out.iterdir())):
        raise ValueError(f"--out {out}: exists and is not an empty folder; an export never overwrites")


def matching_eval(path: Path, checkpoint: Path, log=print) -> dict | None:
    """RUN/eval.json when it evaluates `checkpoint` (a later or earlier one would misdescribe the
    export, and is left out with a note); None when the run was not evaluated."""
    if not path.exists():
        return None
    try:
        ev = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ValueError(f"{path}: unreadable ({e}); evaluate the run again or move the file aside") from None
    if not isinstance(ev, dict):
        raise ValueError(f"{path}: expected a JSON object")
    evaluated = Path(str(ev.get("checkpoint", ""))).name
    if evaluated != checkpoint.name:
        log(f"export: {path} evaluates {evaluated or 'an unnamed checkpoint'}, not {checkpoint.name}; left out")
        return {"other_checkpoint": evaluated}
    return ev


def write_folder(tmp: Path, ckpt: dict, home: Path, ev: dict | None, name: str) -> None:
    """Every file of the folder into `tmp` (created here), each fsynced."""
    cfg = Config.from_dict(ckpt["config"]).derive()  # today's terms, validated
    vocab = JointVocab.from_dict(ckpt["vocab"])
    # a run that kept an EMA of its weights is sampled and evaluated with it (run.py): that is the model
    weights = "ema" if ckpt.get("ema") is not None else "model"
    tensors = ckpt["ema"] if weights == "ema" else ckpt["model"]
    not_fp32 = [k for k, v in tensors.items() if v.dtype != torch.float32]
    if not_fp32:
        raise ValueError(f"{ckpt['path'] / WEIGHTS}: {not_fp32[:3]} are not fp32 (a checkpoint keeps fp32 weights)")
    tmp.mkdir()
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp / WEIGHTS), metadata={"format": "pt"})
    _copy_tokenizers(home, tmp, vocab)
    config = cfg.to_dict()
    sample = config.pop("sample")
    _write_json(tmp / SAMPLING, {"format": "trimdm-sampling", "config_version": cfg.version, "sample": sample})
    if ev is not None and "other_checkpoint" not in ev:
        shutil.copyfile(home / EVAL, tmp / EVAL)
    files = manifest(tmp)
    trained = {"step": ckpt["step"], "tokens": ckpt["trainer"].get("tokens"),
               "skipped_steps": ckpt["trainer"].get("skipped_steps"), "run": home.resolve().name,
               "checkpoint": ckpt["path"].name, "weights": weights}
    meta = {"format": FORMAT, "version": FORMAT_VERSION, "library_name": "trimdm", "trimdm_version": __version__,
            "trimdm_config": config, "vocab": ckpt["vocab"], "trained": trained, "files": files}
    _write_json(tmp / CONFIG, meta)
    (tmp / CARD).write_text(model_card(name, cfg, vocab, tensors, trained, ev, files), encoding="utf-8")
    for p in [*tmp.rglob("*"), tmp]:
        if p.is_file():
            fsync_file(p)
        else:
            _fsync_dir(p)


def _copy_tokenizers(home: Path, tmp: Path, vocab: JointVocab) -> None:
    """The run's text tokenizer folder and the media tokenizer folders its vocabulary uses, whole (a
    tokenizer folder also holds the run's length rules and caption lengths, which sampling reads)."""
    folders = [TEXT_TOKENIZER] + [f"{MEDIA_TOKENIZERS}/{m}" for m in ("image", "audio") if vocab.has(m)]
    for rel in folders:
        if not (home / rel).is_dir():
            raise ValueError(f"{home / rel}: the run's tokenizer folder is missing")
        shutil.copytree(home / rel, tmp / rel)


def manifest(folder: Path) -> dict:
    """{relative path: {bytes, sha256}} of every file under `folder` but config.json and README.md."""
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    return {p.relative_to(folder).as_posix(): {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
            for p in files if p.relative_to(folder).as_posix() not in UNLISTED}


def _write_json(path: Path, obj: dict) -> None:
    path.write_text(json.dumps(obj, indent=1) + "\n")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ---------------------------------------------------------------- the model card

def model_card(name: str, cfg: Config, vocab: JointVocab, tensors: dict, trained: dict, ev: dict | None,
               files: dict) -> str:
    media = [m for m in ("image", "audio") if vocab.has(m)]
    tags = ["trimdm", "masked-diffusion", "discrete-diffusion", "text-generation"]
    tags += ["text-to-image", "image-to-text"] if "image" in media else []
    tags += ["text-to-speech", "automatic-speech-recognition"] if "audio" in media else []
    front = ["---", "library_name: trimdm", f"pipeline_tag: {'any-to-any' if media else 'text-generation'}",
             "tags:", *(f"- {t}" for t in tags), "---", ""]
    modalities = ", ".join(["text", *media])
    lines = front + [f"# {name}", "",
                     f"A masked diffusion model trained with trimdm (recipe "
                     f"`{cfg.recipe or 'custom'}`), exported from run `{trained['run']}` at checkpoint "
                     f"`{trained['checkpoint']}`: one bidirectional transformer over a single vocabulary of "
                     f"{modalities} tokens, decoded by confidence-based parallel unmasking.", ""]
    lines += _architecture(cfg, vocab, tensors)
    lines += _data(cfg)
    lines += _training(cfg, trained)
    lines += _evaluation(ev)
    lines += _sampling(cfg, media)
    lines += _use(name, media)
    lines += ["## Files", "", "| file | bytes |", "|---|---:|"]
    lines += [f"| `{f}` | {rec['bytes']:,} |" for f, rec in files.items()]
    lines += ["", f"`{CONFIG}` lists the size and SHA-256 of each of these; loading checks every one, and "
              f"every weight's shape against the config. `{CARD}` (this card) is not checked.", ""]
    return "\n".join(lines)


def _table(header: list[str], rows: list[list], numbers: bool = True) -> list[str]:
    """A Markdown table; `numbers`: every column but the first right-aligned."""
    align = ["---"] + ["---:" if numbers else "---"] * (len(header) - 1)
    return [f"| {' | '.join(header)} |", f"|{'|'.join(align)}|",
            *(f"| {' | '.join(str(c) for c in r)} |" for r in rows), ""]


def _architecture(cfg: Config, vocab: JointVocab, tensors: dict) -> list[str]:
    total = sum(t.numel() for t in tensors.values())
    embedding = sum(t.numel() for k, t in tensors.items() if k.split(".")[0] in ("embed", "unembed"))
    m = cfg.model
    ids = ", ".join(f"{name} {size:,}" for name, size in vocab.segments())
    rows = [["d_model", m.d_model], ["layers", m.n_layers], ["heads", m.n_heads],
            ["MLP hidden (SwiGLU)", m.mlp_hidden or "8/3·d_model, to a multiple of 64"],
            ["sequence length", cfg.data.seq_len], ["vocabulary", f"{vocab.size:,} ids ({ids})"],
            ["parameterization", m.parameterization], ["parameters", f"{total:,}"],
            ["parameters without embeddings", f"{total - embedding:,}"],
            ["embedding parameters (input and output tables, untied)", f"{embedding:,}"]]
    return ["## Architecture", "", *_table(["", ""], rows, numbers=False)]


def _data(cfg: Config) -> list[str]:
    d = cfg.data
    rows = [["recipe", cfg.recipe or "—"], ["dataset", d.dataset]]
    if d.corpus:
        rows.append(["corpus", f"`{d.corpus}`"])
    rows.append(["mix (rows)", f"text {d.mix.text}, image-text {d.mix.image_text}, audio-text {d.mix.audio_text}"])
    rows.append(["text vocabulary (BPE)", d.text_vocab])
    if d.max_docs:
        rows.append(["documents", f"the first {d.max_docs:,}"])
    if d.dataset == "tinyworld":
        t = d.tinyworld
        rows.append(["tinyworld", f"{t.scenes:,} scenes ({t.eval_scenes:,} held out), {t.utterances:,} utterances "
                     f"({t.eval_utterances:,} held out), {t.image_size}×{t.image_size} images, seed {t.seed}"])
    return ["## Data", "", "As the run's config records it (`trimdm_config.data` in config.json).", "",
            *_table(["", ""], rows, numbers=False)]


def _training(cfg: Config, trained: dict) -> list[str]:
    t, dv = cfg.train, cfg.derived
    tokens = trained.get("tokens")
    rows = [["steps", f"{trained['step']:,} of {dv.steps:,} planned"],
            ["tokens", f"{tokens:,} of {t.tokens:,} planned" if isinstance(tokens, int) else f"{t.tokens:,} planned"],
            ["batch", f"{dv.batch} rows × {cfg.data.seq_len} tokens"],
            ["peak learning rate", f"{dv.lr:.3g} ({cfg.optim.lr_schedule})"],
            ["masking schedule", ", ".join(f"{k} {v}" for k, v in vars(cfg.diffusion.schedule).items())],
            ["anti-masking", cfg.diffusion.antimask], ["precision", t.dtype], ["seed", t.seed]]
    if trained.get("weights") == "ema":
        rows.append(["weights", f"exponential moving average of the training weights (decay {t.ema}, "
                                "updated after every optimizer step); the last step's own weights are not exported"])
    if trained.get("skipped_steps"):
        rows.append(["skipped steps (non-finite)", trained["skipped_steps"]])
    return ["## Training", "", *_table(["", ""], rows, numbers=False)]


def _num(x, percent: bool = False) -> str:
    if isinstance(x, bool) or not isinstance(x, (int, float)) or (isinstance(x, float) and not math.isfinite(x)):
        return "—"
    if percent:
        return f"{x:.1%}"
    return f"{x:,}" if isinstance(x, int) else f"{x:.3f}"


def eval_rows(ev: dict) -> list[list[str]]:
    """The headline numbers of an eval.json (eval/run.py writes it): [metric, value, chance or
    baseline, n]. Every section is optional."""
    def section(key, within=ev):
        return within.get(key) if isinstance(within.get(key), dict) else {}

    rows = []
    unigram = section("baselines").get("text_unigram_bits")
    for m, r in section("nelbo").items():
        rows.append([f"held-out NELBO, {m} (bits/token)", _num(r.get("bits_per_token")),
                     f"unigram entropy {_num(unigram)}" if m == "text" and unigram is not None else "",
                     _num(r.get("tokens"))])
    for key, r in section("conditional_nelbo").items():
        target, _, given = key.partition("|")  # "image|text": image given text ("|" would split the table)
        rows.append([f"held-out NELBO, {target} given {given} (bits/token)", _num(r.get("bits_per_token")), "",
                     _num(r.get("tokens"))])
    gen = section("generation")
    scores = [(f"T2I all attributes right, {g.replace('_', ' ')}", r, "accuracy")
              for g, r in section("groups", section("t2i", gen)).items()]
    scores += [("I2T caption all right", section("i2t", gen), "accuracy"),
               ("T2S character error rate", section("t2s", gen), "cer"),
               ("S2T character error rate", section("s2t", gen), "cer")]
    rows += [[label, _num(r.get(metric), True), f"chance {_num(r.get('chance'), True)}", _num(r.get("n"))]
             for label, r, metric in scores if isinstance(r, dict) and metric in r]
    for key, label in (("fid_image", "Fréchet distance, images (judge features)"),
                       ("fad_audio", "Fréchet distance, speech (judge features)")):
        if key in gen:
            rows.append([label, _num(gen[key]), "", ""])
    mc = ev.get("multiple_choice")
    for r in [mc] if isinstance(mc, dict) else mc if isinstance(mc, list) else []:
        if isinstance(r, dict):
            rows.append([f"multiple choice, {Path(str(r.get('file', ''))).name}", _num(r.get("accuracy"), True),
                         f"chance {_num(r.get('chance'), True)}", _num(r.get("questions"))])
    return rows


def _evaluation(ev: dict | None) -> list[str]:
    out = ["## Evaluation", ""]
    if ev is None:
        return out + ["This model was not evaluated: the run had no eval.json when it was exported.", ""]
    if "other_checkpoint" in ev:
        return out + [f"Not shown: the run's eval.json evaluates checkpoint `{ev['other_checkpoint'] or '?'}`, not "
                      "the exported one (evaluate the run again, then export).", ""]
    rows = eval_rows(ev)
    if not rows:
        return out + ["The run's eval.json (copied as `eval.json`) holds no headline numbers.", ""]
    settings = [f"{k} {ev[k]}" for k in ("tau_points", "seed") if k in ev]
    note = "From the run's eval.json (copied as `eval.json`, with every item and setting) on held-out data"
    note += f" ({', '.join(settings)})" if settings else ""
    return out + [note + ". NELBO upper-bounds the negative log-likelihood; lower is better.", "",
                  *_table(["metric", "value", "chance / baseline", "n"], rows)]


def _sampling(cfg: Config, media: list[str]) -> list[str]:
    s = cfg.sample
    rows = [[m, r.steps, r.schedule, r.temperature, r.guidance, r.remasking, r.order, r.block]
            for m, r in ((m, s[m]) for m in ["text", *media])]
    return ["## Sampling defaults", "",
            f"Held in `{SAMPLING}` and used by every command that loads this folder; `sample.*` overrides "
            "change them per call.", "",
            *_table(["modality", "steps", "schedule", "temperature", "guidance", "remasking", "order", "block"], rows,
                    numbers=False),
            f"Also: top_k {s.top_k}, top_p {s.top_p}, rerank {s.rerank}, refine {s.refine}, text length "
            f"{s.gen_len}, seed {s.seed}.", ""]


def _use(name: str, media: list[str]) -> list[str]:
    calls = [f'trimdm generate --run {name} --task text --prompt "In the beginning" --out samples/text']
    if "image" in media:
        calls.append(f'trimdm generate --run {name} --task t2i --prompt "a red circle" --out samples/t2i')
    if "audio" in media:
        calls.append(f'trimdm generate --run {name} --task t2s --prompt "a blue square" --out samples/t2s')
    calls.append(f"trimdm eval --run {name} --out evals/{name}")
    return ["## Use", "", "The folder loads wherever trimdm takes a run (`--run`, `train.init=`); trimdm never "
            "writes into it, so commands on it take `--out`.", "", "```bash", *calls, "```", ""]
