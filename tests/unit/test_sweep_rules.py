"""The sweep runner's rules without running anything: run names and commands, the done rule read from a
run directory's JSON, the thread count a started run keeps, `--seeds` and `--slurm` parsing, and the
study batch grid at each scale, and which groups the critical-batch study fits its slopes on."""
import json
import sys

import pytest

from trimdm.study import STUDIES
from trimdm.study.sweep import RunSpec, _threads, is_done, parse_seeds, parse_slurm, run_sweep


def test_a_run_spec_names_a_directory_and_gives_the_exact_commands(tmp_path):
    spec = RunSpec("sde_b4_s0", "tiny", ["train.seed=0"])
    assert spec.overrides == ("train.seed=0",) and spec.eval_args == ("--no-generation", "eval.reconstructions=false")
    train, ev = spec.command(tmp_path)
    run = str(tmp_path / "sde_b4_s0")
    assert train == [sys.executable, "-m", "trimdm", "train", "--recipe", "tiny", "--out", run, "train.seed=0"]
    assert ev == [sys.executable, "-m", "trimdm", "eval", "--run", run, "--no-generation", "eval.reconstructions=false"]
    assert RunSpec("g", "tiny", eval_args=()).command(tmp_path)[1][-1] == str(tmp_path / "g")
    for bad in ("", "../x", "a/b", ".hidden", "sweep.json", "submitit"):
        with pytest.raises(ValueError, match="names a directory"):
            RunSpec(bad, "tiny")
    with pytest.raises(ValueError, match="key=value"):
        RunSpec("a", "tiny", ("--out",))
    with pytest.raises(ValueError, match="repeated: \\['a'\\]"):
        run_sweep(tmp_path, [RunSpec("a", "tiny"), RunSpec("a", "tiny")], plan_only=True)
    with pytest.raises(ValueError, match="need --launcher slurm"):
        run_sweep(tmp_path, [RunSpec("a", "tiny")], slurm={"slurm_partition": "gpu"})


def fake_run(run, steps_done: int, steps: int, evaluated: str | None, threads: int = 3):
    ckpt = run / "checkpoints" / f"step_{steps_done:08d}"
    ckpt.mkdir(parents=True)
    (ckpt / "state.json").write_text(json.dumps({"step": steps_done}))
    (run / "checkpoints" / "latest").write_text(ckpt.name + "\n")
    (run / "config.json").write_text(json.dumps({"derived": {"steps": steps}, "train": {"threads": threads}}))
    if evaluated:
        (run / "eval.json").write_text(json.dumps({"checkpoint": str(run / "checkpoints" / evaluated)}))


def test_a_run_is_done_when_its_eval_names_its_final_checkpoint(tmp_path):
    fake_run(tmp_path / "done", 8, 8, "step_00000008")
    fake_run(tmp_path / "interrupted", 4, 8, None)
    fake_run(tmp_path / "eval_of_a_partial", 4, 8, "step_00000004")
    fake_run(tmp_path / "trained_since_its_eval", 8, 8, "step_00000004")
    assert [is_done(tmp_path / n) for n in ("done", "interrupted", "eval_of_a_partial", "trained_since_its_eval",
                                            "never_started")] == [True, False, False, False, False]


def test_a_started_run_keeps_its_thread_count(tmp_path):
    fake_run(tmp_path / "started", 4, 8, None, threads=3)
    spec = RunSpec("started", "tiny")
    assert _threads(spec, 1, tmp_path / "started") == (RunSpec("started", "tiny", ("train.threads=3",)), 3)
    assert _threads(spec, 2, tmp_path / "new") == (RunSpec("started", "tiny", ("train.threads=2",)), 2)
    own = RunSpec("own", "tiny", ("train.threads=4",))
    assert _threads(own, 1, tmp_path / "new") == (own, 4)


def test_seeds_are_a_count_or_a_list_and_slurm_options_get_their_prefix():
    assert parse_seeds("3") == [0, 1, 2] and parse_seeds("0,1") == [0, 1] and parse_seeds("7,") == [7]
    for bad in ("0", "x", "1,1", "-1,"):
        with pytest.raises(ValueError, match="--seeds"):
            parse_seeds(bad)
    assert parse_slurm(["cluster=local", "timeout_min=60", "partition=gpu", "slurm_qos=high", "mem_gb=7.5"]) == {
        "cluster": "local", "timeout_min": 60, "slurm_partition": "gpu", "slurm_qos": "high", "mem_gb": 7.5}
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_slurm(["partition"])


def test_study_batch_grid_at_each_scale():
    batch = STUDIES["batch"]
    smoke = batch.grid("smoke", None, ["data.root=/d"])
    assert [r.name for r in smoke] == ["sde_b4_s0", "sde_b8_s0", "none_b4_s0", "none_b8_s0"]
    assert smoke[0].recipe == "tiny" and smoke[0].overrides[-4:] == (
        "data.root=/d", "optim.reparam=sde", "train.batch_size=4", "train.seed=0")
    cpu = batch.grid("cpu", [0, 1, 2], [], batches=[16])
    assert {r.recipe for r in cpu} == {"study_batch"} and len(cpu) == 2 * 3
    assert len(batch.grid("gpu", None, [])) == 2 * 5 * 3


def test_critical_batch_slopes_use_only_identified_steps_tokens_fits():
    """A group's steps–tokens B_crit enters the slope only when its interval spans at most a factor 10;
    the noise-scale slope keeps every group that measured one."""
    from trimdm.study.critical_batch import _trend, identified

    assert identified({"b_crit": 50.0, "b_crit_interval": [20.0, 200.0]})
    assert not identified({"b_crit": 50.0, "b_crit_interval": [20.0, 201.0]})
    assert not identified({"b_crit": 50.0, "b_crit_interval": [0.0, 100.0]})
    assert not identified({"b_crit": None, "b_crit_interval": None})
    # three identified groups on B_crit = 2·width^0.5, and one flat fit far off that line
    groups = [{"width": w, "b_crit": 2 * w ** 0.5, "b_crit_interval": [w ** 0.5, 4 * w ** 0.5], "noise_scale": w}
              for w in (64, 128, 256)]
    groups.append({"width": 512, "b_crit": 1e12, "b_crit_interval": [1.0, 1e13], "noise_scale": 512})
    trend = _trend(groups, "width", bootstrap=20)
    assert [p[0] for p in trend["b_crit"]["points"]] == [64, 128, 256]
    assert trend["b_crit"]["slope"] == pytest.approx(0.5, abs=1e-6)
    assert len(trend["noise_scale"]["points"]) == 4 and trend["noise_scale"]["slope"] == pytest.approx(1.0, abs=1e-6)
