"""One typed config tree for a trimdm run: nested dataclasses, JSON round-trip, `derive()`, `validate()`.

Owns: every configurable number and its type, the `key=value` override parser (type-checked, unknown
keys answered with close matches), and the derived numbers (steps, warmup steps, tokens per step).
Does not own: vocabulary sizes (they come from the tokenizers through `JointVocab`, which is saved
with every checkpoint) or experiment choices (those are recipes in `trimdm.recipes`).
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trimdm.diffusion.schedules import REVERSE, parse_schedule
from trimdm.optim.lr import SCHEDULES
from trimdm.optim.reparam import BaseHParams, sde_hparams
from trimdm.tokenizers.vocab import MODALITIES


def _check_positive(prefix: str, section: Any, *names: str) -> None:
    for name in names:
        value = getattr(section, name)
        if value <= 0:
            raise ValueError(f"{prefix}{name}={value} must be positive")


def _check_choice(key: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{key}={value!r}: expected {' | '.join(allowed)}")


@dataclass
class PerModality:
    """A value per modality. On the command line `x=v` sets all three, `x.image=v` one of them."""

    text: str = "linear"
    image: str = "linear"
    audio: str = "linear"

    def __getitem__(self, modality: str) -> str:
        return getattr(self, modality)


@dataclass
class PerMedium:
    """A number per medium of the paired rows. On the command line `x=v` sets both, `x.audio=v` one."""

    image: float = 0.5
    audio: float = 0.5

    def __getitem__(self, medium: str) -> float:
        return getattr(self, medium)


@dataclass
class ModelConfig:
    d_model: int = 256
    n_layers: int = 4
    n_heads: int = 4
    mlp_hidden: int = 0  # 0: SwiGLU width 8/3·d_model rounded up to a multiple of 64
    rope_theta: float = 10000.0
    norm_eps: float = 1e-6
    init_std: float = 0.02
    # standard | completep (Dey et al. 2025, Table 1 at α = 1): with m_N = d_model/base_width and
    # m_L = n_layers/base_depth, residual branches × 1/m_L, logits × 1/m_N, block matrices' init std
    # × 1/√m_N (no 1/√(2·n_layers)), hidden lr × 1/m_N and weight decay × m_N, ε × 1/m_N (× 1/m_L
    # inside blocks); optim/param_groups.py and model/transformer.py hold the rules.
    parameterization: str = "standard"
    base_width: int = 256
    base_depth: int = 4

    def validate(self) -> None:
        _check_positive("model.", self, "d_model", "n_layers", "n_heads")
        if self.d_model % self.n_heads:
            raise ValueError(f"model.d_model={self.d_model} is not divisible by model.n_heads={self.n_heads}")
        if (self.d_model // self.n_heads) % 2:
            raise ValueError(f"head dimension {self.d_model // self.n_heads} must be even for RoPE")
        _check_choice("model.parameterization", self.parameterization, ("standard", "completep"))
        _check_positive("model.", self, "base_width", "base_depth")


@dataclass
class Mix:
    """Token shares of the training tasks (normalised; tasks the data set lacks must be 0)."""

    text: float = 1.0
    image_text: float = 0.0
    audio_text: float = 0.0


@dataclass
class TinyworldConfig:
    """Sizes and training budgets of the embedded data set (method §10); each setting gets its own
    prepared directory, so recipes of different sizes never overwrite each other."""

    scenes: int = 10_000  # training scenes (val and test: eval_scenes each)
    eval_scenes: int = 500
    utterances: int = 5_000  # training utterances (val and test: eval_utterances each)
    eval_utterances: int = 250
    image_size: int = 32
    two_object_fraction: float = 0.5
    max_seconds: float = 4.0  # longer utterances are skipped and counted
    seed: int = 0
    image_steps: int = 2000  # image tokenizer training steps
    image_batch: int = 32
    image_channels: tuple[int, int, int] = (32, 64, 96)  # autoencoder widths per resolution (32 -> 8)
    image_fsq_levels: tuple[int, ...] = (7, 5, 5, 5)  # image tokenizer FSQ levels; codebook = their product
    audio_steps: int = 1500  # audio codec training steps
    audio_batch: int = 16
    audio_channels: int = 256  # codec encoder/decoder width
    audio_blocks: int = 4  # residual blocks in each of the codec's encoder and decoder
    audio_emit_levels: int = 0  # codec levels in the token stream, coarsest first (0: all 4; AudioCodecConfig)
    # precision of the tokenizers' and judges' training: fp32 | bf16 (autocast, fp32 weights; ~1.6x faster
    # on a CPU with bf16 matmul; docs/generation.md, "Preparing in bf16")
    prepare_dtype: str = "fp32"
    # the scene vocabulary the scenes draw from: subsets of scenes.SIZES, .BACKGROUNDS and .COLORS (a
    # smaller world for a short run; shapes and cells stay whole, and the colours must keep a held-out pair)
    sizes: tuple[str, ...] = ("small", "large")
    backgrounds: tuple[str, ...] = ("white", "cream", "light grey", "dark grey")
    colors: tuple[str, ...] = ("red", "green", "blue", "yellow", "purple", "cyan")
    # unlabeled scenes of every composition (held-out pairs included) that only the image tokenizer trains
    # on, so that it can encode what a smaller world holds out; the model and the judges never see them
    tokenizer_scenes: int = 0
    # the speech world: the base voices utterances draw from (names of speech.VOICES) and a scale on their
    # rate, pitch and range jitter (0: each voice as it is); fewer voices make T2S a less ambiguous task
    voices: tuple[str, ...] = ("en-us+m1", "en-us+m3", "en-us+f1", "en-us+f3", "en-us+klatt", "en+m4", "en+f2",
                               "en+m7")
    voice_jitter: float = 1.0
    images_dir: str = ""  # user-supplied training image folder (captions.jsonl layout); "": generate
    speech_dir: str = ""  # user-supplied training speech folder (transcripts.jsonl layout); "": generate

    def validate(self, prefix: str = "data.tinyworld.") -> None:
        """Its own numbers, and the smaller world's values as distinct subsets of the whole world (the
        defaults). Whether the colours keep a held-out pair is the data set's to say (scenes.check_world,
        at prepare)."""
        if self.tokenizer_scenes < 0:
            raise ValueError(f"{prefix}tokenizer_scenes={self.tokenizer_scenes} must be >= 0")
        if self.prepare_dtype not in ("bf16", "fp32"):
            raise ValueError(f"{prefix}prepare_dtype={self.prepare_dtype!r}: expected 'bf16' or 'fp32'")
        whole = type(self)()
        for name, what in (("sizes", "values"), ("backgrounds", "values"), ("colors", "values"), ("voices", "names")):
            chosen, known = getattr(self, name), getattr(whole, name)
            if not chosen or len(set(chosen)) != len(chosen) or not set(chosen) <= set(known):
                raise ValueError(f"{prefix}{name}={','.join(map(str, chosen))}: expected distinct {what} among "
                                 f"{', '.join(known)}")
        if not 0.0 <= self.voice_jitter <= 1.0:
            raise ValueError(f"{prefix}voice_jitter={self.voice_jitter} must lie in [0, 1]")


@dataclass
class DataConfig:
    dataset: str = "kjv"  # kjv (text only) | tinyworld (text, image-text, audio-text) | corpus (data.corpus)
    root: str = "data"  # where prepared data sets live (relative to the working directory)
    corpus: str = ""  # dataset=corpus: a directory written by `trimdm prepare --text/--image-text/--audio-text`
    seq_len: int = 256  # physical sequence length L of every training row
    text_vocab: int = 4096  # BPE vocabulary size (ids [0, text_vocab) of the joint vocabulary)
    max_docs: int = 0  # 0: the whole corpus; >0: the first N documents (tiny runs)
    mix: Mix = field(default_factory=Mix)
    tinyworld: TinyworldConfig = field(default_factory=TinyworldConfig)
    strict: bool = False  # stop prepare at the first bad input file instead of skipping and counting it

    def validate(self) -> None:
        _check_positive("data.", self, "seq_len", "text_vocab")
        shares = [self.mix.text, self.mix.image_text, self.mix.audio_text]
        if min(shares) < 0 or sum(shares) <= 0:
            raise ValueError(f"data.mix shares {shares} must be >= 0 with a positive sum")
        _check_choice("data.dataset", self.dataset, ("kjv", "tinyworld", "corpus"))
        if self.corpus and self.dataset != "corpus":
            raise ValueError(f"data.corpus={self.corpus!r} is read only with data.dataset=corpus (recipe custom), "
                             f"not data.dataset={self.dataset!r}")
        self.tinyworld.validate()


# -- a corpus of the user's own data (`trimdm prepare --text/--image-text/--audio-text`) ------------------
@dataclass
class TextTokenizerSettings:
    kind: str = "bpe"  # bpe: byte-level BPE trained on the corpus | file: a tokenizer.json at `path`
    path: str = ""
    vocab: int = 8192  # bpe: vocabulary size
    train_chars: int = 50_000_000  # bpe: characters of training-split text it learns from (a prefix)

    def validate(self, prefix: str = "tokenizers.text.") -> None:
        _check_choice(f"{prefix}kind", self.kind, ("bpe", "file"))
        _check_positive(prefix, self, "vocab", "train_chars")
        if self.kind == "file" and not self.path:
            raise ValueError(f"{prefix}kind=file needs {prefix}path=FILE (a tokenizer.json)")


@dataclass
class ImageTokenizerSettings:
    kind: str = "native"  # native: trimdm's autoencoder + FSQ, trained on the corpus | vqmodel: diffusers VQModel
    path: str = ""  # vqmodel: a local directory written by save_pretrained
    resolution: int = 64  # pixels per side the images are fitted to
    downsample: int = 8  # native: pixels per token side (64 px -> 8×8 tokens)
    fit: str = "crop"  # crop: shorter side to `resolution`, centre crop | pad: longer side, padded with white
    steps: int = 2000  # native: training steps
    batch: int = 32
    train_images: int = 20_000  # native: training-split images it learns from (the first ones)

    def validate(self, prefix: str = "tokenizers.image.") -> None:
        _check_choice(f"{prefix}kind", self.kind, ("native", "vqmodel"))
        _check_choice(f"{prefix}fit", self.fit, ("crop", "pad"))
        _check_positive(prefix, self, "resolution", "downsample", "steps", "batch", "train_images")
        if self.downsample & (self.downsample - 1) or self.downsample < 2:
            raise ValueError(f"{prefix}downsample={self.downsample} must be a power of two >= 2")
        if self.kind == "native" and self.resolution % self.downsample:
            raise ValueError(f"{prefix}resolution={self.resolution} is not divisible by {prefix}downsample="
                             f"{self.downsample}")
        if self.kind != "native" and not self.path:
            raise ValueError(f"{prefix}kind={self.kind} needs {prefix}path=DIR (a local save_pretrained folder)")


@dataclass
class AudioTokenizerSettings:
    kind: str = "native"  # native: trimdm's mel codec, trained on the corpus | mimi | dac | encodec (transformers)
    path: str = ""  # mimi/dac/encodec: a local directory written by save_pretrained
    sample_rate: int = 16_000  # native: the codec's rate (a pretrained codec brings its own)
    frame_rate: int = 25  # native: token frames per second; sample_rate / frame_rate samples per frame
    levels: int = 4  # residual codebooks K per frame (a pretrained codec: the first K of its own)
    steps: int = 2000  # native: training steps
    batch: int = 16
    train_seconds: float = 3600.0  # native: seconds of training-split audio it learns from (the first ones)
    max_seconds: float = 10.0  # utterances longer than this are dropped (or trimmed: `too_long`)
    too_long: str = "drop"  # drop | trim

    def validate(self, prefix: str = "tokenizers.audio.") -> None:
        _check_choice(f"{prefix}kind", self.kind, ("native", "mimi", "dac", "encodec"))
        _check_choice(f"{prefix}too_long", self.too_long, ("drop", "trim"))
        _check_positive(prefix, self, "sample_rate", "frame_rate", "levels", "steps", "batch", "train_seconds",
                        "max_seconds")
        if self.kind == "native" and (self.sample_rate % self.frame_rate or (self.sample_rate // self.frame_rate) % 4):
            raise ValueError(f"{prefix}sample_rate={self.sample_rate} / frame_rate={self.frame_rate} must be a whole "
                             "number of samples per frame, divisible by 4 (four mel frames per token frame)")
        if self.kind != "native" and not self.path:
            raise ValueError(f"{prefix}kind={self.kind} needs {prefix}path=DIR (a local save_pretrained folder)")


@dataclass
class TokenizersConfig:
    text: TextTokenizerSettings = field(default_factory=TextTokenizerSettings)
    image: ImageTokenizerSettings = field(default_factory=ImageTokenizerSettings)
    audio: AudioTokenizerSettings = field(default_factory=AudioTokenizerSettings)


@dataclass
class IngestConfig:
    """How raw samples become corpus rows. Everything here but `workers` shapes the corpus."""

    val_fraction: float = 0.01  # share of samples in val, chosen by a hash of the sample's key and `seed`
    seed: int = 0
    shard_samples: int = 2048  # samples per shard: the unit of work, of resuming and of the manifest
    workers: int = 1  # tokenising processes (the corpus does not depend on it)
    on_error: str = "skip"  # skip: a bad sample goes to rejects.jsonl | fail: stop at the first one
    lowercase: bool = False  # lowercase every text (documents, captions, transcripts)
    whitespace: str = "strip"  # strip: trim the ends | collapse: also every run of whitespace to one space
    max_row_tokens: int = 4096  # a paired sample longer than this (text + media + 5 specials) is rejected
    paragraphs: bool = False  # .txt sources: a document per blank-line paragraph instead of per file
    text_field: str = ""  # text jsonl/json/parquet/datasets: the field (default "text")
    caption_field: str = ""  # image-text: the caption field (default "caption", then "text")
    image_field: str = ""  # image-text parquet: the image column (default "image", "jpg", "png", "img")
    audio_field: str = ""  # manifests: the audio path field (default audio, path, file_name, audio_filepath)
    transcript_field: str = ""  # manifests: the transcript field (default text, transcript, transcription, sentence)

    def validate(self, prefix: str = "ingest.") -> None:
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"{prefix}val_fraction={self.val_fraction} must lie in [0, 1)")
        _check_positive(prefix, self, "shard_samples", "workers", "max_row_tokens")
        _check_choice(f"{prefix}on_error", self.on_error, ("skip", "fail"))
        _check_choice(f"{prefix}whitespace", self.whitespace, ("strip", "collapse"))


@dataclass
class CorpusConfig:
    """The settings of `trimdm prepare` for a corpus of the user's own data, stored in DIR/corpus.json:
    training reads the tokenizers and shards they produced and needs none of them again."""

    tokenizers: TokenizersConfig = field(default_factory=TokenizersConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)

    def validate(self) -> None:
        self.tokenizers.text.validate()
        self.tokenizers.image.validate()
        self.tokenizers.audio.validate()
        self.ingest.validate()

    def override(self, assignments: list[str]) -> "CorpusConfig":
        for item in assignments:
            if "=" not in item:
                raise ValueError(f"setting {item!r} is not of the form key=value")
            key, raw = item.split("=", 1)
            set_key(self, key.strip(), raw.strip())
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CorpusConfig":
        return section_from_dict(cls, data, "")


@dataclass
class DiffusionConfig:
    # Training noise schedule per modality: "linear", "cosine", "polynomial:2", "loglinear:eps=1e-3".
    schedule: PerModality = field(default_factory=PerModality)
    antimask: str = "none"  # none | complement | crossmodal (method §4)
    t_min: float = 1e-3  # τ clamp; with complement pairs both β and 1−β stay ≥ t_min
    conditional: float = 0.0  # fraction of paired rows noised in one modality only (masking.py)
    # of those, the share with the text noised and the medium clean (I2T, S2T); the rest are media|text
    # (T2I, T2S), per medium. A text|media row supervises only its ~10-30 text tokens, a media|text row its
    # 64-380 media tokens. Each generation direction learns from its own rows (docs/generation.md).
    text_given_media: PerMedium = field(default_factory=PerMedium)

    def validate(self) -> None:
        _check_choice("diffusion.antimask", self.antimask, ("none", "complement", "crossmodal"))
        if not 0.0 <= self.conditional <= 1.0:
            raise ValueError(f"diffusion.conditional={self.conditional} must lie in [0, 1]")
        for medium in ("image", "audio"):
            if not 0.0 <= self.text_given_media[medium] <= 1.0:
                raise ValueError(f"diffusion.text_given_media.{medium}={self.text_given_media[medium]} "
                                 "must lie in [0, 1]")
        if not 0 < self.t_min < 0.5:
            raise ValueError(f"diffusion.t_min={self.t_min} must lie in (0, 0.5)")
        for m in MODALITIES:
            parse_schedule(self.schedule[m])


@dataclass
class OptimBase:
    """AdamW settings tuned once at a base point (B_base sequences per step, D_base tokens), method §6."""

    batch: int = 16  # B_base
    tokens: int = 1_000_000  # D_base
    lr: float = 3e-3
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    weight_decay: float = 0.1  # torch AdamW: decay per step is lr·weight_decay
    warmup_tokens: int = 0  # linear warmup in tokens (capped at 25% of steps)


@dataclass
class GroupMult:
    lr: float = 1.0
    wd: float = 1.0
    eps: float = 1.0


def _no_decay() -> GroupMult:
    return GroupMult(wd=0.0)


@dataclass
class GroupTable:
    """Per-module multipliers of lr, weight decay and ε (method §6). Norm gains never decay."""

    embed_text: GroupMult = field(default_factory=GroupMult)
    embed_image: GroupMult = field(default_factory=GroupMult)
    embed_audio: GroupMult = field(default_factory=GroupMult)
    embed_special: GroupMult = field(default_factory=GroupMult)
    unembed_text: GroupMult = field(default_factory=GroupMult)
    unembed_image: GroupMult = field(default_factory=GroupMult)
    unembed_audio: GroupMult = field(default_factory=GroupMult)
    unembed_special: GroupMult = field(default_factory=GroupMult)
    attn_qkv: GroupMult = field(default_factory=GroupMult)
    attn_out: GroupMult = field(default_factory=GroupMult)
    mlp_in: GroupMult = field(default_factory=GroupMult)
    mlp_out: GroupMult = field(default_factory=GroupMult)
    norms: GroupMult = field(default_factory=_no_decay)


@dataclass
class OptimConfig:
    base: OptimBase = field(default_factory=OptimBase)
    gamma: float = 0.44  # horizon exponent of the logical batch B_log = B_base·(D/D_base)^γ
    reparam: str = "sde"  # sde | none | accumulate (method §6)
    groups: GroupTable = field(default_factory=GroupTable)
    depth_ratio: float = 1.0  # block l of n gets lr × depth_ratio^(l/(n−1))
    lr_schedule: str = "cosine"  # cosine | constant | wsd (optim/lr.py)
    min_lr_ratio: float = 0.1  # final lr of the cosine or WSD decay, as a fraction of lr
    decay_fraction: float = 0.2  # wsd: the last fraction of the horizon's tokens decays linearly
    # gradient-norm threshold at the base point (0 disables); under reparam=sde it is divided by √κ,
    # as ε is (optim/reparam.py), and the run's value is derived.grad_clip
    grad_clip: float = 1.0

    def validate(self) -> None:
        _check_positive("optim.base.", self.base, "lr")
        _check_choice("optim.lr_schedule", self.lr_schedule, SCHEDULES)
        if not 0 < self.decay_fraction <= 1:
            raise ValueError(f"optim.decay_fraction={self.decay_fraction} must lie in (0, 1]")
        _check_choice("optim.reparam", self.reparam, ("sde", "none", "accumulate"))
        if self.gamma < 0:
            raise ValueError(f"optim.gamma={self.gamma} must be >= 0")
        if self.grad_clip < 0 or self.depth_ratio <= 0:
            raise ValueError("optim.grad_clip must be >= 0 and optim.depth_ratio > 0")
        if self.groups.norms.wd != 0:
            raise ValueError("optim.groups.norms.wd must be 0: norm gains get no weight decay (method §6)")
        for name in (f.name for f in dataclasses.fields(GroupTable)):
            g = getattr(self.groups, name)
            if g.lr < 0 or g.wd < 0 or g.eps <= 0:
                raise ValueError(f"optim.groups.{name}: lr and wd multipliers must be >= 0, eps > 0")


@dataclass
class TrainConfig:
    tokens: int = 1_000_000  # token horizon D (optimizer steps = tokens // (batch_size·seq_len))
    batch_size: int = 16  # sequences per optimizer step
    micro_batch_size: int = 0  # sequences per forward/backward per rank; 0: the whole per-rank batch
    seed: int = 0
    dtype: str = "bf16"  # bf16 (autocast, fp32 master weights) | fp32
    threads: int = 0  # torch intra-op threads; 0 keeps torch's default
    device: str = "auto"  # auto (cuda if available) | cpu | cuda
    parallel: str = "ddp"  # ddp | fsdp, used when launched by torchrun with more than one process
    # torch.compile each transformer block (shapes dynamic: compaction varies the row length); for GPUs,
    # where a small model is bound by kernel launches. No gain on this CPU, and 15-25 s to compile
    compile: bool = False
    noise_scale_every: int = 10  # steps between gradient-noise-scale measurements; 0: never
    peak_tflops: float = 0.0  # hardware peak for MFU; 0: measure a matmul peak at start
    log_every: int = 10  # steps between metrics.jsonl lines
    ckpt_every: int = 0  # steps between checkpoints; 0: only at the end
    eval_every: int = 0  # steps between held-out NELBO evaluations; 0: never during training
    keep_checkpoints: int = 2  # most recent checkpoints kept on disk
    # steps in a row whose loss or gradient is not finite (each skipped: nothing applied) before the run
    # stops; one finite step resets the count
    max_skips: int = 10
    # a run directory, checkpoint or model folder (`trimdm export`) whose model weights start this run (same data and model shape); the
    # optimizer, schedule and data order start afresh. A checkpoint of this run's own wins (resume).
    init: str = ""
    # memory for larger models (docs/scale.md): recompute each block's activations in the backward pass
    # instead of keeping them (same gradients, about a third more FLOPs per step)
    activation_checkpointing: bool = False
    # decay of an exponential moving average of the weights (fp32, updated after each optimizer step,
    # saved in checkpoints; eval, generate and export use it); 0: none
    ema: float = 0.0
    # refuse a run whose estimated peak memory exceeds the device's available memory (train/memory.py)
    memory_check: bool = True

    def validate(self) -> None:
        _check_positive("train.", self, "tokens", "batch_size", "max_skips")
        if not 0.0 <= self.ema < 1.0:
            raise ValueError(f"train.ema={self.ema} must be in [0, 1): the EMA's decay per optimizer step (0: off)")
        if self.micro_batch_size < 0 or (self.micro_batch_size and self.batch_size % self.micro_batch_size):
            raise ValueError(
                f"train.micro_batch_size={self.micro_batch_size} must divide train.batch_size={self.batch_size}")
        _check_choice("train.parallel", self.parallel, ("ddp", "fsdp"))
        if self.dtype not in ("bf16", "fp32"):
            raise ValueError(f"train.dtype={self.dtype!r}: expected 'bf16' or 'fp32'")


# The config format's version, written into every config (config.json, checkpoints) and generation
# sidecar. A config without one is of version 0, whose inference schedules counted backwards (its
# `cosine` revealed many tokens first, which version 1 calls `reverse-cosine`) and whose guidance 0 meant
# the conditional pass, which version 1 writes as 1 (w = 0 is the unconditional model; docs/sampling.md).
CONFIG_VERSION = 1


@dataclass
class ModalitySampling:
    """How one modality is decoded (method §8): the target span of a task is this modality's."""

    steps: int = 64  # decoding steps T (at most one per masked position is useful)
    # inference unmasking schedule, a schedule spec as in `diffusion`: after a fraction r of the steps a
    # fraction β(r) of the span is revealed; `cosine` is MaskGIT's (few tokens first), `reverse-cosine`
    # the opposite order (docs/sampling.md, "Inference schedules")
    schedule: str = "reverse-cosine"
    temperature: float = 1.0
    # classifier-free guidance weight w: logits = u + w·(c − u); 1: the conditional model (no unconditional
    # pass), 0: the unconditional one, > 1 guides
    guidance: float = 1.0
    remasking: str = "confidence"  # confidence | random (the unbiased ancestral baseline)
    # joint: every masked position competes at every step | levels (audio): residual level 0 in `steps`
    # steps, then each finer level in steps // 8, given the coarser ones (sampler.level_stages)
    order: str = "joint"
    # confidence-threshold decoding (Fast-dLLM): also reveal every position whose sampled token has
    # probability > threshold, so a span can finish in fewer than `steps` passes; 0: off
    threshold: float = 0.0
    # the condition cache: a full pass every `cache_refresh` passes, the clean condition's keys and
    # values reused in between (an approximation, docs/sampling.md); 0: off
    cache_refresh: int = 0
    # text only: semi-autoregressive blocks (LLaDA, Nie et al. 2025): free text (task text, text infill) is
    # decoded in blocks of `block` tokens left to right, by confidence inside each block, with the `steps`
    # split over the blocks (sampler.block_stages); 0: the whole span at once. Captions and transcripts
    # (i2t, s2t) are always decoded whole (docs/sampling.md, "Semi-autoregressive blocks")
    block: int = 0


