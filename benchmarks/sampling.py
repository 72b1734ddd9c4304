"""Sampling throughput: T2I images/s and T2S seconds of audio per second at the default steps, and the
speed–quality table of the decoding methods on a trained run.

    python benchmarks/sampling.py [--recipe demo] [--batch 32] [--repeats 2] [--steps N] [key=value ...]
    python benchmarks/sampling.py --run runs/demo [--prompts 64] [--utterances 32] [--rounds 3] [--seeds 0,1,2]

With `--run` (a tinyworld run: its judges score the samples), every method of METHODS — the run's own
sampling row ("default") and rows that change steps, the confidence threshold and the condition cache —
generates T2I images for held-out single-object captions and T2S speech for held-out sentences, on the
same prompts and seed. Speed: images/s and seconds of audio per second of the whole task (canvas,
decoding, the codec's decoder), the fastest of `--rounds` interleaved rounds (other work on the machine
only ever slows a round down, so the minimum is the steadiest estimate of the method's own cost).
Quality: the judges' T2I attribute match (higher is better) and T2S character error rate (lower), each with
its standard error over prompts, averaged over the decoding seeds of `--seeds`. `speedup_t2i` / `speedup_t2s`: the fastest method whose score is at
least the default's less one standard error of the default's score, over the default's speed.

Each task is timed twice in the same process with the same canvases and seeds: with trimdm's decoder
(logits only at masked positions, over the target's output slice: 875 image codes + EOS, or one audio
level's 1000 codes + EOS; sampling and confidence on those alone) and with `naive_decode`, which
computes full-vocabulary logits at every position of every pass, masks the ids each position may not
take, and samples and scores every position before keeping the masked ones. The
model is the recipe's, randomly initialised: decoding cost does not depend on the weights (T2S uses the
length-rule canvas, so no early EOS changes the work). Prints JSON.

The canvases are those of the whole tinyworld vocabulary (4 audio levels, 62 frames: T2S is 263
positions), whatever the recipe, so the workload stays the one recorded in docs/LOG.md (measured with
`data.seq_len=384`). Where the recipe's `data.seq_len` is shorter than the longest canvas (the demo's
128), the model is built with its rows raised to that canvas: the row length only sizes the rotary
tables, no weight, so the work per pass is unchanged. The JSON gives both (`recipe_seq_len`,
`model_seq_len`). `--steps N` decodes every task in N steps instead of the default settings' (a quick
smoke run; the recorded measurements use the defaults).
"""
from __future__ import annotations

import argparse
import json
import platform
import time

import torch

import dataclasses
from pathlib import Path

import numpy as np

from trimdm.config import SAMPLING_DEFAULTS
from trimdm.diffusion.schedules import parse_schedule
from trimdm.recipes import get_recipe
from trimdm.sample.sampler import Decoding, decode, masked_counts
from trimdm.sequence.layout import RowTables
from trimdm.tokenizers.vocab import JointVocab
from trimdm.train.run import build_model

# the tinyworld vocabulary of the demo recipe: 2048 BPE ids, 875 FSQ image codes, 4 × 1000 audio codes
VOCAB = JointVocab(n_text=2048, n_image=875, audio_levels=4, audio_codebook=1000)
CAPTION_TOKENS = 10  # a typical tinyworld caption
AUDIO_FRAMES = 62  # 2.5 s at 25 frames/s, the length rule's canvas for such a caption
FRAMES_PER_SECOND = 25


