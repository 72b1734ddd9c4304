"""Multiple-choice questions from a prepared tinyworld set's held-out split, for `trimdm eval --mc`.

Owns `write_tinyworld_mc`: which caption matches this image (the true caption against captions that
differ from it in one attribute, each checked false for the scene) and which transcript matches this
utterance (against other transcripts of the split). Writes the JSONL format eval/multiple_choice.py
reads. Deterministic from a seed.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np

from trimdm.data.tinyworld import scenes as sc


def _read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        raise ValueError(f"{path} not found: is the data directory a prepared tinyworld set (its raw/ stage)?")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _swap_word(caption: str, words, rng: np.random.Generator) -> str | None:
    """Replace one occurrence of one of `words` in caption by another of them (None if none occurs)."""
    alternation = "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))
    hits = list(re.finditer(rf"\b(?:{alternation})\b", caption))
    if not hits:
        return None
    hit = hits[int(rng.integers(len(hits)))]
    others = [w for w in words if w != hit.group(0)]
    return caption[:hit.start()] + others[int(rng.integers(len(others)))] + caption[hit.end():]


def _world(data_dir: Path) -> dict[str, tuple[str, ...]]:
    """The colours and sizes a prepared tinyworld set draws from: its spec.json names them when they are
    a smaller world's (data.tinyworld.colors / .sizes), else the whole scene vocabulary."""
    spec_path = Path(data_dir) / "spec.json"
    try:
        tw = json.loads(spec_path.read_text()).get("tinyworld", {}) if spec_path.exists() else {}
    except (json.JSONDecodeError, AttributeError) as e:
        raise ValueError(f"{spec_path}: not a prepared data set's spec ({e})") from None
    return {"colors": tuple(tw.get("colors", sc.COLORS)), "sizes": tuple(tw.get("sizes", sc.SIZES))}


def _caption_distractors(record: dict, n: int, rng: np.random.Generator, world: dict | None = None) -> list[str]:
    """n false captions, each the true one with one attribute changed (colour, shape, size or location)
    to another value of the data set's world, cycling through the attributes in a random order; each is
    checked false against the scene."""
    scene = sc.Scene.from_json(record["scene"])
    truth = record["caption"]
    world = world or {"colors": tuple(sc.COLORS), "sizes": sc.SIZES}
    attributes = [a for a in (world["colors"], sc.SHAPES, world["sizes"], tuple(sc.LOCATIONS.values()))
                  if len(a) > 1]
    order = rng.permutation(len(attributes))
    out: list[str] = []
    for attempt in range(50 * n):
        if len(out) == n:
            break
        words = attributes[order[attempt % len(attributes)]]
        cand = _swap_word(truth, words, rng)
        if cand is not None and cand != truth and cand not in out and sc.caption_errors(cand, scene):
            out.append(cand)
    if len(out) < n:
        raise ValueError(f"could not make {n} distinct false captions for {truth!r}")
    return out


def write_tinyworld_mc(data_dir: str | Path, out_path: str | Path, n_image: int | None = None,
                       n_audio: int | None = None, n_options: int = 4, seed: int = 0) -> Path:
    """Write a multiple-choice JSONL file from a prepared tinyworld set's held-out val split.

    data_dir: the prepared directory (`tinyworld-<hash>`, holding raw/images_val and raw/speech_val).
    Image questions: the scene's caption and n_options − 1 captions that differ from it in one attribute
    (colour, shape, size or location word, among those of the set's world), each checked false for the
    scene. Audio questions: the
    utterance's transcript and n_options − 1 other distinct transcripts of the split, drawn at random.
    n_image / n_audio: how many of each (None: all of the split), a seeded random subset otherwise; the
    correct option's position is drawn too. Context is empty: the media are the context. Paths in the
    file are relative to out_path's folder. Deterministic from `seed`. Returns out_path."""
    if n_options < 2:
        raise ValueError(f"n_options must be >= 2, got {n_options}")
    raw = Path(data_dir) / "raw"
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    world = _world(Path(data_dir))
    lines = []
    for kind, folder, index, text_key, want in (("image", "images_val", "captions.jsonl", "caption", n_image),
                                                ("audio", "speech_val", "transcripts.jsonl", "text", n_audio)):
        records = _read_jsonl(raw / folder / index)
        want = len(records) if want is None else want
        if not 0 <= want <= len(records):
            raise ValueError(f"asked for {want} {kind} questions but {raw / folder} holds {len(records)} items")
        chosen = np.sort(rng.choice(len(records), size=want, replace=False)) if want < len(records) else range(want)
        texts = sorted({r[text_key] for r in records})
        for i in chosen:
            rec = records[int(i)]
            truth = rec[text_key]
            if kind == "image":
                if "scene" not in rec:
                    raise ValueError(f"{raw / folder / index}: item {i} has no scene, so no checked distractors")
                wrong = _caption_distractors(rec, n_options - 1, rng, world)
            else:
                pool = [t for t in texts if t != truth]
                if len(pool) < n_options - 1:
                    raise ValueError(f"{raw / folder}: only {len(pool) + 1} distinct transcripts, "
                                     f"too few for {n_options} options")
                wrong = [pool[j] for j in rng.choice(len(pool), size=n_options - 1, replace=False)]
            answer = int(rng.integers(n_options))
            options = wrong[:answer] + [truth] + wrong[answer:]
            media = os.path.relpath((raw / folder / rec["file"]).resolve(), out_path.parent.resolve())
            lines.append(json.dumps({"context": "", "options": options, "answer": answer, kind: media}))
    out_path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return out_path
