"""The sweep runner on tiny runs of a few steps, each a `trimdm train` + `trimdm eval` subprocess: a sweep
interrupted after its first run resumes without redoing it (the interrupted run from its checkpoint),
`--plan` lists exactly what the local launcher then runs, a failing run is reported with its log's tail
while the others finish, submitit's local executor runs a sweep to completion, and `trimdm study`
exits 1 when a run failed. Every run gets one thread (cores=1 or --jobs 2 on the CI's 2 cores)."""
import json
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from trimdm.study.sweep import RunSpec, SweepFailed, final_checkpoint, is_done, parse_slurm, run_sweep

TINY = ("train.tokens=2048", "optim.base.tokens=2048")  # 4 steps of 8 × 64 tokens
# SIGINT's default handler is installed explicitly: a process started from a background job of a
# non-interactive shell (nohup CMD &, some CI runners) inherits SIGINT ignored, and Ctrl-C is what it tests
RUNNER = """
import json, signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)
from pathlib import Path
from trimdm.study.sweep import RunSpec, run_sweep
spec = json.loads(sys.argv[1])
runs = [RunSpec(r["name"], r["recipe"], tuple(r["overrides"])) for r in spec["runs"]]
run_sweep(Path(spec["out"]), runs, jobs=1, cores=1, log=lambda *a: print(*a, flush=True))
"""


def tiny(data_root, name: str, *extra: str) -> RunSpec:
    return RunSpec(name, "tiny", (f"data.root={data_root}", *TINY, *extra))


def quiet(*args) -> None:
    pass


