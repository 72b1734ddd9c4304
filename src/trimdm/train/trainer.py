"""The training loop: the one place where data, masking, model, loss and optimizer meet (SPEC §7).

Owns: building a run from a config, the step (micro-batches, bf16 autocast with fp32 master weights,
gradient clipping, lr schedule in tokens), logging, checkpoint/resume, SIGTERM handling.
Does not own any formula: those live in diffusion/, optim/ and model/.

Determinism: three independent random streams, each seeded from (train.seed, stream name): `init`
(weights), `data` (row order; the loader's position is part of the checkpoint) and `mask` (τ and
mask draws). Per optimizer step, τ and the uniforms that decide masks are drawn for the whole global
batch at once and sliced per micro-batch, so the step does not depend on how the batch is split.
Same seed, same losses bit for bit on CPU; a resumed run continues bit-identically.
"""
from __future__ import annotations

import contextlib
import math
import signal
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import torch

from trimdm.config import MODALITIES, Config
from trimdm.data.loader import RowLoader
from trimdm.data.prepare import TextData, prepare_text
from trimdm.diffusion.loss import LossStats, diffusion_loss
from trimdm.diffusion.masking import clean_rows_per_batch, draw_noise, mask_batch, tau_bounds
from trimdm.diffusion.schedules import Schedule, parse_schedule
from trimdm.eval.likelihood import heldout_nelbo
from trimdm.model.flops import param_counts, train_flops_per_token
from trimdm.model.transformer import Transformer, TransformerArgs
from trimdm.optim.lr import lr_factor
from trimdm.sequence.layout import RowTables
from trimdm.tokenizers.vocab import JointVocab
from trimdm.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from trimdm.train.metrics import MetricsLog, Progress


def stream_seed(seed: int, stream: str) -> int:
    """Independent, stable seeds per random stream (crc32 is stable across processes and versions)."""
    return (seed * 1_000_003 + zlib.crc32(stream.encode())) % (2**63)


def training_schedules(cfg: Config) -> list[Schedule]:
    return [parse_schedule(cfg.diffusion.schedule[m]) for m in MODALITIES]


def model_args(cfg: Config, vocab: JointVocab) -> TransformerArgs:
    m = cfg.model
    return TransformerArgs(vocab_size=vocab.size, d_model=m.d_model, n_layers=m.n_layers, n_heads=m.n_heads,
                           mlp_hidden=m.mlp_hidden, max_seq_len=cfg.data.seq_len, rope_theta=m.rope_theta,
                           norm_eps=m.norm_eps, init_std=m.init_std)


def build_model(cfg: Config, vocab: JointVocab, seed: int | None = None) -> Transformer:
    model = Transformer(model_args(cfg, vocab))
    gen = torch.Generator().manual_seed(stream_seed(cfg.train.seed if seed is None else seed, "init"))
    model.init_weights(gen)
    return model


def autocast(cfg: Config, device: torch.device):
    if cfg.train.dtype == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def build_optimizer(cfg: Config, model: torch.nn.Module) -> torch.optim.AdamW:
    """AdamW; norm gains (1-D parameters) get no weight decay."""
    o = cfg.optim
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": o.weight_decay, "name": "matrices"},
              {"params": no_decay, "weight_decay": 0.0, "name": "norms"}]
    return torch.optim.AdamW(groups, lr=o.lr, betas=o.betas, eps=o.eps, foreach=True)


@dataclass
class StepNoise:
    """τ and mask uniforms for one optimizer step's global batch of clean rows."""

    tau_B: torch.Tensor
    u_BL: torch.Tensor

    def slice(self, start: int, n: int) -> "StepNoise":
        return StepNoise(self.tau_B[start:start + n], self.u_BL[start:start + n])


