"""`trimdm serve` under load: N concurrent clients asking for T2I on a loopback server, against the
sampler called directly in the same process.

    python benchmarks/serve_load.py [--run runs/demo] [--clients 8] [--requests 48] [--seconds 300]
                                    [--n 4] [--steps S] [--queue 16]

The run defaults to runs/demo (`make demo` trains it); without it the script trains a tiny tri-modal run
in a temporary folder first (minutes). One process loads the run once, serves it with uvicorn on
127.0.0.1 (a free port) from a thread, and starts `--clients` client threads; each posts
`POST /api/generate` (task t2i, `--n` images, `--steps` image steps, a seed per request) until
`--requests` have been sent or `--seconds` have passed. A 503 (full queue) is retried after its
Retry-After and counted. Before and after the load, the same requests are timed calling the sampler
directly (`Tasks.t2i`, same n, steps and seeds) and through `produce` (the sampler plus PNG encoding
and sidecars, what a request runs).

The server runs one job at a time, so under load its time per request is wall time / answered requests;
`overhead` is that over the direct sampler's mean time per call, minus one (target: <= 0.10 at 8
clients), `overhead_vs_produce` the same over `produce`, and `overhead_median_of_rounds` the median over
rounds of each round's served time per request over its own direct calls (steadier where other jobs
share the machine); `server_job_seconds` is the mean time a job spent in the worker, from the answers. Latency (p50, p95) includes the wait in the
queue: with C clients a request waits for about C - 1 others. Prints JSON, with errors by status and
requests lost (sent but never answered).
"""
from __future__ import annotations

import argparse
import http.client
import json
import platform
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from trimdm.sample.run import TaskRequest, produce, sample_settings
from trimdm.sample.tasks import Tasks
from trimdm.serve.app import Limits, create_app
from trimdm.train.run import load_run

PROMPTS = ["a red circle in the centre", "a large blue square on the left", "a green cross at the top",
           "a small yellow triangle in the bottom right"]


def tiny_run(folder: Path) -> Path:
    from trimdm.data.prepare import prepare
    from trimdm.recipes import tiny_tri
    from trimdm.train.trainer import train

    print(f"serve_load: no --run given and no runs/demo: training a tiny run in {folder}", file=sys.stderr)
    cfg = tiny_tri().override([f"data.root={folder / 'data'}"]).derive()
    prepare(cfg.data, log=lambda *a: None)
    train(cfg, folder / "run", log=lambda *a: None, progress=False)
    return folder / "run"


def start_server(app):
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    return server, thread, sock.getsockname()[1]


def body_of(i: int, n: int, steps: int) -> dict:
    return {"task": "t2i", "prompt": PROMPTS[i % len(PROMPTS)], "n": n, "seed": i,
            "settings": {"image": {"steps": steps}}}


