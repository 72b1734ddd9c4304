"""The sweep runner under every study: a grid of runs, each trained and evaluated by the `trimdm` commands
a user would type, J at a time on this machine or as submitit jobs on Slurm; resumable and idempotent.

Owns: RunSpec (one run of a grid and its exact commands), run_sweep (plan, launch, wait, record), the
rule that says a run is done, the submitit job function, load_run_results (what an analysis may read),
the Study record that the registry in study/__init__.py holds, and run_study (grid → sweep → analysis).
Does not own: any study's grid or analysis (batch.py, ...), nor training or evaluation: a run is
`python -m trimdm train ...` then `python -m trimdm eval ...` in a subprocess, so a run of a sweep is
the run a user starts by hand, and a crash in one run cannot take the sweep down.

Files under a study's OUT:
    plan.json    every run: name, directory, train and eval commands (argv lists and shell strings), and
                 whether it is already done; `--plan` writes it and runs nothing, for any scheduler
    sweep.json   every run's status (done, skipped, failed with the tail of its log, interrupted,
                 running, pending), seconds and launcher; replaced atomically after each run
    RUN/         the run directory (config.json, metrics.jsonl, checkpoints/, eval.json) and sweep.log,
                 the stdout and stderr of the run's commands, appended per attempt
    submitit/    the submitit launcher's job files (its own pickles of the job function and result)

A run is done when RUN/eval.json names RUN's latest checkpoint and that checkpoint holds the run's last
step (config.json derived.steps). A done run is skipped. A run with a checkpoint and no eval of its last
step is started again: `trimdm train` resumes from its checkpoint by itself (and returns at once when
training had finished), then the eval runs. A run whose train exits 0 before its last step was stopped by
SIGTERM (ours or the cluster's) and is reported as interrupted; its eval is not run.

Each run gets `train.threads=T` and OMP_NUM_THREADS=T with T = max(1, cores // jobs) (cores: os.cpu_count()
unless given; on Slurm the `cpus_per_task` option when given), so J runs share the cores without
oversubscribing them; with J > 1 the runner first prepares each data set the runs share, one at a time
(the Slurm launcher leaves that to `trimdm prepare`, on a compute node); a run that has started keeps the train.threads of its config.json, since a resume
must match the config the run started with. Children start in their own session: a Ctrl-C in the terminal reaches the runner
only, which sends each running child SIGTERM (train saves a checkpoint and exits) and waits for it.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

from trimdm.data.prepare import prepare
from trimdm.fileio import atomic_write_text
from trimdm.recipes import get_recipe
from trimdm.train.checkpoint import latest_checkpoint
from trimdm.train.metrics import read_metrics

LAUNCHERS = ("local", "slurm")
STAGES = ("train", "eval")
TAIL_LINES = 20
STOP_TIMEOUT_S = 300.0  # a child that has not saved and exited this long after SIGTERM is killed
# names a run may not take: the sweep's and the studies' own files beside the run directories
RESERVED = {"plan.json", "sweep.json", "submitit", "results.json", "study.md"}
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.=+-]*$")
# submitit's shared parameters (AutoExecutor); any other --slurm key is a Slurm one and gets its prefix
SUBMITIT_SHARED = {"name", "timeout_min", "mem_gb", "nodes", "cpus_per_task", "gpus_per_node", "tasks_per_node",
                   "stderr_to_stdout"}
SUBMITIT_CLUSTERS = ("slurm", "local", "debug")


@dataclass(frozen=True)
class RunSpec:
    """One run of a study: its name (unique in the study, also its directory under the study's OUT), the
    recipe and key=value overrides of `trimdm train`, and the extra arguments of `trimdm eval`
    (likelihood only, without the data set's tokenizer reconstructions, unless a study asks for more by
    giving other eval_args)."""
    name: str
    recipe: str
    overrides: tuple[str, ...] = ()
    eval_args: tuple[str, ...] = ("--no-generation", "eval.reconstructions=false")

    def __post_init__(self):
        if not isinstance(self.name, str) or not NAME.match(self.name) or self.name in RESERVED:
            raise ValueError(f"run name {self.name!r}: it names a directory, so letters, digits and _ . = + - "
                             f"starting with a letter or digit, and none of {sorted(RESERVED)}")
        for what in ("overrides", "eval_args"):
            value = getattr(self, what)
            if isinstance(value, str) or not all(isinstance(x, str) for x in value):
                raise ValueError(f"run {self.name}: {what} must be a sequence of strings, got {value!r}")
            object.__setattr__(self, what, tuple(value))
        bad = [x for x in self.overrides if "=" not in x or x.startswith("-")]
        if bad:
            raise ValueError(f"run {self.name}: overrides must be key=value, got {bad}")

    def directory(self, out: Path) -> Path:
        return Path(out) / self.name

    def command(self, out: Path) -> list[list[str]]:
        """The argv lists of the run's `trimdm train` and `trimdm eval`; `out` is the study's folder."""
        run, head = str(self.directory(out)), [sys.executable, "-m", "trimdm"]
        return [[*head, "train", "--recipe", self.recipe, "--out", run, *self.overrides],
                [*head, "eval", "--run", run, *self.eval_args]]


@dataclass
class SweepResult:
    """What a sweep did: `runs` are sweep.json's records in grid order (plan.json's with `planned`)."""
    out: Path
    runs: list[dict]
    seconds: float = 0.0
    planned: bool = False

    @property
    def failed(self) -> list[dict]:
        return [r for r in self.runs if r["status"] == "failed"]

    @property
    def ok(self) -> bool:
        return not self.failed

    def check(self) -> None:
        """Raise SweepFailed naming every failed run and the tail of its log."""
        if self.failed:
            raise SweepFailed(self)


class SweepFailed(RuntimeError):
    """Some runs of a sweep failed; the others ran to the end. The CLI exits 1 on it."""

    def __init__(self, result: SweepResult):
        self.result = result
        parts = [f"{len(result.failed)} of {len(result.runs)} runs failed (details in {result.out}/sweep.json):"]
        for r in result.failed:
            parts.append(f"--- {r['name']}: {r['stage']} exited {r['returncode']}; last lines of {r['log']}:")
            parts += ["    " + line for line in r["tail"]]
        super().__init__("\n".join(parts))


# -- what a run directory says --------------------------------------------------------------------------
def _read_json(path: Path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def final_checkpoint(run: Path) -> Path | None:
    """RUN's latest checkpoint when it holds the run's last step (config.json derived.steps), else None."""
    latest, cfg = latest_checkpoint(run), _read_json(Path(run) / "config.json")
    if latest is None or not isinstance(cfg, dict):
        return None
    state = _read_json(latest / "state.json")
    steps = cfg.get("derived", {}).get("steps")
    return latest if isinstance(state, dict) and steps is not None and state.get("step") == steps else None


def is_done(run: Path) -> bool:
    """RUN/eval.json evaluates RUN's final checkpoint (the module docstring's rule)."""
    final, ev = final_checkpoint(run), _read_json(Path(run) / "eval.json")
    return final is not None and isinstance(ev, dict) and Path(str(ev.get("checkpoint", ""))).name == final.name


def load_run_results(run_dir: Path) -> dict:
    """What an analysis reads of a run: {"config": config.json, "metrics": metrics.jsonl's records,
    "eval": eval.json}. A ValueError names the file that is missing or unreadable."""
    run_dir, out = Path(run_dir), {}
    for key, name in (("config", "config.json"), ("eval", "eval.json")):
        out[key] = _read_json(run_dir / name)
        if not isinstance(out[key], dict):
            raise ValueError(f"{run_dir / name}: missing or unreadable; has the run finished? (rerun the study)")
    try:
        out["metrics"] = read_metrics(run_dir / "metrics.jsonl")
    except (OSError, ValueError) as e:
        raise ValueError(f"{run_dir / 'metrics.jsonl'}: missing or unreadable ({e})") from None
    return out


# -- one run's commands as subprocesses -------------------------------------------------------------------
class Attempt:
    """A run's train and eval commands, one after the other, as subprocesses in their own session with
    output appended to RUN/sweep.log. `poll` advances without blocking and returns the outcome once the
    attempt is over: {"status": done | failed | interrupted, "stage", "returncode", "train_seconds",
    "eval_seconds", "tail" (the log's last lines of this attempt, failed or interrupted)}."""

    def __init__(self, commands: list[list[str]], run_dir: Path, env: dict[str, str]):
        self.commands, self.run, self.env = commands, Path(run_dir), {**os.environ, **env}
        self.log_path = self.run / "sweep.log"
        self.stage, self.proc, self.stopping, self.seconds = 0, None, False, {}

    def start(self) -> "Attempt":
        self.run.mkdir(parents=True, exist_ok=True)
        self.offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        self._launch()
        return self

    def _launch(self) -> None:
        cmd = self.commands[self.stage]
        with open(self.log_path, "a") as log:
            log.write(f"== sweep {datetime.now().isoformat(timespec='seconds')}: {shlex.join(cmd)}\n")
            log.flush()
            self.t_stage = time.perf_counter()
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=self.env, start_new_session=True)

    def poll(self) -> dict | None:
        rc = self.proc.poll()
        if rc is None:
            return None
        name = STAGES[self.stage]
        self.seconds[f"{name}_seconds"] = round(time.perf_counter() - self.t_stage, 3)
        if rc != 0:
            return self._outcome("interrupted" if self.stopping else "failed", rc)
        if name == "train" and final_checkpoint(self.run) is None:
            return self._outcome("interrupted", rc)  # stopped by SIGTERM before its last step, checkpoint saved
        if self.stopping:
            return self._outcome("interrupted", rc)
        if self.stage + 1 == len(self.commands):
            return self._outcome("done", rc)
        self.stage += 1
        self._launch()
        return None

    def _outcome(self, status: str, rc: int) -> dict:
        tail = self.tail() if status != "done" else []
        return {"status": status, "stage": STAGES[self.stage], "returncode": rc, **self.seconds, "tail": tail}

    def tail(self) -> list[str]:
        with open(self.log_path, "rb") as f:
            f.seek(self.offset)
            text = f.read().decode("utf-8", errors="replace")
        lines = [line.rsplit("\r", 1)[-1] for line in text.splitlines()]  # a redrawn progress line: its last
        return [line for line in lines if line.strip()][-TAIL_LINES:]

    def terminate(self) -> None:
        """SIGTERM to the running command (train saves a checkpoint and exits); no later stage starts."""
        self.stopping = True
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def wait(self, timeout: float = STOP_TIMEOUT_S) -> dict:
        deadline = time.monotonic() + timeout
        while (outcome := self.poll()) is None:
            if time.monotonic() > deadline:
                self.kill()
            time.sleep(0.05)
        return outcome

    def kill(self) -> None:
        self.stopping = True
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)


