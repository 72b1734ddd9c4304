"""Experiments as functions returning a Config. Variation lives here, never as branches in core code.

- tiny(): a few-second run for tests; prepares its own small data set on first use. Its MFU uses a
  nominal 1 TFLOP/s peak (no time spent measuring one); every other recipe measures the peak.
- tiny_tri(): tiny() on a miniature tinyworld, for tri-modal tests (seconds).
- demo(): the main job of `make demo` on this machine's CPU: tri-modal tinyworld in a smaller world
  (minutes).
- tinyworld(): the longer tri-modal run on the whole world (minutes on a GPU, hours on this CPU).
- demo_text(): the text-only (KJV) demo; also the base of the throughput benchmark.
- study_batch(): the small model of `trimdm study batch` and `study critical-batch`.
- study_tri(): the small tri-modal model of the schedule, antimask, mixing and scaling studies.
- custom(): a tri-modal model on a corpus of the user's own data (data.corpus=DIR, docs/data.md).
- paper_320m(), paper_3b(): the paper's batch-study pilot (320M parameters, 240M of them embeddings) and
  its final size (3B), on a corpus of the user's own data, for GPUs (docs/scale.md).
"""
from __future__ import annotations

from trimdm.config import (Config, DataConfig, DiffusionConfig, EvalConfig, Mix, ModalitySampling, ModelConfig,
                           OptimBase, OptimConfig, PerMedium, SampleConfig, TinyworldConfig, TrainConfig)


def tiny() -> Config:
    return Config(
        recipe="tiny",
        model=ModelConfig(d_model=64, n_layers=2, n_heads=2),
        data=DataConfig(seq_len=64, text_vocab=512, max_docs=60),
        optim=OptimConfig(base=OptimBase(batch=8, tokens=30 * 8 * 64, lr=3e-3, warmup_tokens=2 * 8 * 64)),
        train=TrainConfig(tokens=30 * 8 * 64, batch_size=8, log_every=1, threads=1, peak_tflops=1.0),
        sample=SampleConfig(text=ModalitySampling(steps=8), image=ModalitySampling(steps=4, guidance=1.0),
                            audio=ModalitySampling(steps=4), gen_len=24),
        eval=EvalConfig(tau_points=4, max_rows=32, batch_size=16),
    )


def tiny_tri() -> Config:
    """tiny() on a miniature tinyworld (text, image-text, audio-text): seconds to prepare and train."""
    cfg = tiny()
    cfg.recipe = "tiny_tri"
    cfg.data = DataConfig(
        dataset="tinyworld", seq_len=384, text_vocab=400, mix=Mix(text=0.4, image_text=0.3, audio_text=0.3),
        tinyworld=TinyworldConfig(scenes=200, eval_scenes=24, utterances=48, eval_utterances=12, max_seconds=3.0,
                                  image_steps=8, image_batch=16, image_channels=(8, 16, 16), audio_steps=6,
                                  audio_batch=4, audio_channels=32, audio_blocks=1))
    cfg.train.tokens = 20 * 8 * 384
    cfg.optim.base.tokens = cfg.train.tokens
    cfg.optim.base.warmup_tokens = 2 * 8 * 384
    return cfg


