"""Multiple-choice evaluation by Monte-Carlo conditional likelihood (SPEC §9; LLaDA, Nie et al. 2025).

Owns: the estimator of log p(answer | context) for an MDM, the JSONL question format and its reader,
the row layouts of a question's candidates, `run_multiple_choice` (accuracy of a run on a file), and
`write_tinyworld_mc` (a small question file from tinyworld's held-out split). Does not own the network,
the vocabulary (JointVocab), the row layouts themselves (sequence/layout.py) or the CLI.

Estimator. For a context c and an answer a of ℓ tokens, LLaDA's Eq. (6) bounds the likelihood:

    log p(a | c) ≥ E_{l ~ U{1..ℓ}} E_{M ⊂ answer, |M|=l, uniform} [(ℓ/l) Σ_{i∈M} log p_θ(a_i | c, a_∖M)]

(the MDM ELBO of the answer with the context clean, written with the number of masked tokens in place
of the continuous time). One sample draws l, masks l answer positions chosen uniformly without
replacement by their own modality's MASK token, and scores the masked ones; the mean of n samples is
an unbiased estimate of the bound. The n levels are stratified (one per slice of [0, 1), so the
mask ratios are covered evenly), and the standard error is read from neighbouring strata
(`stratified_stderr`).

Common random numbers: the options of one question share their draws. Sample s has one uniform
u_s ∈ [0, 1) and one vector v_s of uniforms, and an option of ℓ tokens maps them to
l = ⌊u_s·ℓ⌋ + 1 (uniform on 1..ℓ) and M = the l answer positions with the smallest uniforms, where the
answer's last position (the EOS every option ends with) takes v_s[0] and its i-th position (i < ℓ−1)
takes v_s[i+1] (a uniform random l-subset). Each option alone thus gets exactly the distribution
above; options of equal length get identical masks, and options of different lengths still share l/ℓ,
their common prefix and their EOS, so the noise of the masking largely cancels in their difference,
the quantity that decides the ranking. Measured (docs/multiple_choice.md): giving the EOS its own
shared uniform rather than aligning all positions from the start cut the variance of differences
between unequal-length options by about a third on KJV text; with disjoint option tokens at the same
positions shared draws can also help little or not at all.

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
import math
import os
import re
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from trimdm.sequence.layout import RowTables, paired_row
from trimdm.tokenizers.vocab import JointVocab

MEDIA_KEYS = ("image", "audio")


# -- the estimator -------------------------------------------------------------------------------------
def draw_uniforms(n_samples: int, max_answer: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The shared draws of one question: level_u_N (which l) and order_u_NA (which positions).

    The levels are stratified: sample n falls in its own slice [k/N, (k+1)/N) of [0, 1), the slices in
    random order. Each sample alone is still uniform, so the mean stays unbiased, but the N samples
    cover the mask ratios evenly instead of by chance; the ratio is most of the estimate's variance."""
    if n_samples < 1 or max_answer < 1:
        raise ValueError(f"need n_samples >= 1 and max_answer >= 1, got {n_samples}, {max_answer}")
    level_u_N = (rng.permutation(n_samples) + rng.random(n_samples)) / n_samples
    return level_u_N, rng.random((n_samples, max_answer))


