"""Distributed tier: 2 processes with torchrun and gloo on CPU.

DDP and FSDP2 runs with the same global batch must match the single-process run step for step (fp32):
only the order of floating-point additions differs (gradients are summed across ranks), so the losses
agree to ~1e-7 relative and the weights after 10 AdamW steps to ~1e-5 (measured 1.4e-7 and 1.8e-5 on
this machine); the tolerances below leave a 10× margin and stay far below one update (lr = 3e-3).
A DDP run killed with SIGKILL after a checkpoint and resumed at the same world size must match the
uninterrupted DDP run bit for bit. The same holds for the tri-modal recipe with micro-batches, where a
rank's slice of a step may hold no audio (or no image) rows: every parameter still takes part in every
step on every rank, so the ranks' gradient buckets agree.
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
COMMON = ["train", "--recipe", "tiny", "train.dtype=fp32", "train.tokens=5120", "train.ckpt_every=5"]
# tiny_tri: 8 rows of 384 per step, two micro-batches of 2 rows per rank (four in one process)
TRI = ["train", "--recipe", "tiny_tri", "train.dtype=fp32", "train.tokens=30720", "train.ckpt_every=5",
       "train.micro_batch_size=2"]


def run(out: Path, data_root: str, *extra: str, nproc: int = 2, common=COMMON) -> subprocess.CompletedProcess:
    cmd = (TORCHRUN if nproc > 1 else [sys.executable]) + ["-m", "trimdm", *common, "--out", str(out),
                                                          f"data.root={data_root}", *extra]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def weights(out: Path, step: int = 10) -> dict:
    return load_file(out / "checkpoints" / f"step_{step:08d}" / "model.safetensors")


@pytest.fixture(scope="module")
def single(tmp_path_factory, data_root):
    out = tmp_path_factory.mktemp("single")
    run(out, data_root, nproc=1)
    return out


@pytest.fixture(scope="module")
def ddp(tmp_path_factory, data_root):
    out = tmp_path_factory.mktemp("ddp")
    run(out, data_root, "train.parallel=ddp")
    return out


def descendants(pid: int) -> list[int]:
    """All live descendants of pid (torchrun puts its workers in sessions of their own)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def assert_matches(a: Path, b: Path):
    ma, mb = metrics(a), metrics(b)
    assert [r["step"] for r in ma] == [r["step"] for r in mb] == list(range(1, 11))
    for x, y in zip(ma, mb):
        assert x["loss"] == pytest.approx(y["loss"], rel=1e-5)
        assert x["grad_norm"] == pytest.approx(y["grad_norm"], rel=1e-4)
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=2e-4, msg=k)


def test_ddp_matches_single_process(single, ddp):
    assert_matches(ddp, single)
    assert all("grad_noise_scale" in r for r in metrics(ddp))  # per-rank vs all-reduced gradients


def test_fsdp_matches_single_process(single, tmp_path, data_root):
    run(tmp_path, data_root, "train.parallel=fsdp")
    assert_matches(tmp_path, single)


def test_fsdp_with_activation_checkpointing_and_ema_matches_single_process(tmp_path, data_root):
    """FSDP2 around checkpointed blocks, with an EMA of the sharded weights: the steps of one process
    (tolerances above), and its EMA, which each rank keeps for its shards and the checkpoint gathers."""
    run(tmp_path / "single", data_root, "train.ema=0.9", nproc=1)
    run(tmp_path / "fsdp", data_root, "train.parallel=fsdp", "train.activation_checkpointing=true", "train.ema=0.9")
    assert_matches(tmp_path / "fsdp", tmp_path / "single")
    ema = [load_file(out / "checkpoints" / "step_00000010" / "ema.safetensors") for out in (tmp_path / "fsdp",
                                                                                          tmp_path / "single")]
    assert ema[0].keys() == ema[1].keys() == weights(tmp_path / "single").keys()
    for k in ema[0]:
        torch.testing.assert_close(ema[0][k], ema[1][k], rtol=0, atol=2e-4, msg=k)