def demo() -> Config:
    """The main job: one model on KJV text, tinyworld image-text and audio-text, on a 2-core CPU in about
    25 minutes, prepare and evaluation included (docs/LOG.md: shorter horizons lose T2I and I2T).

    Its world is smaller than tinyworld's (docs/generation.md, "The demo's world"): one large object on
    white in four colours (each keeps a held-out pair), one voice as it is, the coarsest codec level;
    shapes, cells and caption phrasings stay whole. On the whole world T2I, I2T and T2S were still at
    chance after the minutes this machine has (docs/LOG.md); here each learns. The image tokenizer
    also sees unlabeled scenes of every composition, so it can encode the held-out ones the model never
    sees. Every paired row is conditional (one modality clean): each generation direction learns from
    its own rows, so the text|media shares stay small."""
    tokens = 8_192_000  # 2,000 steps of 32 rows of 128
    return Config(
        recipe="demo",
        model=ModelConfig(d_model=256, n_layers=4, n_heads=4),
        data=DataConfig(dataset="tinyworld", seq_len=128, text_vocab=2048,
                        mix=Mix(text=0.02, image_text=0.6, audio_text=0.38),
                        tinyworld=TinyworldConfig(
                            utterances=3500, max_seconds=3.5, two_object_fraction=0.0, sizes=("large",),
                            backgrounds=("white",), colors=("red", "green", "blue", "yellow"),
                            voices=("en-us+m3",), voice_jitter=0.0, image_steps=1000, tokenizer_scenes=3000,
                            audio_emit_levels=1, prepare_dtype="bf16")),
        diffusion=DiffusionConfig(conditional=1.0, text_given_media=PerMedium(image=0.12, audio=0.1)),
        optim=OptimConfig(base=OptimBase(batch=32, tokens=tokens, lr=2e-3, warmup_tokens=100_000)),
        train=TrainConfig(tokens=tokens, batch_size=32, log_every=10, eval_every=400),
        # I2T decodes every caption length of the data; 8 shared mask draws to pick the caption instead
        # of 16 keep eval's time (same pick rate on 48 val images, docs/sampling.md)
        sample=SampleConfig(gen_len=64, rerank_draws=8),
        eval=EvalConfig(tau_points=8, max_rows=64, batch_size=32, gen_utterances=48),
    )


def tinyworld() -> Config:
    """The long tinyworld run on the whole world (two-object scenes, every size, background, colour and
    voice, all four codec levels), sized on one GPU: 3,982 steps of 256 rows (391.5M tokens counting
    padding), about 6 minutes of training on one H200 (1.1–1.4M tokens/s) and roughly 8 hours on this
    2-core CPU. A 16M-token version (43 min here) drew no correct image at all: the attribute binding
    appears only after ~1,300 steps of this batch (docs/LOG.md, generation curve). The base
    hyperparameters stay those tuned at 32 rows and 16M tokens; the SDE rule (optim/reparam.py) moves
    them to this batch and horizon (logical batch 131, kappa 1.96)."""
    tokens = 391_500_000
    return Config(
        recipe="tinyworld",
        model=ModelConfig(d_model=320, n_layers=6, n_heads=5),
        data=DataConfig(dataset="tinyworld", seq_len=384, text_vocab=2048,
                        mix=Mix(text=0.1, image_text=0.4, audio_text=0.5), tinyworld=TinyworldConfig(max_seconds=3.5)),
        # more conditional rows than half: on image-text rows alone, 1.0 instead of 0.5 lifted the T2I
        # attribute match from 0.20 to 0.32 at equal steps (docs/LOG.md, 2026-11-27); 0.8 keeps joint rows
        # for the unconditional pass of guidance
        diffusion=DiffusionConfig(conditional=0.8),
        optim=OptimConfig(base=OptimBase(batch=32, tokens=16_000_000, lr=2e-3, warmup_tokens=300_000)),
        train=TrainConfig(tokens=tokens, batch_size=256, log_every=50, eval_every=1500, ckpt_every=0),
        # best of 8 by log p(medium | text): captions and transcripts (each at every candidate length), and
        # images. On the H200 run (docs/sampling.md): I2T 47.9% -> 72.9% on 48 single-object val images; T2I
        # 87.5% -> 93.8% seen, 67.2% -> 89.1% held-out (64 single-object prompts each).
        # Cheap on a GPU; 8x the i2t/s2t/t2i decoding on a CPU. Then two rounds of local search around
        # each caption by the joint likelihood: I2T on the eval's 101 single-object val images 79.2% ->
        # 87.1%, held-out compositions 56% -> 84% (docs/sampling.md); the full eval with it (docs/generation.md):
        # 87.1% single-object, 88.5% of all 192 images (docs/generation.md)
        sample=SampleConfig(gen_len=64, rerank=8, rerank_draws=16, refine=2),
        eval=EvalConfig(tau_points=8, max_rows=128, batch_size=32, gen_prompts=192, gen_utterances=48),
    )