class Trainer:
    def __init__(self, cfg: Config, out_dir: str | Path, log=print):
        self.cfg = cfg.derive()
        self.out = Path(out_dir)
        self.log = log
        t = cfg.train
        if t.threads:
            torch.set_num_threads(t.threads)
        self.device = pick_device(t.device)
        self.data: TextData = prepare_text(cfg.data, log=log)
        self.vocab = self.data.vocab()
        self.tables = RowTables.from_vocab(self.vocab)
        self.schedules = training_schedules(cfg)
        self.model = build_model(cfg, self.vocab).to(self.device)
        self.optimizer = build_optimizer(cfg, self.model)
        self.clean_rows = clean_rows_per_batch(cfg.diffusion.antimask, t.batch_size)
        self.micro_rows = clean_rows_per_batch(cfg.diffusion.antimask, cfg.derived.micro_batch_size)
        self.train_rows = self.data.rows("train", self.vocab, cfg.data.seq_len)
        self.val_rows = self.data.rows("val", self.vocab, cfg.data.seq_len)
        self.loader = RowLoader(self.train_rows, self.clean_rows, stream_seed(t.seed, "data"))
        self.mask_gen = torch.Generator().manual_seed(stream_seed(t.seed, "mask"))
        self.tau_lo, self.tau_hi = tau_bounds(self.schedules, cfg.diffusion.antimask, cfg.diffusion.t_min)
        self.step, self.tokens = 0, 0
        args = self.model.args
        self.params = param_counts(args)
        mean_width = self.vocab.n_text + 1  # text-only for now: the text slice plus EOS
        self.flops_per_token = train_flops_per_token(args, cfg.data.seq_len, mean_width, 0.5)

    # -- checkpoints -------------------------------------------------------------------------------
    def save(self) -> Path:
        path = save_checkpoint(
            self.out, self.step, self.model.state_dict(), self.optimizer.state_dict(),
            rng={"mask": self.mask_gen.get_state()},
            trainer_state={"step": self.step, "tokens": self.tokens, "loader": self.loader.state_dict()},
            config=self.cfg.to_dict(), vocab=self.vocab.to_dict(), keep=self.cfg.train.keep_checkpoints)
        return path

    def resume(self) -> bool:
        path = latest_checkpoint(self.out)
        if path is None:
            return False
        ckpt = load_checkpoint(path)
        saved = Config.from_dict(ckpt["config"]).derive().to_dict()
        diff = _diff(saved, self.cfg.to_dict())
        if diff:
            raise ValueError(f"{self.out} holds a run with a different config ({'; '.join(diff[:6])}); "
                             "resume with the same settings or choose another --out")
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.mask_gen.set_state(ckpt["rng"]["mask"])
        self.loader.load_state_dict(ckpt["trainer"]["loader"])
        self.step, self.tokens = ckpt["trainer"]["step"], ckpt["trainer"]["tokens"]
        self.log(f"resumed from {path} at step {self.step}")
        return True

    # -- one optimizer step ------------------------------------------------------------------------
    def train_step(self) -> tuple[LossStats, float]:
        cfg, d = self.cfg, self.cfg.derived
        noise = StepNoise(*draw_noise(self.clean_rows, cfg.data.seq_len, self.mask_gen, self.tau_lo, self.tau_hi))
        clean_all = self.loader.next()  # this step's clean rows, split into micro-batches below
        batches = []
        for k in range(d.accum_steps):
            nz = noise.slice(k * self.micro_rows, self.micro_rows)
            batches.append(mask_batch(clean_all[k * self.micro_rows:(k + 1) * self.micro_rows], self.tables,
                                      self.schedules, cfg.diffusion.antimask, nz.tau_B, nz.u_BL))
        denominator = float(sum(int(nb.maskable_BL.sum()) for nb in batches))
        lr = cfg.optim.lr * lr_factor(self.step, d.steps, d.warmup_steps, cfg.optim.lr_schedule,
                                      cfg.optim.min_lr_ratio)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        stats = None
        for nb in batches:
            nb = nb.to(self.device)
            with autocast(cfg, self.device):
                loss, s = diffusion_loss(self.model, self.vocab, nb, denominator)
            loss.backward()
            stats = s if stats is None else stats + s
        clip = cfg.optim.grad_clip if cfg.optim.grad_clip > 0 else math.inf
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip, foreach=True))
        self.optimizer.step()
        self.step += 1
        self.tokens += d.tokens_per_step
        return stats, grad_norm

    # -- the loop ----------------------------------------------------------------------------------
    def fit(self) -> dict:
        cfg, d, t = self.cfg, self.cfg.derived, self.cfg.train
        self.out.mkdir(parents=True, exist_ok=True)
        self.resume()
        cfg.to_json(self.out / "config.json")
        self.vocab.save(self.out / "vocab.json")
        self.data.tokenizer.save(self.out / "tokenizer")  # the run carries what decoding needs
        self.log(f"model: {self.params['non_embedding']:,} non-embedding + {self.params['embedding']:,} "
                 f"embedding parameters; {d.steps} steps of {t.batch_size}×{cfg.data.seq_len} tokens "
                 f"(micro-batch {d.micro_batch_size}); dtype {t.dtype}; device {self.device}")
        metrics = MetricsLog(self.out / "metrics.jsonl", self.step)
        progress = Progress(d.steps, self.step, t.log_every)
        stop = {"signal": None}
        previous = signal.signal(signal.SIGTERM, lambda signum, frame: stop.update(signal=signum))
        status = "finished"
        try:
            window_t, window_tokens = time.time(), 0
            while self.step < d.steps:
                stats, grad_norm = self.train_step()
                window_tokens += d.tokens_per_step
                last = self.step == d.steps
                if self.step % t.log_every == 0 or last:
                    elapsed = time.time() - window_t
                    tps = window_tokens / max(elapsed, 1e-9)
                    record = {"step": self.step, "tokens": self.tokens, "loss": stats.loss_nats(),
                              **{f"nelbo_{m}": v for m, v in stats.nelbo_bits().items()},
                              "lr": self.optimizer.param_groups[0]["lr"], "grad_norm": grad_norm,
                              "tokens_per_s": tps, "gflops_per_s": tps * self.flops_per_token / 1e9}
                    if t.eval_every and (self.step % t.eval_every == 0 or last):
                        record.update({f"val_nelbo_{m}": v["bits_per_token"] for m, v in
                                       self.evaluate()["nelbo"].items()})
                    metrics.write(record)
                    progress.update(self.step - 1, record["loss"], tps)
                    window_t, window_tokens = time.time(), 0
                if (t.ckpt_every and self.step % t.ckpt_every == 0) or last:
                    self.save()
                if stop["signal"] is not None and not last:
                    path = self.save()
                    status = "interrupted"
                    self.log(f"SIGTERM: saved {path} at step {self.step}; rerun the same command to resume")
                    break
        finally:
            signal.signal(signal.SIGTERM, previous)
            metrics.close()
        return {"status": status, "step": self.step, "tokens": self.tokens}

    def evaluate(self) -> dict:
        self.model.eval()
        try:
            return heldout_nelbo(self.model, self.vocab, self.val_rows, self.cfg, self.device)
        finally:
            self.model.train()