@torch.no_grad()
def naive_decode(model, vocab, canvas_BL, how: Decoding, *, uncond_BL=None, generator=None, autocast_dtype=None):
    """The straightforward decoder (the shape of common reference MDM samplers): every pass computes
    full-vocabulary logits at every position, masks the ids a position may not take, samples every
    position with Gumbel noise over the whole vocabulary and scores every position's confidence with
    a full softmax; only then are the masked positions' values kept. Same trunk, schedule, steps,
    guidance and reveal rule as trimdm's decoder."""
    steps, schedule, temperature, guidance = how.steps, how.schedule, how.temperature, how.guidance
    tables = RowTables.from_vocab(vocab)
    table = torch.cat([model.unembed[name] for name, _, _ in model.segments]) * model.args.logit_scale
    # logits = u + w·(c − u) at every w; w = 1 is the conditional pass alone, as in trimdm's decoder
    x, u = canvas_BL.clone(), (uncond_BL.clone() if uncond_BL is not None and guidance != 1 else None)
    mask_ids = tables.mask_id_M
    is_mask = (x[..., None] == mask_ids).any(-1)
    counts = masked_counts(is_mask.sum(1), schedule, steps)
    # allowed ids per position: its output slice (the same restriction as trimdm's heads)
    allowed = torch.zeros(*x.shape, vocab.size, dtype=torch.bool)
    for sel, lo, hi, eos, m in tables.output_heads(x, is_mask):
        allowed[..., lo:hi] |= sel[..., None]
        allowed[..., eos] |= sel & ~(x == eos).any(1, keepdim=True)
    for k in range(1, steps + 1):
        is_mask = (x[..., None] == mask_ids).any(-1)
        with torch.autocast("cpu", dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
            logits = torch.nn.functional.linear(model.norm(model(x, tables.pad(x))), table).float()
            if u is not None:
                unc = torch.nn.functional.linear(model.norm(model(u, tables.pad(u))), table).float()
                logits = unc + guidance * (logits - unc)
        logits = logits.masked_fill(~allowed, float("-inf"))
        gumbel = -torch.log(-torch.log(torch.rand(logits.shape, generator=generator).clamp_min(1e-20)))
        choice = (logits / temperature + gumbel).argmax(-1)
        logp = logits.log_softmax(-1).gather(-1, choice[..., None]).squeeze(-1)
        noise = -torch.log(-torch.log(torch.rand(x.shape, generator=generator).clamp_min(1e-20)))
        confidence = torch.where(is_mask, logp + (1 - k / steps) * noise, float("-inf"))
        rank = confidence.argsort(dim=1, descending=True).argsort(dim=1)
        reveal = is_mask & (rank < (counts[k - 1] - counts[k])[:, None])
        x = torch.where(reveal, choice, x)
        if u is not None:
            u = torch.where(reveal, choice, u)
    return x


def canvases(batch: int, gen: torch.Generator):
    v = VOCAB
    text = torch.randint(0, v.n_text, (batch, CAPTION_TOKENS), generator=gen)
    head = lambda task: torch.stack([torch.tensor([v.task(task), v.BOS_text])] * batch)  # noqa: E731
    eos_t = torch.full((batch, 1), v.EOS_text)
    t2i = torch.cat([head("image_text"), text, eos_t, torch.full((batch, 1), v.BOS_image),
                     torch.full((batch, 64), v.MASK_image), torch.full((batch, 1), v.EOS_image)], 1)
    t2s = torch.cat([head("audio_text"), text, eos_t, torch.full((batch, 1), v.BOS_audio),
                     torch.full((batch, AUDIO_FRAMES * v.audio_levels), v.MASK_audio),
                     torch.full((batch, 1), v.EOS_audio)], 1)
    uncond = lambda c: torch.where((c < v.n_text) | (c == v.EOS_text), v.MASK_text, c)  # noqa: E731
    return {"t2i": (t2i, uncond(t2i)), "t2s": (t2s, uncond(t2s))}


def time_task(decoder, model, canvas, uncond, s: dict, repeats: int, dtype) -> float:
    best = float("inf")
    for r in range(repeats):
        gen = torch.Generator().manual_seed(r)
        t0 = time.perf_counter()
        how = Decoding(steps=s["steps"], schedule=parse_schedule(s["schedule"]), temperature=s["temperature"],
                       guidance=s["guidance"], remasking=s["remasking"])
        decoder(model, VOCAB, canvas, how, uncond_BL=uncond, generator=gen, autocast_dtype=dtype)
        best = min(best, time.perf_counter() - t0)
    return best


# name -> changes to the run's own sampling row, per generated modality; "default" is the row itself
METHODS = {
    "image": {
        "default": {},
        "steps 8": {"steps": 8},
        "steps 4": {"steps": 4},
        "steps 4 + cache 2": {"steps": 4, "cache_refresh": 2},
        "threshold 0.3": {"threshold": 0.3},
        "steps 8 + threshold 0.3": {"steps": 8, "threshold": 0.3},
        "steps 4 + guidance 1": {"steps": 4, "guidance": 1.0},
    },
    "audio": {
        "default": {},
        "steps 8": {"steps": 8},
        "steps 6": {"steps": 6},
        "steps 5": {"steps": 5},
        "steps 4": {"steps": 4},
        "steps 4 + cache 2": {"steps": 4, "cache_refresh": 2},
        "steps 8 + threshold 0.5": {"steps": 8, "threshold": 0.5},
    },
}


def speed_quality(run: str, prompts: int, utterances: int, rounds: int, seeds: tuple[int, ...]) -> dict:
    """The table of the module docstring: {"t2i": [...], "t2s": [...], "speedup_t2i", "speedup_t2s"}.
    Timing uses the first seed; each score is the mean over `seeds` of the per-seed scores (the prompts
    are the same for every seed, so its standard error is the mean of the per-seed ones, not smaller)."""
    from trimdm.data.prepare import prepare
    from trimdm.data.tinyworld.judges.speech import edits
    from trimdm.eval.generation import attribute_match
    from trimdm.eval.stats import mean_se, ratio_se
    from trimdm.sample.tasks import Tasks
    from trimdm.study.sampling import heldout_prompts
    from trimdm.train.run import load_run

    loaded = load_run(run)
    data = prepare(loaded.cfg.data)
    if not hasattr(data, "judges"):
        raise ValueError(f"run {run}: the speed-quality table needs a tinyworld run (its judges score samples)")
    judges = data.judges()
    held = heldout_prompts(data.directory, max(prompts, utterances))
    captions = [c for _, c, _ in held["image"][:prompts]]
    texts = held["audio"][:utterances]

    def tasks(modality: str, change: dict) -> Tasks:
        row = dataclasses.replace(loaded.cfg.sample[modality], **change)
        return Tasks(loaded, dataclasses.replace(loaded.cfg.sample, **{modality: row}))

    def t2i(change, seed):
        images, _ = tasks("image", change).t2i(captions, seed)
        return images

    def t2s(change, seed):
        waves, _ = tasks("audio", change).t2s(texts, seed)
        return waves

    runs = {"t2i": ("image", t2i), "t2s": ("audio", t2s)}
    seconds = {(task, name): [] for task, (m, _) in runs.items() for name in METHODS[m]}
    outputs = {}
    for r in range(rounds):  # interleaved: every method once per round, at the first seed
        for task, (m, fn) in runs.items():
            for name, change in METHODS[m].items():
                t0 = time.perf_counter()
                out = fn(change, seeds[0])
                seconds[task, name].append(time.perf_counter() - t0)
                outputs.setdefault((task, name), out)
    rate = loaded.media_tokenizers["audio"].sample_rate if "audio" in loaded.media_tokenizers else None

    def score(task: str, out) -> tuple[float, float]:
        """(the judge's score, its standard error over prompts)."""
        if task == "t2i":
            match = [attribute_match(c, read) for c, read in zip(captions, judges["image"].predict(np.stack(out)))]
            return float(np.mean(match)), mean_se(match)
        e, c = edits(judges["speech"].transcribe(out), texts)
        return float(e.sum() / c.sum()), ratio_se(e, c)

    table = {"t2i": [], "t2s": []}
    for (task, name), out in outputs.items():
        m, fn = runs[task]
        change = METHODS[m][name]
        secs = min(seconds[task, name])
        per_seed = [score(task, out)] + [score(task, fn(change, s)) for s in seeds[1:]]
        metric = "attribute_match" if task == "t2i" else "cer"
        row = {"method": name, "settings": dataclasses.asdict(dataclasses.replace(loaded.cfg.sample[m], **change)),
               "seconds": secs, "seconds_rounds": seconds[task, name],
               metric: float(np.mean([v for v, _ in per_seed])), f"{metric}_se": float(np.mean([e for _, e in per_seed])),
               f"{metric}_per_seed": [v for v, _ in per_seed], f"{metric}_se_per_seed": [e for _, e in per_seed]}
        if task == "t2i":
            row.update(images_per_s=len(out) / secs)
        else:
            audio_s = sum(len(w) for w in out) / rate
            row.update(audio_seconds_per_s=audio_s / secs, audio_seconds=audio_s)
        table[task].append(row)
    result = {"run": str(run), "checkpoint": str(loaded.checkpoint), "prompts": prompts,
              "utterances": utterances, "rounds": rounds, "seeds": list(seeds), **table}
    for task, speed, score, higher in (("t2i", "images_per_s", "attribute_match", True),
                                       ("t2s", "audio_seconds_per_s", "cer", False)):
        base = next(r for r in table[task] if r["method"] == "default")
        sign = 1 if higher else -1
        equal = [r for r in table[task] if sign * (r[score] - base[score]) >= -base[f"{score}_se"]]
        best = max(equal, key=lambda r: r[speed])
        result[f"speedup_{task}"] = best[speed] / base[speed]
        result[f"best_{task}"] = best["method"]
    return result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", default="", help="a trained tinyworld run: print the speed-quality table")
    ap.add_argument("--prompts", type=int, default=64, help="--run: T2I captions")
    ap.add_argument("--utterances", type=int, default=32, help="--run: T2S sentences")
    ap.add_argument("--rounds", type=int, default=3, help="--run: interleaved timing rounds (the fastest)")
    ap.add_argument("--seeds", default="0", help="--run: decoding seeds scored, comma-separated (the first timed)")
    ap.add_argument("--threads", type=int, default=0, help="--run: torch threads (0: torch's default)")
    ap.add_argument("--recipe", default="demo")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--steps", type=int, default=0, help="decoding steps of every task (0: the default settings')")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    if args.run:
        if args.threads:
            torch.set_num_threads(args.threads)
        result = speed_quality(args.run, args.prompts, args.utterances, args.rounds,
                               tuple(int(x) for x in args.seeds.split(",")))
        print(json.dumps({"date": time.strftime("%Y-%m-%d"), "machine": platform.machine(),
                          "threads": torch.get_num_threads(), **result}, indent=2))
        return
    cfg = get_recipe(args.recipe).override(args.overrides).derive()
    torch.set_num_threads(cfg.train.threads or torch.get_num_threads())
    c = canvases(args.batch, torch.Generator().manual_seed(0))
    recipe_seq_len = cfg.data.seq_len
    longest = max(ids.shape[1] for ids, _ in c.values())
    if recipe_seq_len < longest:  # rows as long as the canvases (no weight depends on it, see the docstring)
        cfg = cfg.override([f"data.seq_len={longest}"]).derive()
    torch.manual_seed(0)
    model = build_model(cfg, VOCAB).eval()
    dtype = torch.bfloat16 if cfg.train.dtype == "bf16" else None
    results = {}
    for task, modality in (("t2i", "image"), ("t2s", "audio")):
        ids, unc = c[task]
        # every position of a canvas competes at every step (joint), whatever the table's `order`
        settings = {**SAMPLING_DEFAULTS[modality], **({"steps": args.steps} if args.steps else {}), "order": "joint"}
        fast = time_task(decode, model, ids, unc, settings, args.repeats, dtype)
        slow = time_task(naive_decode, model, ids, unc, settings, args.repeats, dtype)
        unit = 1.0 if task == "t2i" else AUDIO_FRAMES / FRAMES_PER_SECOND
        name = "images_per_s" if task == "t2i" else "audio_seconds_per_s"
        results[task] = {name: args.batch * unit / fast, f"naive_{name}": args.batch * unit / slow,
                         "speedup": slow / fast, "seconds": fast, "naive_seconds": slow, "batch": args.batch,
                         "row_length": ids.shape[1], "settings": settings}
    print(json.dumps({"date": time.strftime("%Y-%m-%d"), "machine": platform.machine(), "recipe": args.recipe,
                      "threads": torch.get_num_threads(), "dtype": cfg.train.dtype, "recipe_seq_len": recipe_seq_len,
                      "model_seq_len": cfg.data.seq_len, "results": results}, indent=2))


if __name__ == "__main__":
    main()
