"""Masked attention on this machine: `scaled_dot_product_attention` against the explicit product that
`model.transformer.attend` takes in bf16 on a CPU, forward + backward, at the shapes trimdm trains.

    python benchmarks/attention.py [--repeats 20] [--heads 4] [--head-dim 64]

For each (rows B, length L) and dtype: milliseconds per forward + backward of each path, after three
warm-up calls, on random q, k, v with 10% of the keys padded. `attend` chooses the explicit path only
where it is the faster one here (bf16 on a CPU); the fp32 rows show why it keeps SDPA elsewhere.
Prints JSON.
"""
from __future__ import annotations

import argparse
import json
import platform
import time

import torch
import torch.nn.functional as F

from trimdm.model.transformer import attend, explicit_attention

SHAPES = [(12, 110), (32, 128), (24, 160), (20, 192), (16, 256), (8, 384)]  # (rows, length): a task's rows after compaction


def time_ms(fn, leaves, repeats: int) -> float:
    for _ in range(3):
        fn(*leaves).float().sum().backward()
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn(*leaves).float().sum().backward()
    return 1e3 * (time.perf_counter() - t0) / repeats


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--head-dim", type=int, default=64)
    args = ap.parse_args()
    gen = torch.Generator().manual_seed(0)
    rows = []
    for dtype in (torch.bfloat16, torch.float32):
        for B, L in SHAPES:
            leaves = [torch.randn(B, args.heads, L, args.head_dim, generator=gen).to(dtype).requires_grad_()
                      for _ in range(3)]
            keep = torch.rand(B, 1, 1, L, generator=gen) > 0.1
            sdpa = time_ms(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=keep), leaves,
                           args.repeats)
            plain = time_ms(lambda q, k, v: explicit_attention(q, k, v, keep), leaves, args.repeats)
            used = time_ms(lambda q, k, v: attend(q, k, v, keep), leaves, args.repeats)
            rows.append({"dtype": str(dtype).removeprefix("torch."), "rows": B, "length": L,
                         "sdpa_ms": round(sdpa, 2), "explicit_ms": round(plain, 2), "attend_ms": round(used, 2),
                         "sdpa_over_explicit": round(sdpa / plain, 2)})
    print(json.dumps({"date": time.strftime("%Y-%m-%d"), "machine": platform.machine(), "torch": torch.__version__,
                      "threads": torch.get_num_threads(), "heads": args.heads, "head_dim": args.head_dim,
                      "results": rows}, indent=2))


if __name__ == "__main__":
    main()
