"""Multiple-choice evaluation by Monte-Carlo conditional likelihood (method §9; LLaDA, Nie et al. 2025).

Owns: the JSONL question format and its reader, the row layouts of a question's candidates,
`question_estimates` (one question scored; the lm-evaluation-harness adapter, lm_harness.py, scores its
requests with it too) and `run_multiple_choice` (accuracy of a run on a file). The estimator of log p(answer | context), with its
shared draws and standard error, is diffusion/likelihood.py's; the tinyworld question writer is
data/tinyworld/questions.py's. Does not own the network, the vocabulary (JointVocab) or the row layouts
themselves (sequence/layout.py).

Layouts of a candidate (the answer span is the option's tokens plus the EOS_text that follows, so an
option is scored as a complete text: without EOS an option that is a prefix of another would win
by having fewer tokens to pay for):
- text:    `TASK_text BOS_text context option EOS_text PAD...`; context and option are tokenised
           separately and concatenated, so options that continue the context carry their own leading
           space (the lm-eval-harness convention). Trailing PAD is excluded from attention, so this is
           the short canvas the sampler uses for text.
- image / audio: `paired_row` with text = context + option: `TASK_m BOS_text context option EOS_text
           BOS_m media EOS_m PAD...`, media clean; "which caption matches this image / utterance".
The default prediction is the argmax of the total estimate; the length-normalised (per answer token)
score is reported beside it.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from trimdm.data.media import read_audio, read_image
from trimdm.diffusion.likelihood import draw_uniforms, mc_answer_loglik
from trimdm.eval.stats import binomial_se, stratified_stderr
from trimdm.sequence.layout import paired_row
from trimdm.tokenizers.vocab import JointVocab

MEDIA_KEYS = ("image", "audio")


# -- the question file ---------------------------------------------------------------------------------
@dataclass
class Question:
    """One checked line of a question file."""

    line: int
    context: str
    options: list[str]
    answer: int
    kind: str  # "text", "image" or "audio"
    media: np.ndarray | None = None  # image: uint8 (H, W, 3); audio: float32 wave at the codec's rate
    media_path: str | None = None  # as written in the file


def _load_media(kind: str, file: Path, where: str, sample_rate: int) -> np.ndarray:
    try:
        return read_image(file) if kind == "image" else read_audio(file, sample_rate)
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None


def read_questions(path: str | Path, sample_rate: int = 16_000) -> list[Question]:
    """Parse and check a multiple-choice JSONL file; media are decoded (audio resampled to sample_rate).

    One JSON object per line: {"context": str, "options": [str, ...] (≥ 2, non-empty), "answer": int}
    plus at most one of "image": PNG path or "audio": WAV path, relative to the file's folder. Other
    keys are ignored. Blank lines are skipped. Any problem is a ValueError naming the file and line."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise ValueError(f"{path}: cannot read multiple-choice file ({e})") from None
    out = []
    for line_no, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}:{line_no}"
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{where}: not JSON ({e.msg})") from None
        if not isinstance(rec, dict):
            raise ValueError(f"{where}: expected a JSON object, got {type(rec).__name__}")
        missing = [k for k in ("context", "options", "answer") if k not in rec]
        if missing:
            raise ValueError(f"{where}: missing key(s) {', '.join(missing)}")
        context, options, answer = rec["context"], rec["options"], rec["answer"]
        if not isinstance(context, str):
            raise ValueError(f"{where}: 'context' must be a string, got {type(context).__name__}")
        if not isinstance(options, list) or len(options) < 2 or not all(isinstance(o, str) and o for o in options):
            raise ValueError(f"{where}: 'options' must be a list of at least 2 non-empty strings")
        if not isinstance(answer, int) or isinstance(answer, bool) or not 0 <= answer < len(options):
            raise ValueError(f"{where}: 'answer' must be an int in [0, {len(options)}), got {answer!r}")
        media_keys = [k for k in MEDIA_KEYS if k in rec]
        if len(media_keys) > 1:
            raise ValueError(f"{where}: a question has at most one of 'image' and 'audio'")
        q = Question(line_no, context, options, answer, media_keys[0] if media_keys else "text")
        if media_keys:
            rel = rec[q.kind]
            if not isinstance(rel, str) or not rel:
                raise ValueError(f"{where}: '{q.kind}' must be a path string")
            file = path.parent / rel
            if not file.is_file():
                raise ValueError(f"{where}: {q.kind} file {file} not found")
            q.media_path = rel
            q.media = _load_media(q.kind, file, where, sample_rate)
        out.append(q)
    if not out:
        raise ValueError(f"{path}: no questions")
    return out