def _diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _diff(va, vb, f"{prefix}{k}.")
        elif va != vb and not (isinstance(va, (list, tuple)) and list(va) == list(vb or [])):
            out.append(f"{prefix}{k}: {va!r} -> {vb!r}")
    return out


def train(cfg: Config, out_dir: str | Path, log=print) -> dict:
    return Trainer(cfg, out_dir, log).fit()


@dataclass
class LoadedRun:
    """A trained model ready for sampling and evaluation, rebuilt from its checkpoint alone."""

    cfg: Config
    vocab: JointVocab
    model: Transformer
    tokenizer: object
    checkpoint: Path
    device: torch.device

    @property
    def autocast_dtype(self):
        return torch.bfloat16 if self.cfg.train.dtype == "bf16" else None


def load_run(path: str | Path, device: str = "auto") -> LoadedRun:
    from trimdm.tokenizers.text import TextTokenizer

    ckpt = load_checkpoint(path, with_optimizer=False)
    cfg = Config.from_dict(ckpt["config"]).derive()
    vocab = JointVocab.from_dict(ckpt["vocab"])
    dev = pick_device(device)
    model = Transformer(model_args(cfg, vocab))
    model.load_state_dict(ckpt["model"])
    model.to(dev).eval()
    tokenizer = TextTokenizer.load(ckpt["path"].parent.parent / "tokenizer")
    return LoadedRun(cfg, vocab, model, tokenizer, ckpt["path"], dev)
