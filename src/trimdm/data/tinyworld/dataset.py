"""The embedded tri-modal data set `tinyworld`, prepared in four cached stages (method §10).

    raw/         images_{split}/ (PNG + captions.jsonl) and speech_{split}/ (WAV + transcripts.jsonl),
                 written by scenes.py and speech.py from a seed; the text corpus is the KJV
    tokenizers/  text/ (byte-level BPE on KJV + captions + transcripts), image/ (autoencoder + FSQ),
                 audio/ (mel codec + residual FSQ), with their reconstruction reports
    shards/      per split: text (KJV chapters), image_text (captions + image codes), audio_text
                 (transcripts + audio codes, frame-major), the tokens per row of every task, the
                 audio length rule (frames ≈ a + b·text tokens) and the text unigram baseline
    judges/      image/ and speech/ (judges/: the data set's offline stand-ins for CLIP and Whisper),
                 trained on the generated train split, with their clean val accuracy and their ceiling on
                 this data set's tokenizer reconstructions; rebuilt when the tokenizers or a judge default
                 change

Each stage lives in its own directory with a manifest (shards.finish_stage); it is rebuilt when its
manifest is missing or does not match its files, or when the stage it was built from changed (each
manifest records its input's manifest hash). Stages are built under a temporary name and swapped in
whole, so a failed or interrupted prepare never damages what was already prepared.

Inputs read by the tokenizers and shards stages go through the folder readers, which skip and count
corrupt or truncated files, empty captions and over-long utterances (or stop at the first under
`strict`); `images_dir`/`speech_dir` point the train split at user-supplied folders of the same layout.
The judges always train on the generated split under raw/, which carries the true scenes they learn.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from trimdm.config import TinyworldConfig, section_from_dict
from trimdm.data import kjv
from trimdm.data.shards import MANIFEST, Shard, finish_stage, new_stage_dir, verify_stage, write_shard
from trimdm.data.tinyworld import scenes as sc
from trimdm.data.tinyworld import speech as sp
from trimdm.data.tinyworld.judges import image as ij
from trimdm.data.tinyworld.judges import load_judges, settings
from trimdm.data.tinyworld.judges import speech as sj
from trimdm.fileio import atomic_write_text
from trimdm.sequence.layout import PackedText, PairedRows
from trimdm.streams import stream_seed
from trimdm.tokenizers import audio as au
from trimdm.tokenizers import image as im
from trimdm.tokenizers.audio import AudioCodecConfig
from trimdm.tokenizers.image import ImageTokenizerConfig
from trimdm.tokenizers.media import load_media_tokenizer
from trimdm.tokenizers.text import TextTokenizer
from trimdm.tokenizers.vocab import JointVocab

SPLITS = ("train", "val", "test")
TASKS = ("text", "image_text", "audio_text")


def _hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:12]


def _manifest_hash(directory: Path) -> str:
    return hashlib.sha256((directory / MANIFEST).read_bytes()).hexdigest()[:12]


def _upstream(root: Path, stage: str) -> str:
    """What a stage after raw is built from: the hash its manifest must record to be current."""
    if stage == "judges":
        return _judges_upstream(root)
    return _manifest_hash(root / {"tokenizers": "raw", "shards": "tokenizers"}[stage])


def _built_from_raw(root: Path, stages: tuple[str, ...]) -> bool:
    """Every stage after raw is complete and was built from the raw manifest that is there. Training and
    evaluation then read no training media, so a copy of the data set that keeps raw/manifest.json and
    the val folders but not the training media (e.g. shipped to a GPU machine) still loads."""
    if not (root / "raw" / MANIFEST).exists():
        return False
    for stage in stages:
        manifest, _ = verify_stage(root / stage)
        if manifest is None or manifest.get("upstream") != _upstream(root, stage):
            return False
    return True


def _current_manifest(directory: Path, upstream: str | None) -> tuple[dict | None, str]:
    """(manifest, "") if the stage is current, else (None, why it must be built)."""
    manifest, reason = verify_stage(directory)
    if manifest is not None and upstream is not None and manifest.get("upstream") != upstream:
        return None, "its input stage changed"
    return manifest, reason


class _Build:
    """One stage being built under its temporary name; finish() writes its manifest and swaps it in."""

    def __init__(self, directory: Path, upstream: str | None, reason: str, log):
        if directory.exists():
            log(f"prepare: rebuilding {directory} ({reason})")
        self.directory, self.upstream, self.log = directory, upstream, log
        self.t0 = time.time()
        self.tmp = new_stage_dir(directory)

    def finish(self, info: dict) -> dict:
        finish_stage(self.tmp, self.directory,
                     {**info, "upstream": self.upstream, "seconds": round(time.time() - self.t0, 1)})
        manifest, reason = verify_stage(self.directory)
        assert manifest is not None, reason
        self.log(f"prepare: built {self.directory.name} in {manifest['seconds']}s")
        return manifest


def _ensure(directory: Path, build, upstream: str | None, log) -> dict:
    manifest, reason = _current_manifest(directory, upstream)
    if manifest is None:
        stage = _Build(directory, upstream, reason, log)
        manifest = stage.finish(build(stage.tmp))
    return manifest


def speech_texts(captions: list[str], docs: list[str], n: int, seed: int) -> list[str]:
    """n texts to speak: alternately a caption and a short KJV sentence (5–15 words)."""
    rng = np.random.default_rng(seed)
    sentences = [s.strip() + "." for d in docs for s in d.replace(";", ".").replace(":", ".").split(".")
                 if 5 <= len(s.split()) <= 15]
    out = []
    for i in range(n):
        if i % 2 == 0 and captions:
            out.append(captions[(i // 2) % len(captions)])
        else:
            out.append(sentences[int(rng.integers(len(sentences)))])
    return out


def image_config(tw):

    return ImageTokenizerConfig(image_size=tw.image_size, channels=tuple(tw.image_channels),
                                fsq_levels=tuple(tw.image_fsq_levels))


def audio_config(tw):

    return AudioCodecConfig(channels=tw.audio_channels, blocks=tw.audio_blocks, emit_levels=tw.audio_emit_levels)


@dataclass
class TinyworldData:
    directory: Path
    manifest: dict  # of the shards stage
    tokenizers: dict  # modality -> tokenizer

    @property
    def tokenizer(self):
        return self.tokenizers["text"]

    def vocab(self) -> JointVocab:
        audio = self.tokenizers["audio"]
        return JointVocab(n_text=self.tokenizers["text"].codebook_sizes[0],
                          n_image=self.tokenizers["image"].codebook_sizes[0],
                          audio_levels=len(audio.codebook_sizes), audio_codebook=audio.codebook_sizes[0])

    def _shard(self, name: str) -> Shard:
        return Shard(self.directory / "shards", name, self.manifest["shards"][name])

    def sources(self, split: str, vocab: JointVocab, seq_len: int,
                tasks=("text", "image_text", "audio_text")) -> dict:
        """Row sources of `tasks` (a run leaves out those its mix gives no share, so their rows need not
        fit its seq_len)."""
        out = {}
        if "text" in tasks:
            text = self._shard(f"{split}.text")
            out["text"] = PackedText(text.tokens, text.offsets, vocab, seq_len)
        for task, modality in (("image_text", "image"), ("audio_text", "audio")):
            if task not in tasks:
                continue
            t, m = self._shard(f"{split}.{task}.text"), self._shard(f"{split}.{task}.{modality}")
            rows = PairedRows(t.tokens, t.offsets, m.tokens, m.offsets, modality, vocab, seq_len)
            rows.check_fits(f"{self.directory} ({split} {task})")
            out[task] = rows
        return out

    def tokens_per_row(self, seq_len: int) -> dict[str, float]:
        stats = self.manifest["tokens_per_row"]
        return {"text": float(seq_len), "image_text": stats["image_text"], "audio_text": stats["audio_text"]}

    def unigram_bits(self) -> float:
        return self.manifest["unigram"]["val_cross_entropy_bits"]

    def judges(self) -> dict:
        """{"image": ImageJudge, "speech": SpeechJudge} trained for this data set."""
        return load_judges(self.directory)

    def judge_report(self) -> dict:
        """Per judge: training summary, clean val accuracy and the ceiling on tokenizer reconstructions."""
        manifest = json.loads((self.directory / "judges" / MANIFEST).read_text())
        return {k: manifest[k] for k in ("image", "speech")}

    def save_tokenizers(self, run_dir: Path) -> None:
        self.tokenizers["text"].save(Path(run_dir) / "tokenizer")
        for m in ("image", "audio"):
            self.tokenizers[m].save(Path(run_dir) / "tokenizers" / m)
        # the audio length rule travels with the codec: T2S canvases are sized from it (method §8)
        rule = Path(run_dir) / "tokenizers" / "audio" / "length_rule.json"
        rule.write_text(json.dumps(self.manifest["audio_length_rule"], indent=2) + "\n")
        # and the range of training caption lengths: I2T decodes a caption at every length in it
        n = np.diff(self._shard("train.image_text.text").offsets)
        lengths = {"min": int(n.min()), "max": int(n.max())}
        (Path(run_dir) / "tokenizers" / "image" / "caption_lengths.json").write_text(json.dumps(lengths) + "\n")


def data_spec(cfg) -> dict:
    """Everything that shapes the prepared data, tokenizer defaults included; the directory name hashes
    it. Tokenizer knobs added later are hashed once, inside their tokenizer's config, and the codec's
    emitted levels only when not all, and the preparing precision, the scene vocabulary, the
    tokenizer's own scenes and the speech world only when not the defaults, so adding them kept the
    names of directories prepared before."""
    tinyworld = {k: v for k, v in asdict(cfg.tinyworld).items() if k not in ("image_fsq_levels", "audio_emit_levels")}
    defaults = asdict(type(cfg.tinyworld)())
    for key in ("prepare_dtype", "sizes", "backgrounds", "colors", "tokenizer_scenes", "voices", "voice_jitter"):
        if tinyworld[key] == defaults[key]:
            del tinyworld[key]
    codec = asdict(audio_config(cfg.tinyworld))
    if codec["emit_levels"] in (0, codec["levels"]):
        del codec["emit_levels"]
    # "streams": the raw stage's seeds come from named streams (streams.py), not from the data set's seed
    # plus salts, so a set prepared before draws other items and must not be reused for this spec
    return {"tinyworld": tinyworld, "text_vocab": cfg.text_vocab,
            "image_tokenizer": asdict(image_config(cfg.tinyworld)), "audio_codec": codec, "streams": 1}


def tinyworld_root(cfg) -> Path:
    """Where the tinyworld data set of a DataConfig is (or will be) prepared: DATA_ROOT/tinyworld-HASH,
    HASH naming its spec (`data_spec`); its raw/ holds the images and utterances of every split."""
    return Path(cfg.root) / f"tinyworld-{_hash(data_spec(cfg))}"


def prepare_tinyworld(cfg, log=print, strict: bool = False, judges: bool = True) -> TinyworldData:
    """cfg: the run's DataConfig (uses cfg.tinyworld, cfg.text_vocab, cfg.root). `judges=False` stops after
    the shards: training never reads the judges. The judges train beside the shards stage."""
    data, job = _prepare(cfg, log, strict, judges)
    if job is not None:
        job.finish()
    return data


def _prepare(cfg, log, strict: bool, judges: bool) -> tuple[TinyworldData, JudgeTraining | None]:

    tw = cfg.tinyworld
    sc.check_world(tw.sizes, tw.backgrounds, tw.colors, prefix="data.tinyworld.")
    sp.check_voices(tw.voices, tw.voice_jitter, prefix="data.tinyworld.")
    spec = data_spec(cfg)
    root = tinyworld_root(cfg)
    root.mkdir(parents=True, exist_ok=True)
    atomic_write_text(root / "spec.json", json.dumps(spec, indent=2) + "\n")
    if not _built_from_raw(root, ("tokenizers", "shards", "judges") if judges else ("tokenizers", "shards")):
        _ensure(root / "raw", lambda tmp: _build_raw(tmp, tw, log), None, log)
    _ensure(root / "tokenizers", lambda tmp: _build_tokenizers(tmp, root / "raw", cfg, log, strict),
            _upstream(root, "tokenizers"), log)
    tokenizers = {"text": TextTokenizer.load(root / "tokenizers" / "text"),
                  **{m: load_media_tokenizer(root / "tokenizers" / m, m) for m in ("image", "audio")}}
    # the judges need the tokenizers (their ceiling is read on reconstructions), not the shards
    job = JudgeTraining(root, tw, log, strict) if judges else None
    try:
        shards = _ensure(root / "shards", lambda tmp: _build_shards(tmp, root / "raw", tokenizers, cfg, log, strict),
                         _upstream(root, "shards"), log)
    except BaseException:
        if job is not None:
            job.cancel()
        raise
    return TinyworldData(root, shards, tokenizers), job


# -- stage 1: raw -------------------------------------------------------------------------------------
@contextlib.contextmanager
def _one_thread():
    """Resampling and per-item encoding are many small ops: one thread is as fast, never thrashes
    when other processes share the cores, and gives the same bits whatever the machine's core count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@_one_thread()