def demo_text() -> Config:
    """The text-only main job of the first version: KJV, 5M parameters, a few minutes."""
    tokens = 3_000_000
    return Config(
        recipe="demo_text",
        model=ModelConfig(d_model=256, n_layers=4, n_heads=4),
        data=DataConfig(seq_len=256, text_vocab=4096),
        optim=OptimConfig(base=OptimBase(batch=32, tokens=tokens, lr=2e-3, warmup_tokens=200_000)),
        train=TrainConfig(tokens=tokens, batch_size=32, log_every=20, eval_every=0),
        sample=SampleConfig(gen_len=64),
        eval=EvalConfig(tau_points=8, max_rows=256, batch_size=32),
    )


def study_tri() -> Config:
    """The tri-modal design-space studies' base at CPU scale: the demo's data set (so it is prepared once)
    and a model half its width, 2M tokens (488 steps of 32 rows of 128): about two minutes of one core."""
    cfg = demo()
    cfg.recipe = "study_tri"
    cfg.model = ModelConfig(d_model=128, n_layers=4, n_heads=4)
    tokens = 2_000_000
    cfg.train = TrainConfig(tokens=tokens, batch_size=32, log_every=10, eval_every=0)
    cfg.optim.base = OptimBase(batch=32, tokens=tokens, lr=2e-3, warmup_tokens=50_000)
    cfg.eval = EvalConfig(tau_points=8, max_rows=128, batch_size=32, gen_prompts=32, gen_utterances=16)
    return cfg


def custom() -> Config:
    """A tri-modal model on a corpus of the user's own data (`trimdm prepare --text/--image-text/--audio-text
    ... --out DIR`, then `data.corpus=DIR`): 13M parameters at the corpus's default tokenizers, the demo's
    shape one size up. The mix gives each task a third of the tokens; a task the corpus lacks is left out.
    Rows are 768 tokens: a 64 px image is 64 tokens, a 10 s utterance 1,000 at 25 frames/s × 4 levels,
    so speech at the default codec wants `data.seq_len=1024` or `tokenizers.audio.levels=2` (rows that
    do not fit are left out and counted). Sizes, horizon and batch are overrides (docs/data.md)."""
    tokens = 20_000_000
    return Config(
        recipe="custom",
        model=ModelConfig(d_model=384, n_layers=6, n_heads=6),
        data=DataConfig(dataset="corpus", seq_len=768, mix=Mix(text=1 / 3, image_text=1 / 3, audio_text=1 / 3)),
        # mostly conditional rows (one modality clean): each generation direction learns from its own rows
        diffusion=DiffusionConfig(conditional=0.8),
        optim=OptimConfig(base=OptimBase(batch=32, tokens=tokens, lr=2e-3, warmup_tokens=500_000)),
        train=TrainConfig(tokens=tokens, batch_size=32, log_every=20, eval_every=0),
        sample=SampleConfig(gen_len=64),
        eval=EvalConfig(tau_points=8, max_rows=128, batch_size=16),
    )


def study_batch() -> Config:
    """Small and fast, for the batch-size study: tuned at B_base = 16 sequences and D_base = its horizon."""
    tokens = 1_000_000
    return Config(
        recipe="study_batch",
        model=ModelConfig(d_model=128, n_layers=2, n_heads=2),
        data=DataConfig(seq_len=128, text_vocab=2048),
        optim=OptimConfig(base=OptimBase(batch=16, tokens=tokens, lr=2e-3, warmup_tokens=50_000)),
        train=TrainConfig(tokens=tokens, batch_size=16, log_every=5),
        eval=EvalConfig(tau_points=8, max_rows=128, batch_size=32),
    )


# The paper-scale recipes' corpus (R): the joint vocabulary their embedding count assumes, from
# `trimdm prepare ... tokenizers.text.vocab=100000 tokenizers.image.kind=vqmodel (a 16,384-code VQGAN/MoVQ)
# tokenizers.audio.kind=mimi tokenizers.audio.levels=8` (8 codebooks of 2,048): 100,000 + 16,384 +
# 16,384 ids, plus 18 specials = 132,786 ids. Untied input and output tables hold 2·V·d parameters.
PAPER_VOCAB = {"text": 100_000, "image": 16_384, "audio_levels": 8, "audio_codebook": 2_048}
PAPER_SEQ_LEN = 1024  # a 256-token image and its caption; ~9 s of Mimi speech (100 tokens/s) with its text