def execute_run(commands: list[list[str]], run_dir: str, env: dict[str, str]) -> dict:
    """The submitit job of one run (plain JSON-able arguments and result): run its commands and return
    the Attempt outcome. A cancel (SIGINT from submitit's local executor) stops the running command
    with SIGTERM first; on Slurm, scancel's SIGTERM reaches the command directly."""
    attempt = Attempt(commands, Path(run_dir), env)
    attempt.start()
    try:
        while (outcome := attempt.poll()) is None:
            time.sleep(0.05)
    except KeyboardInterrupt:
        attempt.terminate()
        outcome = attempt.wait()
    return outcome


class SubmititRun:
    """A run submitted as a submitit job, seen through Attempt's poll / terminate / wait / kill."""

    def __init__(self, executor, commands: list[list[str]], run_dir: Path, env: dict[str, str]):
        self.run, self.stopping = Path(run_dir), False
        self.run.mkdir(parents=True, exist_ok=True)
        self.job = executor.submit(execute_run, commands, str(run_dir), env)

    def poll(self) -> dict | None:
        if not self.job.done():
            return None
        try:
            outcome = dict(self.job.result())
        except Exception as e:  # noqa: BLE001 - the job died (timeout, node failure, cancel): say how
            err = (self.job.stderr() or "") if hasattr(self.job, "stderr") else ""
            tail = [line for line in (err + "\n" + str(e)).splitlines() if line.strip()][-TAIL_LINES:]
            outcome = {"status": "interrupted" if self.stopping else "failed", "stage": "job", "returncode": None,
                       "tail": tail}
        return {**outcome, "job_id": str(self.job.job_id)}

    def terminate(self) -> None:
        self.stopping = True
        self.job.cancel(check=False)

    def wait(self, timeout: float = STOP_TIMEOUT_S) -> dict:
        deadline = time.monotonic() + timeout
        while (outcome := self.poll()) is None and time.monotonic() < deadline:
            time.sleep(0.5)
        return outcome or {"status": "interrupted", "stage": "job", "returncode": None,
                           "tail": [f"job {self.job.job_id} still running {timeout:.0f}s after its cancel"]}

    def kill(self) -> None:
        self.terminate()


