"""Ingest + tokenisation throughput of `trimdm prepare` on a corpus of the user's own data. Prints JSON.

    python benchmarks/ingest_throughput.py [--images 8192] [--utterances 1024] [--workers 1,2] [key=value ...]

Writes a synthetic image-text webdataset (JPEG photos-like noise fields of varied sizes, 160-400 px) and
an audio-text manifest (FLAC, 22.05 kHz stereo, 2-6 s: downmix and resampling included) into a
temporary folder, prepares each once per worker count at the default `custom` resolutions (64 px, 16 kHz
codec at 25 frames/s × 4 levels), and reports the shard phase (decode, preprocess, tokenise, write) from
each corpus's manifest: images/s and seconds of audio per second, per worker, and the speed-up from the
first worker count to the last (`speedup`: the whole shard phase, the workers' ~3 s start-up included,
which a prepare that trains its tokenizers hides behind the training but this rerun cannot;
`steady_speedup`: samples/s between the first and the last shard to complete, once every worker
runs); beside them the whole prepare call. The tokenizers are trained once (few steps: their speed of encoding
does not depend on how long they trained) and reused for every worker count, as a rerun of prepare
reuses them. Target (issue 25): 2 workers >= 1.7x one worker.
"""
from __future__ import annotations

import argparse
import io
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import webdataset as wds
from PIL import Image

from trimdm.config import CorpusConfig
from trimdm.data.ingest import prepare_corpus


def write_images(folder: Path, n: int, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    per = 256
    for shard in range(-(-n // per)):
        with wds.TarWriter(str(folder / f"{shard:03d}.tar")) as sink:
            for i in range(shard * per, min(n, (shard + 1) * per)):
                h, w = (int(x) for x in rng.integers(160, 400, size=2))
                smooth = rng.random((h // 8 + 1, w // 8 + 1, 3))
                pixels = np.kron(smooth, np.ones((8, 8, 1)))[:h, :w] * 200 + rng.random((h, w, 3)) * 55
                buf = io.BytesIO()
                Image.fromarray(pixels.astype(np.uint8)).save(buf, format="JPEG", quality=90)
                sink.write({"__key__": f"{i:06d}", "jpg": buf.getvalue(), "txt": f"a photo numbered {i}"})
    return str(folder / ("{000..%03d}.tar" % (-(-n // per) - 1)))


def write_audio(folder: Path, n: int, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    (folder / "clips").mkdir(parents=True)
    rows = []
    for i in range(n):
        seconds = rng.uniform(2, 6)
        t = np.arange(int(seconds * 22050)) / 22050
        tone = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 300) * t * (1 + 0.1 * np.sin(3 * t)))
        wave = np.stack([tone, tone + 0.01 * rng.standard_normal(len(t))], axis=1).astype(np.float32)
        sf.write(folder / "clips" / f"{i:05d}.flac", wave, 22050)
        rows.append({"audio_filepath": f"clips/{i:05d}.flac", "text": f"utterance number {i}"})
    (folder / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(folder / "manifest.jsonl")


def measure(tmp: Path, kind: str, source: str, workers: list[int], overrides: list[str]) -> dict:
    rows = []
    for w in workers:
        out = tmp / f"{kind}-w{w}"
        if rows:  # the same corpus: reuse the tokenizers the first prepare trained
            out.mkdir()
            shutil.copy(tmp / f"{kind}-w{workers[0]}" / "corpus.json", out / "corpus.json")
            shutil.copytree(tmp / f"{kind}-w{workers[0]}" / "tokenizers", out / "tokenizers")
        settings = CorpusConfig().override([*overrides, f"ingest.workers={w}", "ingest.shard_samples=128"])
        prepare_corpus(out, {kind: [source]}, settings, log=lambda *a: None)
        manifest = json.loads((out / "manifest.json").read_text())
        seconds = manifest["seconds"]["shards"]
        n = manifest["samples"][kind]
        row = {"workers": w, "shard_seconds": round(seconds, 2), "samples": n["train"] + n["val"],
               "prepare_seconds": manifest["seconds"]["total"],
               "steady_samples_per_s": manifest["steady_samples_per_s"]}  # None with one shard
        if kind == "image_text":
            row["images_per_s"] = round(row["samples"] / seconds, 1)
            row["images_per_s_per_worker"] = round(row["images_per_s"] / w, 1)
        else:
            row["audio_seconds_per_s"] = round(manifest["audio_seconds"] / seconds, 1)
            row["audio_seconds_per_s_per_worker"] = round(row["audio_seconds_per_s"] / w, 1)
        rows.append(row)
    key = "images_per_s" if kind == "image_text" else "audio_seconds_per_s"
    steady = [r["steady_samples_per_s"] for r in rows]
    return {"runs": rows, "speedup": round(rows[-1][key] / rows[0][key], 3),
            "steady_speedup": round(steady[-1] / steady[0], 3) if None not in steady else None,
            "prepare_speedup": round(rows[0]["prepare_seconds"] / rows[-1]["prepare_seconds"], 3)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=8192)
    ap.add_argument("--utterances", type=int, default=1024)
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("overrides", nargs="*", help="tokenizers.* / ingest.* settings")
    args = ap.parse_args()
    workers = [int(w) for w in args.workers.split(",")]
    quick = ["tokenizers.image.steps=20", "tokenizers.audio.steps=10", "tokenizers.text.vocab=512"]
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        images = write_images(tmp / "src-images", args.images)
        audio = write_audio(tmp / "src-audio", args.utterances)
        result = {"images": args.images, "utterances": args.utterances, "workers": workers,
                  "image_text": measure(tmp, "image_text", images, workers, [*quick, *args.overrides]),
                  "audio_text": measure(tmp, "audio_text", audio, workers, [*quick, *args.overrides])}
    result["seconds"] = round(time.time() - t0, 1)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
