"""The training loop: the one place where data, masking, model, loss and optimizer meet (method §7).

Owns: building a run from a config, the step (micro-batches, bf16 autocast with fp32 master weights,
gradient clipping, lr schedule in tokens, the EMA of the weights), the gradient noise scale measurement,
logging, checkpoint and resume, SIGTERM handling, and running under torchrun (DDP or FSDP2, activation
checkpointing and compile applied from outside). A run whose estimated memory exceeds the device's is
refused before its model is built (train/memory.py).
Does not own any formula: those live in diffusion/, optim/ and model/.

Determinism: three independent random streams, each seeded from (train.seed, stream name): `init`
(weights), `data` (row order; the loader's position is part of the checkpoint) and `mask` (τ and
mask draws). Per optimizer step, τ and the uniforms that decide masks are drawn for the whole global
batch at once and sliced per rank and micro-batch, so a step does not depend on how the batch is
split: one process, micro-batches, DDP and FSDP2 compute the same step. Every micro-batch loss is
divided by the global batch's count of maskable tokens (all-reduced), so the summed gradient is the
gradient of the method §4 estimator over the whole batch.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import signal
import time
from pathlib import Path

import torch

from trimdm.config import Config, GroupTable
from trimdm.data.loader import MixtureLoader, row_shares
from trimdm.data.prepare import prepare
from trimdm.diffusion.likelihood import heldout_nelbo
from trimdm.diffusion.loss import LossStats, diffusion_loss
from trimdm.diffusion.masking import (clean_rows_per_batch, compact, conditional_modes, draw_noise, mask_batch,
                                      tau_bounds, text_shares)
from trimdm.diffusion.schedules import Schedule, parse_schedule
from trimdm.distributed.env import DistEnv, all_reduce_sum, init_distributed, rank_device
from trimdm.distributed.parallelize import checkpoint_blocks, compile_blocks, full_state, load_full_state, parallelize
from trimdm.model.flops import param_counts, train_flops_per_token
from trimdm.model.memory import GiB, describe as describe_memory
from trimdm.model.transformer import Transformer
from trimdm.optim.lr import lr_factor
from trimdm.optim.noise_scale import NoiseScaleTracker, sq_norm
from trimdm.optim.param_groups import OptimizerSettings, build_optimizer, group_table
from trimdm.optim.reparam import describe
from trimdm.sequence.layout import RowTables
from trimdm.streams import stream_seed
from trimdm.tokenizers.vocab import MODALITIES, JointVocab
from trimdm.train.checkpoint import (CheckpointWriteError, latest_checkpoint, load_newest_intact, point_latest,
                                    save_checkpoint)
from trimdm.train.ema import WeightEMA
from trimdm.train.memory import check_memory
from trimdm.train.metrics import MetricsLog, Progress, matmul_peak_flops
from trimdm.train.model_folder import load_model_source
from trimdm.train.run import autocast, build_model, pick_device


def training_schedules(cfg: Config) -> list[Schedule]:
    return [parse_schedule(cfg.diffusion.schedule[m]) for m in MODALITIES]


def optimizer_settings(cfg: Config) -> OptimizerSettings:
    """The derived AdamW values and per-module multipliers of a run, for optim/param_groups.py."""
    d, o = cfg.derived, cfg.optim
    return OptimizerSettings(lr=d.lr, betas=tuple(d.betas), eps=d.eps, weight_decay=d.weight_decay,
                             multipliers={f.name: getattr(o.groups, f.name) for f in dataclasses.fields(GroupTable)},
                             n_layers=cfg.model.n_layers, depth_ratio=o.depth_ratio, width_mult=d.width_mult,
                             depth_mult=d.depth_mult)


def _grad_sq_norm(params) -> float:
    return sq_norm(p.grad for p in params if p.grad is not None)


def _sq_norms(tensors: list[torch.Tensor]) -> float:
    """Σ‖t‖² from fp32 per-tensor norms (no float64 copy of a large table)."""
    return float(torch.stack(torch._foreach_norm(tensors)).double().square().sum())


def _micro_grad_sq(params, prev: list[torch.Tensor] | None) -> tuple[float, list[torch.Tensor]]:
    """‖g − prev‖² for the accumulated gradients g of `params` (‖g‖² when prev is None: the first
    micro-batch), and prev holding a copy of g for the next one: the squared norm of the last
    micro-batch's own gradient. The difference is formed in place in the one fp32 copy kept, so the
    measurement costs 4 bytes per parameter (a flat float64 copy of the gradient and its temporaries
    took 32, the most memory of a one-process step with micro-batches)."""
    grads = [p.grad.detach() for p in params if p.grad is not None]
    if prev is None:
        prev = [g.clone() for g in grads]
        return _sq_norms(prev), prev
    torch._foreach_sub_(prev, grads)
    sq = _sq_norms(prev)
    for q, g in zip(prev, grads):
        q.copy_(g)
    return sq, prev


class Trainer:
    def __init__(self, cfg: Config, out_dir: str | Path, log=print, progress: bool = True):
        self.cfg = cfg.derive()
        self.show_progress = progress
        self.out = Path(out_dir)
        t, d = cfg.train, cfg.derived
        if t.threads:
            torch.set_num_threads(t.threads)
        self.env: DistEnv = init_distributed(pick_device(t.device))
        self.device = rank_device(pick_device(t.device), self.env)
        self.log = log if self.env.is_main else (lambda *a, **k: None)
        self.rank_rows = d.batch // self.env.world  # physical rows per rank per optimizer step
        self.micro = t.micro_batch_size or self.rank_rows
        if d.batch % self.env.world or self.rank_rows % self.micro:
            raise ValueError(f"a batch of {d.batch} sequences does not split into {self.env.world} rank(s) × "
                             f"micro-batches of train.micro_batch_size={self.micro}")
        self.accum = self.rank_rows // self.micro
        antimask = cfg.diffusion.antimask
        self.clean_global = clean_rows_per_batch(antimask, d.batch)
        self.clean_rank = clean_rows_per_batch(antimask, self.rank_rows)
        self.clean_micro = clean_rows_per_batch(antimask, self.micro)

        # training reads nothing that only evaluation needs: `trimdm eval` (or a full prepare) builds it
        self.data = prepare(cfg.data, log=self.log, evaluation=False) if self.env.is_main else None
        if self.env.active:  # rank 0 prepares; the others open the finished stages
            torch.distributed.barrier()
            self.data = self.data or prepare(cfg.data, log=self.log, evaluation=False)
        self.vocab = self.data.vocab()
        self.tables = RowTables.from_vocab(self.vocab)
        self.schedules = training_schedules(cfg)
        self.memory = check_memory(self.cfg, self.vocab, self.env.world, self.device, self.log)  # before building
        self.build_network()
        mix = {"text": cfg.data.mix.text, "image_text": cfg.data.mix.image_text, "audio_text": cfg.data.mix.audio_text}
        used = [task for task, share in mix.items() if share > 0]
        self.train_sources = self.data.sources("train", self.vocab, cfg.data.seq_len, used)
        self.val_sources = self.data.sources("val", self.vocab, cfg.data.seq_len, used)
        missing = [task for task in used if task not in self.train_sources]
        if missing and cfg.data.dataset == "corpus":  # a corpus mixes what it holds (docs/data.md)
            self.log(f"data: {cfg.data.corpus} holds no {', '.join(missing)} samples; their data.mix shares are unused")
        elif missing:
            raise ValueError(f"data.mix gives a share to {missing}, which data.dataset={cfg.data.dataset!r} lacks")
        shares = row_shares(mix, self.data.tokens_per_row(cfg.data.seq_len))
        self.loader = MixtureLoader(self.train_sources, shares, self.clean_global, stream_seed(t.seed, "data"),
                                    self.env.rank, self.env.world)
        self.mask_gen = torch.Generator().manual_seed(stream_seed(t.seed, "mask"))
        self.tau_lo, self.tau_hi = tau_bounds(self.schedules, antimask, cfg.diffusion.t_min)
        self.noise_scale = NoiseScaleTracker()
        self.step, self.tokens = 0, 0
        self.skipped_steps, self.skips_in_a_row = 0, 0  # steps with a non-finite loss or gradient
        self.params = param_counts(self.model.args)
        self.peak = t.peak_tflops * 1e12 if t.peak_tflops else None

    def build_network(self) -> None:
        """The model, its wrappers (activation checkpointing, compile, DDP or FSDP2: all from outside, in
        torchtitan's order), the optimizer and the EMA of the weights."""
        cfg, t = self.cfg, self.cfg.train
        self.model = build_model(cfg, self.vocab)
        # train.init only starts a new run: a checkpoint of the run's own is resumed in fit() instead
        resuming = latest_checkpoint(self.out) is not None
        self.initial = init_weights_from(self.model, self.vocab, t.init) if t.init and not resuming else None
        self.model = self.model.to(self.device)
        if t.activation_checkpointing:
            checkpoint_blocks(self.model)
        if t.compile:
            compile_blocks(self.model)
        self.net = parallelize(self.model, t.parallel, self.env, self.device)
        self.optimizer = build_optimizer(self.net, optimizer_settings(cfg))
        # the plain model's parameters (FSDP2 shards them in place; DDP wraps the model)
        self.ema = WeightEMA(self.model, t.ema) if t.ema else None

    # -- checkpoints -------------------------------------------------------------------------------
    def save(self) -> Path | None:
        model_state, optim_state = full_state(self.net, self.optimizer, self.cfg.train.parallel, self.env)
        ema = self.ema.state_dict() if self.ema is not None else None  # every rank: FSDP2 gathers it
        if not self.env.is_main:
            return None
        return save_checkpoint(
            self.out, self.step, model_state, optim_state,
            rng={"mask": self.mask_gen.get_state()},
            trainer_state={"step": self.step, "tokens": self.tokens, "loader": self.loader.state_dict(),
                           "noise_scale": self.noise_scale.state_dict(), "world": self.env.world,
                           "skipped_steps": self.skipped_steps, "skips_in_a_row": self.skips_in_a_row},
            config=self.cfg.to_dict(), vocab=self.vocab.to_dict(), keep=self.cfg.train.keep_checkpoints, ema=ema)

    def resume(self) -> bool:
        """Continue from the run's latest checkpoint or, when that one is corrupt, from its newest intact
        one (with a warning, and `latest` repointed at it, so that the next save knows what it keeps)."""
        if latest_checkpoint(self.out) is None:
            return False
        ckpt, passed_over = load_newest_intact(self.out)
        path = ckpt["path"]
        for bad, why in passed_over:
            self.log(f"warning: checkpoint {bad.name} is corrupt ({why}); resuming from {path.name}, the "
                     "newest intact checkpoint")
        if passed_over and self.env.is_main:
            point_latest(path)
        saved = Config.from_dict(ckpt["config"]).derive().to_dict()
        diff = [d for d in _diff(saved, self.cfg.to_dict()) if d.split(":")[0] not in RESUME_FREE]
        if diff:
            raise ValueError(f"{self.out} holds a run with a different config ({'; '.join(diff[:6])}); "
                             "resume with the same settings or choose another --out")
        world = ckpt["trainer"].get("world", 1)
        if world != self.env.world:
            raise ValueError(f"{path} was written by {world} processes; resume it with the same world size "
                             f"(now {self.env.world}); any world size can load it for sampling and evaluation")
        load_full_state(self.net, self.optimizer, ckpt["model"], ckpt["optimizer"], self.cfg.train.parallel,
                        self.env)
        if self.ema is not None:
            if ckpt["ema"] is None:
                raise ValueError(f"{path} holds no EMA of the weights, which train.ema={self.cfg.train.ema} keeps")
            self.ema.load_state_dict(ckpt["ema"])
        self.mask_gen.set_state(ckpt["rng"]["mask"])
        self.loader.load_state_dict(ckpt["trainer"]["loader"])
        self.noise_scale.load_state_dict(ckpt["trainer"]["noise_scale"])
        self.step, self.tokens = ckpt["trainer"]["step"], ckpt["trainer"]["tokens"]
        # checkpoints from before the skip counters had none to keep
        self.skipped_steps = ckpt["trainer"].get("skipped_steps", 0)
        self.skips_in_a_row = ckpt["trainer"].get("skips_in_a_row", 0)
        self.log(f"resumed from {path} at step {self.step}")
        return True

    # -- one optimizer step ------------------------------------------------------------------------
    def noisy_batches(self) -> tuple[list, torch.Tensor, float]:
        """This rank's micro-batches of the next step, masked with its slice of the global batch's noise
        draw; with each micro-batch's count of maskable tokens and the global batch's (all-reduced)."""
        cfg, env = self.cfg, self.env
        tau, u, c = draw_noise(self.clean_global, cfg.data.seq_len, self.mask_gen, self.tau_lo, self.tau_hi)
        clean = self.loader.next()  # this rank's clean rows, split into micro-batches below
        offset = env.rank * self.clean_rank
        # each row's split by the medium it holds; with one share for both media the modes are those of
        # the global draw sliced, whatever the row content
        mode = conditional_modes(c[offset:offset + len(clean)], cfg.diffusion.conditional,
                                 text_shares(clean, self.tables, cfg.diffusion.text_given_media))
        batches = []
        for k in range(self.accum):
            a, b = k * self.clean_micro, (k + 1) * self.clean_micro
            batches.append(mask_batch(clean[a:b], self.tables, self.schedules, cfg.diffusion.antimask,
                                      tau[offset + a:offset + b], u[offset + a:offset + b],
                                      mode_B=mode[a:b]))
        counts = torch.tensor([float(nb.maskable_BL.sum()) for nb in batches], dtype=torch.float64)
        return batches, counts, float(all_reduce_sum(counts.sum(), env))

    def train_step(self) -> dict:
        """One optimizer step, or one skipped (`apply_or_skip`); returns what the log of a step needs."""
        cfg, d, env = self.cfg, self.cfg.derived, self.env
        batches, counts, denominator = self.noisy_batches()
        factor = lr_factor(self.step, d.steps, d.warmup_steps, cfg.optim.lr_schedule, cfg.optim.min_lr_ratio,
                           d.decay_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = group["base_lr"] * factor
        self.optimizer.zero_grad(set_to_none=True)

        measure = bool(cfg.train.noise_scale_every) and self.step % cfg.train.noise_scale_every == 0
        ddp = env.active and cfg.train.parallel == "ddp"
        measure_micro = measure and not env.active and self.accum > 1
        measure_ranks = measure and ddp
        params = [p for p in self.net.parameters() if p.requires_grad]
        stats, micro_sq, prev, positions = None, [], None, 0
        for k, nb in enumerate(batches):
            sync = ddp and not measure_ranks and k == self.accum - 1
            # one process: split by task too (every pass need not touch every parameter); DDP and
            # FSDP2 expect one forward per micro-batch, so there only the padded tail is cut
            for part in compact(nb, by_task=not env.active):
                positions += int((~part.pad_BL).sum())
                with self.net.no_sync() if ddp and not sync else contextlib.nullcontext():
                    with autocast(cfg.train.dtype, self.device):
                        loss, s = diffusion_loss(self.net, self.vocab, part.to(self.device), denominator)
                        loss = loss * env.world  # DDP and FSDP average gradients over ranks; we want the sum
                    loss.backward()
                stats = s if stats is None else stats + s
            if measure_micro:  # gradient of this micro-batch alone, rescaled to its own mean
                sq, prev = _micro_grad_sq(params, prev)
                micro_sq.append(sq * (denominator / float(counts[k])) ** 2)
        measured = None  # the noise-scale tracker's arguments; it takes them only from a step that is applied
        if measure_ranks:  # per-rank gradient (no_sync above) versus the all-reduced one
            local_sq = _grad_sq_norm(params) * (denominator / (env.world * float(counts.sum()))) ** 2
            for p in params:
                if p.grad is not None:
                    torch.distributed.all_reduce(p.grad)
                    p.grad.div_(env.world)
            small = float(all_reduce_sum(torch.tensor(local_sq, dtype=torch.float64), env)) / env.world
            measured = (small, self.rank_rows, _grad_sq_norm(params), d.batch)
        elif measure_micro:
            measured = (sum(micro_sq) / len(micro_sq), self.micro, _sq_norms(prev), self.rank_rows)
        clip = d.grad_clip if d.grad_clip > 0 else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(params, clip, foreach=True)
        grad_norm = float(grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm)
        if env.active:
            stats = LossStats(*(all_reduce_sum(x, env) for x in (stats.wce_M, stats.tokens_M, stats.masked_M)))
            positions = int(all_reduce_sum(torch.tensor(float(positions), dtype=torch.float64), env))
        self.drop_unused_outputs(stats)
        skipped = self.apply_or_skip(stats, grad_norm)
        if self.ema is not None and not skipped:
            self.ema.update()
        noise = self.noise_scale.update(*measured) if measured and not skipped else None
        self.step += 1
        self.tokens += d.tokens_per_step
        return {"stats": stats, "grad_norm": grad_norm, "lr_factor": factor, "noise_scale": noise,
                "positions": positions, "skipped": skipped}

    def drop_unused_outputs(self, stats: LossStats) -> None:
        """The unembedding of a modality with no masked position anywhere in the step (all ranks, all
        micro-batches) is left out of the update, as AdamW leaves out any parameter without a gradient:
        no moment decay, no weight decay. Every rank built its gradient (zero) so that the ranks' gradient
        sets matched (diffusion_loss); `stats` is already summed over ranks, so every rank drops the same
        ones, and one process, micro-batches, DDP and FSDP2 update the same parameters."""
        for i, m in enumerate(MODALITIES):
            if m in self.model.unembed and float(stats.masked_M[i]) == 0:
                self.model.unembed[m].grad = None

    def apply_or_skip(self, stats: LossStats, grad_norm: float) -> bool:
        """Step the optimizer, unless the step's loss or gradient norm is not finite: then skip the step
        and count it. Returns whether it was skipped.

        The flag is all-reduced, so that every rank makes the same decision (ranks that disagreed would
        diverge, or under FSDP wait on each other for ever). A skipped step applies nothing: parameters,
        AdamW moments and AdamW's step count stay as they were. Its data and mask draws are spent and
        the trainer's step (so the lr schedule) and token counters advance, as in a run without the
        fault: a resume stays bit-identical, and the step is not retried on other data."""
        bad = not (math.isfinite(grad_norm) and bool(torch.isfinite(stats.wce_M).all()))
        if self.env.active:
            bad = bool(all_reduce_sum(torch.tensor(float(bad)), self.env) > 0)
        if not bad:
            self.optimizer.step()
            self.skips_in_a_row = 0
            return False
        self.optimizer.zero_grad(set_to_none=True)
        self.skipped_steps += 1
        self.skips_in_a_row += 1
        self.log(f"step {self.step + 1}: loss {stats.loss_nats():.4g}, gradient norm {grad_norm:.4g}: not finite; "
                 f"step skipped, nothing applied ({self.skips_in_a_row} in a row of at most train.max_skips="
                 f"{self.cfg.train.max_skips}; {self.skipped_steps} in all)")
        return True

    def step_flops(self, stats: LossStats, positions: int) -> float:
        """Useful FLOPs of a step: the trunk on every non-pad position, the logits of masked positions
        over their output slice only."""
        body = train_flops_per_token(self.model.args, self.cfg.data.seq_len, 0, 0) * positions
        v = self.vocab
        widths = torch.tensor([v.n_text + 1, v.n_image + 1, v.audio_codebook + 1], dtype=torch.float64)
        return body + 6.0 * self.model.args.d_model * float((stats.masked_M * widths).sum())

    # -- the loop ----------------------------------------------------------------------------------
    def fit(self) -> dict:
        cfg, d, t = self.cfg, self.cfg.derived, self.cfg.train
        if self.env.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
        self.resume()
        if self.initial is not None:
            self.log(f"initialised the model from {self.initial} (train.init); optimizer and schedule start afresh")
        if self.env.is_main:
            cfg.to_json(self.out / "config.json")
            self.vocab.save(self.out / "vocab.json")
            self.data.save_tokenizers(self.out)  # the run carries what decoding needs
        hp = cfg.batch_hparams()
        self.log(f"model: {self.params['non_embedding']:,} non-embedding + {self.params['embedding']:,} "
                 f"embedding parameters; {d.steps} steps of {d.batch}×{cfg.data.seq_len} tokens "
                 f"({self.env.world} process(es) × {self.accum} micro-batch(es) of {self.micro}); "
                 f"dtype {t.dtype}; device {self.device}")
        self.log(f"memory: about {self.memory['peak'] / GiB:.1f} GiB per process estimated "
                 f"({describe_memory(self.memory)} GiB; train/memory.py)")
        self.log(describe(hp))
        self.log(group_table(self.optimizer))
        if self.peak is None:
            self.peak = matmul_peak_flops(self.device, torch.bfloat16 if t.dtype == "bf16" else torch.float32)
        metrics = MetricsLog(self.out / "metrics.jsonl", self.step) if self.env.is_main else None
        progress = Progress(d.steps, self.step, t.log_every)
        stop = {"signal": None}
        previous = signal.signal(signal.SIGTERM, lambda signum, frame: stop.update(signal=signum))
        status = "finished"
        try:
            window_t, window_tokens, window_flops = time.time(), 0, 0.0
            while self.step < d.steps:
                out = self.train_step()
                window_tokens += d.tokens_per_step
                window_flops += self.step_flops(out["stats"], out["positions"])
                last = self.step == d.steps
                if self.step % t.log_every == 0 or last:
                    record = self.record(out, time.time() - window_t, window_tokens, window_flops, last)
                    if metrics:
                        metrics.write(record)
                    if self.env.is_main and self.show_progress:
                        progress.update(self.step - 1, record["loss"], record["tokens_per_s"])
                    window_t, window_tokens, window_flops = time.time(), 0, 0.0
                if self.skips_in_a_row >= t.max_skips:
                    raise ValueError(self.stuck(d.lr * out["lr_factor"]))
                stopping = bool(self.env.active and all_reduce_sum(
                    torch.tensor(float(stop["signal"] is not None)), self.env) > 0) or stop["signal"] is not None
                if last or stopping:
                    path = self.save()  # no later save would try again: a failed write stops the run
                elif t.ckpt_every and self.step % t.ckpt_every == 0:
                    self.save_periodic()
                if stopping and not last:
                    status = "interrupted"
                    self.log(f"SIGTERM: saved {path} at step {self.step}; rerun the same command to resume")
                    break
        finally:
            signal.signal(signal.SIGTERM, previous)
            if metrics:
                metrics.close()
        return {"status": status, "step": self.step, "tokens": self.tokens}

    def record(self, out: dict, elapsed: float, tokens: int, flops: float, last: bool) -> dict:
        """The metrics.jsonl line of a logged step: `out` from train_step, and the tokens and useful FLOPs
        of the steps since the last line, which took `elapsed` seconds."""
        t, stats, elapsed = self.cfg.train, out["stats"], max(elapsed, 1e-9)
        record = {"step": self.step, "tokens": self.tokens, "loss": stats.loss_nats(),
                  **{f"nelbo_{m}": v for m, v in stats.nelbo_bits().items()},
                  "lr": self.cfg.derived.lr * out["lr_factor"], "grad_norm": out["grad_norm"],
                  "skipped": out["skipped"], "skipped_steps": self.skipped_steps,
                  "tokens_per_s": tokens / elapsed, "mfu": flops / elapsed / self.peak / self.env.world}
        if self.noise_scale.value is not None:
            record["grad_noise_scale"] = self.noise_scale.value
        if t.eval_every and (self.step % t.eval_every == 0 or last):
            record.update({f"val_nelbo_{m}": v["bits_per_token"] for m, v in self.evaluate()["nelbo"].items()})
        return record

    def stuck(self, lr: float) -> str:
        """Why the run stops after train.max_skips skipped steps in a row, and where to look."""
        n = self.skips_in_a_row
        return (f"step {self.step}: {n} steps in a row had a non-finite loss or gradient and were skipped "
                f"(train.max_skips={self.cfg.train.max_skips}; {self.skipped_steps} skipped in all); the model "
                f"is as it was after step {self.step - n}. Look at the learning rate (lr {lr:.3g} at this step: "
                "a lower optim.base.lr or a longer warm-up) and at the data of these steps (their order "
                "follows train.seed). Rerunning the same command resumes from the last checkpoint and meets "
                "these steps again; to change the recipe, start a new run with train.init=<that checkpoint>")

    def save_periodic(self) -> None:
        """A periodic checkpoint that cannot be written is a warning, not the end of the run: the
        previous checkpoint is intact either way, so going on loses nothing that stopping would keep,
        and the next periodic save tries again (a disk may be cleared, a quota raised). The final and
        the SIGTERM saves have no later one and raise."""
        try:
            self.save()
        except CheckpointWriteError as e:
            self.log(f"warning: {e}; training continues and tries again at the next checkpoint")

    def evaluate(self) -> dict:
        """A quick held-out NELBO for metrics.jsonl (eval.periodic_*); `trimdm eval` is the full one."""
        e = self.cfg.eval
        self.model.eval()
        try:
            return heldout_nelbo(self.net, self.vocab, self.val_sources, tau_points=e.periodic_tau_points, seed=e.seed,
                                 batch_size=e.batch_size, max_rows=e.periodic_rows, device=self.device,
                                 dtype=self.cfg.train.dtype)
        finally:
            self.model.train()


# keys a resumed run may change: they change how much memory a step takes, not what it computes
# (activation checkpointing gives the same gradients bit for bit: tests/unit/test_memory.py)
RESUME_FREE = ("train.memory_check", "train.activation_checkpointing")


def _diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _diff(va, vb, f"{prefix}{k}.")
        elif va != vb and not (isinstance(va, (list, tuple)) and list(va) == list(vb or [])):
            out.append(f"{prefix}{k}: {va!r} -> {vb!r}")
    return out


def init_weights_from(model: Transformer, vocab: JointVocab, path: str | Path) -> Path:
    """Load the model weights of a run directory, checkpoint or model folder (`train.init`) into a fresh
    model: the start of a fine-tune or a continued run under a changed recipe. The optimizer, schedule
    and data order start afresh. The vocabulary and every parameter's shape must match. Returns the
    checkpoint (or model folder)."""
    try:
        ckpt = load_model_source(path)
    except ValueError as e:
        raise ValueError(f"train.init: {e}") from None
    if JointVocab.from_dict(ckpt["vocab"]) != vocab:
        raise ValueError(f"train.init={path}: its vocabulary differs from this run's (another data set or "
                         "tokenizer settings); initialise only from a run on the same prepared data")
    own = model.state_dict()
    bad = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in ckpt["model"].items()
           if k in own and v.shape != own[k].shape]
    missing, extra = sorted(set(own) - set(ckpt["model"])), sorted(set(ckpt["model"]) - set(own))
    if bad or missing or extra:
        raise ValueError(f"train.init={path}: its model does not fit this run's model config "
                         f"(shapes: {bad[:3]}; missing: {missing[:3]}; unexpected: {extra[:3]})")
    model.load_state_dict(ckpt["model"])  # copies cast to the model's dtype (bf16-shipped weights included)
    return ckpt["path"]


def train(cfg: Config, out_dir: str | Path, log=print, progress: bool = True) -> dict:
    """Train (or resume) a run; returns {"status": "finished" | "interrupted", "step", "tokens"}."""
    return Trainer(cfg, out_dir, log, progress).fit()
