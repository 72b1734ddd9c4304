"""lm-evaluation-harness adapter (method §9): a trimdm run as lm-eval's model `trimdm`, and `trimdm lm-eval`.

Owns `TrimdmLM` (an `lm_eval.api.model.LM`, registered in lm-eval's model registry as "trimdm"), the
text rows of lm-eval's requests, and `run_lm_eval` (lm-eval's own command line with `--model trimdm`
put in). lm-eval 0.4 finds models only in its registry and has no plugin hook, so this module must be
imported before lm-eval parses its command line: `trimdm lm-eval ARGS` does that. The module is not
called `lm_eval.py`, which would shadow the package inside this folder. Does not own the estimators
(diffusion/likelihood.py), the question rows and their scoring (multiple_choice.py: the
`question_estimates` that `trimdm eval --mc` calls) or decoding (sample/).

The requests (docs/eval.md):
- loglikelihood (context, continuation): LLaDA's Monte-Carlo conditional likelihood (Nie et al. 2025,
  Eq. 6) on the row `TASK_text BOS_text context continuation EOS_text`, the answer span being the
  continuation and its EOS (the continuation is scored as the end of the text, as multiple choice
  scores an option). Requests with the same task, doc_id and context are the options of one question:
  one call, shared draws, seeded with (seed, doc_id), so a task whose docs are the lines of a
  `trimdm eval --mc` file gets the very numbers `run_multiple_choice` gives (same seed, same samples).
  A context too long for `data.seq_len` loses its oldest tokens (counted in a warning).
  is_greedy: every answer position masked at once, each argmax is the token (`greedy_match`): exact
  for one-token continuations, a one-step proxy for longer ones (the sampler reveals a few tokens per
  step and conditions the rest on them).
- loglikelihood_rolling (text): the negative NELBO of the text in nats, summed over its tokens and the
  final EOS_text, by the same estimator. A text longer than a row is cut into windows: each predicts
  the tokens after the previous window's with as many preceding tokens as fit kept clean as context
  (`rolling_windows`); the sum over windows bounds log p(text) from below (chain rule, one bound per
  factor). Window j draws from (seed, doc_id, j), the first from (seed, doc_id): a text that fits one
  window scores exactly as loglikelihood("", text).
- generate_until (context, gen_kwargs): `TASK_text BOS_text context MASK_text × n` decoded by the
  sampler with the run's `sample.text` settings (as `trimdm generate --task text`), n = min(max_gen_toks,
  gen_len); cut at the first EOS_text, then at the first stop sequence of `until`. A diffusion canvas
  is decoded whole, so stop sequences cut the text but do not shorten the decode. lm-eval's gen_kwargs
  rule applies: without do_sample or a temperature the decode is greedy (temperature 0 and no
  confidence noise); top_k and top_p are honoured.

batch_size (lm-eval's flag) counts requests per forward pass: mc_samples rows for a likelihood request,
one row for a generation request.
"""
from __future__ import annotations

import logging
import sys
from dataclasses import replace

import lm_eval.models  # noqa: F401  lm-eval's own models stay available: its registry imports them only when empty
import numpy as np
import torch
from lm_eval.__main__ import cli_evaluate
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model
from lm_eval.models.utils import normalize_gen_kwargs
from tqdm import tqdm

from trimdm.diffusion.likelihood import greedy_match
from trimdm.eval.multiple_choice import question_estimates, question_rows
from trimdm.sample.tasks import Canvas, Tasks
from trimdm.train.run import load_run

log = logging.getLogger(__name__)
LM_EVAL_SUBCOMMANDS = ("run", "ls", "validate")


def lm_eval_argv(args: list[str]) -> list[str]:
    """lm-eval's command line for `trimdm lm-eval ARGS`: its `run` subcommand with `--model trimdm` and
    `--device auto` (CUDA when there is one) unless ARGS name a model or device; `ls` and `validate`
    pass as they are. Every other flag passes through unchanged, in order."""
    args = list(args)
    if args[:1] and args[0] in ("ls", "validate"):
        return args
    if args[:1] == ["run"]:
        args = args[1:]
    given = {a.split("=", 1)[0] for a in args if a.startswith("-")}
    extra = [] if given & {"--model", "-M"} else ["--model", "trimdm"]
    extra += [] if "--device" in given else ["--device", "auto"]
    return ["run", *extra, *args]


def run_lm_eval(args: list[str]) -> None:
    """Run lm-eval's own command line (`lm_eval.__main__.cli_evaluate`, which reads sys.argv) with the
    model `trimdm` registered."""
    saved = sys.argv
    sys.argv = ["lm-eval", *lm_eval_argv(args)]
    try:
        cli_evaluate()
    finally:
        sys.argv = saved


