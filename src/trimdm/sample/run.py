"""`trimdm generate`: run a task on a trained run and write its outputs, each with a JSON sidecar.

    trimdm generate --run DIR --task text   --prompt "And God said" --n 4
    trimdm generate --run DIR --task t2i    --prompt "a red circle in the centre" --n 8   -> PNGs + grid.png
    trimdm generate --run DIR --task t2s    --prompt "a blue square on the left"          -> WAVs
    trimdm generate --run DIR --task i2t    --input scene.png                             -> captions
    trimdm generate --run DIR --task s2t    --input speech.wav                            -> transcripts
    trimdm generate --run DIR --task infill --prompt "In the beginning God created" --span 17:28
    trimdm generate --run DIR --task infill --input scene.png --prompt "caption" --span 0:32
    trimdm generate --from DIR/samples/generate/t2i-seed0/000.json                    (reproduce one)

Infill spans: characters of the prompt for text (the regenerated piece keeps its token count), token
indices of the image's raster (an 8×8 grid: 0:32 is the top half), seconds for audio. Media infill
keeps the prompt as the clean caption or transcript; without one, the text span is generated too.

Outputs go to `--out` (default RUN/samples/generate/TASK-seedS; a model folder written by `trimdm export`
is never written into, so generating from one needs `--out`): `000.png|wav|txt` and `000.json`, the
sidecar with the task, prompt, input (path and SHA-256), span, the resolved sampling settings and the
config version they are written in, seed, n, the sample's index and the checkpoint. `--from SIDECAR`
rebuilds the same call and regenerates the same bits (the whole batch is decoded again, since samples
share one random stream); the settings of a sidecar of an earlier version are read in its terms
(`config.upgrade_sample`: its "cosine" is today's "reverse-cosine").
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import soundfile as sf
from PIL import Image

from trimdm.config import CONFIG_VERSION, SampleConfig, config_version, section_from_dict, upgrade_sample
from trimdm.data.media import fit_image, read_audio, read_image
from trimdm.fileio import sha256_file
from trimdm.sample.tasks import TASKS, Tasks
from trimdm.tokenizers.image import save_image_grid
from trimdm.train.run import load_run


def read_image_input(path: str | Path, size: int, fit: str = "crop") -> np.ndarray:
    """An input image for a run whose tokenizer takes size×size RGB: any mode converted to RGB, any size
    fitted as the run's training images were (media.fit_image: crop, or pad for a corpus prepared so)."""
    return fit_image(read_image(path), size, fit)


def parse_span(span: str, what: str) -> tuple[float, float]:
    try:
        a, b = (float(x) for x in span.split(":"))
    except ValueError:
        raise ValueError(f"--span {span!r}: expected START:END ({what})") from None
    if not 0 <= a < b:
        raise ValueError(f"--span {span!r}: need 0 <= START < END ({what})")
    return a, b


def _infill_row(tasks: Tasks, prompt: str, input_path: str | None, span: str):
    """(clean-with-masks row, start, end, modality) of an infill request."""
    v = tasks.vocab
    if input_path is None:  # text: characters [a, b) of the prompt
        if not prompt:
            raise ValueError("infill needs --prompt (text) or --input (a PNG or WAV)")
        a, b = (int(x) for x in parse_span(span, "characters of the prompt"))
        if b > len(prompt):
            raise ValueError(f"--span {span}: the prompt has only {len(prompt)} characters")
        pre, mid, post = (tasks.text_tok.encode(t).tolist() if t else [] for t in (prompt[:a], prompt[a:b], prompt[b:]))
        row = [v.TASK_text, v.BOS_text, *pre, *mid, *post, v.EOS_text]
        return row, 2 + len(pre), 2 + len(pre) + len(mid), "text"
    suffix = Path(input_path).suffix.lower()
    modality = "audio" if suffix in (".wav", ".flac") else "image"
    tasks._need(modality)
    if modality == "image":
        media = tasks.image_ids(read_image_input(input_path, tasks.media["image"].image_size, tasks.image_fit)[None])[0]
        a, b = (int(x) for x in parse_span(span, "image token indices"))
        if b > len(media):
            raise ValueError(f"--span {span}: an image has {len(media)} tokens")
    else:
        codec = tasks.media["audio"]
        media = tasks.audio_ids([read_audio(input_path, codec.sample_rate)])[0]
        s0, s1 = parse_span(span, "seconds")
        K, fps = v.audio_levels, codec.frames_per_second
        a, b = int(s0 * fps) * K, min(len(media), int(np.ceil(s1 * fps)) * K)
        if a >= len(media):
            raise ValueError(f"--span {span}: the audio lasts {len(media) / K / fps:.2f} s")
    text = tasks.encode_text(prompt, "caption") if prompt else None
    row, _ = tasks.paired_canvas(modality, text, media, text_len=tasks._caption_len(len(media)))
    start = row.index(v.bos(modality)) + 1
    return row, start + a, start + b, modality


def _free(path: Path) -> bool:
    """Whether outputs can go to `path` without overwriting any: it is absent or an empty folder."""
    return not path.exists() or (path.is_dir() and not any(path.iterdir()))


def _fresh_dir(stem: Path) -> Path:
    """`stem`, or `stem-1`, `stem-2`, ... : the first that is free (`_free`)."""
    out_dir, k = stem, 1
    while not _free(out_dir):
        out_dir, k = stem.with_name(f"{stem.name}-{k}"), k + 1
    return out_dir


