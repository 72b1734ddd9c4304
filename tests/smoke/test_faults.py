"""Smoke tier: faults during training, each injected on the tiny recipe.

A non-finite loss or gradient skips its step (model and optimizer untouched, counted in metrics.jsonl
and the checkpoint) and `train.max_skips` of them in a row stop the run; a checkpoint that cannot be
written leaves the previous one and the `latest` pointer intact; a corrupt latest checkpoint makes a
rerun resume from the newest intact one, and generate/eval name both."""
import errno
import math
import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import trimdm.train.checkpoint as checkpoint
import trimdm.train.trainer as trainer_module
from trimdm.cli import main as cli
from trimdm.diffusion.loss import LossStats
from trimdm.recipes import tiny
from trimdm.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from trimdm.train.metrics import read_metrics
from trimdm.train.trainer import Trainer, train

STEPS = 8
LOSS_FAULTS, GRAD_FAULTS = (3, 4), (6,)  # 1-based steps, as metrics.jsonl counts them
# two micro-batches so that the gradient noise scale is measured at every step, skipped ones included
FAULTY = ("train.max_skips=3", "train.micro_batch_size=4", "train.noise_scale_every=1")


def tiny_cfg(data_root, *extra):
    return tiny().override([f"data.root={data_root}", f"train.tokens={STEPS * 8 * 64}", "train.ckpt_every=4",
                            *extra])


def poison_loss(monkeypatch, trainer: Trainer, steps) -> None:
    """The loss of `steps` becomes NaN, and with it every gradient of the step."""
    real = trainer_module.diffusion_loss

    def loss(*args, **kwargs):
        value, stats = real(*args, **kwargs)
        if trainer.step + 1 in steps:
            value = value * float("nan")
            stats = LossStats(stats.wce_M * float("nan"), stats.tokens_M, stats.masked_M)
        return value, stats

    monkeypatch.setattr(trainer_module, "diffusion_loss", loss)


def poison_grad(trainer: Trainer, steps) -> None:
    """One parameter's gradient becomes infinite (or NaN where it is 0) at `steps`; the loss stays finite."""
    param = next(trainer.model.parameters())
    param.register_hook(lambda g: g * float("inf") if trainer.step + 1 in steps else g)


def snapshot(trainer: Trainer) -> dict[str, torch.Tensor]:
    state = {f"model.{k}": v.detach().clone() for k, v in trainer.model.state_dict().items()}
    for i, st in trainer.optimizer.state_dict()["state"].items():
        state.update({f"optim.{i}.{k}": torch.as_tensor(v).clone() for k, v in st.items()})
    return state


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def weights(run: Path, step: int) -> dict:
    return load_file(run / "checkpoints" / f"step_{step:08d}" / "model.safetensors")


def rewind(run: Path, step: int) -> None:
    """Make `run` look as if it had been killed right after its checkpoint at `step`."""
    for later in (run / "checkpoints").glob("step_*"):
        if later.name > f"step_{step:08d}":
            shutil.rmtree(later)
    (run / "checkpoints" / "latest").write_text(f"step_{step:08d}\n")


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory, data_root):
    """An 8-step run without faults, checkpoints at steps 4 and 8."""
    run = tmp_path_factory.mktemp("clean")
    train(tiny_cfg(data_root), run, log=lambda *a: None, progress=False)
    return run


@pytest.fixture(scope="module")
def faulty_run(tmp_path_factory, data_root):
    """The same run with a NaN loss at steps 3 and 4 and an infinite gradient at step 6; returns the run
    directory, the console lines and, per step, (state before, state after, the step's result)."""
    monkeypatch = pytest.MonkeyPatch()
    run = tmp_path_factory.mktemp("faulty")
    lines: list[str] = []
    trainer = Trainer(tiny_cfg(data_root, *FAULTY), run, log=lines.append, progress=False)
    poison_loss(monkeypatch, trainer, LOSS_FAULTS)
    poison_grad(trainer, GRAD_FAULTS)
    steps, real_step = {}, trainer.train_step

    def step():
        before = snapshot(trainer)
        out = real_step()
        steps[trainer.step] = (before, snapshot(trainer), out)
        return out

    trainer.train_step = step
    trainer.fit()
    monkeypatch.undo()
    return run, lines, steps