def rolling_windows(n_tokens: int, width: int) -> list[tuple[int, int, int]]:
    """Windows (context start, start, end) over a text of n_tokens for rows holding `width` text tokens:
    the predicted spans [start, end) tile [0, n_tokens) (an empty text: one empty window); the first
    predicts up to `width` tokens, each later one ⌈width/2⌉ new tokens with the preceding tokens as
    context, as many as fit (context start = max(0, end − width))."""
    if width < 2:
        raise ValueError(f"rows of {width} text tokens leave no room for rolling windows")
    out, start = [], 0
    while True:
        end = min(n_tokens, start + (width if start == 0 else width - width // 2))
        out.append((max(0, end - width), start, end))
        if end >= n_tokens:
            return out
        start = end


def window_row(vocab, ids: np.ndarray, window: tuple[int, int, int],
               seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One rolling window as a row (1, seq_len) and its answer mask: `TASK_text [BOS_text] context
    tokens [EOS_text] PAD...`, BOS where the context reaches the text's start (a later window continues
    a document, as packed training rows do), EOS after the text's last token; the answer is the
    window's new tokens and that EOS."""
    cs, s, e = window
    last = e == len(ids)
    head = [vocab.TASK_text] + ([vocab.BOS_text] if cs == 0 else [])
    body = [*head, *ids[cs:e].tolist(), *([vocab.EOS_text] if last else [])]
    assert len(body) <= seq_len, (len(body), seq_len)
    row = torch.full((1, seq_len), vocab.PAD_text, dtype=torch.long)
    row[0, :len(body)] = torch.tensor(body, dtype=torch.long)
    answer = torch.zeros((1, seq_len), dtype=torch.bool)
    answer[0, len(head) + s - cs:len(body)] = True
    return row, answer


def question_groups(requests) -> list[tuple[int, str, list[int]]]:
    """lm-eval's loglikelihood requests as questions: (draw id, context, request indices), one per
    (task, doc_id, context). The draw id is the doc_id, or for a request without one (lm-eval's own
    requests all have one) the index of the group's first request."""
    groups: dict[tuple, tuple[int, list[int]]] = {}
    for i, r in enumerate(requests):
        doc = getattr(r, "doc_id", None)
        key = (getattr(r, "task_name", None), doc, r.args[0])
        groups.setdefault(key, (doc if doc is not None else i, []))[1].append(i)
    return [(draw, key[2], members) for key, (draw, members) in groups.items()]


def cut_at_stop(text: str, until: list[str]) -> str:
    """`text` up to the first occurrence of any non-empty stop sequence."""
    cuts = [i for i in (text.find(s) for s in until if s) if i >= 0]
    return text[:min(cuts)] if cuts else text


def _requests_per_pass(batch_size) -> int:
    text = str(batch_size)
    if text.startswith("auto"):
        raise ValueError("batch_size=auto is not supported by trimdm: give the requests per forward pass "
                         "(each likelihood request is mc_samples rows)")
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"batch_size={batch_size!r}: expected a positive integer")
    return int(text)


def _device(device) -> str:
    name = "auto" if device in (None, "", "auto") else str(device)
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={name} but CUDA is not available here; pass --device cpu (or auto)")
    return name


@register_model("trimdm")
class TrimdmLM(LM):
    """A trimdm run for lm-eval. model_args: run=DIR (a run or checkpoint directory, `load_run`),
    mc_samples=64 (Monte-Carlo samples per likelihood request), seed=0 (of the draws and the sampler),
    gen_len (longest generation canvas; default the run's sample.gen_len)."""

    def __init__(self, run: str | None = None, mc_samples: int = 64, seed: int = 0, gen_len: int | None = None,
                 batch_size=1, max_batch_size=None, device=None, trust_remote_code=None, **unknown):
        # batch_size, max_batch_size and device come from lm-eval's own flags; trust_remote_code (which
        # --trust_remote_code adds to model_args) has nothing to trust here
        super().__init__()
        if unknown:
            raise ValueError(f"unknown model_args {sorted(unknown)}; trimdm takes run, mc_samples, seed, gen_len")
        if not run:
            raise ValueError("--model_args needs run=DIR (a trimdm run or checkpoint directory)")
        self.mc_samples, self.seed = int(mc_samples), int(seed)
        if self.mc_samples < 1:
            raise ValueError(f"mc_samples={mc_samples}: expected a positive integer")
        self.batch_size = _requests_per_pass(batch_size)
        self.loaded = load_run(run, device=_device(device))
        self._device = self.loaded.device
        self.vocab, self.seq_len = self.loaded.vocab, self.loaded.cfg.data.seq_len
        self.gen_len = int(gen_len) if gen_len is not None else self.loaded.cfg.sample.gen_len
        if not 1 <= self.gen_len <= self.seq_len - 2:
            raise ValueError(f"gen_len={self.gen_len}: expected 1..{self.seq_len - 2} (data.seq_len - 2)")

    def _encode(self, text: str) -> np.ndarray:
        return self.loaded.tokenizer.encode(text) if text else np.zeros(0, np.int64)

    def _text_rows(self, context: str, continuations: list[str]) -> tuple[torch.Tensor, torch.Tensor, bool]:
        """The rows of one question (multiple_choice.question_rows), the context's oldest tokens dropped
        where it does not fit; the flag says whether it was cut."""
        ctx, opts = self._encode(context), [self._encode(c) for c in continuations]
        room = self.seq_len - 3 - max(len(o) for o in opts)
        if room < 0:
            raise ValueError(f"a continuation of {max(len(o) for o in opts)} tokens does not fit a row of "
                             f"data.seq_len={self.seq_len} (3 positions go to TASK, BOS and EOS)")
        cut = len(ctx) > room
        ctx = ctx[len(ctx) - room:] if cut else ctx
        rows, answers = question_rows(self.vocab, ctx, opts, "text", None, self.seq_len, "lm-eval request")
        return rows, answers, cut

    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        out: list = [None] * len(requests)
        rows_per_pass, cut = self.batch_size * self.mc_samples, 0
        groups = question_groups(requests)
        for draw, context, members in tqdm(groups, disable=disable_tqdm, desc="trimdm loglikelihood"):
            rows_KL, answer_KL, was_cut = self._text_rows(context, [requests[i].args[1] for i in members])
            cut += was_cut
            est_KN, _ = question_estimates(self.loaded, rows_KL, answer_KL, self.mc_samples, (self.seed, draw),
                                           rows_per_pass)
            greedy_K = greedy_match(self.loaded.model, self.vocab, rows_KL, answer_KL, rows_per_pass,
                                    self.loaded.device, self.loaded.autocast_dtype)
            for k, i in enumerate(members):
                out[i] = (float(est_KN[k].mean()), bool(greedy_K[k]))
                self.cache_hook.add_partial("loglikelihood", requests[i].args, out[i])
        if cut:
            log.warning("trimdm: %d contexts were longer than data.seq_len=%d allows; their oldest tokens "
                        "were dropped", cut, self.seq_len)
        return out

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        out = []
        rows_per_pass = self.batch_size * self.mc_samples
        for i, r in enumerate(tqdm(requests, disable=disable_tqdm, desc="trimdm loglikelihood_rolling")):
            doc = r.doc_id if getattr(r, "doc_id", None) is not None else i
            ids = self._encode(r.args[0])
            total = 0.0
            for j, window in enumerate(rolling_windows(len(ids), self.seq_len - 3)):
                row, answer = window_row(self.vocab, ids, window, self.seq_len)
                key = (self.seed, doc) if j == 0 else (self.seed, doc, j)
                est, _ = question_estimates(self.loaded, row, answer, self.mc_samples, key, rows_per_pass)
                total += float(est[0].mean())
            out.append(total)
            self.cache_hook.add_partial("loglikelihood_rolling", r.args, total)
        return out

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        out: list = [None] * len(requests)
        settings: dict[tuple, list[int]] = {}
        stops = []
        for i, r in enumerate(requests):
            kw = normalize_gen_kwargs(r.args[1] or {}, self.gen_len)
            stops.append(kw["until"])
            # lm-eval's rule: greedy unless do_sample (or a positive temperature, which sets it)
            t = float(kw.get("temperature", self.loaded.cfg.sample.text.temperature)) if kw["do_sample"] else 0.0
            key = (min(int(kw["max_gen_toks"]), self.gen_len), t, int(kw.get("top_k") or 0),
                   float(kw.get("top_p") or 1.0))
            settings.setdefault(key, []).append(i)
        for key, members in tqdm(settings.items(), disable=disable_tqdm, desc="trimdm generate_until"):
            texts = self._generate([requests[i].args[0] for i in members], *key)
            for i, text in zip(members, texts):
                out[i] = cut_at_stop(text, stops[i])
                self.cache_hook.add_partial("generate_until", requests[i].args, out[i])
        return out

    def _generate(self, contexts: list[str], n: int, temperature: float, top_k: int, top_p: float) -> list[str]:
        """Decode `TASK_text BOS_text context MASK_text × n` for every context (each cut to its newest
        seq_len − 2 − n tokens), in batches of batch_size rows; the text up to the first EOS_text."""
        v, keep = self.vocab, self.seq_len - 2 - n
        ids = [self._encode(c) for c in contexts]
        if any(len(x) > keep for x in ids):
            log.warning("trimdm: %d of %d generation contexts lose their oldest tokens (a canvas of %d tokens "
                        "leaves %d for the context)", sum(len(x) > keep for x in ids), len(ids), n, keep)
        ids = [x[len(x) - keep:] if len(x) > keep else x for x in ids]
        rows = torch.full((len(ids), max(len(x) for x in ids) + 2 + n), v.PAD_text, dtype=torch.long)
        for b, x in enumerate(ids):
            rows[b, :len(x) + 2 + n] = torch.tensor([v.TASK_text, v.BOS_text, *x.tolist(), *[v.MASK_text] * n])
        s = self.loaded.cfg.sample
        sample = replace(s, text=replace(s.text, temperature=temperature), top_k=top_k, top_p=top_p,
                         confidence_noise=s.confidence_noise if temperature > 0 else 0.0)
        decoded = Tasks(self.loaded, sample, batch_size=self.batch_size).run(Canvas(rows, None, "text"), self.seed)
        texts = []
        for b, x in enumerate(ids):
            span = decoded[b, 2 + len(x):2 + len(x) + n].tolist()
            span = span[:span.index(v.EOS_text)] if v.EOS_text in span else span
            texts.append(self.loaded.tokenizer.decode([t for t in span if t < v.n_text]))
        return texts