# The per-modality sampling defaults (method §8) in one table. Image row chosen by `trimdm study sampling`
# on runs/tinyworld (2026-11-27) plus the remasking comparison beside it; text steps 64 from the re-sweep
# on runs/tinyworld_h200; audio order `levels` from the order comparison on that run (T2S error 62.7% ->
# 59.3%). Re-swept on the demo run after the schedules were named as in the literature (2026-12-05, both
# directions): the text row's schedule became `polynomial:2` (MaskGIT's square: few tokens first; I2T
# attribute match 0.582/0.446 -> 0.609/0.538 on two seeds), while the sweep's image and audio picks lost or
# tied when scored together and the rows kept `reverse-cosine` (many first). The text row's blocks of 8
# and temperature 0.5 from the text judge on the demo run (2026-12-06; free text: judge perplexity 321.5 ->
# 287.2 over three seeds, unigram entropy kept, I2T and S2T unchanged). Image 16 -> 4 steps with the
# condition cache refreshed every 2 passes, audio 32 -> 5 steps, from the speed-quality table on the demo
# run (2026-12-06, benchmarks/sampling.py --run: 3.71x images/s and 3.13x audio seconds/s at the judges'
# scores of the 16- and 32-step rows within one standard error over three seeds). Grid, numbers and
# reasons: docs/sampling.md.
SAMPLING_DEFAULTS: dict[str, dict[str, Any]] = {
    "text": {"steps": 64, "schedule": "polynomial:2", "temperature": 0.5, "guidance": 1.0,
             "remasking": "confidence", "block": 8},
    "image": {"steps": 4, "schedule": "reverse-cosine", "temperature": 0.7, "guidance": 2.0, "remasking": "random",
              "cache_refresh": 2},
    "audio": {"steps": 5, "schedule": "reverse-cosine", "temperature": 1.0, "guidance": 1.0,
              "remasking": "confidence", "order": "levels"},
}


