"""Training throughput on this machine: tokens/s and achieved FLOP/s of the real training step,
next to the bf16 matmul peak measured in the same run. Prints one JSON object.

    python benchmarks/train_throughput.py [--configs demo,demo_text,d512] [--steps 6]
    python benchmarks/train_throughput.py --nproc 2 --parallel ddp|fsdp [--configs d512]
    python benchmarks/train_throughput.py --peer [--configs d512] [--rounds 5] [--steps 2]

With --peer (needs the `bench` extra: transformers) one process times trimdm's step of one config and
the Hugging Face peer at the same shapes (peer_hf_mdm.py: ModernBertForMaskedLM with the same MDM loss,
dense logits and its sparse prediction), interleaved: each round measures the bf16 matmul peak, then
`--steps` steps of trimdm, of the dense peer and of the sparse peer. Medians over rounds; on a shared
machine the ratios trimdm/peer (`peer_ratio_dense`, `peer_ratio_sparse`) are the figures to read, not the
absolute rates. MFU of each system is its median FLOP/s over the median peak (the peer's FLOPs count its
own head and decoder at every position it predicts: peer_hf_mdm.peer_flops_per_step). Each figure also
comes per second of this process's CPU time (`tokens_per_cpu_s`, `mfu_cpu`, `peer_ratio_*_cpu`, the
peak measured the same way): with one thread on a loaded machine, where the wall clock mostly measures
the other jobs, those are the steadier estimates of a quiet machine's one-thread figures.

Configs: demo, demo_text, tinyworld, d512, and tiny (the `tiny` recipe: seconds, for the smoke test).

With --nproc N the script relaunches itself under torchrun; each rank then gets cores/N threads, and
the peak is the single-process matmul peak measured first (so MFU compares the whole machine).

FLOPs counted are the model's useful work (model/flops.py: 6·matmul weights + attention + logits of
the masked positions over their modality slice); recomputation or wasted work is not credited.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import torch

from trimdm.recipes import get_recipe
from trimdm.train.metrics import matmul_flops, matmul_peak_flops
from trimdm.train.trainer import Trainer


CONFIGS = {  # name -> (recipe, overrides)
    "demo": ("demo", []),  # tri-modal tinyworld (prepares it on first use)
    "demo_text": ("demo_text", []),
    "tinyworld": ("tinyworld", []),
    "tiny": ("tiny", []),  # the smoke test's: a run of the script in seconds, not a measurement
    "d512": ("demo_text", ["model.d_model=512", "model.n_layers=8", "model.n_heads=8", "data.seq_len=512",
                           "train.batch_size=8"]),
}


def measure(name: str, extra: list[str], steps: int, warmup: int = 2) -> dict:
    recipe, overrides = CONFIGS[name]
    cfg = get_recipe(recipe).override(overrides + extra)
    with tempfile.TemporaryDirectory() as tmp:
        tr = Trainer(cfg, tmp, log=lambda *a: None)
        for _ in range(warmup):
            tr.train_step()
        flops, t0 = 0.0, time.perf_counter()
        for _ in range(steps):
            out = tr.train_step()
            flops += tr.step_flops(out["stats"], out["positions"])
        dt = (time.perf_counter() - t0) / steps
    tps = cfg.derived.tokens_per_step / dt
    return {"config": name, "recipe": recipe, "overrides": overrides + extra, "params": tr.params,
            "tokens_per_step": cfg.derived.tokens_per_step, "seconds_per_step": dt, "tokens_per_s": tps,
            "flops_per_token": flops / steps / cfg.derived.tokens_per_step, "achieved_gflops": flops / steps / dt / 1e9}


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def peer_systems(tr: Trainer) -> tuple[dict, dict]:
    """{name: step function returning the step's FLOPs} of trimdm and the two peers at tr's shapes, and
    the shared description of those shapes."""
    from peer_hf_mdm import PeerMDM, PeerShape, peer_flops_per_step

    cfg, d, a = tr.cfg, tr.cfg.derived, tr.model.args
    shape = PeerShape(a.vocab_size, a.d_model, a.n_layers, a.n_heads, a.hidden, cfg.data.seq_len, d.batch)
    settings = dict(lr=d.lr, betas=tuple(d.betas), eps=d.eps, weight_decay=d.weight_decay,
                    grad_clip=d.grad_clip if d.grad_clip > 0 else math.inf, t_min=cfg.diffusion.t_min,
                    seed=cfg.train.seed)
    dense = PeerMDM(shape, False, tr.vocab.MASK_text, tr.vocab.PAD_text, **settings)
    sparse = PeerMDM(shape, True, tr.vocab.MASK_text, tr.vocab.PAD_text, **settings)

    def trimdm_step() -> float:
        out = tr.train_step()
        return tr.step_flops(out["stats"], out["positions"])

    def peer_step(peer: PeerMDM):
        # the same KJV rows trimdm trains on, from its loader
        return lambda: peer_flops_per_step(shape, peer.step(tr.loader.next())["predicted"])

    systems = {"trimdm": trimdm_step, "peer_dense": peer_step(dense), "peer_sparse": peer_step(sparse)}
    params = {"trimdm": tr.params["total"], "peer_dense": dense.params(), "peer_sparse": sparse.params()}
    return systems, {"shape": dataclasses.asdict(shape), "params": params}


def time_rounds(systems: dict, args, device) -> tuple[dict, dict, dict, dict]:
    """Per round: the bf16 matmul peak (by the wall clock and by this process's CPU time), then
    `args.steps` steps of each system. Returns per system its wall and CPU seconds per step and FLOPs
    per step, one entry per round, and the peaks."""
    wall = {k: [] for k in systems}
    cpu = {k: [] for k in systems}
    flops = {k: [] for k in systems}
    peaks = {"wall": [], "cpu": []}
    for _ in range(args.rounds):
        peaks["wall"].append(matmul_flops(device, torch.bfloat16, args.peak_n, args.peak_seconds))
        peaks["cpu"].append(matmul_flops(device, torch.bfloat16, args.peak_n, args.peak_seconds, time.process_time))
        for k, step in systems.items():
            f, t0, c0 = 0.0, time.perf_counter(), time.process_time()
            for _ in range(args.steps):
                f += step()
            wall[k].append((time.perf_counter() - t0) / args.steps)
            cpu[k].append((time.process_time() - c0) / args.steps)
            flops[k].append(f / args.steps)
    return wall, cpu, flops, peaks


def measure_peer(name: str, extra: list[str], args) -> dict:
    """trimdm against the Hugging Face peer, interleaved in rounds (see the module docstring)."""
    recipe, overrides = CONFIGS[name]
    cfg = get_recipe(recipe).override(overrides + extra)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        tr = Trainer(cfg, tmp, log=lambda *a: None)
        systems, about = peer_systems(tr)
        for step in systems.values():
            for _ in range(args.warmup):
                step()
        wall, cpu, flops, peaks = time_rounds(systems, args, tr.device)
    tokens = cfg.derived.tokens_per_step
    peak, peak_cpu = median(peaks["wall"]), median(peaks["cpu"])
    rows = {}
    for k in systems:
        dt, ct, f = median(wall[k]), median(cpu[k]), median(flops[k])
        rows[k] = {"params": about["params"][k], "seconds_per_step": dt, "tokens_per_s": tokens / dt,
                   "tokens_per_s_rounds": [tokens / s for s in wall[k]], "achieved_gflops": f / dt / 1e9,
                   "mfu": f / dt / peak, "cpu_seconds_per_step": ct, "tokens_per_cpu_s": tokens / ct,
                   "mfu_cpu": f / ct / peak_cpu}
    out = {"date": time.strftime("%Y-%m-%d"), "machine": platform.machine(), "device": str(tr.device),
           "threads": torch.get_num_threads(), "load_average_before": load_before,
           "load_average_after": os.getloadavg(), "config": name, "recipe": recipe, "overrides": overrides + extra,
           **about, "tokens_per_step": tokens, "rounds": args.rounds, "steps_per_round": args.steps,
           "bf16_matmul_peak_gflops": peak / 1e9, "peak_gflops_rounds": [p / 1e9 for p in peaks["wall"]],
           "bf16_matmul_peak_gflops_per_cpu_s": peak_cpu / 1e9, "systems": rows}
    for v in ("dense", "sparse"):
        peer = f"peer_{v}"
        out[f"peer_ratio_{v}"] = rows["trimdm"]["tokens_per_s"] / rows[peer]["tokens_per_s"]
        out[f"peer_ratio_{v}_rounds"] = [p / t for t, p in zip(wall["trimdm"], wall[peer])]
        out[f"peer_ratio_{v}_cpu"] = rows["trimdm"]["tokens_per_cpu_s"] / rows[peer]["tokens_per_cpu_s"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--configs", default=None, help="default: demo,d512 (with --peer: d512)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps (per round with --peer); default 6 (2)")
    ap.add_argument("--peer", action="store_true", help="trimdm against the Hugging Face peer (peer_hf_mdm.py)")
    ap.add_argument("--rounds", type=int, default=5, help="--peer: interleaved rounds, medians over them")
    ap.add_argument("--warmup", type=int, default=2, help="--peer: untimed steps of each system first")
    ap.add_argument("--peak-n", type=int, default=2048, help="--peer: size of the peak's square matmul")
    ap.add_argument("--peak-seconds", type=float, default=1.0, help="--peer: length of each round's peak")
    ap.add_argument("--nproc", type=int, default=1)
    ap.add_argument("--parallel", default="ddp", choices=["ddp", "fsdp"])
    ap.add_argument("--peak-gflops", type=float, default=0.0, help=argparse.SUPPRESS)
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    if args.peer:
        args.configs, args.steps = args.configs or "d512", args.steps or 2
        if "," in args.configs or args.nproc > 1:
            raise SystemExit("--peer times one config in one process")
        print(json.dumps(measure_peer(args.configs, list(args.overrides), args), indent=2))
        return
    args.configs, args.steps = args.configs or "demo,d512", args.steps or 6
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.nproc > 1 and "WORLD_SIZE" not in os.environ:
        peak = matmul_peak_flops(device, torch.bfloat16, seconds=2.0)
        threads = max(1, (os.cpu_count() or 1) // args.nproc)
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={args.nproc}",
               __file__, "--configs", args.configs, "--steps", str(args.steps), "--parallel", args.parallel,
               "--peak-gflops", str(peak / 1e9), *args.overrides, f"train.threads={threads}"]
        sys.exit(subprocess.run(cmd).returncode)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    peak = args.peak_gflops * 1e9 or matmul_peak_flops(device, torch.bfloat16, seconds=2.0)
    extra = [*args.overrides, f"train.parallel={args.parallel}"]
    results = []
    for name in args.configs.split(","):
        r = measure(name, extra, args.steps)
        # step FLOPs count the global batch (loss statistics are all-reduced): the job's rate, not a rank's
        r["fraction_of_bf16_peak"] = r["achieved_gflops"] * 1e9 / peak
        results.append(r)
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps({"date": time.strftime("%Y-%m-%d"), "machine": platform.machine(), "device": str(device),
                          "nproc": world, "parallel": args.parallel if world > 1 else None,
                          "threads_per_process": torch.get_num_threads(), "bf16_matmul_peak_gflops": peak / 1e9,
                          "results": results}, indent=2))
    if world > 1:
        from trimdm.distributed.env import finish

        finish()


if __name__ == "__main__":
    main()
