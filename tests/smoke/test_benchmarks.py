"""Every benchmark at its smallest setting, run as a user runs it (`python benchmarks/X.py`, a
subprocess): it exits 0 and its stdout is one JSON document whose main figures are present and finite.
The benchmarks that read a trained tinyworld run score the session's tiny tri-modal run."""
import json
import math
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def run_benchmark(name: str, *args) -> dict:
    # OMP_NUM_THREADS=1 reaches the subprocess through the environment (tests/conftest.py). The timeout
    # only catches a hang: a benchmark at its smallest takes seconds on a quiet machine, but several
    # times that on a loaded one (sweep_overhead starts four runs).
    done = subprocess.run([sys.executable, str(BENCHMARKS / f"{name}.py"), *map(str, args)], capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, f"{name} exited {done.returncode}:\n{done.stderr[-3000:]}"
    return json.loads(done.stdout)


def assert_finite(row: dict, *keys: str) -> None:
    for key in keys:
        assert math.isfinite(row[key]), f"{key} = {row[key]}"


def test_train_throughput(data_root):
    out = run_benchmark("train_throughput", "--configs", "tiny", "--steps", "1", f"data.root={data_root}",
                        "train.threads=1")
    assert_finite(out, "bf16_matmul_peak_gflops")
    [row] = out["results"]
    assert_finite(row, "tokens_per_s", "seconds_per_step", "achieved_gflops", "fraction_of_bf16_peak")


def test_train_throughput_against_the_peer(data_root):
    # the Hugging Face peer at the tiny recipe's shapes: one round of one step each, a small peak
    out = run_benchmark("train_throughput", "--peer", "--configs", "tiny", "--rounds", "1", "--steps", "1",
                        "--warmup", "1", "--peak-n", "128", "--peak-seconds", "0.02", f"data.root={data_root}",
                        "train.threads=1")
    assert set(out["systems"]) == {"trimdm", "peer_dense", "peer_sparse"}
    assert out["shape"]["vocab_size"] == 530 and out["shape"]["mlp_hidden"] == 192  # tiny's, from its config
    assert_finite(out, "bf16_matmul_peak_gflops", "peer_ratio_dense", "peer_ratio_sparse", "peer_ratio_dense_cpu",
                  "peer_ratio_sparse_cpu")
    for row in out["systems"].values():
        assert_finite(row, "tokens_per_s", "seconds_per_step", "achieved_gflops", "mfu", "tokens_per_cpu_s", "mfu_cpu")


def test_data_throughput(data_root):
    out = run_benchmark("data_throughput", "--recipe", "tiny", "--steps", "2", "--train-steps", "1",
                        f"data.root={data_root}", "train.threads=1")
    assert_finite(out["loader"], "rows_per_s", "tokens_per_s")
    assert_finite(out["training"], "rows_per_s", "tokens_per_s", "seconds_per_step")
    assert_finite(out, "loader_over_training")


def test_sampling_raises_the_row_length_to_the_longest_canvas():
    out = run_benchmark("sampling", "--recipe", "tiny", "--batch", "1", "--repeats", "1", "--steps", "2",
                        "train.threads=1")
    t2i, t2s = out["results"]["t2i"], out["results"]["t2s"]
    assert_finite(t2i, "images_per_s", "naive_images_per_s", "speedup")
    assert_finite(t2s, "audio_seconds_per_s", "naive_audio_seconds_per_s", "speedup")
    # the recorded workload: the whole tinyworld vocabulary's T2S canvas, longer than the recipe's rows
    assert t2s["row_length"] == 263 and out["recipe_seq_len"] == 64 and out["model_seq_len"] == 263


def test_attention():
    out = run_benchmark("attention", "--repeats", "1", "--heads", "1", "--head-dim", "8")
    assert out["results"]
    for row in out["results"]:
        assert_finite(row, "sdpa_ms", "explicit_ms", "attend_ms", "sdpa_over_explicit")


def test_generation_curve(tiny_tri_run):
    _, run = tiny_tri_run
    out = run_benchmark("generation_curve", "--run", run, "--prompts", "1", "--utterances", "1")
    [point] = out["points"]  # the tiny run keeps its final checkpoint
    assert_finite(point, "t2i_seen", "t2i_heldout", "i2t", "t2s_cer")


def test_t2s_levels(tiny_tri_run):
    _, run = tiny_tri_run
    out = run_benchmark("t2s_levels", "--run", run, "--utterances", "1")
    assert set(out["cer"]) == {"real_speech", "codec", "rule_length", "real_length", "level0_given",
                               "fine_levels_given"}
    assert_finite(out["cer"], *out["cer"])


def test_text_blocks(tiny_tri_run):
    _, run = tiny_tri_run
    out = run_benchmark("text_blocks", "--run", run, "--n", "4", "--setting", "run", "--setting", "block8",
                        "sample.text.block=8")
    assert [(s["name"], s["row"]["block"]) for s in out["settings"]] == [("run", 0), ("block8", 8)]
    from trimdm.config import SAMPLING_DEFAULTS

    block8 = out["settings"][1]["row"]  # today's default text row, then the setting's overrides
    assert {k: block8[k] for k in SAMPLING_DEFAULTS["text"]} == {**SAMPLING_DEFAULTS["text"], "block": 8}
    assert out["reference"]["n"] == 30 and out["judge"]["vocabulary"] > 10_000
    for row in (out["reference"], *out["settings"]):
        assert_finite(row, "perplexity", "bits_per_word_se", "unigram_entropy")


def test_sampling_speed_quality_table(tiny_tri_run):
    _, run = tiny_tri_run
    out = run_benchmark("sampling", "--run", run, "--prompts", "2", "--utterances", "2", "--rounds", "1",
                        "--seeds", "0,1")
    for task, speed, metric in (("t2i", "images_per_s", "attribute_match"), ("t2s", "audio_seconds_per_s", "cer")):
        assert out[task][0]["method"] == "default" and len(out[task]) > 3
        for row in out[task]:
            assert_finite(row, speed, metric)
            assert len(row[f"{metric}_per_seed"]) == 2
        best = next(r for r in out[task] if r["method"] == out[f"best_{task}"])
        assert math.isclose(out[f"speedup_{task}"], best[speed] / out[task][0][speed])


def test_benchmarks_that_need_a_run_say_how_to_make_one(tmp_path):
    for name in ("generation_curve", "t2s_levels", "text_blocks"):
        done = subprocess.run([sys.executable, str(BENCHMARKS / f"{name}.py")], capture_output=True, text=True,
                              cwd=tmp_path)
        assert done.returncode == 1 and "runs/demo" in done.stderr and "make demo" in done.stderr


def test_sweep_overhead(data_root):
    out = run_benchmark("sweep_overhead", "--runs", "1", "--tokens", "2048", f"data.root={data_root}")
    for sweep in (out["sequential"], out["parallel"]):
        assert_finite(sweep, "wall_s", "sum_of_run_s")
        assert sweep["sum_of_run_s"] > 0
    assert_finite(out["sequential"], "overhead_s", "overhead_fraction")
    assert_finite(out, "parallel_over_sequential")


def test_ingest_throughput():
    out = run_benchmark("ingest_throughput", "--images", "8", "--utterances", "4", "tokenizers.image.batch=4",
                        "tokenizers.audio.batch=2")
    for kind, key in (("image_text", "images_per_s"), ("audio_text", "audio_seconds_per_s")):
        assert [r["workers"] for r in out[kind]["runs"]] == [1, 2]
        for r in out[kind]["runs"]:
            assert_finite(r, key, "shard_seconds", "prepare_seconds")
        assert_finite(out[kind], "speedup")


def test_serve_load(tiny_tri_run):
    _, run = tiny_tri_run
    out = run_benchmark("serve_load", "--run", run, "--clients", "2", "--requests", "3", "--n", "1", "--steps", "2",
                        "--rounds", "1")
    assert out["requests"] == {"sent": 3, "ok": 3, "lost": 0} and out["errors_by_status"] == {}
    assert_finite(out, "requests_per_s", "server_seconds_per_request", "server_job_seconds", "direct_sampler_seconds",
                  "direct_produce_seconds", "overhead", "overhead_cpu", "overhead_median_of_rounds")
    assert_finite(out["latency_s"], "p50", "p95")


def test_train_memory(data_root):
    out = run_benchmark("train_memory", "--quick", f"data.root={data_root}", "train.threads=1")
    rows = {row["activation_checkpointing"]: row for row in out["results"]}
    assert set(rows) == {False, True}
    for row in rows.values():
        assert_finite(row, "peak_rss_gib", "ru_maxrss_gib", "estimate_over_measured", "seconds_per_step")
        assert row["peak_rss_gib"] > 0.05 and row["estimate_gib"]["peak"] > 0
    # the estimate's activations shrink with checkpointing (at this size the process itself dominates RSS)
    assert rows[True]["estimate_gib"]["activations"] < rows[False]["estimate_gib"]["activations"]