def read(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def executed(run: Path) -> list[str]:
    """The commands the runner started for a run, from the header it writes before each one."""
    return [line.split(": ", 1)[1] for line in (run / "sweep.log").read_text().splitlines()
            if line.startswith("== sweep ")]


def interrupt_after_first_run(out: Path, runs: list[RunSpec]) -> subprocess.Popen:
    """Start the runner in a subprocess and send it SIGINT (Ctrl-C) once run 1 is done and run 2 has
    saved a checkpoint; return the finished process."""
    spec = {"out": str(out), "runs": [{"name": r.name, "recipe": r.recipe, "overrides": list(r.overrides)}
                                      for r in runs]}
    proc = subprocess.Popen([sys.executable, "-c", RUNNER, json.dumps(spec)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    second = out / runs[1].name / "checkpoints" / "latest"
    deadline = time.monotonic() + 300
    while not second.exists():
        assert proc.poll() is None, f"the runner ended before the interrupt:\n{proc.stdout.read()}"
        assert time.monotonic() < deadline, "run 2 saved no checkpoint in 300 s"
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=300)
    return proc


def test_an_interrupted_sweep_resumes_and_the_plan_lists_what_then_runs(data_root, tmp_path):
    out = tmp_path / "sweep"
    # run b is long (80 steps, a checkpoint every 2), so the interrupt finds it training
    runs = [tiny(data_root, "a"), tiny(data_root, "b", "train.tokens=40960", "optim.base.tokens=40960",
                                       "train.ckpt_every=2", "train.log_every=10"), tiny(data_root, "c", "train.seed=1")]
    proc = interrupt_after_first_run(out, runs)
    assert proc.returncode != 0
    state = {r["name"]: r for r in read(out / "sweep.json")["runs"]}
    assert [state[n]["status"] for n in "abc"] == ["done", "interrupted", "pending"]
    assert is_done(out / "a") and not (out / "c").exists()
    assert (out / "b" / "checkpoints" / "latest").exists() and final_checkpoint(out / "b") is None
    assert not (out / "b" / "eval.json").exists()  # an interrupted run is not evaluated
    files_a = [out / "a" / n for n in ("eval.json", "config.json", "metrics.jsonl", "checkpoints/latest")]
    stamps = {p: p.stat().st_mtime_ns for p in files_a}

    printed = []
    planned = run_sweep(out, runs, jobs=2, cores=1, plan_only=True, log=printed.append)
    plan = read(out / "plan.json")
    assert planned.planned and [(r["name"], r["done"]) for r in plan["runs"]] == [("a", True), ("b", False), ("c", False)]
    assert not (out / "c").exists()  # --plan runs nothing
    assert all(line in printed for r in plan["runs"] for line in r["shell"])
    for r in plan["runs"]:
        assert r["shell"][0] == f"OMP_NUM_THREADS=1 {shlex.join(r['commands'][0])}" and "train.threads=1" in r["commands"][0]

    result = run_sweep(out, runs, jobs=2, cores=1, log=quiet)
    assert [r["status"] for r in result.runs] == ["skipped", "done", "done"] and result.ok
    assert {p: p.stat().st_mtime_ns for p in files_a} == stamps and executed(out / "a") == [shlex.join(c) for c in
                                                                                        plan["runs"][0]["commands"]]
    ran = {r["name"]: r["commands"] for r in read(out / "sweep.json")["runs"] if r["status"] == "done"}
    assert ran == {r["name"]: r["commands"] for r in plan["runs"] if not r["done"]}
    for r in plan["runs"][1:]:  # what the runner started, from its own log headers
        assert executed(out / r["name"])[-2:] == [shlex.join(c) for c in r["commands"]]
    assert "resumed from" in (out / "b" / "sweep.log").read_text()
    assert all(is_done(out / n) for n in "abc")


def test_a_failing_run_is_reported_with_its_log_tail_and_the_others_finish(data_root, tmp_path):
    out = tmp_path / "sweep"
    runs = [tiny(data_root, "bad", "model.d_model=-1"), RunSpec("norecipe", "no_such_recipe"), tiny(data_root, "good")]
    result = run_sweep(out, runs, jobs=2, cores=1, log=quiet)
    bad, norecipe, good = result.runs
    assert (bad["status"], bad["stage"], bad["returncode"]) == ("failed", "train", 2)
    assert any("model.d_model=-1 must be positive" in line for line in bad["tail"])
    assert norecipe["status"] == "failed" and any("no_such_recipe" in line for line in norecipe["tail"])
    assert good["status"] == "done" and is_done(out / "good") and good["train_seconds"] > 0
    assert [r["name"] for r in result.failed] == ["bad", "norecipe"]
    assert read(out / "sweep.json")["counts"] == {"failed": 2, "done": 1}
    with pytest.raises(SweepFailed, match="model.d_model=-1 must be positive"):
        result.check()


def test_the_submitit_launcher_runs_a_sweep_on_its_local_executor(data_root, tmp_path):
    out = tmp_path / "sweep"
    options = parse_slurm(["cluster=local", "timeout_min=10", "partition=unused_off_slurm"])
    result = run_sweep(out, [tiny(data_root, "one")], launcher="slurm", slurm=options, cores=1, log=quiet)
    [run] = result.runs
    assert run["status"] == "done" and run["launcher"] == "slurm" and run["job_id"]
    assert is_done(out / "one") and (out / "submitit" / run["job_id"]).is_dir()
    assert executed(out / "one")[-1] == shlex.join(run["commands"][1])


def test_the_cli_plans_and_exits_1_when_runs_fail(data_root, tmp_path):
    out = tmp_path / "study"
    base = [sys.executable, "-m", "trimdm", "study", "batch", "--scale", "smoke", "--arms", "sde", "--batches", "4",
            "--seeds", "2", "--out", str(out), f"data.root={data_root}"]
    plan = subprocess.run([*base, "--plan"], capture_output=True, text=True, timeout=120)
    assert plan.returncode == 0, plan.stderr
    assert [r["name"] for r in read(out / "plan.json")["runs"]] == ["sde_b4_s0", "sde_b4_s1"]
    assert not (out / "sde_b4_s0").exists()
    failed = subprocess.run([*base, "--jobs", "2", "model.d_model=-1"], capture_output=True, text=True, timeout=300)
    assert failed.returncode == 1 and "2 of 2 runs failed" in failed.stderr
    assert read(out / "sweep.json")["counts"] == {"failed": 2}
    analyse = subprocess.run([*base, "--analyse"], capture_output=True, text=True, timeout=120)
    assert analyse.returncode == 2 and "runs not done" in analyse.stderr