def submitit_executor(folder: Path, options: dict):
    """An AutoExecutor for `options` (parse_slurm's): `cluster` (slurm, or local/debug to run the same
    jobs on this machine) and the rest passed to update_parameters."""
    import submitit

    options = dict(options)
    cluster = options.pop("cluster", "slurm")
    if cluster not in SUBMITIT_CLUSTERS:
        raise ValueError(f"--slurm cluster={cluster}: expected one of {', '.join(SUBMITIT_CLUSTERS)}")
    executor = submitit.AutoExecutor(folder=str(folder / "%j"), cluster=cluster)
    try:
        executor.update_parameters(**options)
    except (NameError, AssertionError, TypeError) as e:  # submitit's way of naming a bad parameter
        raise ValueError(f"--slurm {options}: {e}") from None
    return executor


def parse_slurm(items: list[str]) -> dict:
    """`--slurm KEY=VALUE` items as submitit parameters: numbers and booleans parsed as JSON; submitit's
    shared names (timeout_min, cpus_per_task, gpus_per_node, mem_gb, ...) and `cluster` kept as they
    are, any other key (partition, account, qos, ...) prefixed with `slurm_` unless it has a prefix."""
    options = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--slurm {item!r}: expected KEY=VALUE, e.g. partition=gpu or timeout_min=60")
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        value = raw if isinstance(value, (dict, list)) or value is None else value
        prefixed = key == "cluster" or key in SUBMITIT_SHARED or key.split("_", 1)[0] in SUBMITIT_CLUSTERS
        options[key if prefixed else f"slurm_{key}"] = value
    return options


