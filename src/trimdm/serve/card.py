"""What the server tells about its run: the card (`GET /api/run`) and example inputs (`GET /api/examples`).

Owns: the card (a config summary, the vocabulary, the media sizes, the sampling table that the page's
forms start from, the tasks the run can do, and RUN/eval.json's figures without their per-item lists
when it evaluates the checkpoint served: the check is `trimdm export`'s, train/export.py), and the
example inputs: the validation images and utterances of the run's tinyworld data set when it is
on this machine (DATA_ROOT/tinyworld-HASH/raw/{images,speech}_val, DATA_ROOT as the run's config says,
relative to the server's working directory). Every path here comes from the run's own config; none
comes from a request, which only picks an example by its index. Does not own HTTP (app.py).
"""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

from trimdm.data.tinyworld.dataset import tinyworld_root
from trimdm.model.flops import param_counts
from trimdm.train.export import EVAL, matching_eval
from trimdm.train.model_folder import read_folder_config

MEDIA_TYPES = {".png": "image/png", ".wav": "audio/wav", ".flac": "audio/flac"}
EXAMPLE_FOLDERS = {"image": ("images_val", "captions.jsonl", "caption"),
                   "audio": ("speech_val", "transcripts.jsonl", "text")}


def run_tasks(vocab) -> list[str]:
    """The tasks a run can do: text always; the image and speech tasks where it has those tokenizers."""
    tasks = ["text"]
    tasks += ["t2i", "i2t"] if vocab.has("image") else []
    tasks += ["t2s", "s2t"] if vocab.has("audio") else []
    return tasks + ["infill"]


def _figures(value):
    """A JSON value without its lists (per-item records, sample paths): the figures only."""
    if isinstance(value, dict):
        kept = {k: _figures(v) for k, v in value.items() if not isinstance(v, list)}
        return {k: v for k, v in kept.items() if v != {}}
    return value


def served_checkpoint(loaded) -> Path:
    """The checkpoint whose evaluation describes the model served: the one loaded, or for a model folder
    the run's checkpoint it was exported from (its config.json's `trained.checkpoint`; the folder's
    eval.json is the run's, copied, and names that checkpoint)."""
    if loaded.model_folder:
        return Path(str(read_folder_config(Path(loaded.home))["trained"].get("checkpoint", "")))
    return Path(loaded.checkpoint)


def eval_figures(loaded) -> dict | None:
    """The figures of HOME/eval.json when it evaluates the checkpoint served; {"other_checkpoint": NAME}
    when it evaluates another (its figures would misdescribe this model: a run evaluated at an earlier
    step, or served from another checkpoint than its latest); None when there is none or it is
    unreadable."""
    checkpoint = served_checkpoint(loaded)
    if not checkpoint.name:  # a folder that does not say what it was exported from: nothing to match
        return None
    try:
        ev = matching_eval(Path(loaded.home) / EVAL, checkpoint, log=lambda *a: None)
    except ValueError:
        return None
    return None if ev is None else _figures(ev)


def run_card(loaded, limits) -> dict:
    cfg, vocab = loaded.cfg, loaded.vocab
    run_dir = Path(loaded.home)  # the run directory, or the model folder (which carries eval.json too)
    card = {
        "run": run_dir.name,
        "checkpoint": Path(loaded.checkpoint).name,
        "config": {"recipe": cfg.recipe, "dataset": cfg.data.dataset, "seq_len": cfg.data.seq_len,
                   "d_model": cfg.model.d_model, "n_layers": cfg.model.n_layers, "n_heads": cfg.model.n_heads,
                   "params": sum(p.numel() for p in loaded.model.parameters()),
                   "non_embedding_params": param_counts(loaded.model.args)["non_embedding"],
                   "train_tokens": cfg.train.tokens, "dtype": cfg.train.dtype, "device": str(loaded.device)},
        "vocab": vocab.to_dict(),
        "tasks": run_tasks(vocab),
        "sampling": dataclasses.asdict(cfg.sample),
        "limits": dataclasses.asdict(limits),
        "eval": eval_figures(loaded),
    }
    media = loaded.media_tokenizers
    if "image" in media:
        tokens = int(media["image"].rate)
        fit = run_dir / "tokenizers" / "image" / "fit.json"  # how inputs are fitted (as in Tasks)
        card["image"] = {"size": media["image"].image_size, "grid": math.isqrt(tokens), "tokens": tokens,
                         "fit": json.loads(fit.read_text())["fit"] if fit.exists() else "crop"}
    if "audio" in media:
        card["audio"] = {"sample_rate": media["audio"].sample_rate,
                         "frames_per_second": media["audio"].frames_per_second, "levels": vocab.audio_levels}
    return card


def example_index(cfg, modality: str) -> list[tuple[Path, str]]:
    """(file, caption or transcript) of each validation example of a modality; [] when the run's data set
    is not a tinyworld one or is not on this machine."""
    if cfg.data.dataset != "tinyworld" or modality not in EXAMPLE_FOLDERS:
        return []
    sub, index, key = EXAMPLE_FOLDERS[modality]
    folder = tinyworld_root(cfg.data) / "raw" / sub
    try:
        lines = (folder / index).read_text().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        try:
            record = json.loads(line)
            path = (folder / record["file"]).resolve()
        except (json.JSONDecodeError, KeyError, TypeError):
            continue
        # the index is the data set's own, but a file outside its folder is never served
        if path.is_relative_to(folder.resolve()) and path.suffix.lower() in MEDIA_TYPES:
            out.append((path, str(record.get(key, ""))))
    return out