def _build_raw(tmp: Path, tw, log) -> dict:

    counts = {"train": (tw.scenes, tw.utterances), "val": (tw.eval_scenes, tw.eval_utterances),
              "test": (tw.eval_scenes, tw.eval_utterances)}
    docs = kjv.split(kjv.chapters())
    info = {"images": {}, "speech": {}}
    for split, (n_scenes, n_utt) in counts.items():
        t0 = time.time()
        scenes = sc.sample_scenes(n_scenes, split, tw.seed, two_object_fraction=tw.two_object_fraction,
                                  sizes=tuple(tw.sizes), backgrounds=tuple(tw.backgrounds),
                                  colors=tuple(tw.colors))
        sc.write_image_folder(tmp / f"images_{split}", scenes, size=tw.image_size,
                              seed=stream_seed(tw.seed, f"{split} captions"))
        captions = [json.loads(line)["caption"] for line in
                    (tmp / f"images_{split}" / "captions.jsonl").read_text().splitlines()]
        # speak more texts than needed: utterances over max_seconds are dropped, `n_utt` are kept
        texts = speech_texts(captions, docs["train" if split == "train" else "val"], 2 * n_utt,
                             stream_seed(tw.seed, f"{split} speech texts"))
        utts, spoken = [], 0
        while len(utts) < n_utt and spoken < len(texts):
            batch = texts[spoken:spoken + max(64, int(1.2 * (n_utt - len(utts))))]
            utts += sp.synthesize_corpus(batch, seed=stream_seed(tw.seed, f"{split} voices from {spoken}"),
                                         max_seconds=tw.max_seconds,
                                         voices=tuple(tw.voices), voice_jitter=tw.voice_jitter)
            spoken += len(batch)
        utts = utts[:n_utt]
        sp.write_speech_folder(tmp / f"speech_{split}", utts)
        info["images"][split] = len(scenes)
        info["speech"][split] = {"utterances": len(utts), "requested": n_utt,
                                 "seconds": round(sum(u.seconds for u in utts), 1)}
        log(f"prepare: tinyworld {split}: {len(scenes)} scenes, {len(utts)} utterances "
            f"({time.time() - t0:.1f}s)")
    return {"stage": "raw", **info}