# -- the sweep ----------------------------------------------------------------------------------------------
def _threads(spec: RunSpec, threads: int, run: Path) -> tuple[RunSpec, int]:
    """The spec with `train.threads` appended and the thread count for OMP_NUM_THREADS: `threads`, or
    the spec's own train.threads when it sets one, or, for a run that has started, the train.threads
    its config.json holds (`trimdm train` resumes only under the config it started with)."""
    own = [x.split("=", 1)[1] for x in spec.overrides if x.split("=", 1)[0].strip() == "train.threads"]
    if own:
        try:
            return spec, max(1, int(own[-1]))
        except ValueError:
            return spec, threads  # a bad value fails the run itself, with the config's own message
    started = _read_json(run / "config.json")
    if isinstance(started, dict) and isinstance(started.get("train", {}).get("threads"), int):
        threads_then = started["train"]["threads"]
        return replace(spec, overrides=(*spec.overrides, f"train.threads={threads_then}")), threads_then or threads
    return replace(spec, overrides=(*spec.overrides, f"train.threads={threads}")), threads


def _plan(out: Path, runs: list[RunSpec], threads: int) -> list[dict]:
    rows = []
    for spec in runs:
        spec, t = _threads(spec, threads, spec.directory(out))
        env = {"OMP_NUM_THREADS": str(t)}
        commands = spec.command(out)
        rows.append({"name": spec.name, "dir": str(spec.directory(out)), "done": is_done(spec.directory(out)),
                     "env": env, "commands": commands,
                     "shell": [" ".join([f"{k}={v}" for k, v in env.items()] + [shlex.join(c)]) for c in commands]})
    return rows