def test_nonfinite_steps_are_skipped_and_counted(faulty_run):
    run, lines, steps = faulty_run
    faults = set(LOSS_FAULTS) | set(GRAD_FAULTS)
    assert sorted(steps) == list(range(1, STEPS + 1))
    for s, (before, after, out) in steps.items():
        assert out["skipped"] == (s in faults), s
        # a skipped step applies nothing: no parameter, no moment, no optimizer step count moves
        assert same(before, after) == (s in faults), s
    records = read_metrics(run / "metrics.jsonl")
    assert [r["step"] for r in records] == list(range(1, STEPS + 1))
    assert [r["skipped"] for r in records] == [s in faults for s in range(1, STEPS + 1)]
    assert [r["skipped_steps"] for r in records] == [0, 0, 1, 2, 2, 3, 3, 3]
    assert all(math.isfinite(r["loss"]) == (r["step"] not in LOSS_FAULTS) for r in records)
    said = [line for line in lines if "skipped" in line]
    assert len(said) == 3 and all(f"step {s}:" in line for s, line in zip(sorted(faults), said)), lines
    assert load_checkpoint(run / "checkpoints" / "step_00000004")["trainer"]["skipped_steps"] == 2
    final = load_checkpoint(run)["trainer"]
    assert final["skipped_steps"] == 3
    assert final["noise_scale"]["count"] == STEPS - len(faults)  # a skipped step's gradients are not measured


def test_max_skips_in_a_row_stop_the_run(tmp_path, data_root, monkeypatch):
    trainer = Trainer(tiny_cfg(data_root, "train.max_skips=3"), tmp_path, log=lambda *a: None, progress=False)
    poison_loss(monkeypatch, trainer, (2, 3, 4, 5))
    with pytest.raises(ValueError, match=r"step 4: 3 steps in a row .*non-finite.*train\.max_skips=3.*lr.*data"):
        trainer.fit()
    records = read_metrics(tmp_path / "metrics.jsonl")
    assert records[-1]["step"] == 4 and records[-1]["skipped_steps"] == 3
    assert latest_checkpoint(tmp_path) is None  # the stuck state is not saved (the step-4 checkpoint never came)


def test_a_resumed_run_continues_the_skip_counts(faulty_run, tmp_path, data_root, monkeypatch):
    run, _, _ = faulty_run
    resumed = tmp_path / "resumed"
    shutil.copytree(run, resumed)
    rewind(resumed, 4)  # after steps 3 and 4 were skipped
    trainer = Trainer(tiny_cfg(data_root, *FAULTY), resumed, log=lambda *a: None, progress=False)
    poison_grad(trainer, GRAD_FAULTS)
    trainer.fit()
    assert load_checkpoint(resumed)["trainer"]["skipped_steps"] == 3
    assert same(weights(resumed, STEPS), weights(run, STEPS))  # faults and all, resume is bit-identical
    # the run in a row carries over: one more fault right after the resume makes three
    stuck = tmp_path / "stuck"
    shutil.copytree(run, stuck)
    rewind(stuck, 4)
    trainer = Trainer(tiny_cfg(data_root, *FAULTY), stuck, log=lambda *a: None, progress=False)
    poison_loss(monkeypatch, trainer, (5,))
    with pytest.raises(ValueError, match=r"step 5: 3 steps in a row"):
        trainer.fit()


# -- checkpoint writes that fail -----------------------------------------------------------------------
def _save(run: Path, step: int) -> Path:
    return save_checkpoint(run, step, {"w": torch.full((4,), float(step))}, {"state": {}, "param_groups": []},
                           rng={"mask": torch.zeros(8, dtype=torch.uint8)}, trainer_state={"step": step},
                           config={}, vocab={})


@pytest.mark.parametrize("fail,step", [("weights", 8), ("rename", 8), ("pointer", 8), ("rename", 4)])
def test_a_failed_checkpoint_write_leaves_the_previous_one(tmp_path, monkeypatch, fail, step):
    _save(tmp_path, 4)
    real_save, real_replace = checkpoint.save_file, os.replace

    def save_file(tensors, path):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    def replace(src, dst):  # the rename that makes the new checkpoint, or the pointer to it, visible
        target = "latest" if fail == "pointer" else f"step_{step:08d}"
        if Path(src).name.endswith(".tmp") and Path(dst).name == target:
            raise PermissionError(errno.EACCES, "Permission denied", str(dst))
        return real_replace(src, dst)

    if fail == "weights":
        monkeypatch.setattr(checkpoint, "save_file", save_file)
    else:
        monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError, match=rf"could not write checkpoint \S*step_{step:08d} \(.*(No space|Permission)"
                                      r".*\); the previous checkpoint step_00000004 is intact"):
        _save(tmp_path, step)
    monkeypatch.setattr(checkpoint, "save_file", real_save)
    root = tmp_path / "checkpoints"
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step_00000004"]  # nothing half-written left
    assert (root / "latest").read_text() == "step_00000004\n"
    ckpt = load_checkpoint(tmp_path)
    assert ckpt["step"] == 4 and torch.equal(ckpt["model"]["w"], torch.full((4,), 4.0))


