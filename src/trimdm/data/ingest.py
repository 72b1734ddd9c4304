"""`trimdm prepare --text/--image-text/--audio-text SRC... --out DIR`: a corpus of the user's own data.

Owns: the corpus directory and its build order (method §10, docs/data.md):

    DIR/corpus.json       what the corpus is: its sources and the settings that shape it (written first;
                          preparing another corpus into DIR is refused, the same one resumes)
    DIR/tokenizers/       text/ image/ audio/ (trained here or pretrained from a local path), a stage
                          with a manifest, built whole under a temporary name
    DIR/shards/           KIND-NNNNN.{train,val}.{text,image,audio}.* per chunk of `ingest.shard_samples`
                          samples, each complete when its KIND-NNNNN.json is (records.py)
    DIR/rejects.jsonl     every rejected sample: source, key, reason
    DIR/manifest.json     counts, token totals, SHA-256 of every shard, source fingerprints, the rows'
                          token statistics and the audio length rule; written last: a corpus without
                          it is incomplete and never trained on

Two passes over the sources: a survey (counts; the BPE's text, the image tokenizer's images and the
codec's audio, all from the training split, first ones first), then the shards, in worker processes
(`ingest.workers`, one torch thread each) that each load the tokenizers once. A shard depends only on
its records and the tokenizers, so the corpus is the same for any worker count, and an interrupted
prepare rerun skips the shards already complete. Does not own the source formats (sources/) or what
happens to one sample (records.py).
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import json
import math
import multiprocessing
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from trimdm.config import CorpusConfig
from trimdm.data.records import MEDIUM, ChunkWriter, Reject, chunk_complete, record_audio, record_image, \
    record_text, split_of
from trimdm.data.shards import finish_stage, new_stage_dir, verify_stage
from trimdm.data.sources import SourceOptions, open_sources
from trimdm.fileio import atomic_write_text
from trimdm.tokenizers import audio as au
from trimdm.tokenizers import image as im
from trimdm.tokenizers.adapters import pretrained_tokenizer
from trimdm.tokenizers.media import load_media_tokenizer
from trimdm.tokenizers.text import TextTokenizer

KINDS = ("text", "image_text", "audio_text")
FORMAT = "trimdm.corpus"
VAL_MEDIA = {"image_text": 256, "audio_text": 32}  # val items the tokenizer reports measure


def source_options(settings: CorpusConfig) -> SourceOptions:
    i = settings.ingest
    return SourceOptions(text_field=i.text_field or None, paragraphs=i.paragraphs,
                         caption_field=i.caption_field or None, image_field=i.image_field or None,
                         audio_field=i.audio_field or None, transcript_field=i.transcript_field or None)


def corpus_identity(specs: dict, sources: dict, settings: CorpusConfig) -> dict:
    """What makes two prepares the same corpus: the sources (as given, and their files' sizes and times)
    and every setting that shapes the corpus (not the worker count)."""
    shaped = settings.to_dict()
    del shaped["ingest"]["workers"]
    return {"format": FORMAT, "version": 1, "sources": specs,
            "fingerprints": {k: [s.fingerprint() for s in v] for k, v in sources.items()}, "settings": shaped}


def _claim(out: Path, identity: dict) -> None:
    """Write DIR/corpus.json, or check that DIR holds this very corpus (then prepare resumes)."""
    path = out / "corpus.json"
    if path.exists():
        try:
            held = json.loads(path.read_text())
        except ValueError:
            held = None
        if held != identity:
            raise ValueError(f"{out} holds another corpus ({path} differs: other sources, files or settings); "
                             f"prepare into a new directory")
        return
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"{out} is not empty and holds no trimdm corpus; prepare into a new directory")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(identity, indent=2) + "\n")


def prepare_corpus(out: str | Path, specs: dict[str, list[str]], settings: CorpusConfig, log=print) -> Path:
    """Build (or finish building) the corpus of `specs` ({kind: [source, ...]}) in `out`; its manifest."""
    out = Path(out)
    settings.validate()
    specs = {k: list(v) for k, v in specs.items() if v}
    if not specs:
        raise ValueError("prepare needs at least one of --text, --image-text, --audio-text")
    sources = {k: open_sources(k, v, source_options(settings)) for k, v in specs.items()}  # errors before work
    _check_paths(settings)
    _claim(out, corpus_identity(specs, sources, settings))
    if (out / "manifest.json").exists() and verify_stage(out)[0] is not None:
        log(f"prepare: {out} is complete")
        return out
    t0 = time.time()
    with worker_pool(settings.ingest.workers) as pool:
        trained = verify_stage(out / "tokenizers")[0] is not None  # a rerun reuses them: no media to survey
        survey = _survey(sources, settings, log, media=not trained)
        t1 = time.time()
        tokenizers = _ensure_tokenizers(out / "tokenizers", survey, settings, log)
        t2 = time.time()
        chunks, steady = _write_shards(out, sources, survey.counts, settings, log, pool)
    seconds = {"survey": t1 - t0, "tokenizers": t2 - t1, "shards": time.time() - t2, "total": time.time() - t0}
    manifest = _finish(out, sources, chunks, tokenizers, settings, {**seconds, "steady_samples_per_s": steady})
    log(f"prepare: {out}: " + ", ".join(f"{k} {v['train']:,} train / {v['val']:,} val"
                                        for k, v in manifest["samples"].items())
        + f", {manifest['rejected']:,} rejected ({time.time() - t0:.0f}s)")
    return out


def _check_paths(settings: CorpusConfig) -> None:
    """A pretrained tokenizer's folder (or tokenizer.json) must exist before any work starts."""
    tk = settings.tokenizers
    for key, t, wanted in (("text", tk.text, "file"), ("image", tk.image, "native"), ("audio", tk.audio, "native")):
        pretrained = t.kind == "file" if key == "text" else t.kind != wanted
        if pretrained and not Path(t.path).exists():
            raise ValueError(f"tokenizers.{key}.path={t.path}: no such {'file' if key == 'text' else 'folder'} "
                             f"(pretrained tokenizers load from a local path; nothing is downloaded)")


# -- pass 1: survey ------------------------------------------------------------------------------------
@dataclass
class Survey:
    counts: dict = field(default_factory=dict)  # kind -> records
    texts: list = field(default_factory=list)  # training-split texts for the BPE
    images: dict = field(default_factory=lambda: {"train": [], "val": []})
    waves: dict = field(default_factory=lambda: {"train": [], "val": []})
    seconds: float = 0.0
    chars: int = 0


def _survey(sources: dict, settings: CorpusConfig, log, media: bool = True) -> Survey:
    """Counts every source and keeps what the tokenizers that train here learn from (training split;
    with `media=False` only the counts and the text)."""
    tk, ingest, s = settings.tokenizers, settings.ingest, Survey()
    for kind, group in sources.items():
        s.counts[kind] = 0
        for source in group:
            for rec in source.records():
                s.counts[kind] += 1
                split = split_of(rec.key, ingest.seed, ingest.val_fraction)
                try:
                    text = record_text(rec, kind, settings)
                    if split == "train" and tk.text.kind == "bpe" and s.chars < tk.text.train_chars:
                        s.texts.append(text)
                        s.chars += len(text)
                    if media:
                        _survey_media(s, rec, kind, split, settings)
                except Reject:
                    continue  # counted with its reason when the shards are written
    log(f"prepare: surveyed " + ", ".join(f"{n:,} {k}" for k, n in s.counts.items()) + " samples")
    return s


def _survey_media(s: Survey, rec, kind: str, split: str, settings: CorpusConfig) -> None:
    tk = settings.tokenizers
    if kind == "image_text" and tk.image.kind == "native":
        want = tk.image.train_images if split == "train" else VAL_MEDIA[kind]
        if len(s.images[split]) < want:
            s.images[split].append(record_image(rec, tk.image.resolution, tk.image.fit))
    elif kind == "audio_text" and tk.audio.kind == "native":
        if split == "train" and s.seconds < tk.audio.train_seconds or \
                split == "val" and len(s.waves["val"]) < VAL_MEDIA[kind]:
            wave, _ = record_audio(rec, tk.audio.sample_rate, tk.audio.max_seconds, tk.audio.too_long)
            s.waves[split].append(wave)
            s.seconds += len(wave) / tk.audio.sample_rate if split == "train" else 0.0


# -- tokenizers ----------------------------------------------------------------------------------------
def native_image_config(settings) -> im.ImageTokenizerConfig:
    """The autoencoder for `resolution` and `downsample`: one stride-2 stage per halving, widths growing."""
    stages = int(math.log2(settings.downsample))
    channels = tuple(32 * (i + 2) // 2 if i else 32 for i in range(stages + 1))  # 32, 64, 96, 128, ...
    return im.ImageTokenizerConfig(image_size=settings.resolution, channels=channels,
                                   res_blocks=(0,) + (1,) * stages)


def native_audio_config(settings) -> au.AudioCodecConfig:
    """The mel codec for `sample_rate`, `frame_rate` and `levels`: 4 mel frames per token frame, a ~32 ms
    analysis window (the power of two nearest), mels up to the Nyquist frequency."""
    hop = settings.sample_rate // settings.frame_rate
    n_fft = 2 ** round(math.log2(0.032 * settings.sample_rate))
    return au.AudioCodecConfig(sample_rate=settings.sample_rate, hop=hop, mel_hop=hop // 4, n_fft=n_fft,
                               win=n_fft, n_mels=min(80, n_fft // 2 + 1), f_max=settings.sample_rate / 2,
                               levels=settings.levels)


def _ensure_tokenizers(final: Path, survey: Survey, settings: CorpusConfig, log) -> dict:
    if verify_stage(final)[0] is None:
        tmp = new_stage_dir(final)
        try:
            report = _build_tokenizers(tmp, survey, settings, log)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)  # a failed build leaves nothing behind
            raise
        finish_stage(tmp, final, {"stage": "tokenizers", **report})
    return load_tokenizers(final, [k for k in survey.counts])


def load_tokenizers(directory: Path, kinds) -> dict:
    out = {"text": TextTokenizer.load(directory / "text")}
    for kind in kinds:
        if kind in MEDIUM:
            out[MEDIUM[kind]] = load_media_tokenizer(directory / MEDIUM[kind], MEDIUM[kind])
    return out


def _build_tokenizers(tmp: Path, s: Survey, settings: CorpusConfig, log) -> dict:
    tk, report = settings.tokenizers, {}
    if tk.text.kind == "bpe":
        if not s.texts:
            raise ValueError("no usable training text to learn the BPE from (see the rejects after a "
                             "prepare with ingest.on_error=fail)")
        text = TextTokenizer.train(s.texts, tk.text.vocab)
    else:
        text = TextTokenizer.load_file(tk.text.path)
    text.save(tmp / "text")
    report["text"] = {"kind": tk.text.kind, "vocab": text.codebook_sizes[0], "train_chars": s.chars}
    if "image_text" in s.counts:
        report["image"] = _image_tokenizer(tmp / "image", s, tk.image, settings.ingest.seed, log)
    if "audio_text" in s.counts:
        report["audio"] = _audio_tokenizer(tmp / "audio", s, tk.audio, settings.ingest.seed, log)
    return report


def _image_tokenizer(out: Path, s: Survey, t, seed: int, log) -> dict:
    if t.kind != "native":
        tok = pretrained_tokenizer("image", t.kind, t.path, resolution=t.resolution)
        tok.save(out)
        return {"kind": t.kind, "path": t.path, "codes": tok.codebook_sizes[0], "tokens": int(tok.rate)}
    if not s.images["train"]:
        raise ValueError("no usable training image to learn the image tokenizer from")
    t0 = time.time()
    train, val = np.stack(s.images["train"]), np.stack(s.images["val"]) if s.images["val"] else None
    # a corpus with fewer training images than a batch trains on batches of all of them
    tok, _ = im.train_image_tokenizer(train, val, native_image_config(t), t.steps, min(t.batch, len(train)), seed,
                                      log=None)
    tok.save(out)
    metrics = im.reconstruction_metrics(tok, val if val is not None else train[:256])
    log(f"prepare: image tokenizer {t.resolution}px -> {tok.cfg.grid}×{tok.cfg.grid} tokens, PSNR "
        f"{metrics['psnr']:.2f} dB on {'val' if val is not None else 'train'} images ({time.time() - t0:.0f}s)")
    return {"kind": "native", "train_images": len(train), "steps": t.steps, "metrics": metrics,
            "codes": tok.codebook_sizes[0], "tokens": int(tok.rate), "seconds": round(time.time() - t0, 1)}


def _audio_tokenizer(out: Path, s: Survey, t, seed: int, log) -> dict:
    if t.kind != "native":
        tok = pretrained_tokenizer("audio", t.kind, t.path, levels=t.levels)
        tok.save(out)
        return {"kind": t.kind, "path": t.path, "levels": len(tok.codebook_sizes), "codes": tok.codebook_sizes[0],
                "frames_per_second": tok.frames_per_second}
    if not s.waves["train"]:
        raise ValueError("no usable training audio to learn the audio codec from")
    t0 = time.time()
    val = s.waves["val"] or s.waves["train"][:VAL_MEDIA["audio_text"]]
    codec, _ = au.train_audio_codec(s.waves["train"], val, native_audio_config(t), t.steps, t.batch, seed,
                                    log=None)
    codec.save(out)
    metrics = au.reconstruction_metrics(codec, val[:16], stoi=False)
    log(f"prepare: audio codec {t.sample_rate} Hz, {t.frame_rate} frames/s × {t.levels} levels, mel L1 "
        f"{metrics['mel_l1_wave']:.3f} ({time.time() - t0:.0f}s)")
    return {"kind": "native", "train_seconds": round(s.seconds, 1), "steps": t.steps, "metrics": metrics,
            "levels": t.levels, "codes": codec.codebook_sizes[0], "frames_per_second": codec.frames_per_second,
            "seconds": round(time.time() - t0, 1)}


# -- pass 2: shards ------------------------------------------------------------------------------------
_WRITERS: dict[str, ChunkWriter] = {}  # per worker process: the writer of each corpus it has served


def _start_worker() -> None:
    torch.set_num_threads(1)  # one thread per shard: the codes do not depend on the worker count


def _write_chunk(args: tuple, directory: str, name: str, kind: str, records: list) -> dict:
    """A worker's task: one shard. The corpus's tokenizers are loaded on the first shard it writes."""
    tokenizers, kinds, settings = args
    if tokenizers not in _WRITERS:
        cfg = CorpusConfig.from_dict(settings)
        _WRITERS[tokenizers] = ChunkWriter(load_tokenizers(Path(tokenizers), kinds), cfg, cfg.tokenizers.image.fit)
    return _WRITERS[tokenizers].write(Path(directory), name, kind, records).__dict__


@contextlib.contextmanager
def worker_pool(workers: int):
    """`workers` spawned single-thread processes (not forked: the parent holds torch's thread pools),
    started at once so that their start-up (importing torch) overlaps the survey and the tokenizers'
    training instead of delaying the shards; None for one worker (shards are written in-process)."""
    if workers == 1:
        yield None
        return
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=ctx, initializer=_start_worker) as pool:
        for f in [pool.submit(_start_worker) for _ in range(workers)]:
            f.add_done_callback(lambda f: f.exception())  # started; a failure shows on the first shard
        yield pool


def _chunks(sources: dict, size: int):
    """(name, kind, records) in corpus order: per kind, consecutive runs of `size` records."""
    for kind, group in sources.items():
        batch, index = [], 0
        for source in group:
            for rec in source.records():
                batch.append(rec)
                if len(batch) == size:
                    yield f"{kind}-{index:05d}", kind, batch
                    batch, index = [], index + 1
        if batch:
            yield f"{kind}-{index:05d}", kind, batch


def _write_shards(out: Path, sources: dict, counts: dict, settings: CorpusConfig, log, pool) -> tuple[list[dict], float | None]:
    """Every shard's info in corpus order, and the steady samples/s of this call's shard phase."""
    shards = out / "shards"
    shards.mkdir(exist_ok=True)
    args = (str(out / "tokenizers"), list(sources), settings.to_dict())
    progress = Progress(sum(counts.values()), log)
    done = {}
    if pool is None:
        threads = torch.get_num_threads()
        _start_worker()
        try:
            for name, kind, records in _chunks(sources, settings.ingest.shard_samples):
                done[name] = chunk_complete(shards, name) or _write_chunk(args, str(shards), name, kind, records)
                progress.add(len(records))
        finally:
            torch.set_num_threads(threads)
    else:
        _pool_shards(pool, shards, sources, settings, args, progress, done)
    progress.close()
    order = sorted(done, key=lambda n: (KINDS.index(n.rsplit("-", 1)[0]), n))
    return [done[k] for k in order], progress.steady_rate()


def _pool_shards(pool, shards: Path, sources: dict, settings: CorpusConfig, args, progress, done: dict) -> None:
    """Chunks to the pool's processes, at most two each in flight (bounded memory)."""
    workers, pending = settings.ingest.workers, {}
    try:
        for name, kind, records in _chunks(sources, settings.ingest.shard_samples):
            info = chunk_complete(shards, name)
            if info is not None:
                done[name] = info
                progress.add(len(records))
                continue
            pending[pool.submit(_write_chunk, args, str(shards), name, kind, records)] = (name, len(records))
            while len(pending) >= 2 * workers:
                _collect(pending, done, progress, concurrent.futures.FIRST_COMPLETED)
        while pending:
            _collect(pending, done, progress, concurrent.futures.FIRST_COMPLETED)
    except BaseException:
        for f in pending:
            f.cancel()
        raise


def _collect(pending: dict, done: dict, progress, when) -> None:
    finished, _ = concurrent.futures.wait(pending, return_when=when)
    for f in finished:
        name, n = pending.pop(f)
        done[name] = f.result()  # a worker's ValueError (ingest.on_error=fail) surfaces here
        progress.add(n)


class Progress:
    """samples/s and ETA on stderr, one line rewritten in place (a line per 10% when not a terminal)."""

    def __init__(self, total: int, log):
        self.total, self.done, self.t0, self.log = total, 0, time.time(), log
        self.tty, self.next_mark = sys.stderr.isatty(), 0.1
        self.finished = []  # (seconds since start, samples) of each shard as it completes

    def steady_rate(self) -> float | None:
        """Samples/s between the first and the last shard to complete: the throughput once every worker
        is running, without their start-up (None with fewer than two shards)."""
        if len(self.finished) < 2 or self.finished[-1][0] <= self.finished[0][0]:
            return None
        return sum(n for _, n in self.finished[1:]) / (self.finished[-1][0] - self.finished[0][0])

    def add(self, n: int) -> None:
        self.done += n
        self.finished.append((time.time() - self.t0, n))
        elapsed = max(time.time() - self.t0, 1e-9)
        rate = self.done / elapsed
        eta = (self.total - self.done) / rate if rate > 0 else float("inf")
        line = (f"prepare: shards {self.done:,}/{self.total:,} samples ({100 * self.done / max(self.total, 1):.0f}%), "
                f"{rate:,.1f} samples/s, ETA {eta:,.0f}s")
        if self.tty:
            print("\r" + line, end="", file=sys.stderr, flush=True)
        elif self.done >= self.next_mark * self.total:
            self.log(line)
            self.next_mark = math.floor(10 * self.done / max(self.total, 1)) / 10 + 0.1

    def close(self) -> None:
        if self.tty:
            print(file=sys.stderr)


# -- manifest ------------------------------------------------------------------------------------------
def _finish(out: Path, sources: dict, chunks: list[dict], tokenizers: dict, settings: CorpusConfig,
            timing: dict) -> dict:
    """rejects.jsonl, the report and manifest.json (last). `timing`: seconds per phase of this prepare call
    (a resumed one counts only what it did) and its steady samples/s."""
    steady = timing.pop("steady_samples_per_s")
    rejects = [r for c in chunks for r in c["rejects"]]
    atomic_write_text(out / "rejects.jsonl", "".join(json.dumps(r) + "\n" for r in rejects))
    reasons = {}
    for r in rejects:
        reason = r["reason"].split(":", 1)[0]
        reasons[reason] = reasons.get(reason, 0) + 1
    samples = {k: {"train": sum(c["kept"]["train"] for c in chunks if c["kind"] == k),
                   "val": sum(c["kept"]["val"] for c in chunks if c["kind"] == k),
                   "read": sum(c["samples"] for c in chunks if c["kind"] == k)} for k in sources}
    for kind, n in samples.items():
        if n["train"] == 0:
            raise ValueError(f"no {kind} sample survived ingest ({n['read']} read; see {out / 'rejects.jsonl'})")
    manifest = {"format": FORMAT, "kinds": list(sources), "samples": samples, "rejected": len(rejects),
                "sources": {k: [{"spec": s.spec, "format": s.format, "fingerprint": s.fingerprint()} for s in v]
                            for k, v in sources.items()},
                "rejects": dict(sorted(reasons.items())),
                "trimmed": sum(c["trimmed"] for c in chunks),
                "audio_seconds": round(sum(c["audio_seconds"] for c in chunks), 2),
                "chunks": [{k: c[k] for k in ("name", "kind", "files", "kept")} for c in chunks],
                "tokens": _token_totals(chunks), "unigram": _unigram(out / "shards", chunks, tokenizers),
                "seconds": {k: round(v, 2) for k, v in timing.items()},
                "steady_samples_per_s": steady,
                "workers": settings.ingest.workers}
    if "audio_text" in sources:
        manifest["audio_length_rule"] = _length_rule(chunks, tokenizers["audio"])
    files = {f"shards/{name}": meta for c in chunks for name, meta in c["hashes"].items()}
    verify = {"stage": "corpus", **manifest}
    atomic_write_text(out / "manifest.json", json.dumps({**verify, "files": files}, indent=1) + "\n")
    (out / "prepare_report.md").write_text(corpus_report(out, manifest, settings))
    return manifest


def _token_totals(chunks: list[dict]) -> dict:
    totals = {}
    for c in chunks:
        for shard, meta in c["files"].items():
            _, split, part = shard.split(".")
            key = f"{c['kind']}.{split}.{part}"
            totals[key] = totals.get(key, 0) + meta["tokens"]
    return dict(sorted(totals.items()))


def _unigram(shards: Path, chunks: list[dict], tokenizers: dict) -> dict:
    """Cross-entropy (bits/token) of val text tokens (EOS included) under the add-one-smoothed train
    unigram: the baseline a model must beat on text."""
    n = tokenizers["text"].codebook_sizes[0] + 1
    counts = {split: np.zeros(n, np.float64) for split in ("train", "val")}
    for c in chunks:
        for split in counts:
            counts[split] += np.load(shards / f"{c['name']}.{split}.unigram.npy")
    p = (counts["train"] + 1) / (counts["train"].sum() + n)
    val = counts["val"]
    bits = float(-(val * np.log2(p)).sum() / val.sum()) if val.sum() else float("nan")
    return {"val_cross_entropy_bits": bits, "train_tokens": int(counts["train"].sum())}


def _length_rule(chunks: list[dict], codec) -> dict:
    """Least squares frames ≈ a + b·(transcript tokens) over training pairs (method §8), with its spread."""
    pairs = np.array([p for c in chunks for p in c["audio_pairs"]], dtype=np.float64)
    if len(pairs) >= 2 and np.ptp(pairs[:, 0]) > 0:
        b, a = np.polyfit(pairs[:, 0], pairs[:, 1], 1)
    else:
        a, b = float(pairs[:, 1].mean()), 0.0
    resid = pairs[:, 1] - (a + b * pairs[:, 0])
    return {"intercept": float(a), "slope": float(b), "residual_std": float(resid.std()),
            "frames_per_second": codec.frames_per_second}


def corpus_report(out: Path, manifest: dict, settings: CorpusConfig) -> str:
    lines = [f"# Corpus {out}", "", "| kind | read | train | val |", "|---|---|---|---|"]
    for kind, n in manifest["samples"].items():
        lines.append(f"| {kind} | {n['read']:,} | {n['train']:,} | {n['val']:,} |")
    lines += ["", f"Rejected: {manifest['rejected']:,} (listed in rejects.jsonl)"]
    lines += [f"- {reason}: {n:,}" for reason, n in manifest["rejects"].items()]
    if manifest.get("trimmed"):
        lines.append(f"Trimmed to {settings.tokenizers.audio.max_seconds:g}s: {manifest['trimmed']:,}")
    lines += ["", "| shard part | tokens |", "|---|---|"]
    lines += [f"| {k} | {v:,} |" for k, v in manifest["tokens"].items()]
    lines += ["", f"Text unigram baseline: {manifest['unigram']['val_cross_entropy_bits']:.3f} bits/token", ""]
    return "\n".join(lines)