def generate(run: str, task: str, prompt: str = "", n: int = 4, seed: int | None = None,
             overrides: list[str] = (), input_path: str | None = None, span: str | None = None,
             out: str | None = None, log=print) -> list[dict]:
    """Run one task and write its outputs and sidecars; returns the sidecars."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of: {', '.join(TASKS)}")
    if n < 1:
        raise ValueError(f"--n={n} must be at least 1")
    if task in ("t2i", "t2s") and not prompt.strip():
        raise ValueError(f"task {task} needs a non-empty --prompt")
    if task in ("i2t", "s2t") and not input_path:
        raise ValueError(f"task {task} needs --input ({'a PNG' if task == 'i2t' else 'a WAV'} file)")
    if task == "infill" and not span:
        raise ValueError("task infill needs --span START:END")
    if input_path and not Path(input_path).is_file():
        raise ValueError(f"{input_path}: no such input file")
    if out and not _free(Path(out)):
        raise ValueError(f"--out {out}: exists and is not an empty folder; earlier outputs are never overwritten")
    loaded = load_run(run)
    cfg = loaded.cfg.override(list(overrides), only="sample")
    cfg.validate()
    seed = cfg.sample.seed if seed is None else seed
    tasks = Tasks(loaded, cfg.sample)
    out_dir = Path(out) if out else _fresh_dir(loaded.output_dir() / "samples" / "generate" / f"{task}-seed{seed}")
    base = {"task": task, "prompt": prompt, "input": str(input_path) if input_path else None,
            "input_sha256": sha256_file(Path(input_path)) if input_path else None, "span": span, "n": n,
            "seed": seed, "settings": dataclasses.asdict(cfg.sample), "config_version": CONFIG_VERSION,
            "checkpoint": str(loaded.checkpoint)}
    outputs: list = []
    if task == "text":
        outputs = [("txt", t) for t in tasks.text(prompt, n, seed)]
    elif task == "t2i":
        outputs = [("png", im) for im in tasks.t2i([prompt] * n, seed)[0]]
    elif task == "t2s":
        outputs = [("wav", w) for w in tasks.t2s([prompt] * n, seed)[0]]
    elif task == "i2t":
        tasks._need("image")
        image = read_image_input(input_path, tasks.media["image"].image_size, tasks.image_fit)
        outputs = [("txt", t) for t in tasks.i2t(np.stack([image] * n), seed)]
    elif task == "s2t":
        tasks._need("audio")
        wave = read_audio(input_path, tasks.media["audio"].sample_rate)
        outputs = [("txt", t) for t in tasks.s2t([wave] * n, seed)]
    else:
        row, a, b, modality = _infill_row(tasks, prompt, input_path, span)
        rows = tasks.infill(row, a, b, modality, n, seed)
        base["span_positions"] = [a, b]
        for r in rows:
            if modality == "text":
                outputs.append(("txt", tasks.text_of(r)))
            elif modality == "image":
                outputs.append(("png", tasks.image_of(r)))
            else:
                outputs.append(("wav", tasks.wave_of(r)))
    out_dir.mkdir(parents=True, exist_ok=True)  # only now: a request that fails leaves no folder behind
    sidecars = []
    for i, (kind, value) in enumerate(outputs):
        name = f"{i:03d}.{kind}"
        side = {**base, "index": i, "output": name}
        if kind == "txt":
            (out_dir / name).write_text(value + "\n")
            side["text"] = value
        elif kind == "png":
            Image.fromarray(value).save(out_dir / name)
        else:
            rate = tasks.media["audio"].sample_rate
            sf.write(out_dir / name, np.clip(value, -1, 1), rate, subtype="PCM_16")
            side["seconds"] = round(len(value) / rate, 3)
        (out_dir / f"{i:03d}.json").write_text(json.dumps(side, indent=2) + "\n")
        sidecars.append(side)
    if task == "t2i" or (task == "infill" and outputs and outputs[0][0] == "png"):
        save_image_grid(np.stack([v for _, v in outputs]), out_dir / "grid.png")
    log(f"generate: {len(outputs)} {task} output(s) in {out_dir}")
    return sidecars


def generate_from_sidecar(path: str | Path, out: str | None = None, log=print) -> list[dict]:
    """Repeat the call a sidecar records (same checkpoint, settings, seed and n), by default into a fresh
    `reproduced` folder beside the sidecar (`reproduced-1`, ... on later calls)."""
    path = Path(path)
    try:
        side = json.loads(path.read_text())
        version = config_version(side.get("config_version", 0), str(path))  # absent: before versions
        settings = section_from_dict(SampleConfig, upgrade_sample(side["settings"], version), "sample.")
        overrides = _flatten("sample", dataclasses.asdict(settings))
        args = dict(run=side["checkpoint"], task=side["task"], prompt=side["prompt"], n=side["n"], seed=side["seed"],
                    input_path=side["input"], span=side["span"])
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: not a trimdm generation sidecar ({e})") from None
    if side["input"] and side.get("input_sha256") and sha256_file(Path(side["input"])) != side["input_sha256"]:
        raise ValueError(f"{path}: input {side['input']} changed since the sidecar was written")
    return generate(**args, overrides=overrides, out=out or str(_fresh_dir(path.parent / "reproduced")), log=log)


def _flatten(prefix: str, d: dict) -> list[str]:
    out = []
    for k, v in d.items():
        if isinstance(v, dict):
            out += _flatten(f"{prefix}.{k}", v)
        elif isinstance(v, (list, tuple)):  # a tuple setting, written as a JSON list
            out.append(f"{prefix}.{k}={','.join(map(str, v))}")
        else:
            out.append(f"{prefix}.{k}={v}")
    return out


def generate_from_run(run: str, prompt: str, n: int, overrides: list[str], seed: int | None = None) -> list[str]:
    """Text samples (the demo's and the tests' short path)."""
    return [s["text"] for s in generate(run, "text", prompt, n, seed, overrides, log=lambda *a: None)]
