"""Sampling throughput: T2I images/s and T2S seconds of audio per second at the default steps.

    python benchmarks/sampling.py [--recipe demo] [--batch 32] [--repeats 2] [key=value ...]

Each task is timed twice in the same process with the same canvases and seeds: with trimdm's decoder
(logits only at masked positions, over the target's output slice: 875 image codes + EOS, or one audio
level's 1000 codes + EOS) and with a naive variant whose model computes full-vocabulary logits at every
position of every pass (what a plain language-model head does) and takes the slice from those. The
model is the recipe's, randomly initialised: decoding cost does not depend on the weights (T2S uses the
length-rule canvas, so no early EOS changes the work). Prints JSON.
"""
from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from trimdm.config import SAMPLING_DEFAULTS
from trimdm.diffusion.schedules import parse_schedule
from trimdm.recipes import get_recipe
from trimdm.sample.sampler import decode
from trimdm.tokenizers.vocab import JointVocab
from trimdm.train.trainer import build_model

# the tinyworld vocabulary of the demo recipe: 2048 BPE ids, 875 FSQ image codes, 4 × 1000 audio codes
VOCAB = JointVocab(n_text=2048, n_image=875, audio_levels=4, audio_codebook=1000)
CAPTION_TOKENS = 10  # a typical tinyworld caption
AUDIO_FRAMES = 62  # 2.5 s at 25 frames/s, the length rule's canvas for such a caption
FRAMES_PER_SECOND = 25


class FullVocabHead(torch.nn.Module):
    """The naive variant: every forward pass also computes logits over the whole vocabulary at every
    position; `head` then reads a slice of full-vocabulary logits."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def full_table(self) -> torch.Tensor:
        return torch.cat([self.model.unembed[name] for name, _, _ in self.model.segments])

    def forward(self, ids_BL, pad_BL=None):
        h = self.model(ids_BL, pad_BL)
        self.last_logits = self.model.norm(h) @ self.full_table().to(h.dtype).T  # (B, L, V)
        return h

    def head(self, h_N, lo, hi, extra):
        full = self.model.norm(h_N) @ self.full_table().to(h_N.dtype).T
        cols = list(range(lo, hi)) + ([extra] if extra is not None else [])
        return full[:, cols]


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


def time_task(model, canvas, uncond, modality: str, repeats: int, dtype) -> float:
    s = SAMPLING_DEFAULTS[modality]
    best = float("inf")
    for r in range(repeats):
        gen = torch.Generator().manual_seed(r)
        t0 = time.perf_counter()
        decode(model, VOCAB, canvas, steps=s["steps"], schedule=parse_schedule(s["schedule"]),
               temperature=s["temperature"], guidance=s["guidance"], uncond_BL=uncond, generator=gen,
               autocast_dtype=dtype)
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--recipe", default="demo")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    cfg = get_recipe(args.recipe).override(args.overrides).derive()
    torch.set_num_threads(cfg.train.threads or torch.get_num_threads())
    torch.manual_seed(0)
    model = build_model(cfg, VOCAB).eval()
    naive = FullVocabHead(model).eval()
    dtype = torch.bfloat16 if cfg.train.dtype == "bf16" else None
    c = canvases(args.batch, torch.Generator().manual_seed(0))
    results = {}
    for task, modality in (("t2i", "image"), ("t2s", "audio")):
        ids, unc = c[task]
        fast = time_task(model, ids, unc, modality, args.repeats, dtype)
        slow = time_task(naive, ids, unc, modality, args.repeats, dtype)
        unit = 1.0 if task == "t2i" else AUDIO_FRAMES / FRAMES_PER_SECOND
        name = "images_per_s" if task == "t2i" else "audio_seconds_per_s"
        results[task] = {name: args.batch * unit / fast, f"naive_{name}": args.batch * unit / slow,
                         "speedup": slow / fast, "seconds": fast, "naive_seconds": slow, "batch": args.batch,
                         "row_length": ids.shape[1], "settings": SAMPLING_DEFAULTS[modality]}
    print(json.dumps({"date": time.strftime("%Y-%m-%d"), "machine": platform.machine(), "recipe": args.recipe,
                      "threads": torch.get_num_threads(), "dtype": cfg.train.dtype, "results": results}, indent=2))


if __name__ == "__main__":
    main()