def sampling_choices(modality: str, key: str) -> tuple[str, ...] | None:
    """The values a word-valued sampling setting may take for a modality (None: not such a setting).
    The decoding order `levels` exists for audio only (its residual levels)."""
    if key == "remasking":
        return ("confidence", "random")
    if key == "order":
        return ("joint", "levels") if modality == "audio" else ("joint",)
    return None


def _sampling(modality: str):
    return field(default_factory=lambda: ModalitySampling(**SAMPLING_DEFAULTS[modality]))


@dataclass
class SampleConfig:
    text: ModalitySampling = _sampling("text")
    image: ModalitySampling = _sampling("image")
    audio: ModalitySampling = _sampling("audio")
    top_k: int = 0
    top_p: float = 1.0
    confidence_noise: float = 1.0  # scale of the annealed Gumbel noise added to confidences
    gen_len: int = 64  # text tokens generated after a prompt (task text)
    caption_len: int = 32  # the longest i2t caption / s2t transcript tried (tasks.caption_lengths)
    audio_length: str = "rule"  # rule: canvas from the data set's length rule | eos: EOS-truncation
    # best of R draws: i2t/s2t draw R texts per medium (each at every candidate text length) and keep the
    # one under which the model finds the medium most probable; t2i draws R images per caption and keeps
    # the one it finds most probable for the caption (Monte-Carlo log p(medium | text) over
    # `rerank_draws` shared mask draws); t2s always draws once
    rerank: int = 1
    rerank_draws: int = 16
    # rounds of local search after the pick, for the tasks in `refine_tasks` (i2t, s2t): the chosen text
    # and its one-token neighbours (each token replaced by one of the model's `refine_top` likeliest
    # others there) compete under log p(text) + log p(medium | text) (Tasks._refine)
    refine: int = 0
    refine_top: int = 3
    refine_tasks: tuple[str, ...] = ("i2t",)
    seed: int = 0

    def __getitem__(self, modality: str) -> ModalitySampling:
        return getattr(self, modality)

    def validate(self) -> None:
        _check_positive("sample.", self, "gen_len", "caption_len")
        for m in MODALITIES:
            _check_positive(f"sample.{m}.", self[m], "steps")
            parse_schedule(self[m].schedule)
            for key in ("remasking", "order"):
                _check_choice(f"sample.{m}.{key}", getattr(self[m], key), sampling_choices(m, key))
            if not 0 <= self[m].threshold < 1:
                raise ValueError(f"sample.{m}.threshold={self[m].threshold} must lie in [0, 1) (0: off)")
            if self[m].cache_refresh < 0:
                raise ValueError(f"sample.{m}.cache_refresh={self[m].cache_refresh} must be >= 0 (0: off)")
            if self[m].block < 0 or (m != "text" and self[m].block):
                raise ValueError(f"sample.{m}.block={self[m].block}: " + (
                    "must be >= 0 (tokens per block; 0: the whole span at once)" if m == "text" else
                    "semi-autoregressive blocks are a text setting; keep 0 here"))
        blocks = -(-self.gen_len // self.text.block) if self.text.block else 1
        if self.text.steps < blocks:
            raise ValueError(f"sample.text.steps={self.text.steps} is fewer than the {blocks} blocks of "
                             f"sample.text.block={self.text.block} tokens in sample.gen_len={self.gen_len}: "
                             "each block needs a step; raise the steps or the block (0: the whole span at once)")
        if self.refine < 0 or self.refine_top < 1:
            raise ValueError(f"sample.refine={self.refine} must be >= 0 and sample.refine_top={self.refine_top} >= 1")
        if not set(self.refine_tasks) <= {"i2t", "s2t"}:
            raise ValueError(f"sample.refine_tasks={','.join(self.refine_tasks)}: choose among i2t, s2t")
        if self.rerank < 1 or self.rerank_draws < 1:
            raise ValueError(f"sample.rerank={self.rerank} and sample.rerank_draws={self.rerank_draws} must be >= 1")
        _check_choice("sample.audio_length", self.audio_length, ("rule", "eos"))


@dataclass
class EvalConfig:
    tau_points: int = 8  # Gauss–Legendre nodes over τ ∈ [0, 1]
    seed: int = 1234  # seed of the evaluation masks (fixed so runs are comparable)
    batch_size: int = 16
    max_rows: int = 256  # held-out rows evaluated per task (0: all)
    periodic_rows: int = 32  # rows per task of the held-out NELBO logged every train.eval_every steps
    periodic_tau_points: int = 4
    gen_prompts: int = 96  # held-out captions / images for T2I and I2T (0: no generation metrics)
    gen_utterances: int = 32  # held-out transcripts / utterances for T2S and S2T
    # free-text samples (task text, no prompt) scored by the text judge of a KJV data set (kjv, tinyworld;
    # eval/generation.py:text_metrics); 0: none
    gen_texts: int = 32
    mc_samples: int = 64  # Monte-Carlo samples per option of a multiple-choice question
    # tinyworld: encode and decode held-out media through the data set's tokenizers (a property of the
    # data, not of the run: the sweeps' likelihood-only evals leave it out)
    reconstructions: bool = True

    def validate(self) -> None:
        _check_positive("eval.", self, "tau_points", "batch_size")
        if self.gen_texts < 0:
            raise ValueError(f"eval.gen_texts={self.gen_texts} must be >= 0 (0: no text samples judged)")


@dataclass
class Derived:
    """Filled by `derive()`; written to config.json for the record, never set by hand."""

    batch: int = 0  # sequences per optimizer step (train.batch_size, × accumulation under `accumulate`)
    tokens_per_step: int = 0
    steps: int = 0
    warmup_steps: int = 0
    micro_batch_size: int = 0
    accum_steps: int = 1  # micro-batches per optimizer step
    kappa: float = 1.0
    logical_batch: float = 0.0
    lr: float = 0.0
    betas: tuple[float, float] = (0.0, 0.0)
    eps: float = 0.0
    weight_decay: float = 0.0
    grad_clip: float = 0.0
    decay_steps: int = 0  # wsd: steps of the final decay (decay_fraction of the steps)
    width_mult: float = 1.0
    depth_mult: float = 1.0


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    recipe: str = ""
    version: int = CONFIG_VERSION  # of the config format, written by trimdm (`_upgrade` reads older ones)
    derived: Derived = field(default_factory=Derived)

    # -- derived numbers ---------------------------------------------------------------------------
    def derive(self) -> "Config":
        """Validate and fill `derived`. Every number that follows from others is computed here only."""
        self.validate()
        t, d, m = self.train, self.derived, self.model
        if t.tokens < t.batch_size * self.data.seq_len:
            raise ValueError(
                f"train.tokens={t.tokens} is shorter than one optimizer step "
                f"(train.batch_size·data.seq_len = {t.batch_size * self.data.seq_len} tokens)")
        hp = self.batch_hparams()
        d.batch, d.tokens_per_step, d.steps, d.warmup_steps = hp.batch, hp.tokens_per_step, hp.steps, hp.warmup_steps
        d.kappa, d.logical_batch, d.lr, d.betas = hp.kappa, hp.logical_batch, hp.lr, tuple(hp.betas)
        d.eps, d.weight_decay, d.grad_clip = hp.eps, hp.weight_decay, hp.grad_clip
        d.decay_steps = max(1, round(self.optim.decay_fraction * d.steps)) if self.optim.lr_schedule == "wsd" else 0
        d.micro_batch_size = t.micro_batch_size or t.batch_size
        d.accum_steps = d.batch // d.micro_batch_size
        completep = m.parameterization == "completep"
        d.width_mult = m.d_model / m.base_width if completep else 1.0
        d.depth_mult = m.n_layers / m.base_depth if completep else 1.0
        return self

    def batch_hparams(self):
        """The SDE batch reparameterization of `optim.base` for this run (optim/reparam.py)."""
        b, t = self.optim.base, self.train
        base = BaseHParams(batch=b.batch, tokens=b.tokens, lr=b.lr, betas=tuple(b.betas), eps=b.eps,
                           weight_decay=b.weight_decay, warmup_tokens=b.warmup_tokens, grad_clip=self.optim.grad_clip)
        return sde_hparams(base, t.batch_size, t.tokens, self.data.seq_len, self.optim.gamma, self.optim.reparam)

    def validate(self) -> None:
        """Every section checks its own keys; here only what spans sections."""
        for section in (self.model, self.data, self.diffusion, self.optim, self.train, self.sample, self.eval):
            section.validate()
        if self.version != CONFIG_VERSION:  # an older format is read through `from_dict`, which upgrades it
            raise ValueError(f"version={self.version}: this trimdm writes config version {CONFIG_VERSION}")
        if self.diffusion.antimask == "complement" and (self.train.micro_batch_size or self.train.batch_size) % 2:
            raise ValueError("diffusion.antimask=complement needs an even (micro) batch: rows come in pairs")

    # -- JSON --------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self, path: str | Path | None = None) -> str:
        text = json.dumps(self.to_dict(), indent=2)
        if path is not None:
            Path(path).write_text(text + "\n")
        return text

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Config":
        return section_from_dict(cls, _upgrade(data), "")

    @classmethod
    def from_json(cls, path: str | Path) -> "Config":
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"{path}: cannot read config JSON ({e})") from None
        return cls.from_dict(data)

    # -- overrides ---------------------------------------------------------------------------------
    def override(self, assignments: list[str], only: str | tuple[str, ...] | None = None) -> "Config":
        """Apply `key=value` strings, type-checked against the dataclass fields. `only` restricts them
        to some sections (e.g. "sample" for `trimdm generate`, which cannot change the trained model)."""
        sections = (only,) if isinstance(only, str) else only
        for item in assignments:
            if "=" not in item:
                raise ValueError(f"override {item!r} is not of the form key=value")
            key, raw = item.split("=", 1)
            if sections and not key.strip().startswith(tuple(f"{s}." for s in sections)):
                raise ValueError(f"only {' and '.join(f'{s}.*' for s in sections)} overrides apply here, "
                                 f"got {key.strip()!r}")
            set_key(self, key.strip(), raw.strip())
        return self


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _upgrade(data: dict[str, Any]) -> dict[str, Any]:
    """Read configs written by earlier versions: `diffusion.text_given_media` (one share for both media)
    became a per-medium one; the `sample` section is `upgrade_sample`'s. Anything else unknown is still
    an error."""
    version = config_version(data.get("version", 0), "config")
    diffusion = data.get("diffusion")
    if isinstance(diffusion, dict) and isinstance(diffusion.get("text_given_media"), (int, float)):
        share = diffusion["text_given_media"]
        data = {**data, "diffusion": {**diffusion, "text_given_media": {"image": share, "audio": share}}}
    if isinstance(data.get("sample"), dict):
        data = {**data, "sample": upgrade_sample(data["sample"], version)}
    return {**data, "version": CONFIG_VERSION}