def _read_split(raw: Path, split: str, tw, strict: bool):

    images_dir = Path(tw.images_dir) if (tw.images_dir and split == "train") else raw / f"images_{split}"
    speech_dir = Path(tw.speech_dir) if (tw.speech_dir and split == "train") else raw / f"speech_{split}"
    items, img_report = sc.read_image_folder(images_dir, strict=strict)
    speech, sp_report = sp.read_speech_folder(speech_dir, max_seconds=tw.max_seconds, strict=strict)
    bad = [i for i, (img, _, _) in enumerate(items) if img.shape != (tw.image_size, tw.image_size, 3)]
    if bad:
        msg = f"{images_dir}: {len(bad)} images are not {tw.image_size}×{tw.image_size} RGB"
        if strict:
            raise ValueError(msg)
        img_report["skipped_wrong_size"] = len(bad)
        bad_set = set(bad)
        items = [it for i, it in enumerate(items) if i not in bad_set]
    images = np.stack([img for img, _, _ in items]) if items else np.zeros((0, tw.image_size, tw.image_size, 3), np.uint8)
    report = {"images": {"dir": str(images_dir), **img_report},
              "speech": {"dir": str(speech_dir), **sp_report.to_dict()}}
    return images, [c for _, c, _ in items], [w for w, _ in speech], [t for _, t in speech], report