def question_rows(vocab: JointVocab, context_ids: np.ndarray, option_ids: list[np.ndarray], kind: str,
                  media_ids: np.ndarray | None, seq_len: int, where: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Candidate rows (K, seq_len) and their answer masks for one question (layouts: module docstring)."""
    context_ids = np.asarray(context_ids, dtype=np.int64)
    rows, answers = [], []
    for k, opt in enumerate(option_ids):
        opt = np.asarray(opt, dtype=np.int64)
        if kind == "text":
            n = 3 + len(context_ids) + len(opt)
            if n > seq_len:
                raise ValueError(f"{where}: option {k} gives a text row of {n} tokens ({len(context_ids)} context + "
                                 f"{len(opt)} option + 3 specials) but data.seq_len={seq_len}")
            row = np.full(seq_len, vocab.PAD_text, dtype=np.int64)
            row[:n] = np.concatenate([[vocab.TASK_text, vocab.BOS_text], context_ids, opt, [vocab.EOS_text]])
        else:
            try:
                row = paired_row(vocab, kind, np.concatenate([context_ids, opt]), media_ids, seq_len)
            except ValueError as e:
                raise ValueError(f"{where}: option {k}: {e}") from None
        start = 2 + len(context_ids)  # after TASK and BOS_text
        answer = np.zeros(seq_len, dtype=bool)
        answer[start:start + len(opt) + 1] = True  # the option and its EOS_text
        rows.append(row)
        answers.append(answer)
    return torch.from_numpy(np.stack(rows)), torch.from_numpy(np.stack(answers))


def question_estimates(loaded, rows_KL: torch.Tensor, answer_KL: torch.Tensor, n_samples: int,
                       key: tuple[int, ...], batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """The Monte-Carlo estimates of one question: (est_KN, level_u_N), est_KN[k, n] sample n of
    log p(answer_k | rest of row k) and level_u_N the stratified level uniforms (for `stratified_stderr`).

    The K candidates share their draws, which come from a generator seeded with `key` (a tuple of ints:
    `run_multiple_choice` uses (seed, question index), eval/lm_harness.py (seed, lm-eval's doc_id)).
    `batch_size` rows per forward pass."""
    n_answer = answer_KL.sum(1).numpy()
    level_u, order_u = draw_uniforms(n_samples, int(n_answer.max()), np.random.default_rng(list(key)))
    est_KN = mc_answer_loglik(loaded.model, loaded.vocab, rows_KL, answer_KL, level_u, order_u, batch_size,
                              loaded.device, loaded.autocast_dtype).numpy()
    return est_KN, level_u


# -- a run on a file -----------------------------------------------------------------------------------
def _media_ids(loaded, q: Question, where: str) -> np.ndarray | None:
    if q.kind == "text":
        return None
    tok = loaded.media_tokenizers.get(q.kind)
    if tok is None:
        raise ValueError(f"{where}: the run has no {q.kind} tokenizer")
    try:
        codes = tok.encode(q.media)
    except ValueError as e:  # e.g. an image of another size than the tokenizer's
        raise ValueError(f"{where}: {q.kind} {q.media_path}: {e}") from None
    return loaded.vocab.image_ids(codes) if q.kind == "image" else loaded.vocab.audio_ids(codes)


def _accuracy(per: list[dict], key: str) -> float:
    return float(np.mean([p[key] for p in per]))


def run_multiple_choice(loaded, path: str | Path, n_samples: int = 64, seed: int = 0, batch_size: int = 128) -> dict:
    """Score every question of a JSONL file (format: `read_questions`) with a loaded run (`load_run`).

    Every question is read, tokenised and laid out before any scoring, so a bad line fails at once.
    Question q draws its shared uniforms from a generator seeded with (seed, q): results do not depend
    on batch_size or on other questions. Returns {"file", "questions", "accuracy", "accuracy_stderr",
    "accuracy_per_token", "chance", "n_samples", "seed", "by_kind", "mean_stderr", "seconds",
    "per_question"}; "accuracy" ranks by the total estimate, "accuracy_per_token" by the estimate per
    answer token (option tokens + EOS)."""
    if n_samples < 1 or batch_size < 1:
        raise ValueError(f"n_samples and batch_size must be >= 1, got {n_samples}, {batch_size}")
    t0 = time.time()
    path = Path(path)
    audio = loaded.media_tokenizers.get("audio")
    questions = read_questions(path, sample_rate=audio.sample_rate if audio is not None else 16_000)
    seq_len = loaded.cfg.data.seq_len
    encode = loaded.tokenizer.encode
    laid_out = []
    for q in questions:
        where = f"{path}:{q.line}"
        media = _media_ids(loaded, q, where)
        laid_out.append(question_rows(loaded.vocab, encode(q.context) if q.context else np.zeros(0, np.int64),
                                      [encode(o) for o in q.options], q.kind, media, seq_len, where))
    was_training = loaded.model.training
    loaded.model.eval()
    per = []
    for qi, (q, (rows_KL, answer_KL)) in enumerate(zip(questions, laid_out)):
        n_answer = answer_KL.sum(1).numpy()
        est_KN, level_u = question_estimates(loaded, rows_KL, answer_KL, n_samples, (seed, qi), batch_size)
        mean = est_KN.mean(1)
        se = np.array([stratified_stderr(e, level_u) for e in est_KN])
        pred, pred_tok = int(np.argmax(mean)), int(np.argmax(mean / n_answer))
        runner_up = int(np.argsort(-mean, kind="stable")[1])
        diff = est_KN[pred] - est_KN[runner_up]  # shared draws: the SE of the margin is small
        per.append({"line": q.line, "kind": q.kind, "answer": q.answer, "prediction": pred,
                    "correct": pred == q.answer, "prediction_per_token": pred_tok,
                    "correct_per_token": pred_tok == q.answer, "loglik": mean.tolist(), "stderr": se.tolist(),
                    "per_token": (mean / n_answer).tolist(), "answer_tokens": n_answer.tolist(),
                    "margin": float(diff.mean()),
                    "margin_stderr": stratified_stderr(diff, level_u)})
    loaded.model.train(was_training)
    by_kind = {}
    for kind in ("text", "image", "audio"):
        sub = [p for p in per if p["kind"] == kind]
        if sub:
            by_kind[kind] = {"questions": len(sub), "accuracy": _accuracy(sub, "correct"),
                             "accuracy_per_token": _accuracy(sub, "correct_per_token"),
                             "chance": float(np.mean([1 / len(p["loglik"]) for p in sub]))}
    acc = _accuracy(per, "correct")
    return {"file": str(path), "questions": len(per), "accuracy": acc,
            "accuracy_stderr": binomial_se(acc, len(per)),
            "accuracy_per_token": _accuracy(per, "correct_per_token"),
            "chance": float(np.mean([1 / len(q.options) for q in questions])), "n_samples": n_samples,
            "seed": seed, "by_kind": by_kind, "mean_stderr": float(np.nanmean([s for p in per for s in p["stderr"]])),
            "seconds": round(time.time() - t0, 2), "per_question": per}
