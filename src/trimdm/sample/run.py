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
indices of the image's raster (an 8×8 grid: 0:32 is the top half; several ranges joined by commas, e.g.
the cells of a rectangle, 2:5,10:13,18:21), seconds for audio. Media infill keeps the prompt as the
clean caption or transcript; without one, the text span is generated too. An input's kind (image or
audio) is read from its content, never from its name.

Outputs go to `--out` (default RUN/samples/generate/TASK-seedS; a model folder written by `trimdm export`
is never written into, so generating from one needs `--out`): `000.png|wav|txt` and `000.json`, the
sidecar with the task, prompt, input (path and SHA-256), span, the resolved sampling settings and the
config version they are written in, seed, n, the sample's index and the checkpoint. `--from SIDECAR`
rebuilds the same call and regenerates the same bits (the whole batch is decoded again, since samples
share one random stream); the settings of a sidecar of an earlier version are read in its terms
(`config.upgrade_sample`: its "cosine" is today's "reverse-cosine").

`produce` runs one request on a loaded run and returns each output's bytes with its sidecar, written
nowhere: `generate` writes them to files, the web server (trimdm.serve) answers with them, so both give
the same bits and the same sidecars for the same request.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from PIL import Image

from trimdm.config import CONFIG_VERSION, SampleConfig, config_version, section_from_dict, upgrade_sample
from trimdm.data.media import fit_image, read_audio, read_image
from trimdm.fileio import sha256_file
from trimdm.sample.tasks import TASKS, Tasks
from trimdm.tokenizers.image import image_grid
from trimdm.train.run import load_run

# the first bytes of the audio containers soundfile reads; anything else is read as an image
AUDIO_MAGIC = ((0, b"RIFF", b"WAVE"), (0, b"RF64", b"WAVE"), (0, b"fLaC", b""), (0, b"OggS", b""),
               (0, b"FORM", b"AIFF"))


@dataclass(frozen=True)
class MediaInput:
    """An input file: its bytes and the name it is known by (the path given to `generate`, or the name of
    a file uploaded to the server, a label only: the server opens no path a request names)."""

    data: bytes
    name: str

    @classmethod
    def from_path(cls, path: str | Path) -> "MediaInput":
        if not Path(path).is_file():
            raise ValueError(f"{path}: no such input file")
        return cls(Path(path).read_bytes(), str(path))

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def modality(self) -> str:
        """"audio" for a WAV, FLAC, Ogg or AIFF file (by its first bytes), "image" for anything else."""
        head = self.data[:12]
        audio = any(head[:4] == a and (not b or head[8:12] == b) for _, a, b in AUDIO_MAGIC)
        return "audio" if audio else "image"


@dataclass(frozen=True)
class TaskRequest:
    """One call of a task, as `trimdm generate` and the server's API take it."""

    task: str
    prompt: str = ""
    n: int = 4
    seed: int = 0
    span: str | None = None
    input: MediaInput | None = None


@dataclass(frozen=True)
class Output:
    """One output: its file name (000.png|wav|txt), media type, bytes and sidecar."""

    name: str
    media_type: str
    data: bytes
    sidecar: dict


@dataclass(frozen=True)
class Produced:
    outputs: list[Output]
    grid: bytes | None  # a PNG of every image output side by side (t2i, image infill), else None


def read_image_input(source: MediaInput, size: int, fit: str = "crop") -> np.ndarray:
    """An input image for a run whose tokenizer takes size×size RGB: any mode converted to RGB, any size
    fitted as the run's training images were (media.fit_image: crop, or pad for a corpus prepared so)."""
    return fit_image(read_image(source.data, source.name), size, fit)


def parse_span(span: str, what: str) -> tuple[float, float]:
    try:
        a, b = (float(x) for x in span.split(":"))
    except ValueError:
        raise ValueError(f"--span {span!r}: expected START:END ({what})") from None
    if not 0 <= a < b:
        raise ValueError(f"--span {span!r}: need 0 <= START < END ({what})")
    return a, b


def parse_token_ranges(span: str, n: int) -> list[int]:
    """Image token indices of a span: `A:B` or ranges joined by commas (`A:B,C:D`), each within [0, n)."""
    positions: set[int] = set()
    for part in span.split(","):
        a, b = (int(x) for x in parse_span(part, "image token indices"))
        if b > n:
            raise ValueError(f"--span {span}: an image has {n} tokens")
        positions.update(range(a, b))
    return sorted(positions)


def _infill_row(tasks: Tasks, prompt: str, media: MediaInput | None, span: str):
    """(clean row, positions to regenerate, modality) of an infill request."""
    v = tasks.vocab
    if media is None:  # text: characters [a, b) of the prompt
        if not prompt:
            raise ValueError("infill needs --prompt (text) or --input (a PNG or WAV)")
        a, b = (int(x) for x in parse_span(span, "characters of the prompt"))
        if b > len(prompt):
            raise ValueError(f"--span {span}: the prompt has only {len(prompt)} characters")
        pre, mid, post = (tasks.text_tok.encode(t).tolist() if t else [] for t in (prompt[:a], prompt[a:b], prompt[b:]))
        row = [v.TASK_text, v.BOS_text, *pre, *mid, *post, v.EOS_text]
        return row, list(range(2 + len(pre), 2 + len(pre) + len(mid))), "text"
    modality = media.modality
    tasks._need(modality)
    if modality == "image":
        ids = tasks.image_ids(read_image_input(media, tasks.media["image"].image_size, tasks.image_fit)[None])[0]
        positions = parse_token_ranges(span, len(ids))
    else:
        codec = tasks.media["audio"]
        ids = tasks.audio_ids([read_audio(media.data, codec.sample_rate, media.name)])[0]
        s0, s1 = parse_span(span, "seconds")
        K, fps = v.audio_levels, codec.frames_per_second
        a, b = int(s0 * fps) * K, min(len(ids), int(np.ceil(s1 * fps)) * K)
        if a >= len(ids):
            raise ValueError(f"--span {span}: the audio lasts {len(ids) / K / fps:.2f} s")
        positions = list(range(a, b))
    text = tasks.encode_text(prompt, "caption") if prompt else None
    row, _ = tasks.paired_canvas(modality, text, ids, text_len=tasks._caption_len(len(ids)))
    start = row.index(v.bos(modality)) + 1
    return row, [start + p for p in positions], modality


def check_request(task: str, prompt: str, n: int, span: str | None, has_input: bool) -> None:
    """What a request needs before any model is loaded: a known task, n >= 1, its prompt, input, span."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of: {', '.join(TASKS)}")
    if n < 1:
        raise ValueError(f"--n={n} must be at least 1")
    if task in ("t2i", "t2s") and not prompt.strip():
        raise ValueError(f"task {task} needs a non-empty --prompt")
    if task in ("i2t", "s2t") and not has_input:
        raise ValueError(f"task {task} needs --input ({'a PNG' if task == 'i2t' else 'a WAV'} file)")
    if task == "infill" and not span:
        raise ValueError("task infill needs --span START:END")


def _ranges(positions: list[int]) -> list[list[int]]:
    out: list[list[int]] = []
    for p in positions:
        if out and out[-1][1] == p:
            out[-1][1] = p + 1
        else:
            out.append([p, p + 1])
    return out


def _run_task(tasks: Tasks, req: TaskRequest) -> tuple[list[tuple[str, object]], dict]:
    """(kind, value) of every output of a request ("txt": str, "png": uint8 image, "wav": float wave)
    and what its sidecars add (infill: the row positions regenerated)."""
    task, prompt, n, seed = req.task, req.prompt, req.n, req.seed
    if task == "text":
        return [("txt", t) for t in tasks.text(prompt, n, seed)], {}
    if task == "t2i":
        return [("png", im) for im in tasks.t2i([prompt] * n, seed)[0]], {}
    if task == "t2s":
        return [("wav", w) for w in tasks.t2s([prompt] * n, seed)[0]], {}
    if task == "i2t":
        tasks._need("image")
        image = read_image_input(req.input, tasks.media["image"].image_size, tasks.image_fit)
        return [("txt", t) for t in tasks.i2t(np.stack([image] * n), seed)], {}
    if task == "s2t":
        tasks._need("audio")
        wave = read_audio(req.input.data, tasks.media["audio"].sample_rate, req.input.name)
        return [("txt", t) for t in tasks.s2t([wave] * n, seed)], {}
    row, positions, modality = _infill_row(tasks, prompt, req.input, req.span)
    rows = tasks.infill(row, positions, modality, n, seed)
    ranges = _ranges(positions)
    extra = {"span_positions": [ranges[0][0], ranges[-1][1]]}
    if len(ranges) > 1:
        extra["span_ranges"] = ranges
    read = {"text": ("txt", tasks.text_of), "image": ("png", tasks.image_of), "audio": ("wav", tasks.wave_of)}
    kind, of = read[modality]
    return [(kind, of(r)) for r in rows], extra


def encode_png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def encode_wav(wave: np.ndarray, rate: int) -> bytes:
    """16-bit PCM WAV, clipped to [-1, 1]."""
    buf = io.BytesIO()
    sf.write(buf, np.clip(wave, -1, 1), rate, subtype="PCM_16", format="WAV")
    return buf.getvalue()


def sidecar_base(req: TaskRequest, sample: SampleConfig, checkpoint) -> dict:
    """What every sidecar of a request records (`generate --from` rebuilds the call from it)."""
    return {"task": req.task, "prompt": req.prompt, "input": req.input.name if req.input else None,
            "input_sha256": req.input.sha256 if req.input else None, "span": req.span, "n": req.n,
            "seed": req.seed, "settings": dataclasses.asdict(sample), "config_version": CONFIG_VERSION,
            "checkpoint": str(checkpoint)}


def produce(loaded, sample: SampleConfig, req: TaskRequest, on_step=None) -> Produced:
    """Run one request on a loaded run with sampling settings `sample`: every output's bytes and sidecar.
    `on_step` sees each decoding step (sampler.Step) and may stop the request by raising."""
    check_request(req.task, req.prompt, req.n, req.span, req.input is not None)
    tasks = Tasks(loaded, sample, on_step=on_step)
    values, extra = _run_task(tasks, req)
    base = {**sidecar_base(req, sample, loaded.checkpoint), **extra}
    outputs = []
    for i, (kind, value) in enumerate(values):
        name = f"{i:03d}.{kind}"
        side = {**base, "index": i, "output": name}
        if kind == "txt":
            data, media_type = (value + "\n").encode(), "text/plain; charset=utf-8"
            side["text"] = value
        elif kind == "png":
            data, media_type = encode_png(value), "image/png"
        else:
            rate = tasks.media["audio"].sample_rate
            data, media_type = encode_wav(value, rate), "audio/wav"
            side["seconds"] = round(len(value) / rate, 3)
        outputs.append(Output(name, media_type, data, side))
    images = [value for kind, value in values if kind == "png"]
    return Produced(outputs, encode_png(image_grid(np.stack(images))) if images else None)


def _free(path: Path) -> bool:
    """Whether outputs can go to `path` without overwriting any: it is absent or an empty folder."""
    return not path.exists() or (path.is_dir() and not any(path.iterdir()))


def _fresh_dir(stem: Path) -> Path:
    """`stem`, or `stem-1`, `stem-2`, ... : the first that is free (`_free`)."""
    out_dir, k = stem, 1
    while not _free(out_dir):
        out_dir, k = stem.with_name(f"{stem.name}-{k}"), k + 1
    return out_dir


def sample_settings(loaded, overrides: list[str]):
    """The run's config with `sample.*` overrides applied (to a copy: the loaded run keeps its own),
    validated."""
    cfg = copy.deepcopy(loaded.cfg).override(list(overrides), only="sample")
    cfg.validate()
    return cfg


def generate(run: str, task: str, prompt: str = "", n: int = 4, seed: int | None = None,
             overrides: list[str] = (), input_path: str | None = None, span: str | None = None,
             out: str | None = None, log=print) -> list[dict]:
    """Run one task and write its outputs and sidecars; returns the sidecars."""
    check_request(task, prompt, n, span, bool(input_path))
    media = MediaInput.from_path(input_path) if input_path else None
    if out and not _free(Path(out)):
        raise ValueError(f"--out {out}: exists and is not an empty folder; earlier outputs are never overwritten")
    loaded = load_run(run)
    cfg = sample_settings(loaded, overrides)
    seed = cfg.sample.seed if seed is None else seed
    out_dir = Path(out) if out else _fresh_dir(loaded.output_dir() / "samples" / "generate" / f"{task}-seed{seed}")
    produced = produce(loaded, cfg.sample, TaskRequest(task, prompt, n, seed, span, media))
    out_dir.mkdir(parents=True, exist_ok=True)  # only now: a request that fails leaves no folder behind
    for o in produced.outputs:
        (out_dir / o.name).write_bytes(o.data)
        (out_dir / f"{Path(o.name).stem}.json").write_text(json.dumps(o.sidecar, indent=2) + "\n")
    if produced.grid is not None:
        (out_dir / "grid.png").write_bytes(produced.grid)
    log(f"generate: {len(produced.outputs)} {task} output(s) in {out_dir}")
    return [o.sidecar for o in produced.outputs]


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
    if (side["input"] and side.get("input_sha256") and Path(side["input"]).is_file()
            and sha256_file(Path(side["input"])) != side["input_sha256"]):
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
