"""Unit tier for the lm-evaluation-harness adapter (eval/lm_harness.py): the command line handed to
lm-eval, rolling windows and their rows, how requests become questions, stop sequences, model_args.
The adapter on a trained run is tests/smoke/test_lm_eval.py's."""
import numpy as np
import pytest
import torch
from lm_eval.api.instance import Instance

from trimdm import cli
from trimdm.eval import lm_harness
from trimdm.eval.lm_harness import (TrimdmLM, cut_at_stop, lm_eval_argv, question_groups, rolling_windows,
                                    window_row)
from trimdm.tokenizers.vocab import JointVocab

V = JointVocab(n_text=50)


def test_lm_eval_argv_puts_in_the_model_and_device_only_when_not_given():
    args = ["--model_args", "run=r,mc_samples=8", "--tasks", "a", "b", "--batch_size", "4"]
    assert lm_eval_argv(args) == ["run", "--model", "trimdm", "--device", "auto", *args]
    assert lm_eval_argv(["run", *args]) == lm_eval_argv(args)
    assert lm_eval_argv(["--model", "hf", "--device", "cpu", "-t", "x"]) == ["run", "--model", "hf", "--device",
                                                                             "cpu", "-t", "x"]
    assert lm_eval_argv(["-M=hf", "--device=cuda:1"]) == ["run", "-M=hf", "--device=cuda:1"]
    assert lm_eval_argv(["ls", "tasks"]) == ["ls", "tasks"]
    assert lm_eval_argv(["-h"])[-1] == "-h"


def test_trimdm_lm_eval_passes_every_flag_in_order(monkeypatch):
    seen = []
    monkeypatch.setattr(lm_harness, "run_lm_eval", seen.append)
    argv = ["lm-eval", "--model_args", "run=r", "--tasks", "a", "--num_fewshot", "5", "-o", "out", "x=1", "--log_samples"]
    assert cli.main(argv) == 0
    assert seen == [argv[1:]]


@pytest.mark.parametrize("n", [0, 1, 9, 10, 11, 14, 15, 16, 47])
def test_rolling_windows_tile_the_text_with_the_longest_context_that_fits(n):
    width = 10
    windows = rolling_windows(n, width)
    assert windows[0][:2] == (0, 0) and windows[-1][2] == n
    for (cs, s, e), nxt in zip(windows, windows[1:] + [None]):
        assert 0 <= cs <= s <= e and e - cs <= width
        assert cs == max(0, e - width)  # as much preceding text as the row holds
        if nxt is not None:
            assert nxt[1] == e and s < e  # the predicted spans tile [0, n)
    assert sum(e - s for _, s, e in windows) == n
    assert len(windows) == (1 if n <= width else 1 + -(-(n - width) // 5))
    with pytest.raises(ValueError, match="no room"):
        rolling_windows(5, 1)


def test_window_row_scores_the_new_tokens_and_the_final_eos():
    ids = np.arange(3, 28)  # 25 text tokens; rows of 13 hold 10
    rows = [window_row(V, ids, w, 13) for w in rolling_windows(len(ids), 10)]
    assert len(rows) == 4
    scored = []
    for (row, answer), (cs, s, e) in zip(rows, rolling_windows(len(ids), 10)):
        r = row[0].tolist()
        assert r[0] == V.TASK_text and (r[1] == V.BOS_text) == (cs == 0)
        body = r[2:] if cs == 0 else r[1:]
        assert body[:e - cs] == ids[cs:e].tolist()
        scored += row[answer].tolist()
        assert (e == len(ids)) == (V.EOS_text in r)
    assert scored == [*ids.tolist(), V.EOS_text]  # every token once, then the EOS
    row, answer = window_row(V, np.zeros(0, np.int64), (0, 0, 0), 13)
    assert row[0, :3].tolist() == [V.TASK_text, V.BOS_text, V.EOS_text] and row[answer].tolist() == [V.EOS_text]


def _req(context, continuation, doc_id, task="t", idx=0):
    return Instance("loglikelihood", {}, (context, continuation), idx, (task, doc_id, 1))


def test_question_groups_are_task_doc_and_context():
    reqs = [_req("c", " a", 0), _req("c", " b", 0, idx=1), _req("d", " a", 1), _req("c", " a", 0, task="u"),
            _req("c2", " a", 0), _req("c", " c", 0, idx=2)]
    assert question_groups(reqs) == [(0, "c", [0, 1, 5]), (1, "d", [2]), (0, "c", [3]), (0, "c2", [4])]
    no_doc = [_req("x", " a", None), _req("x", " b", None), _req("y", " a", None)]
    assert question_groups(no_doc) == [(0, "x", [0, 1]), (2, "y", [2])]


def test_cut_at_stop_takes_the_earliest_stop():
    assert cut_at_stop("abc\n\nQ: def", ["Q:", "\n\n"]) == "abc"
    assert cut_at_stop("abc", ["x", ""]) == "abc" and cut_at_stop("abc", []) == "abc"
    assert cut_at_stop("xabc", ["x"]) == ""


@pytest.mark.parametrize("kwargs,message", [
    ({}, "needs run=DIR"),
    ({"run": "r", "pretrained": "gpt2"}, r"unknown model_args \['pretrained'\]"),
    ({"run": "r", "mc_samples": 0}, "mc_samples=0"),
    ({"run": "r", "batch_size": "auto"}, "batch_size=auto is not supported"),
    ({"run": "r", "batch_size": "0"}, "expected a positive integer"),
])
def test_model_args_are_checked_before_loading(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TrimdmLM(**kwargs)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_a_cuda_device_without_cuda_is_an_error():
    with pytest.raises(ValueError, match="CUDA is not available"):
        TrimdmLM(run="r", device="cuda:0")