def test_a_failed_periodic_checkpoint_warns_and_a_failed_final_one_stops(tmp_path, data_root, monkeypatch, capsys):
    real = checkpoint.save_file

    def save_file(tensors, path):
        if "step_00000004" in str(path) or "step_00000008" in str(path):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(tensors, path)

    monkeypatch.setattr(checkpoint, "save_file", save_file)
    code = cli(["train", "--recipe", "tiny", "--out", str(tmp_path), f"data.root={data_root}",
                f"train.tokens={STEPS * 8 * 64}", "train.ckpt_every=2"])
    out, err = capsys.readouterr()
    assert code == 1
    assert "could not write checkpoint" in out and "step_00000004" in out and "continues" in out
    assert "could not write checkpoint" in err and "step_00000008" in err
    assert "the previous checkpoint step_00000006 is intact" in err
    assert load_checkpoint(tmp_path)["step"] == 6
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith(".")]


# -- a corrupt latest checkpoint ------------------------------------------------------------------------
def corrupt(ckpt: Path, how: str) -> None:
    if how == "truncated":
        weights_file = ckpt / "model.safetensors"
        weights_file.write_bytes(weights_file.read_bytes()[:1000])
    elif how == "missing":
        shutil.rmtree(ckpt)
    else:
        (ckpt / "state.json").write_text("{")


@pytest.mark.parametrize("how", ["truncated", "missing", "state"])
def test_a_corrupt_latest_checkpoint_resumes_from_the_newest_intact_one(clean_run, tmp_path, data_root, how):
    run = tmp_path / "run"
    shutil.copytree(clean_run, run)
    corrupt(run / "checkpoints" / "step_00000008", how)
    lines: list[str] = []
    train(tiny_cfg(data_root), run, log=lines.append, progress=False)
    warned = [line for line in lines if "step_00000008" in line and "step_00000004" in line]
    assert warned and "warning" in warned[0], lines
    assert any(line.startswith("resumed from") and "step_00000004" in line for line in lines)
    assert same(weights(run, STEPS), weights(clean_run, STEPS))  # steps 5-8 again, bit for bit
    keys = ("step", "loss", "grad_norm")
    got, want = (read_metrics(r / "metrics.jsonl") for r in (run, clean_run))
    assert [[r[k] for k in keys] for r in got] == [[r[k] for k in keys] for r in want]


def test_no_intact_checkpoint_is_an_error_naming_each(clean_run, tmp_path, data_root):
    run = tmp_path / "run"
    shutil.copytree(clean_run, run)
    corrupt(run / "checkpoints" / "step_00000008", "truncated")
    corrupt(run / "checkpoints" / "step_00000004", "state")
    with pytest.raises(ValueError, match=r"no intact checkpoint.*step_00000008.*truncated.*step_00000004.*state"):
        train(tiny_cfg(data_root), run, log=lambda *a: None, progress=False)


@pytest.mark.parametrize("command", ["generate", "eval"])
def test_generate_and_eval_name_the_corrupt_and_the_intact_checkpoints(clean_run, tmp_path, command, capsys):
    run = tmp_path / "run"
    shutil.copytree(clean_run, run)
    corrupt(run / "checkpoints" / "step_00000008", "truncated")
    args = ["generate", "--run", str(run), "--prompt", "x"] if command == "generate" else ["eval", "--run", str(run)]
    assert cli(args) == 2
    err = capsys.readouterr().err
    assert "step_00000008" in err and "model.safetensors" in err and "truncated" in err, err
    assert f"intact: {run / 'checkpoints' / 'step_00000004'}" in err, err
    assert cli([*args[:2], str(run / "checkpoints" / "step_00000004"), *args[3:]]) == 0  # the one it names works