def stratified_stderr(est_N: np.ndarray, level_u_N: np.ndarray) -> float:
    """Standard error of the mean of per-sample estimates drawn on stratified levels (`draw_uniforms`).

    With one sample per stratum the within-stratum variance is read from neighbours: the samples are
    sorted by level and paired, and Var(mean) ≈ Σ_pairs (y_a − y_b)² / (2·pairs·N). A difference also
    holds the two strata's difference in mean, so the estimate errs high, a little (neighbouring strata
    mostly map to the same l). std/√N, the i.i.d. formula, would ignore the stratification's gain."""
    n = len(est_N)
    if n < 2:
        return math.nan
    y = np.asarray(est_N, np.float64)[np.argsort(level_u_N, kind="stable")]
    d = y[1:2 * (n // 2):2] - y[0:2 * (n // 2):2]
    return math.sqrt(float((d ** 2).sum()) / (2 * (n // 2) * n))


def answer_masks(level_u_N: np.ndarray, order_u_NA: np.ndarray, n_answer: int) -> tuple[np.ndarray, np.ndarray]:
    """Map shared uniforms to one answer of n_answer positions: (masked_NA bool (N, n_answer), l_N).

    l = ⌊u·ℓ⌋ + 1 is uniform on 1..ℓ; the l positions with the smallest order uniforms are a uniform
    random l-subset, independent of l. The last position (the answer's EOS) takes column 0 and
    position i < ℓ−1 column i+1, so that options of different lengths share the uniform of their EOS."""
    if order_u_NA.shape[1] < n_answer:
        raise ValueError(f"order uniforms cover {order_u_NA.shape[1]} positions, the answer has {n_answer}")
    l_N = np.minimum(np.floor(level_u_N * n_answer).astype(np.int64) + 1, n_answer)
    columns = np.r_[1:n_answer, 0]
    ranks_NA = np.argsort(np.argsort(order_u_NA[:, columns], axis=1, kind="stable"), axis=1, kind="stable")
    return ranks_NA < l_N[:, None], l_N


@torch.no_grad()
def masked_logits(model, tables: RowTables, clean_RL: torch.Tensor, noisy_RL: torch.Tensor, batch_size: int,
                  device: torch.device | str = "cpu", autocast_dtype: torch.dtype | None = None):
    """The model's logits at the positions where `noisy_RL` differs from `clean_RL` (masked), in batches:
    yields (start row, clean rows cut to the batch's width, heads, logits per head), the heads being
    `RowTables.output_heads` (the output slices the loss trains: audio per residual level), so what is
    read is the model's own estimate."""
    autocast = (torch.autocast(torch.device(device).type, dtype=autocast_dtype) if autocast_dtype is not None
                else nullcontext())
    for start in range(0, len(clean_RL), batch_size):
        c, x = clean_RL[start:start + batch_size], noisy_RL[start:start + batch_size]
        pad = tables.pad(c)
        width = int((~pad).any(0).nonzero().max()) + 1  # drop the trailing columns that are padding in every row
        c, x, pad = c[:, :width], x[:, :width], pad[:, :width]
        heads = tables.output_heads(x, x != c)
        with autocast:
            logits = model(x.to(device), pad.to(device), heads=[(sel.to(device), lo, hi, eos)
                                                               for sel, lo, hi, eos, _ in heads])
        yield start, c, heads, logits


def mc_answer_loglik(model, vocab: JointVocab, rows_KL: torch.Tensor, answer_KL: torch.Tensor,
                     level_u_N: np.ndarray, order_u_NA: np.ndarray, batch_size: int = 128,
                     device: torch.device | str = "cpu", autocast_dtype: torch.dtype | None = None) -> torch.Tensor:
    """Per-sample estimates (K, N) float64 of log p(answer_k | rest of row k) for K candidate rows.

    rows_KL: clean ids (right-padded with PAD_text); answer_KL: bool, the answer positions of each row
    (maskable positions: content or EOS). Sample n of every row uses the shared uniforms
    (level_u_N[n], order_u_NA[n]) through `answer_masks`, over the answer positions in row order.
    The mean over N estimates LLaDA's bound; see the module docstring."""
    tables = RowTables.from_vocab(vocab)
    rows_KL, answer_KL = rows_KL.cpu(), answer_KL.cpu().bool()
    if rows_KL.shape != answer_KL.shape or rows_KL.ndim != 2:
        raise ValueError(f"rows {tuple(rows_KL.shape)} and answer masks {tuple(answer_KL.shape)} must be equal 2-D")
    if bool((answer_KL & ~tables.maskable(rows_KL)).any()):
        raise ValueError("answer positions must be maskable (content tokens or EOS), never TASK/BOS/PAD")
    level_u_N, order_u_NA = np.asarray(level_u_N, np.float64), np.asarray(order_u_NA, np.float64)
    if level_u_N.ndim != 1 or order_u_NA.shape[0] != len(level_u_N):
        raise ValueError(f"uniforms must be (N,) and (N, A), got {level_u_N.shape} and {order_u_NA.shape}")
    if level_u_N.size and (level_u_N.min() < 0 or level_u_N.max() >= 1):
        raise ValueError("level uniforms must lie in [0, 1)")
    K, L = rows_KL.shape
    N = len(level_u_N)
    mask_ids = tables.mask_id_M[tables.modality(rows_KL)]  # the MASK token of each position's modality
    noisy, clean, weight = [], [], []
    for k in range(K):
        pos = answer_KL[k].nonzero().squeeze(1)
        if len(pos) == 0:
            raise ValueError(f"candidate {k} has no answer positions")
        masked_NA, l_N = answer_masks(level_u_N, order_u_NA, len(pos))
        masked_NL = torch.zeros(N, L, dtype=torch.bool)
        masked_NL[:, pos] = torch.from_numpy(masked_NA)
        noisy.append(torch.where(masked_NL, mask_ids[k], rows_KL[k]))
        clean.append(rows_KL[k].expand(N, L))
        weight.append(torch.from_numpy(len(pos) / l_N))
    noisy_RL, clean_RL, weight_R = torch.cat(noisy), torch.cat(clean), torch.cat(weight)
    scores_R = torch.zeros(K * N, dtype=torch.float64)
    for start, c, heads, logits in masked_logits(model, tables, clean_RL, noisy_RL, batch_size, device,
                                                 autocast_dtype):
        for (sel, lo, hi, eos, _), lg in zip(heads, logits):
            logp = lg.to(torch.promote_types(lg.dtype, torch.float32)).log_softmax(-1).cpu()
            clean = c[sel]
            target = torch.where(clean == eos, hi - lo, clean - lo)
            picked = logp.gather(1, target[:, None]).squeeze(1).double()
            scores_R.index_add_(0, start + sel.nonzero()[:, 0], picked)
    return (scores_R * weight_R).view(K, N)


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


def _load_image(path: Path, where: str) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()  # decode fully: a truncated file fails here
            return np.array(im.convert("RGB"), dtype=np.uint8)  # writable, for torch
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise ValueError(f"{where}: unreadable image {path} ({type(e).__name__}: {e})") from None


def _load_wave(path: Path, where: str, sample_rate: int) -> np.ndarray:
    import soundfile as sf

    from trimdm.data.tinyworld.speech import resample

    try:
        data, file_sr = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.SoundFileError, RuntimeError, OSError) as e:
        raise ValueError(f"{where}: unreadable audio {path} ({e})") from None
    if len(data) == 0:
        raise ValueError(f"{where}: audio {path} has no frames")
    wave = data.mean(axis=1)
    if file_sr != sample_rate:
        wave = resample(wave, file_sr, sample_rate)
    return wave.astype(np.float32, copy=False)


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
            q.media = _load_image(file, where) if q.kind == "image" else _load_wave(file, where, sample_rate)
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
    questions = read_questions(path, sample_rate=audio.cfg.sample_rate if audio is not None else 16_000)
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
        level_u, order_u = draw_uniforms(n_samples, int(n_answer.max()), np.random.default_rng([seed, qi]))
        est_KN = mc_answer_loglik(loaded.model, loaded.vocab, rows_KL, answer_KL, level_u, order_u, batch_size,
                                  loaded.device, loaded.autocast_dtype).numpy()
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
            "accuracy_stderr": math.sqrt(acc * (1 - acc) / len(per)),
            "accuracy_per_token": _accuracy(per, "correct_per_token"),
            "chance": float(np.mean([1 / len(q.options) for q in questions])), "n_samples": n_samples,
            "seed": seed, "by_kind": by_kind, "mean_stderr": float(np.nanmean([s for p in per for s in p["stderr"]])),
            "seconds": round(time.time() - t0, 2), "per_question": per}


# -- a question file from tinyworld --------------------------------------------------------------------
def _read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        raise ValueError(f"{path} not found: is the data directory a prepared tinyworld set (its raw/ stage)?")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _swap_word(caption: str, words, rng: np.random.Generator) -> str | None:
    """Replace one occurrence of one of `words` in caption by another of them (None if none occurs)."""
    alternation = "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))
    hits = list(re.finditer(rf"\b(?:{alternation})\b", caption))
    if not hits:
        return None
    hit = hits[int(rng.integers(len(hits)))]
    others = [w for w in words if w != hit.group(0)]
    return caption[:hit.start()] + others[int(rng.integers(len(others)))] + caption[hit.end():]


def _world(data_dir: Path) -> dict[str, tuple[str, ...]]:
    """The colours and sizes a prepared tinyworld set draws from: its spec.json names them when they are
    a smaller world's (data.tinyworld.colors / .sizes), else the whole scene vocabulary."""
    from trimdm.data.tinyworld import scenes as sc

    spec_path = Path(data_dir) / "spec.json"
    try:
        tw = json.loads(spec_path.read_text()).get("tinyworld", {}) if spec_path.exists() else {}
    except (json.JSONDecodeError, AttributeError) as e:
        raise ValueError(f"{spec_path}: not a prepared data set's spec ({e})") from None
    return {"colors": tuple(tw.get("colors", sc.COLORS)), "sizes": tuple(tw.get("sizes", sc.SIZES))}


def _caption_distractors(record: dict, n: int, rng: np.random.Generator, world: dict | None = None) -> list[str]:
    """n false captions, each the true one with one attribute changed (colour, shape, size or location)
    to another value of the data set's world, cycling through the attributes in a random order; each is
    checked false against the scene."""
    from trimdm.data.tinyworld import scenes as sc

    scene = sc.Scene.from_json(record["scene"])
    truth = record["caption"]
    world = world or {"colors": tuple(sc.COLORS), "sizes": sc.SIZES}
    attributes = [a for a in (world["colors"], sc.SHAPES, world["sizes"], tuple(sc.LOCATIONS.values()))
                  if len(a) > 1]
    order = rng.permutation(len(attributes))
    out: list[str] = []
    for attempt in range(50 * n):
        if len(out) == n:
            break
        words = attributes[order[attempt % len(attributes)]]
        cand = _swap_word(truth, words, rng)
        if cand is not None and cand != truth and cand not in out and sc.caption_errors(cand, scene):
            out.append(cand)
    if len(out) < n:
        raise ValueError(f"could not make {n} distinct false captions for {truth!r}")
    return out


def write_tinyworld_mc(data_dir: str | Path, out_path: str | Path, n_image: int | None = None,
                       n_audio: int | None = None, n_options: int = 4, seed: int = 0) -> Path:
    """Write a multiple-choice JSONL file from a prepared tinyworld set's held-out val split.

    data_dir: the prepared directory (`tinyworld-<hash>`, holding raw/images_val and raw/speech_val).
    Image questions: the scene's caption and n_options − 1 captions that differ from it in one attribute
    (colour, shape, size or location word, among those of the set's world), each checked false for the
    scene. Audio questions: the
    utterance's transcript and n_options − 1 other distinct transcripts of the split, drawn at random.
    n_image / n_audio: how many of each (None: all of the split), a seeded random subset otherwise; the
    correct option's position is drawn too. Context is empty: the media are the context. Paths in the
    file are relative to out_path's folder. Deterministic from `seed`. Returns out_path."""
    if n_options < 2:
        raise ValueError(f"n_options must be >= 2, got {n_options}")
    raw = Path(data_dir) / "raw"
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    world = _world(Path(data_dir))
    lines = []
    for kind, folder, index, text_key, want in (("image", "images_val", "captions.jsonl", "caption", n_image),
                                                ("audio", "speech_val", "transcripts.jsonl", "text", n_audio)):
        records = _read_jsonl(raw / folder / index)
        want = len(records) if want is None else want
        if not 0 <= want <= len(records):
            raise ValueError(f"asked for {want} {kind} questions but {raw / folder} holds {len(records)} items")
        chosen = np.sort(rng.choice(len(records), size=want, replace=False)) if want < len(records) else range(want)
        texts = sorted({r[text_key] for r in records})
        for i in chosen:
            rec = records[int(i)]
            truth = rec[text_key]
            if kind == "image":
                if "scene" not in rec:
                    raise ValueError(f"{raw / folder / index}: item {i} has no scene, so no checked distractors")
                wrong = _caption_distractors(rec, n_options - 1, rng, world)
            else:
                pool = [t for t in texts if t != truth]
                if len(pool) < n_options - 1:
                    raise ValueError(f"{raw / folder}: only {len(pool) + 1} distinct transcripts, "
                                     f"too few for {n_options} options")
                wrong = [pool[j] for j in rng.choice(len(pool), size=n_options - 1, replace=False)]
            answer = int(rng.integers(n_options))
            options = wrong[:answer] + [truth] + wrong[answer:]
            media = os.path.relpath((raw / folder / rec["file"]).resolve(), out_path.parent.resolve())
            lines.append(json.dumps({"context": "", "options": options, "answer": answer, kind: media}))
    out_path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return out_path