def _paper(name: str, d_model: int, n_layers: int, tokens: float, batch: int) -> Config:
    """The shared settings of the paper-scale recipes (R where the paper is silent): the base point of
    the SDE rule is the pilot's (B_base = 256 rows, D_base = 13B tokens, cosine, 1k warmup steps at the
    base batch), CompleteP with the pilot as base shape so that its tuned settings transfer in width and
    depth (method §6), heads of 128, the SwiGLU width 24/7·d_model (the pilot's 3,072 at d_model 896),
    bf16 with fp32 master weights, FSDP2 under torchrun."""
    seq = PAPER_SEQ_LEN
    return Config(
        recipe=name,
        model=ModelConfig(d_model=d_model, n_layers=n_layers, n_heads=d_model // 128, mlp_hidden=24 * d_model // 7,
                          parameterization="completep", base_width=896, base_depth=7),
        data=DataConfig(dataset="corpus", seq_len=seq, mix=Mix(text=1 / 3, image_text=1 / 3, audio_text=1 / 3)),
        diffusion=DiffusionConfig(conditional=0.8),
        optim=OptimConfig(base=OptimBase(batch=256, tokens=13_000_000_000, lr=2e-3, warmup_tokens=1000 * 256 * seq)),
        train=TrainConfig(tokens=int(tokens), batch_size=batch, parallel="fsdp", log_every=50, ckpt_every=1000,
                          eval_every=0),
        sample=SampleConfig(gen_len=64),
        eval=EvalConfig(tau_points=8, max_rows=256, batch_size=32),
    )


def paper_320m() -> Config:
    """The paper's batch-study pilot: 318M parameters, 238M of them in the (untied) embedding tables,
    on a corpus with the joint vocabulary above (PAPER_VOCAB: 132,786 ids), at the base point itself
    (256 rows per step, 13B tokens: κ = 1). d_model 896, 7 blocks: aspect ratio d_model/n_layers = 128;
    7 heads of 128; SwiGLU width 3,072 puts the non-embedding count at the 80M of the paper's 320M − 240M
    (the default 8/3·d_model, 2,432, would give 68M). 16 rows of 1,024 per micro-batch: about 25 GB
    estimated on one GPU, 21 GB per GPU under FSDP2 on 8 (docs/scale.md)."""
    cfg = _paper("paper_320m", d_model=896, n_layers=7, tokens=13e9, batch=256)
    cfg.train.micro_batch_size = 16
    return cfg


def paper_3b() -> Config:
    """The paper's final size by the pilot's rule: aspect ratio 128 (d_model = 128·n_layers), SwiGLU
    width 24/7·d_model and the same joint vocabulary; 21 blocks of 2,688 give 2.88B parameters (2.17B
    non-embedding + 0.71B embedding; 22 blocks would give 3.24B). 6.4T tokens at 2,048 rows per step
    (the SDE rule moves the pilot's settings to that batch and horizon: logical batch ≈ 3,900 rows).
    4 rows per micro-batch: about 37 GB per GPU estimated under FSDP2 on 8 GPUs (19 GB with
    train.activation_checkpointing=true, at a third more compute; docs/scale.md)."""
    cfg = _paper("paper_3b", d_model=2688, n_layers=21, tokens=6.4e12, batch=2048)
    cfg.train.micro_batch_size = 4
    return cfg


RECIPES = {"tiny": tiny, "tiny_tri": tiny_tri, "demo": demo, "tinyworld": tinyworld, "demo_text": demo_text,
           "study_batch": study_batch, "study_tri": study_tri, "custom": custom, "paper_320m": paper_320m,
           "paper_3b": paper_3b}


def get_recipe(name: str) -> Config:
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; available: {', '.join(sorted(RECIPES))}")
    return RECIPES[name]()
