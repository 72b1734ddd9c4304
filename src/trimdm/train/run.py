"""A run, rebuilt from its checkpoint alone: the model, its vocabulary, its tokenizers, where it runs.

Owns: the model a config describes (`model_args`, `build_model`, initialised from the run's `init`
random stream), the device choice, the autocast policy of `train.dtype`, and `load_run`, which reads a
run directory, a checkpoint or a model folder (config, vocab, weights, and the tokenizers the run
carries) for sampling and evaluation; the weights are the EMA of the run's weights where it kept one
(`train.ema`), as is usual for sampling from diffusion models. Does not own training (trainer.py) or the formats it reads
(checkpoint.py, model_folder.py).
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from trimdm.config import Config
from trimdm.model.transformer import Transformer, TransformerArgs
from trimdm.streams import stream_seed
from trimdm.tokenizers.media import load_media_tokenizer
from trimdm.tokenizers.text import TextTokenizer
from trimdm.tokenizers.vocab import JointVocab
from trimdm.train.checkpoint import EMA_FILE
from trimdm.train.model_folder import MEDIA_TOKENIZERS, TEXT_TOKENIZER, WEIGHTS, check_weights, load_model_source


def model_args(cfg: Config, vocab: JointVocab) -> TransformerArgs:
    """The network of a config. CompleteP's model side (Dey et al. 2025, Table 1 at α = 1): residual
    branches × 1/m_L, logits × 1/m_N, block matrices' init std × 1/√m_N and no GPT-2 1/√(2·n_layers)
    on output projections (the 1/m_L branch multiplier already carries depth). Under `standard`
    m_N = m_L = 1 and GPT-2's rule stays."""
    m, d = cfg.model, cfg.derived
    return TransformerArgs(vocab_size=vocab.size, d_model=m.d_model, n_layers=m.n_layers, n_heads=m.n_heads,
                           mlp_hidden=m.mlp_hidden, max_seq_len=cfg.data.seq_len, rope_theta=m.rope_theta,
                           norm_eps=m.norm_eps, init_std=m.init_std, residual_scale=1.0 / d.depth_mult,
                           hidden_init_scale=1.0 / math.sqrt(d.width_mult),
                           depth_scaled_init=m.parameterization == "standard", logit_scale=1.0 / d.width_mult,
                           vocab_segments=vocab.segments())


def build_model(cfg: Config, vocab: JointVocab) -> Transformer:
    model = Transformer(model_args(cfg, vocab))
    model.init_weights(torch.Generator().manual_seed(stream_seed(cfg.train.seed, "init")))
    return model


def autocast(dtype: str, device: torch.device):
    if dtype == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@dataclass
class LoadedRun:
    """A trained model ready for sampling and evaluation, rebuilt from its checkpoint (or model folder)
    alone. `checkpoint` is what was loaded (a checkpoint directory or the model folder), and what a
    generation sidecar records; `home` holds the tokenizer folders (the run directory or the folder)."""

    cfg: Config
    vocab: JointVocab
    model: Transformer
    tokenizer: object  # text
    checkpoint: Path
    device: torch.device
    media_tokenizers: dict  # "image" / "audio" -> tokenizer, where the run has them
    home: Path
    model_folder: bool = False
    weights: str = "model"  # "ema": the run's EMA of its weights (train.ema); "model": the weights themselves

    def output_dir(self, flag: str = "--out") -> Path:
        """The folder a command writes into when not told where: the run directory. A model folder is
        never written into (its manifest and card describe it as exported; it may sit in a read-only
        cache), so a command on one must be given `flag`."""
        if self.model_folder:
            raise ValueError(f"{self.home} is a model folder, which trimdm does not write into: pass {flag} DIR")
        return self.home

    @property
    def autocast_dtype(self):
        return torch.bfloat16 if self.cfg.train.dtype == "bf16" else None


def load_run(path: str | Path, device: str = "auto") -> LoadedRun:
    """The run at `path` in eval mode: a run directory (its latest checkpoint), a checkpoint directory,
    or a model folder written by `trimdm export` (verified: model_folder.py). A checkpoint with an EMA of
    the weights (`train.ema`) loads the EMA."""
    src = load_model_source(path)
    cfg = Config.from_dict(src["config"]).derive()
    vocab = JointVocab.from_dict(src["vocab"])
    dev = pick_device(device)
    model = Transformer(model_args(cfg, vocab))
    if src["ema"] is not None:  # a checkpoint that holds an EMA of its weights
        weights, tensors, file = "ema", src["ema"], EMA_FILE
    else:  # a checkpoint without one, or a model folder (its weights say what they are)
        weights, tensors, file = src["weights"], src["model"], WEIGHTS
    check_weights(model.state_dict(), tensors, src, file)
    model.load_state_dict(tensors)
    model.to(dev).eval()
    home = src["home"]
    tokenizer = TextTokenizer.load(home / TEXT_TOKENIZER)
    # native or pretrained-adapter tokenizers alike: the run directory carries whichever it trained on
    media = {m: load_media_tokenizer(home / MEDIA_TOKENIZERS / m, m) for m in ("image", "audio") if vocab.has(m)}
    return LoadedRun(cfg, vocab, model, tokenizer, src["path"], dev, media, home, src["model_folder"], weights)