def kill_after_checkpoint_and_resume(out: Path, data_root: str, common: list[str], parallel: str):
    """Start a 2-process run, SIGKILL the whole job once step 5's checkpoint is in place, rerun it."""
    cmd = TORCHRUN + ["-m", "trimdm", *common, "--out", str(out), f"data.root={data_root}",
                      f"train.parallel={parallel}"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    latest = out / "checkpoints" / "latest"
    t0 = time.time()
    while not (latest.exists() and "step_00000005" in latest.read_text()):
        assert proc.poll() is None and time.time() - t0 < 240, "run ended or stalled before its checkpoint"
        time.sleep(0.005)
    for pid in [proc.pid, *descendants(proc.pid)]:  # the whole job dies at once, as on a lost node
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()
    assert "step_00000005" in latest.read_text()
    res = run(out, data_root, f"train.parallel={parallel}", common=common)
    assert "resumed from" in res.stdout + res.stderr


def assert_bit_identical_after_step_5(a: Path, b: Path):
    got, ref = metrics(a), metrics(b)
    assert [r["loss"] for r in got[5:]] == [r["loss"] for r in ref[5:]]
    wa, wb = weights(a), weights(b)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_ddp_killed_after_checkpoint_resumes_bit_identically(ddp, tmp_path, data_root):
    kill_after_checkpoint_and_resume(tmp_path, data_root, COMMON, "ddp")
    assert_bit_identical_after_step_5(tmp_path, ddp)


def test_a_ddp_checkpoint_loads_in_one_process(ddp):
    from trimdm.train.run import load_run

    loaded = load_run(ddp)
    assert loaded.checkpoint.name == "step_00000010"


# -- the tri-modal recipe ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tri_single(tmp_path_factory, data_root):
    out = tmp_path_factory.mktemp("tri_single")
    run(out, data_root, nproc=1, common=TRI)
    return out


@pytest.fixture(scope="module")
def tri_fsdp(tmp_path_factory, data_root):
    out = tmp_path_factory.mktemp("tri_fsdp")
    run(out, data_root, "train.parallel=fsdp", common=TRI)
    return out


def test_some_rank_draws_no_audio_rows(tri_single):
    """The runs below include steps where one rank's rows hold no audio (the case that desynchronised
    the ranks' gradients): read back from the run's own data order."""
    from trimdm.config import Config
    from trimdm.data.loader import MixtureLoader, row_shares
    from trimdm.data.prepare import prepare
    from trimdm.diffusion.masking import clean_rows_per_batch
    from trimdm.streams import stream_seed
    from trimdm.train.run import load_run

    cfg = Config.from_json(tri_single / "config.json").derive()
    data = prepare(cfg.data, log=lambda *a: None, evaluation=False)
    vocab = load_run(tri_single).vocab
    sources = data.sources("train", vocab, cfg.data.seq_len)
    mix = {"text": cfg.data.mix.text, "image_text": cfg.data.mix.image_text, "audio_text": cfg.data.mix.audio_text}
    shares = row_shares(mix, data.tokens_per_row(cfg.data.seq_len))
    rows = clean_rows_per_batch(cfg.diffusion.antimask, cfg.derived.batch)
    loaders = [MixtureLoader(sources, shares, rows, stream_seed(cfg.train.seed, "data"), r, 2) for r in (0, 1)]
    lacking = [step for step in range(cfg.derived.steps)
               if any(not bool((loader.next()[:, 0] == vocab.TASK_audio_text).any()) for loader in loaders)]
    assert lacking, "no step leaves a rank without audio rows: the test would not cover the case"


def test_tri_modal_ddp_matches_single_process(tri_single, tmp_path, data_root):
    run(tmp_path, data_root, "train.parallel=ddp", common=TRI)
    assert_matches(tmp_path, tri_single)


def test_tri_modal_fsdp_matches_single_process(tri_single, tri_fsdp):
    assert_matches(tri_fsdp, tri_single)


def test_tri_modal_fsdp_killed_after_checkpoint_resumes_bit_identically(tri_fsdp, tmp_path, data_root):
    kill_after_checkpoint_and_resume(tmp_path, data_root, TRI, "fsdp")
    assert_bit_identical_after_step_5(tmp_path, tri_fsdp)


@pytest.fixture(scope="module")
def corpus_args(tmp_path_factory):
    """A corpus of the user's own data (webdataset image-text and jsonl text) and the custom recipe shrunk."""
    import corpora
    from trimdm.config import CorpusConfig
    from trimdm.data.ingest import prepare_corpus

    root = tmp_path_factory.mktemp("corpus_sources")
    corpora.write_image_tars(root / "tars", 8, 4)
    (root / "docs.jsonl").write_text("".join(json.dumps({"text": corpora.document(i)}) + "\n" for i in range(300)))
    out = root / "corpus"
    settings = CorpusConfig().override(["tokenizers.image.resolution=16", "tokenizers.image.downsample=4",
                                        "tokenizers.image.steps=3", "tokenizers.image.batch=4",
                                        "tokenizers.text.vocab=300", "ingest.shard_samples=8"])
    prepare_corpus(out, {"text": [str(root / "docs.jsonl")], "image_text": [str(root / "tars" / "shard-*.tar")]},
                   settings, log=lambda *a: None)
    return ["train", "--recipe", "custom", f"data.corpus={out}", "model.d_model=32", "model.n_layers=2",
            "model.n_heads=2", "data.seq_len=64", "train.batch_size=8", "optim.base.batch=8", "train.tokens=5120",
            "optim.base.tokens=5120", "optim.base.warmup_tokens=0", "train.dtype=fp32", "train.ckpt_every=5",
            "train.threads=1", "train.log_every=1", "diffusion.conditional=0.5"]


def test_a_corpus_of_own_data_trains_under_ddp_as_in_one_process(corpus_args, tmp_path, data_root):
    run(tmp_path / "single", data_root, nproc=1, common=corpus_args)
    run(tmp_path / "ddp", data_root, "train.parallel=ddp", common=corpus_args)
    assert_matches(tmp_path / "ddp", tmp_path / "single")