def config_version(value: Any, what: str) -> int:
    """The config-format version stored in `what` (a config or a sidecar), checked."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= CONFIG_VERSION:
        raise ValueError(f"{what}: version {value!r} is not one this trimdm reads (0 to {CONFIG_VERSION}; a "
                         "newer trimdm wrote it?)")
    return value


def upgrade_sample(sample: dict[str, Any], version: int) -> dict[str, Any]:
    """A `sample` section (of a config or a generation sidecar) written at config version `version`, in
    this version's terms, decoding exactly as it did. Version 0: `sample.steps/schedule/temperature` (one
    setting for every modality) became the text row of the per-modality table, `sample.remasking` a
    per-modality setting, an inference schedule `X` counted backwards, which is `reverse-X` now (linear
    is its own reverse), and guidance 0 skipped the unconditional pass, the conditional model that w = 1
    is now. A modality row it lacks gets today's defaults, except `block` (semi-autoregressive text
    blocks): a row written before it existed decoded the whole span at once, so it reads as 0."""
    sample = dict(sample)
    legacy = {k: sample.pop(k) for k in ("steps", "schedule", "temperature") if k in sample}
    remasking = sample.pop("remasking", None)
    for m in MODALITIES:
        stored = dict(sample.get(m, {}))
        if m == "text":
            stored.update(legacy)
        if remasking is not None:
            stored["remasking"] = remasking
        stored.setdefault("block", 0)  # written before blocks existed: the whole span at once
        if version < 1:
            if isinstance(stored.get("schedule"), str) and stored["schedule"] != "linear":
                stored["schedule"] = REVERSE + stored["schedule"]
            if stored.get("guidance") == 0:
                stored["guidance"] = 1.0
        sample[m] = stored if m in sample else {**SAMPLING_DEFAULTS[m], **stored}
    return sample


def section_from_dict(cls: type, data: Any, prefix: str = "") -> Any:
    """A config section (a dataclass) from a JSON object, every value type-checked; an unknown key is an
    error that names close matches. `prefix` is the section's key path, for messages."""
    if not isinstance(data, dict):
        raise ValueError(f"config section {prefix or '<root>'} must be an object, got {type(data).__name__}")
    hints = _hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            raise ValueError(_unknown_message(f"{prefix}{key}", [f"{prefix}{n}" for n in names]))
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = section_from_dict(tp, value, f"{prefix}{key}.")
        else:
            kwargs[key] = _coerce(value, tp, f"{prefix}{key}")
    return cls(**kwargs)


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check and convert a JSON or command-line value to the field's type (no silent changes)."""
    origin = typing.get_origin(tp)
    if origin is tuple:
        args = typing.get_args(tp)
        if isinstance(value, str):
            value = [v for v in value.strip("()[] ").split(",") if v]
        if len(args) == 2 and args[1] is Ellipsis:  # tuple[T, ...]: any non-empty length
            if not isinstance(value, (list, tuple)) or not value:
                raise ValueError(f"{key}: expected one or more comma-separated values, got {value!r}")
            args = (args[0],) * len(value)
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ValueError(f"{key}: expected {len(args)} comma-separated values, got {value!r}")
        return tuple(_coerce(v, a, key) for a, v in zip(args, value))
    if origin in (typing.Union, types.UnionType):
        raise ValueError(f"{key}: union types are not supported in configs")
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "false", "0", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ValueError(f"{key}: expected a boolean (true/false), got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ValueError(f"{key}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                number = float(value.replace("_", ""))
            except ValueError:
                raise ValueError(f"{key}: expected an integer, got {value!r}") from None
            if number.is_integer():
                return int(number)
        raise ValueError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ValueError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ValueError(f"{key}: expected a string, got {value!r}")
    raise ValueError(f"{key}: unsupported field type {tp}")


def all_keys(cls: type = Config, prefix: str = "") -> list[str]:
    keys = []
    for f in dataclasses.fields(cls):
        tp = _hints(cls)[f.name]
        if dataclasses.is_dataclass(tp):
            keys += all_keys(tp, f"{prefix}{f.name}.")
        else:
            keys.append(f"{prefix}{f.name}")
    return keys


def _unknown_message(key: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(key, candidates, n=4, cutoff=0.5)
    if not close:  # also match on the last component (e.g. "seqlen" -> data.seq_len)
        tail = key.rsplit(".", 1)[-1]
        close = [c for c in candidates if difflib.SequenceMatcher(None, tail, c.rsplit(".", 1)[-1]).ratio() > 0.7]
    hint = f"; did you mean {', '.join(close[:4])}?" if close else ""
    return f"unknown config key {key!r}{hint}"


def _walk(cfg: Config, key: str) -> tuple[Any, str]:
    parts = key.split(".")
    node = cfg
    for i, part in enumerate(parts[:-1]):
        if not dataclasses.is_dataclass(node) or part not in {f.name for f in dataclasses.fields(node)}:
            raise ValueError(_unknown_message(key, all_keys(type(cfg))))
        node = getattr(node, part)
    last = parts[-1]
    if not dataclasses.is_dataclass(node) or last not in {f.name for f in dataclasses.fields(node)}:
        raise ValueError(_unknown_message(key, all_keys(type(cfg))))
    return node, last


def get_key(cfg: Config, key: str) -> Any:
    node, last = _walk(cfg, key)
    return getattr(node, last)


def set_key(cfg: Config, key: str, raw: Any) -> None:
    if key.startswith("derived."):
        raise ValueError(f"{key} is derived from other keys and cannot be set")
    if key == "version":
        raise ValueError("version is the config format's, written by trimdm, and cannot be set")
    node, last = _walk(cfg, key)
    tp = _hints(type(node))[last]
    if dataclasses.is_dataclass(tp):
        if tp is PerModality:  # x=v sets every modality at once
            value = _coerce(raw, str, key)
            setattr(node, last, PerModality(value, value, value))
            return
        if tp is PerMedium:  # x=v sets both media at once
            value = _coerce(raw, float, key)
            setattr(node, last, PerMedium(value, value))
            return
        raise ValueError(f"{key} is a config section; set one of its keys ({key}.<name>=...)")
    setattr(node, last, _coerce(raw, tp, key))