# -- stage 2: tokenizers ------------------------------------------------------------------------------
def tokenizer_scenes(tw) -> list:
    """The `tw.tokenizer_scenes` unlabeled scenes only the image tokenizer trains on: the data set's world,
    held-out compositions included (as in val), drawn from another seed than val so that no val or test
    image is among them. The generative model and the judges never see them."""
    return sc.sample_scenes(tw.tokenizer_scenes, "val", stream_seed(tw.seed, "tokenizer scenes"),
                            two_object_fraction=tw.two_object_fraction, sizes=tuple(tw.sizes),
                            backgrounds=tuple(tw.backgrounds), colors=tuple(tw.colors))


def _train_image(raw: str, out: str, tw, strict: bool) -> dict:
    """Worker: train the image tokenizer on the train split, plus `tokenizer_scenes` unlabeled scenes of
    every composition when asked (one thread: deterministic and fair)."""
    t0 = time.time()
    images = _read_split(Path(raw), "train", tw, strict)[0]
    val = _read_split(Path(raw), "val", tw, strict)[0][:256]
    if len(images) == 0:
        raise ValueError(f"{raw}: no usable training images (see the read report)")
    extra = [sc.render(s, tw.image_size) for s in tokenizer_scenes(tw)]
    if extra:
        images = np.concatenate([images, np.stack(extra)])
    image, _ = im.train_image_tokenizer(images, val, image_config(tw), tw.image_steps, tw.image_batch, tw.seed,
                                        log=None, bf16=tw.prepare_dtype == "bf16")
    image.save(Path(out))
    return {"metrics": im.reconstruction_metrics(image, val), "train_seconds": round(time.time() - t0, 1),
            "steps": tw.image_steps, "train_images": len(images), "tokenizer_scenes": len(extra)}