def _check_arguments(runs: list[RunSpec], jobs: int, launcher: str, slurm: dict | None, cores: int | None) -> None:
    if not runs or not all(isinstance(r, RunSpec) for r in runs):
        raise ValueError("a sweep needs a non-empty list of RunSpec")
    names = [r.name for r in runs]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"run names must be unique within a study; repeated: {twice}")
    if not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"--jobs {jobs}: expected a positive number of runs at a time")
    if cores is not None and (not isinstance(cores, int) or cores < 1):
        raise ValueError(f"cores={cores}: expected a positive number")
    if launcher not in LAUNCHERS:
        raise ValueError(f"--launcher {launcher}: expected one of {', '.join(LAUNCHERS)}")
    if slurm and launcher != "slurm":
        given = " ".join(f"{k}={v}" for k, v in slurm.items())
        raise ValueError(f"--slurm {given}: Slurm options need --launcher slurm")


def _write(path: Path, doc: dict) -> None:
    atomic_write_text(path, json.dumps(doc, indent=2) + "\n")


def run_sweep(out: Path, runs: list[RunSpec], *, jobs: int = 1, launcher: str = "local", slurm: dict | None = None,
              plan_only: bool = False, cores: int | None = None, log=print) -> SweepResult:
    """Run every run of `runs` that is not done, `jobs` at a time, and return when all have finished
    (see the module docstring). A failed run does not stop the others: the result lists it (and
    `result.check()` raises SweepFailed). KeyboardInterrupt (or SIGTERM to the runner) stops the running
    runs with SIGTERM, records them as interrupted in sweep.json, and propagates."""
    _check_arguments(runs, jobs, launcher, slurm, cores)
    out = Path(out).resolve()
    slurm = dict(slurm or {})
    total = cores or os.cpu_count() or 1
    threads = slurm["cpus_per_task"] if "cpus_per_task" in slurm else max(1, total // jobs)
    if not isinstance(threads, int) or threads < 1:
        raise ValueError(f"--slurm cpus_per_task={threads}: expected a positive number")
    plan = _plan(out, runs, threads)
    out.mkdir(parents=True, exist_ok=True)
    head = {"launcher": launcher, "jobs": jobs, "threads": threads, "slurm": slurm}
    _write(out / "plan.json", {**head, "runs": plan})
    if plan_only:
        for row in plan:
            log(f"# {row['name']}" + (" (done: skipped when the sweep runs)" if row["done"] else ""))
            for line in row["shell"]:
                log(line)
        return SweepResult(out, [{**row, "status": "done" if row["done"] else "planned"} for row in plan],
                           planned=True)
    start = _starter(launcher, out, slurm)
    sweep = _Sweep(out, head, plan, launcher, log)
    if launcher == "local" and jobs > 1:
        prepare_shared_data([spec for spec, row in zip(runs, plan) if not row["done"]], log)
    sweep.drive(start, jobs, poll_s=0.5 if launcher == "slurm" else 0.02)
    return SweepResult(out, sweep.records, seconds=sweep.elapsed())


def _starter(launcher: str, out: Path, slurm: dict) -> Callable[[dict], Attempt | SubmititRun]:
    """A function that starts the run of a plan row and returns its handle (poll, terminate, wait, kill)."""
    if launcher == "slurm":
        executor = submitit_executor(out / "submitit", slurm)
        return lambda row: SubmititRun(executor, row["commands"], Path(row["dir"]), row["env"])
    return lambda row: Attempt(row["commands"], Path(row["dir"]), row["env"]).start()


def prepare_shared_data(runs: list[RunSpec], log=print) -> None:
    """Prepare (or find cached) each data set the runs use, one at a time, before they start in
    parallel: runs that share a data root would otherwise each build a missing data set at once. A run
    whose config does not build is left to fail with its own message."""
    seen = []
    for spec in runs:
        try:
            data = get_recipe(spec.recipe).override(list(spec.overrides)).derive().data
        except ValueError:
            continue
        key = json.dumps(asdict(data), sort_keys=True, default=str)
        if key not in seen:
            seen.append(key)
            prepare(data, log=log)


@dataclass
class _Sweep:
    """The records of sweep.json and the loop that keeps `jobs` runs in flight."""
    out: Path
    head: dict
    plan: list[dict]
    launcher: str
    log: Callable
    records: list[dict] = field(default_factory=list)

    def __post_init__(self):
        self.t0, self.started = time.perf_counter(), datetime.now(timezone.utc).isoformat(timespec="seconds")
        self.records = [{"name": row["name"], "dir": row["dir"], "log": str(Path(row["dir"]) / "sweep.log"),
                         "status": "skipped" if row["done"] else "pending", "launcher": self.launcher,
                         "seconds": 0.0, "commands": row["commands"]} for row in self.plan]

    def elapsed(self) -> float:
        return round(time.perf_counter() - self.t0, 3)

    def save(self) -> None:
        counts = {}
        for r in self.records:
            counts[r["status"]] = counts.get(r["status"], 0) + 1
        _write(self.out / "sweep.json", {**self.head, "started": self.started, "seconds": self.elapsed(),
                                         "counts": counts, "runs": self.records})

    def finish(self, i: int, outcome: dict, t_start: float) -> None:
        r = self.records[i]
        r.update(outcome, seconds=round(time.perf_counter() - t_start, 3))
        done = sum(x["status"] in ("done", "skipped") for x in self.records)
        self.log(f"sweep: {r['name']}: {r['status']} in {r['seconds']:.1f}s ({done}/{len(self.records)} done)")
        if r["status"] == "failed":
            self.log("\n".join([f"sweep: {r['name']}: {r['stage']} exited {r['returncode']}; last lines of "
                                f"{r['log']}:"] + ["    " + line for line in r["tail"]]))
        self.save()

    def drive(self, start: Callable, jobs: int, poll_s: float) -> None:
        queue = [i for i, r in enumerate(self.records) if r["status"] == "pending"]
        skipped = len(self.records) - len(queue)
        self.log(f"sweep: {len(queue)} run(s) to run, {skipped} already done, {jobs} at a time ({self.launcher})")
        running: dict[int, tuple] = {}
        self.save()
        restore = _sigterm_as_interrupt()
        try:
            while queue or running:
                while queue and len(running) < jobs:
                    i = queue.pop(0)
                    running[i] = (start(self.plan[i]), time.perf_counter())
                    self.records[i]["status"] = "running"
                for i, (handle, t_start) in list(running.items()):
                    if (outcome := handle.poll()) is not None:
                        del running[i]
                        self.finish(i, outcome, t_start)
                if running:
                    time.sleep(poll_s)
        except BaseException:  # Ctrl-C, SIGTERM, or a launcher error: no run is left running unrecorded
            self.stop(running)
            raise
        finally:
            restore()
        self.save()

    def stop(self, running: dict) -> None:
        """SIGTERM every running run and wait for it (a second interrupt kills them); record them."""
        self.log(f"sweep: stopping {len(running)} running run(s) with SIGTERM (each saves a checkpoint); "
                 "rerun the same command to resume")
        for handle, _ in running.values():
            handle.terminate()
        try:
            for i, (handle, t_start) in list(running.items()):
                self.finish(i, handle.wait(), t_start)
                del running[i]
        except KeyboardInterrupt:
            for i, (handle, t_start) in running.items():
                handle.kill()
                self.records[i].update(status="interrupted", seconds=round(time.perf_counter() - t_start, 3))
            self.save()
            raise


def _sigterm_as_interrupt() -> Callable[[], None]:
    """While the sweep runs, SIGTERM to the runner stops it like Ctrl-C. Returns what puts the previous
    handler back (nothing to do off the main thread, where Python cannot install one)."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    return lambda: signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


# -- studies ---------------------------------------------------------------------------------------------
SCALES = ("smoke", "cpu", "gpu")


@dataclass(frozen=True)
class Study:
    """A study the sweep runs: `grid(scale, seeds, overrides, **options) -> list[RunSpec]` (seeds None:
    the scale's default; options: the study's own CLI flags, named in `options`) and `analyse(out, runs,
    scale) -> dict` (the scale sets the analysis's own sizes, e.g. its bootstrap resamples), which reads
    the runs through load_run_results and writes OUT/results.json, OUT/study.md (write_results) and its
    plots."""
    name: str
    grid: Callable[..., list[RunSpec]]
    analyse: Callable[[Path, list[RunSpec], str], dict]
    summary: str = ""
    options: tuple[str, ...] = ()


def write_results(out: Path, result: dict, markdown: str) -> None:
    """The two files every study writes: OUT/results.json and OUT/study.md."""
    _write(Path(out) / "results.json", result)
    atomic_write_text(Path(out) / "study.md", markdown)


def parse_seeds(text: str) -> list[int]:
    """`--seeds`: a count K ("3": seeds 0, 1, 2) or a comma list ("0,1"; one seed alone: "7,")."""
    text = text.strip()
    try:
        if "," not in text:
            k = int(text)
            if k < 1:
                raise ValueError
            return list(range(k))
        seeds = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"--seeds {text!r}: expected a count (3: seeds 0,1,2) or a comma list (0,1 or 7,)") from None
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise ValueError(f"--seeds {text!r}: expected distinct non-negative seeds")
    return seeds


def run_study(study: Study, out: Path, *, scale: str = "cpu", seeds: list[int] | None = None,
              overrides: list[str] = (), options: dict | None = None, analyse_only: bool = False,
              log=print, **sweep) -> dict | SweepResult:
    """Build the study's grid, run it (run_sweep's keyword arguments in `sweep`) and analyse it. With
    `plan_only` returns the plan; with `analyse_only` only analyses the run directories. A failed run
    raises SweepFailed after every run has finished, before the analysis."""
    if scale not in SCALES:
        raise ValueError(f"--scale {scale}: expected one of {', '.join(SCALES)}")
    options = {k: v for k, v in (options or {}).items() if v is not None}
    foreign = sorted(set(options) - set(study.options))
    if foreign:
        raise ValueError(f"study {study.name} takes no {', '.join('--' + k for k in foreign)}")
    runs = study.grid(scale, seeds, list(overrides), **options)
    out = Path(out)
    if not analyse_only:
        result = run_sweep(out, runs, log=log, **sweep)
        if result.planned:
            return result
        result.check()
    missing = [r.name for r in runs if not is_done(r.directory(out))]
    if missing:
        raise ValueError(f"{out}: runs not done, so nothing to analyse yet: {missing} (run the study first)")
    return study.analyse(out, runs, scale)
