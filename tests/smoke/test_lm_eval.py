"""Smoke tier for the lm-evaluation-harness adapter (eval/lm_harness.py) on the tiny tri-modal run:
`trimdm lm-eval` runs lm-eval's own CLI offline on the shipped KJV cloze task and reports the accuracy
`trimdm eval --mc`'s scorer gives on the same file; loglikelihood_rolling and generate_until in-process."""
import glob
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from lm_eval.api.instance import Instance

from trimdm.diffusion.likelihood import greedy_match, masked_logits
from trimdm.eval.lm_harness import TrimdmLM
from trimdm.eval.multiple_choice import run_multiple_choice
from trimdm.sequence.layout import RowTables

ROOT = Path(__file__).resolve().parents[2]
TASKS = ROOT / "tests" / "lm_eval_tasks"
OFFLINE = {"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "HF_HUB_DISABLE_TELEMETRY": "1"}


def test_lm_eval_cli_reports_the_multiple_choice_scorers_accuracy(tiny_tri_run, tmp_path):
    _, run = tiny_tri_run
    env = {**os.environ, **OFFLINE, "HF_HOME": str(tmp_path / "hf"), "HF_DATASETS_CACHE": str(tmp_path / "hf_datasets"),
           "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "trimdm", "lm-eval", "--model_args", f"run={run},mc_samples=8", "--tasks",
           "trimdm_cloze", "--include_path", str(TASKS), "--output_path", str(tmp_path / "out"), "--batch_size",
           "4", "--log_samples"]
    t0 = time.time()
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    print(f"trimdm lm-eval on trimdm_cloze: {time.time() - t0:.1f} s")  # docs/LOG.md
    assert done.returncode == 0, done.stderr[-3000:]
    [results] = glob.glob(str(tmp_path / "out" / "*" / "results_*.json"))
    [samples] = glob.glob(str(tmp_path / "out" / "*" / "samples_trimdm_cloze_*.jsonl"))
    reported = json.loads(Path(results).read_text())["results"]["trimdm_cloze"]
    # the same questions, samples and seed through `trimdm eval --mc`'s scorer; 4 requests of 8 samples
    # per forward pass in lm-eval are 32 rows, so the two see the very same batches
    from trimdm.train.run import load_run

    mc = run_multiple_choice(load_run(run), TASKS / "trimdm_cloze.jsonl", n_samples=8, seed=0, batch_size=32)
    assert reported["sample_len"] == mc["questions"] == 16
    assert reported["acc,none"] == mc["accuracy"]
    logged = sorted((json.loads(line) for line in Path(samples).read_text().splitlines()), key=lambda s: s["doc_id"])
    for s, q in zip(logged, mc["per_question"]):
        assert [float(ll) for ll, _ in s["filtered_resps"]] == q["loglik"]


@pytest.fixture(scope="module")
def lm(tiny_tri_run):
    return TrimdmLM(run=str(tiny_tri_run[1]), mc_samples=8, batch_size=4, device="cpu")


def _request(kind, args, doc_id=0):
    return Instance(kind, {}, args, 0, ("t", doc_id, 1))


def test_rolling_is_the_texts_likelihood_window_by_window(lm):
    short = "In the beginning God created the heaven and the earth."
    [rolled] = lm.loglikelihood_rolling([_request("loglikelihood_rolling", (short,), doc_id=3)])
    [(whole, _)] = lm.loglikelihood([_request("loglikelihood", ("", short), doc_id=3)])
    assert rolled == whole < 0  # one window: the same row, the same draws
    long = " ".join([short] * 40)
    assert len(lm.loaded.tokenizer.encode(long)) > 2 * lm.seq_len  # three windows or more
    a, b = lm.loglikelihood_rolling([_request("loglikelihood_rolling", (long,), doc_id=0),
                                     _request("loglikelihood_rolling", (long,), doc_id=1)])
    assert np.isfinite(a) and a < rolled and a != b  # documents draw their own masks


def _gen(lm, context, *kwargs):
    return lm.generate_until([_request("generate_until", (context, kw)) for kw in kwargs])


def test_generate_until_cuts_at_the_first_stop_sequence(lm):
    context = "And God said, Let there be"
    sampled = {"max_gen_toks": 16, "do_sample": True, "temperature": 1.0}
    x0, x1 = _gen(lm, context, sampled, sampled)  # one canvas of two rows, seeded: the same draws every call
    assert x0 != x1 and len(x0) >= 4, (x0, x1)
    stop = next(x0[k:k + 2] for k in range(len(x0) // 2, len(x0) - 1) if x0.index(x0[k:k + 2]) > 0)
    cut = _gen(lm, context, {**sampled, "until": ["never", stop]}, {**sampled, "until": "\u2603"})
    assert cut == [x0[:x0.index(stop)], x1]
    # greedy (lm-eval's default without do_sample or temperature): deterministic, and at most n tokens
    greedy = _gen(lm, context, {"max_gen_toks": 16}, {"until": []})
    assert greedy == _gen(lm, context, {"max_gen_toks": 16}, {"until": []})
    [short] = _gen(lm, context, {"max_gen_toks": 2})
    assert 0 < len(lm.loaded.tokenizer.encode(short)) <= 2


def test_greedy_match_is_the_one_step_argmax(lm):
    v, tables = lm.vocab, RowTables.from_vocab(lm.vocab)
    ids = lm.loaded.tokenizer.encode("the heaven and the").tolist()
    row = torch.tensor([[v.TASK_text, v.BOS_text, *ids, 0, 0, 0, v.EOS_text, v.PAD_text]])
    answer = torch.zeros_like(row, dtype=torch.bool)
    answer[0, 2 + len(ids):2 + len(ids) + 4] = True
    noisy = torch.where(answer, v.MASK_text, row)
    [(_, _, heads, [logits])] = list(masked_logits(lm.loaded.model, tables, row, noisy, 8))
    sel, lo, hi, eos, _ = heads[0]
    best = logits.argmax(-1)
    row[answer] = torch.where(best == hi - lo, eos, best + lo)  # the model's own one-step answer
    assert greedy_match(lm.loaded.model, v, row, answer).tolist() == [True]
    other = row.clone()
    pos = int(answer[0].nonzero()[0])
    other[0, pos] = (row[0, pos] + 1) % v.n_text
    both = torch.cat([row, other])
    assert greedy_match(lm.loaded.model, v, both, torch.cat([answer, answer]), batch_size=1).tolist() == [True, False]