def _train_audio(raw: str, out: str, tw, strict: bool) -> dict:
    """Worker: train the audio codec on the train split (one thread)."""
    t0 = time.time()
    waves = _read_split(Path(raw), "train", tw, strict)[2]
    val = _read_split(Path(raw), "val", tw, strict)[2]
    if len(waves) == 0:
        raise ValueError(f"{raw}: no usable training utterances (see the read report)")
    codec, _ = au.train_audio_codec(waves, val[:64], audio_config(tw), tw.audio_steps, tw.audio_batch, tw.seed,
                                    log=None, bf16=tw.prepare_dtype == "bf16")
    codec.save(Path(out))
    return {"metrics": au.reconstruction_metrics(codec, val[:32]), "train_seconds": round(time.time() - t0, 1),
            "steps": tw.audio_steps, "frames_per_second": codec.frames_per_second, "tokens_per_second": codec.rate}


def _build_tokenizers(tmp: Path, raw: Path, cfg, log, strict: bool) -> dict:
    """BPE here; the image tokenizer and the audio codec train at once in two single-thread processes."""
    tw = cfg.tinyworld
    _, captions, _, transcripts, read_report = _read_split(raw, "train", tw, strict)
    jobs = {kind: _start_worker(kind, raw, tmp / kind, tw, strict) for kind in ("image", "audio")}
    try:
        docs = kjv.split(kjv.chapters())["train"]
        text = TextTokenizer.train(docs + captions + transcripts, cfg.text_vocab)
        text.save(tmp / "text")
        image, audio = (_finish_worker(kind, jobs[kind], tmp / kind) for kind in ("image", "audio"))
    except BaseException:
        _kill(jobs.values())  # the other worker must not go on training into a stage that will not land
        raise
    log(f"prepare: image tokenizer PSNR {image['metrics']['psnr']:.2f} dB ({image['train_seconds']:.0f}s); "
        f"audio codec mel L1 {audio['metrics']['mel_l1_wave']:.3f}, STOI {audio['metrics']['stoi_codes']:.3f} "
        f"({audio['train_seconds']:.0f}s)")
    return {"stage": "tokenizers", "read": read_report, "text": {"vocab": text.codebook_sizes[0]},
            "image": image, "audio": audio}


WORKER_LOG = "worker.log"


def _start_worker(kind: str, raw: Path, out: Path, tw, strict: bool,
                  tokenizers: Path | None = None) -> subprocess.Popen:
    """A fresh single-thread process per tokenizer (or judge): two train at once, each deterministic.
    Its output goes to OUT/worker.log, not a pipe, so that it never blocks while nobody reads it (the
    judges train while prepare builds the shards)."""
    out.mkdir(parents=True)
    args = json.dumps({"kind": kind, "raw": str(raw), "out": str(out), "tinyworld": asdict(tw), "strict": strict,
                       "tokenizers": str(tokenizers) if tokenizers else None})
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    with open(out / WORKER_LOG, "w") as logfile:
        return subprocess.Popen([sys.executable, "-m", "trimdm.data.tinyworld.dataset", args], env=env,
                                stdout=logfile, stderr=subprocess.STDOUT, text=True)


