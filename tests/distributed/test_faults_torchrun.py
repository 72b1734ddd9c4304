"""Distributed tier: a non-finite loss on one rank only skips the step on every rank.

The skip decision is all-reduced, so a NaN that only rank 1 sees makes both ranks skip step 3 (under
DDP and FSDP2): the run neither diverges nor hangs, and it matches a single process that skips the
same step, within the tolerances of test_torchrun.py (only the order of additions differs)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
FAULT = 3  # the 1-based step whose loss is NaN

# trains the tiny recipe with the loss of step FAULT made NaN on one rank (and with it its gradients)
SCRIPT = f"""
import sys
import trimdm.train.trainer as T
from trimdm.diffusion.loss import LossStats
from trimdm.distributed.env import finish
from trimdm.recipes import tiny

out, data_root, parallel, poisoned = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
cfg = tiny().override([f"data.root={{data_root}}", "train.dtype=fp32", "train.tokens=5120",
                       f"train.parallel={{parallel}}"])
trainer = T.Trainer(cfg, out, progress=False)
real = T.diffusion_loss


def loss(*args, **kwargs):
    value, stats = real(*args, **kwargs)
    if trainer.step + 1 == {FAULT} and trainer.env.rank == poisoned:
        value = value * float("nan")
        stats = LossStats(stats.wce_M * float("nan"), stats.tokens_M, stats.masked_M)
    return value, stats


T.diffusion_loss = loss
trainer.fit()
finish()
"""


def train_with_fault(out: Path, data_root: str, parallel: str, nproc: int) -> list[dict]:
    script = out.parent / f"{out.name}_fault.py"
    script.write_text(SCRIPT)
    launcher = TORCHRUN if nproc > 1 else [sys.executable]
    res = subprocess.run(launcher + [str(script), str(out), data_root, parallel, str(nproc - 1)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def single(tmp_path_factory, data_root):
    out = tmp_path_factory.mktemp("fault_single") / "run"
    return out, train_with_fault(out, data_root, "ddp", nproc=1)


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_a_nan_on_one_rank_skips_the_step_on_every_rank(single, tmp_path, data_root, parallel):
    out = tmp_path / "run"
    got = train_with_fault(out, data_root, parallel, nproc=2)
    ref_dir, ref = single
    assert [r["skipped"] for r in got] == [r["skipped"] for r in ref] == [s == FAULT for s in range(1, 11)]
    assert got[-1]["skipped_steps"] == ref[-1]["skipped_steps"] == 1
    for x, y in zip(got, ref):
        if x["step"] != FAULT:
            assert x["loss"] == pytest.approx(y["loss"], rel=1e-5)
    wa = load_file(out / "checkpoints" / "step_00000010" / "model.safetensors")
    wb = load_file(ref_dir / "checkpoints" / "step_00000010" / "model.safetensors")
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=2e-4, msg=k)
