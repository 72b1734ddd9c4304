"""Smoke tier, memory for larger models: a checkpointed run trains as the plain one, the EMA of the
weights is what it should be, resumes bit-identically and is what sampling, evaluation and export use,
and a run too large for the machine is refused before its model exists."""
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from trimdm.recipes import tiny
from trimdm.train.checkpoint import load_checkpoint
from trimdm.train.metrics import read_metrics
from trimdm.train.trainer import Trainer, train

STEPS = 10
EMA = ["train.ema=0.9", f"train.tokens={STEPS * 8 * 64}", "train.ckpt_every=5", "train.keep_checkpoints=0"]


def quiet(*a, **k):
    pass


def losses(run: Path) -> list[float]:
    return [r["loss"] for r in read_metrics(run / "metrics.jsonl")]


@pytest.fixture(scope="module")
def ema_run(tmp_path_factory, data_root):
    run = tmp_path_factory.mktemp("ema")
    train(tiny().override([f"data.root={data_root}", *EMA]), run, log=quiet, progress=False)
    return run


def test_checkpointed_run_trains_as_the_plain_one(tmp_path, data_root):
    """fp32, micro-batches: the same losses and final weights bit for bit (the gradients are equal:
    tests/unit/test_memory.py), and the checkpoint keeps the plain parameter names. So a run may be
    resumed with checkpointing switched on (to fit a smaller device) and continue bit-identically."""
    common = [f"data.root={data_root}", "train.dtype=fp32", "train.micro_batch_size=4", "train.tokens=3072",
              "train.ckpt_every=3", "train.keep_checkpoints=0"]
    for flag in ("false", "true"):
        train(tiny().override([*common, f"train.activation_checkpointing={flag}"]), tmp_path / flag, log=quiet,
              progress=False)
    assert losses(tmp_path / "true") == losses(tmp_path / "false") and len(losses(tmp_path / "true")) == 6
    a = load_checkpoint(tmp_path / "false", with_optimizer=False)["model"]
    b = load_checkpoint(tmp_path / "true", with_optimizer=False)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    switched = tmp_path / "switched" / "checkpoints"  # the plain run's step 3, resumed with checkpointing
    shutil.copytree(tmp_path / "false" / "checkpoints" / "step_00000003", switched / "step_00000003")
    (switched / "latest").write_text("step_00000003\n")
    train(tiny().override([*common, "train.activation_checkpointing=true"]), switched.parent, log=quiet,
          progress=False)
    c = load_checkpoint(switched.parent, with_optimizer=False)["model"]
    assert all(torch.equal(a[k], c[k]) for k in a)


def test_ema_is_the_average_of_the_weights_after_each_step(tmp_path, data_root):
    trainer = Trainer(tiny().override([f"data.root={data_root}", *EMA]), tmp_path, log=quiet, progress=False)
    expected = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    for _ in range(3):
        trainer.train_step()
        expected = {n: torch.lerp(expected[n], p.detach(), 0.1) for n, p in trainer.model.named_parameters()}
    assert all(torch.equal(trainer.ema.shadow[n], expected[n]) for n in expected)
    assert not torch.equal(expected["blocks.0.attn.qkv.weight"],
                           dict(trainer.model.named_parameters())["blocks.0.attn.qkv.weight"])


def test_ema_resumes_bit_identically(ema_run, tmp_path, data_root):
    """A run stopped after its step-5 checkpoint (what a killed run leaves on disk: the checkpoint and
    `latest`) and resumed ends with the uninterrupted run's EMA and weights, bit for bit."""
    run = tmp_path / "resumed"
    (run / "checkpoints").mkdir(parents=True)
    shutil.copytree(ema_run / "checkpoints" / "step_00000005", run / "checkpoints" / "step_00000005")
    (run / "checkpoints" / "latest").write_text("step_00000005\n")
    messages = []
    train(tiny().override([f"data.root={data_root}", *EMA]), run, log=messages.append, progress=False)
    assert any("resumed from" in str(m) for m in messages)
    last = Path("checkpoints") / f"step_{STEPS:08d}"
    for name in ("ema.safetensors", "model.safetensors"):
        a, b = load_file(ema_run / last / name), load_file(run / last / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    state = json.loads((run / last / "state.json").read_text())
    assert set(state["files"]) >= {"ema.safetensors", "model.safetensors"}  # sizes and hashes, verified on load


def test_sampling_evaluation_and_export_use_the_ema(ema_run, tmp_path):
    from trimdm.train.export import export_run
    from trimdm.train.run import load_run

    ckpt = load_checkpoint(ema_run, with_optimizer=False)
    loaded = load_run(ema_run)
    state = loaded.model.state_dict()
    assert loaded.weights == "ema"
    assert all(torch.equal(state[k], ckpt["ema"][k]) for k in ckpt["ema"])
    assert not all(torch.equal(state[k], ckpt["model"][k]) for k in ckpt["model"])
    folder = export_run(ema_run, tmp_path / "folder", log=quiet)
    exported = load_file(folder / "model.safetensors")
    assert all(torch.equal(exported[k], ckpt["ema"][k]) for k in ckpt["ema"])
    assert json.loads((folder / "config.json").read_text())["trained"]["weights"] == "ema"
    assert "exponential moving average of the training weights (decay 0.9" in (folder / "README.md").read_text()
    assert load_run(folder).weights == "ema"


def test_a_corrupt_ema_file_is_named(ema_run, tmp_path):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(ema_run / "checkpoints" / f"step_{STEPS:08d}", ckpt)
    data = bytearray((ckpt / "ema.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (ckpt / "ema.safetensors").write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"ema.safetensors: checkpoint file is corrupt"):
        load_checkpoint(ckpt, with_optimizer=False)


def test_a_run_too_large_for_the_machine_is_refused_before_it_is_built(tmp_path, data_root):
    """d_model 16384 × 64 blocks: about 200B parameters, 3 TB of weights and AdamW states. The trainer
    must say so (and how to fit it) before allocating anything."""
    huge = tiny().override([f"data.root={data_root}", "model.d_model=16384", "model.n_layers=64",
                            "model.n_heads=128"])
    with pytest.raises(ValueError, match=r"needs about \d+\.\d GiB per process") as err:
        Trainer(huge, tmp_path / "huge", log=quiet, progress=False)
    msg = str(err.value)
    assert "train.micro_batch_size" in msg and "train.activation_checkpointing=true" in msg
    assert "train.parallel=fsdp" in msg and "train.memory_check=false" in msg
    assert not (tmp_path / "huge").exists()