def post(port: int, payload: str, n: int, timeout: float):
    """(status or the error's name, Retry-After or the job's own seconds in the server) of one request."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", "/api/generate", body=payload, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        data = resp.read()
        if resp.status == 200:
            answer = json.loads(data)
            return ("short_answer", None) if len(answer["outputs"]) != n else (200, answer["seconds"])
        return resp.status, resp.getheader("Retry-After")
    except (OSError, http.client.HTTPException) as e:
        return type(e).__name__, None
    finally:
        conn.close()


def load(port: int, clients: int, requests: int, seconds: float, n: int, steps: int, first: int = 0) -> dict:
    """Drive the server. Per request: its last status (or error), its latency, and the 503s it met first
    (each retried after its Retry-After, while time is left)."""
    lock, sent, results = threading.Lock(), [0], []
    deadline = time.perf_counter() + seconds

    def client():
        while True:
            with lock:
                if sent[0] >= requests or time.perf_counter() > deadline:
                    return
                i = sent[0]
                sent[0] += 1
            payload, full, t0 = json.dumps(body_of(first + i, n, steps)), 0, time.perf_counter()
            while True:
                status, extra = post(port, payload, n, timeout=max(60.0, seconds))
                if status != 503 or time.perf_counter() > deadline:
                    break
                full += 1
                time.sleep(float(extra or 1))
            with lock:
                results.append((status, time.perf_counter() - t0, full, extra if status == 200 else None))

    t0, cpu0 = time.perf_counter(), time.process_time()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"sent": sent[0], "results": results, "wall_s": time.perf_counter() - t0,
            "cpu_s": time.process_time() - cpu0}


def direct(loaded, sample, calls: int, n: int, steps: int, first: int = 0) -> dict:
    """Wall and CPU seconds per call of the sampler (Tasks.t2i) and of produce (what a request runs), in a
    thread of their own as the server's worker runs them (in two measurements here a process's main thread
    decoded 8-10% slower than another thread: the comparison is of serving, not of threads)."""
    out = {"sampler": [], "produce": [], "sampler_cpu": [], "produce_cpu": []}

    def calls_in_a_thread():
        for i in range(first, first + calls):
            b = body_of(i, n, steps)
            for key, call in (("sampler", lambda: Tasks(loaded, sample).t2i([b["prompt"]] * n, b["seed"])),
                              ("produce", lambda: produce(loaded, sample, TaskRequest("t2i", b["prompt"], n,
                                                                                        b["seed"])))):
                t0, cpu0 = time.perf_counter(), time.process_time()
                call()
                out[key].append(time.perf_counter() - t0)
                out[f"{key}_cpu"].append(time.process_time() - cpu0)

    worker = threading.Thread(target=calls_in_a_thread)
    worker.start()
    worker.join()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", default="runs/demo", help="a trained run (default runs/demo; else a tiny run is trained)")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=48, help="requests sent in all")
    ap.add_argument("--seconds", type=float, default=300.0, help="no request is sent after this long")
    ap.add_argument("--n", type=int, default=4, help="images per request")
    ap.add_argument("--steps", type=int, default=None, help="image decoding steps (default: the run's)")
    ap.add_argument("--queue", type=int, default=16, help="the server's queue (--queue of trimdm serve)")
    ap.add_argument("--rounds", type=int, default=4, help="rounds of direct calls then served requests, "
                    "interleaved so that both meet the same machine")
    args = ap.parse_args()
    temp = None
    run = Path(args.run)
    if not (run / "checkpoints").is_dir() and not (run / "state.json").exists():
        if args.run != "runs/demo":
            raise SystemExit(f"{args.run}: no trained run there")
        temp = tempfile.TemporaryDirectory(prefix="serve_load_")
        run = tiny_run(Path(temp.name))
    loaded = load_run(run)
    steps = args.steps or loaded.cfg.sample.image.steps
    sample = sample_settings(loaded, [f"sample.image.steps={steps}"]).sample
    app = create_app(loaded, Limits(max_n=max(args.n, Limits.max_n)), max_queue=args.queue)
    server, thread, port = start_server(app)
    direct(loaded, sample, 1, args.n, steps)  # warm-up: first calls allocate
    load(port, 1, 1, args.seconds, args.n, steps)
    direct_s, served, ratios = {}, {"sent": 0, "results": [], "wall_s": 0.0, "cpu_s": 0.0}, []
    per_round = -(-args.requests // args.rounds)
    t_end = time.perf_counter() + args.seconds
    for r in range(args.rounds):
        # a round: as many direct calls as a client sends, then the clients' requests
        timed = direct(loaded, sample, max(1, per_round // args.clients), args.n, steps, r * 1000)
        for key, values in timed.items():
            direct_s.setdefault(key, []).extend(values)
        left = min(per_round, args.requests - served["sent"])
        part = load(port, args.clients, left, max(1.0, t_end - time.perf_counter()), args.n, steps, r * 1000)
        for key in served:
            served[key] += part[key]
        answered = sum(status == 200 for status, *_ in part["results"])
        if answered:  # this round's served seconds per request over its direct sampler's
            ratios.append(part["wall_s"] / answered / float(np.mean(timed["sampler"])))
    server.should_exit = True
    thread.join(10)
    print(json.dumps(report(args, run, loaded, steps, served, direct_s, ratios), indent=2))
    if temp is not None:
        temp.cleanup()


def report(args, run, loaded, steps, served, direct_s, ratios) -> dict:
    ok = [(lat, job) for status, lat, _, job in served["results"] if status == 200]
    errors: dict[str, int] = {}
    for status, _, full, _ in served["results"]:
        if status != 200:
            errors[str(status)] = errors.get(str(status), 0) + 1
        if full:
            errors["503_retried"] = errors.get("503_retried", 0) + full
    mean = {key: float(np.mean(v)) for key, v in direct_s.items()}
    per_request = served["wall_s"] / max(1, len(ok))
    cpu_per_request = served["cpu_s"] / max(1, len(ok))
    latency = [lat for lat, _ in ok]
    return {
        "run": str(run), "device": str(loaded.device), "platform": platform.processor() or platform.machine(),
        "clients": args.clients, "n": args.n, "image_steps": steps, "queue": args.queue, "rounds": args.rounds,
        "requests": {"sent": served["sent"], "ok": len(ok), "lost": served["sent"] - len(served["results"])},
        "errors_by_status": errors,
        "requests_per_s": len(ok) / served["wall_s"],
        "images_per_s": len(ok) * args.n / served["wall_s"],
        "latency_s": {"p50": float(np.percentile(latency, 50)) if ok else float("nan"),
                      "p95": float(np.percentile(latency, 95)) if ok else float("nan"),
                      "max": max(latency, default=float("nan"))},
        "server_seconds_per_request": per_request,
        "server_job_seconds": float(np.mean([job for _, job in ok])) if ok else float("nan"),
        # the worker's idle share of the load's wall time: what HTTP, JSON and the queue add between jobs
        "worker_idle_fraction": 1 - sum(job for _, job in ok) / served["wall_s"],
        "direct_sampler_seconds": mean["sampler"],
        "direct_produce_seconds": mean["produce"],
        "direct_sampler_spread": [min(direct_s["sampler"]), max(direct_s["sampler"])],
        "overhead": per_request / mean["sampler"] - 1,
        "overhead_vs_produce": per_request / mean["produce"] - 1,
        # each round against its own direct calls, which met the same load from other jobs: the median
        "overhead_by_round": [r - 1 for r in ratios],
        "overhead_median_of_rounds": float(np.median(ratios)) - 1 if ratios else float("nan"),
        # process CPU time per request (server, worker and the clients' threads) over the direct call's:
        # less sensitive to other jobs on the machine than wall time
        "overhead_cpu": cpu_per_request / mean["sampler_cpu"] - 1,
        "target_overhead": 0.10,
        "wall_s": served["wall_s"],
    }


if __name__ == "__main__":
    main()