def _finish_worker(kind: str, proc: subprocess.Popen, out: Path) -> dict:
    proc.wait()
    log = out / WORKER_LOG
    if proc.returncode != 0:
        last = [line for line in log.read_text().strip().splitlines() if line.strip()][-1:] or ["(no message)"]
        what = f"the {kind.replace('_', ' ')}" if kind.endswith("judge") else f"the {kind} tokenizer"
        raise ValueError(f"training {what} failed: {last[0]}")
    log.unlink()
    return json.loads((out / "train_report.json").read_text())


def _kill(procs) -> None:
    for proc in procs:
        proc.kill()
        proc.wait()


def _worker_main(args: dict) -> None:


    torch.set_num_threads(1)
    tw = section_from_dict(TinyworldConfig, args["tinyworld"], "data.tinyworld.")
    if args["kind"] in ("image", "audio"):
        train = _train_image if args["kind"] == "image" else _train_audio
        report = train(args["raw"], args["out"], tw, args["strict"])
    else:
        train = _train_image_judge if args["kind"] == "image_judge" else _train_speech_judge
        report = train(args["raw"], args["out"], tw, args["strict"], args["tokenizers"])
    (Path(args["out"]) / "train_report.json").write_text(json.dumps(report, indent=2) + "\n")


# -- stage 3: shards ----------------------------------------------------------------------------------
@_one_thread()
def _build_shards(tmp: Path, raw: Path, tok: dict, cfg, log, strict: bool) -> dict:
    tw = cfg.tinyworld
    text_tok, image_tok, codec = tok["text"], tok["image"], tok["audio"]
    n_text = text_tok.codebook_sizes[0]
    docs = kjv.split(kjv.chapters())
    docs["test"] = docs["val"]  # the KJV split has one held-out part; val and test share it
    shards, reads, lengths = {}, {}, {"image_text": [], "audio_text": []}
    pairs_text, pairs_frames = [], []
    unigram = {}
    for split in SPLITS:
        images, captions, waves, transcripts, reads[split] = _read_split(raw, split, tw, strict)
        kjv_ids = text_tok.encode_batch(docs[split])
        shards[f"{split}.text"] = write_shard(tmp, f"{split}.text", kjv_ids, n_text)
        cap_ids = text_tok.encode_batch(captions)
        codes = [c for c in _batched(image_tok.encode, images, 256)]
        shards[f"{split}.image_text.text"] = write_shard(tmp, f"{split}.image_text.text", cap_ids, n_text)
        shards[f"{split}.image_text.image"] = write_shard(tmp, f"{split}.image_text.image", codes,
                                                          image_tok.codebook_sizes[0])
        tr_ids = text_tok.encode_batch(transcripts)
        audio_codes = [codec.encode(w).reshape(-1) for w in waves]
        shards[f"{split}.audio_text.text"] = write_shard(tmp, f"{split}.audio_text.text", tr_ids, n_text)
        shards[f"{split}.audio_text.audio"] = write_shard(tmp, f"{split}.audio_text.audio", audio_codes,
                                                          codec.codebook_sizes[0])
        if split == "train":
            lengths["image_text"] = [5 + len(t) + len(c) for t, c in zip(cap_ids, codes)]
            lengths["audio_text"] = [5 + len(t) + len(c) for t, c in zip(tr_ids, audio_codes)]
            pairs_text = [len(t) for t in tr_ids]
            pairs_frames = [len(c) // len(codec.codebook_sizes) for c in audio_codes]
        counts = np.bincount(np.concatenate(kjv_ids + cap_ids + tr_ids), minlength=n_text + 1).astype(np.float64)
        counts[n_text] += len(kjv_ids) + len(cap_ids) + len(tr_ids)  # one EOS per document
        unigram[split] = counts
        log(f"prepare: shards {split}: {len(kjv_ids)} chapters, {len(codes)} image-text, "
            f"{len(audio_codes)} audio-text pairs")
    p = (unigram["train"] + 1) / (unigram["train"].sum() + len(unigram["train"]))
    # audio length rule (method §8): least squares frames ≈ a + b·(transcript tokens), plus the spread
    b, a = np.polyfit(np.array(pairs_text, float), np.array(pairs_frames, float), 1)
    resid = np.array(pairs_frames) - (a + b * np.array(pairs_text))
    return {"stage": "shards", "shards": shards, "read": reads,
            "tokens_per_row": {k: float(np.mean(v)) for k, v in lengths.items()},
            "max_row_tokens": {k: int(np.max(v)) for k, v in lengths.items()},
            "audio_length_rule": {"intercept": float(a), "slope": float(b), "residual_std": float(resid.std()),
                                  "frames_per_second": codec.frames_per_second},
            "unigram": {"val_cross_entropy_bits": float(-(unigram["val"] * np.log2(p)).sum() / unigram["val"].sum())}}


# -- stage 4: judges ----------------------------------------------------------------------------------
RECON_UTTERANCES = 100  # val utterances the speech ceiling is measured on (Griffin-Lim costs ~0.08 s/utterance)


def _judges_upstream(root: Path) -> str:

    return _hash({"tokenizers": _manifest_hash(root / "tokenizers"), "judges": settings()})


class JudgeTraining:
    """The judges stage: the image and the speech judge train at once in two single-thread worker
    processes, started here (prepare builds the shards meanwhile). finish() waits for them, moves the
    stage into place and writes the prepare report; cancel() kills them and removes the unfinished
    stage. Nothing runs if the stage is current."""

    def __init__(self, root: Path, tw, log, strict: bool):
        self.root, self.log = root, log
        upstream = _upstream(root, "judges")
        manifest, reason = _current_manifest(root / "judges", upstream)
        self.stage = None if manifest is not None else _Build(root / "judges", upstream, reason, log)
        self.jobs = {} if self.stage is None else {
            kind: _start_worker(f"{kind}_judge", root / "raw", self.stage.tmp / kind, tw, strict, root / "tokenizers")
            for kind in ("image", "speech")}

    def finish(self) -> None:
        if self.stage is not None:
            tmp = self.stage.tmp
            try:
                image, speech = (_finish_worker(f"{k}_judge", self.jobs[k], tmp / k) for k in ("image", "speech"))
            except BaseException:
                self.cancel()
                raise
            self.log(f"prepare: image judge reads {image['val']['all_correct']:.1%} of val scenes exactly "
                     f"({image['reconstructed_val']['all_correct']:.1%} of their tokenizer reconstructions, "
                     f"{image['train']['train_seconds']:.0f}s); speech judge CER {speech['val']['cer']:.1%} "
                     f"({speech['reconstructed_val']['cer']:.1%} on codec reconstructions, "
                     f"{speech['train']['train_seconds']:.0f}s)")
            self.stage.finish({"stage": "judges", "image": image, "speech": speech})
            self.stage, self.jobs = None, {}
        write_report(self.root)

    def cancel(self) -> None:
        _kill(self.jobs.values())
        if self.stage is not None:
            shutil.rmtree(self.stage.tmp, ignore_errors=True)
        self.stage, self.jobs = None, {}


def _train_image_judge(raw: str, out: str, tw, strict: bool, tokenizers: str) -> dict:
    """Worker: the image judge, trained on the generated train scenes plus tokenizer reconstructions of
    half of them; scored on val and on val's reconstructions (the ceiling a generated image can reach)."""
    def split(name: str):
        items, _ = sc.read_image_folder(Path(raw) / f"images_{name}", strict=strict)
        if not items:
            raise ValueError(f"{raw}/images_{name}: no usable images")
        return np.stack([img for img, _, _ in items]), [scene for _, _, scene in items]

    images, scenes = split("train")
    val_images, val_scenes = split("val")
    tokenizer = load_media_tokenizer(Path(tokenizers) / "image", "image")

    def reconstruct(x: np.ndarray) -> np.ndarray:
        return tokenizer.decode(tokenizer.encode(x))

    judge, report = ij.train_image_judge(images, scenes, cfg=ij.ImageJudgeConfig(image_size=tw.image_size),
                                         reconstruct=reconstruct, bf16=tw.prepare_dtype == "bf16")
    judge.save(Path(out))
    return {"train": report, "val": ij.attribute_accuracy(judge, val_images, val_scenes),
            "reconstructed_val": ij.attribute_accuracy(judge, reconstruct(val_images), val_scenes)}


def _train_speech_judge(raw: str, out: str, tw, strict: bool, tokenizers: str) -> dict:
    """Worker: the speech judge on the generated train utterances; CER on val and on codec
    reconstructions of the first RECON_UTTERANCES of val."""
    def split(name: str):
        items, _ = sp.read_speech_folder(Path(raw) / f"speech_{name}", max_seconds=tw.max_seconds, strict=strict)
        if not items:
            raise ValueError(f"{raw}/speech_{name}: no usable utterances")
        return [w for w, _ in items], [t for _, t in items]

    waves, texts = split("train")
    val_waves, val_texts = split("val")
    judge, report = sj.train_speech_judge(waves, texts, bf16=tw.prepare_dtype == "bf16")
    judge.save(Path(out))
    codec = load_media_tokenizer(Path(tokenizers) / "audio", "audio")
    sub = val_waves[:RECON_UTTERANCES]
    recon = [codec.decode(codec.encode(w))[:len(w)] for w in sub]
    heard = judge.transcribe(val_waves)
    return {"train": report,
            "val": {"cer": sj.cer(heard, val_texts), "n_utterances": len(val_waves),
                    "examples": [{"ref": sj.normalize_text(t), "hyp": h} for t, h in zip(val_texts[:3], heard)]},
            "reconstructed_val": {"cer": sj.cer(judge.transcribe(recon), val_texts[:len(sub)]),
                                  "n_utterances": len(sub)}}


def _batched(fn, items: np.ndarray, size: int):
    for start in range(0, len(items), size):
        yield from fn(items[start:start + size])


def write_report(root: Path) -> dict:
    """prepare_report.{json,md}: counts, sizes, token rates, tokenizer quality and everything skipped."""
    manifests = {s: json.loads((root / s / MANIFEST).read_text()) for s in ("raw", "tokenizers", "shards", "judges")}
    size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    report = {"directory": str(root), "bytes": size,
              "raw": {k: manifests["raw"][k] for k in ("images", "speech")},
              "tokenizers": {k: manifests["tokenizers"][k] for k in ("text", "image", "audio")},
              "read": manifests["shards"]["read"],
              "tokens_per_row": manifests["shards"]["tokens_per_row"],
              "max_row_tokens": manifests["shards"]["max_row_tokens"],
              "audio_length_rule": manifests["shards"]["audio_length_rule"],
              "shards": manifests["shards"]["shards"],
              "judges": {k: {"val": manifests["judges"][k]["val"],
                             "reconstructed_val": manifests["judges"][k]["reconstructed_val"],
                             "steps": manifests["judges"][k]["train"]["steps"],
                             "train_seconds": manifests["judges"][k]["train"]["train_seconds"]}
                         for k in ("image", "speech")},
              "seconds": {s: m["seconds"] for s, m in manifests.items()}}
    (root / "prepare_report.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [f"# tinyworld prepare report: {root}", "", f"Total size: {size / 1e6:.1f} MB", "",
             "| split | images | utterances | skipped images | skipped utterances |", "|---|---|---|---|---|"]
    for split, r in report["read"].items():
        skipped_img = {k: v for k, v in r["images"].items() if k.startswith("skipped") and v}
        skipped_sp = {k: v for k, v in r["speech"].items() if k.startswith("skipped") and v}
        lines.append(f"| {split} | {r['images']['read']} | {r['speech']['read']} | {skipped_img or 0} | "
                     f"{skipped_sp or 0} |")
    img, au = report["tokenizers"]["image"], report["tokenizers"]["audio"]
    lines += ["", f"Image tokenizer: {img['metrics']}", f"Audio codec: {au['metrics']} "
              f"({au['frames_per_second']} frames/s, {au['tokens_per_second']} tokens/s)",
              f"Tokens per row: {report['tokens_per_row']} (max {report['max_row_tokens']})",
              f"Audio length rule: {report['audio_length_rule']}"]
    ji, js = report["judges"]["image"], report["judges"]["speech"]
    lines += ["", "| judge | held-out val | on tokenizer reconstructions of val | train |", "|---|---|---|---|",
              f"| image: attribute accuracy / scenes read exactly | {ji['val']['attributes']:.1%} / "
              f"{ji['val']['all_correct']:.1%} | {ji['reconstructed_val']['attributes']:.1%} / "
              f"{ji['reconstructed_val']['all_correct']:.1%} | {ji['steps']} steps, {ji['train_seconds']:.0f}s |",
              f"| speech: character error rate | {js['val']['cer']:.1%} | {js['reconstructed_val']['cer']:.1%} | "
              f"{js['steps']} steps, {js['train_seconds']:.0f}s |", "", f"Stage seconds: {report['seconds']}"]
    (root / "prepare_report.md").write_text("\n".join(lines) + "\n")
    return report


if __name__ == "__main__":  # tokenizer or judge worker, started by _start_worker
    try:
        _worker_main(json.loads(sys.argv[1]))
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
