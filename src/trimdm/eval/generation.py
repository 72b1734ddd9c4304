"""Generation quality on held-out tinyworld data (method §9), scored by the data set's offline judges.

- T2I: draw an image for each held-out caption; correct when the image judge reads a scene for which
  every attribute the caption names is right (data/tinyworld/judges/image.py:judge_caption). Reported for
  single-object captions of seen colour–shape pairs, single-object captions of held-out pairs (never
  seen together in training) and two-object captions.
- I2T: caption each held-out image; correct when the caption's attributes are right for the true scene.
  Reported over all images and over the single-object ones (`single`).
  T2I groups and I2T also count, per kind of error (shape, colour, size, location, relation, number
  of objects, unreadable), how many items have one: which attribute a model has not learned yet.
- T2S: speak each held-out transcript; the speech judge transcribes it; character error rate (CER).
- S2T: transcribe each held-out utterance; CER against its transcript.
- Fréchet distances of generated against held-out real images and speech in the judges' feature
  spaces (torchmetrics' FID with the judge as feature network; the same class on precomputed speech
  features for the audio distance).
- Text (every data set whose text corpus is the KJV: kjv, tinyworld; `text_metrics`): free text drawn
  without a prompt (task text: a document's start, `sample.gen_len` tokens), scored by the KJV's text
  judge (data/kjv_judge.py, an interpolated Kneser–Ney word trigram fitted on the training split): the
  generative perplexity 2^(Σ −log2 p / Σ words) over all samples' words, and each sample's unigram
  entropy (bits; low: repetition), beside the same two figures for held-out KJV text of the same
  length (the first `gen_len` tokens of each held-out chapter: a document's start too). SEs treat the
  texts as the sample: the ratio estimator's for bits per word, the mean's for the entropy.

Chance levels come from the same judges and data, with the pairing broken: a held-out real image
scored against a caption of another scene of the same group (T2I), a real caption of another scene
(I2T), a real utterance read against another transcript (T2S), another transcript (S2T). They are what
a model that ignores its condition but draws perfect media or text would get, averaged exactly over
every pairing that gives no item its own reference (eval/stats.py:`chance_level`), so no random pairing moves them.

The pairing test asks the other question, whether the outputs depend on their inputs at all: every
output is scored against every item's reference, and the metric of the true pairing is compared with
the metric of random pairings (eval/stats.py:`pairing_test`: `shuffled` is its mean over pairings of each output with
another item's reference, `shuffled_p` the one-sided Monte-Carlo permutation p-value). It controls for
the model's own output style (a transcript of frequent words, a favourite colour), which the chance
levels above, built from real data, do not.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from PIL import Image

from trimdm.data.kjv_judge import TextJudge, TextScores, score_texts
from trimdm.data.tinyworld.judges.image import judge_caption
from trimdm.data.tinyworld.judges.speech import cer, edits, pairwise_edits
from trimdm.data.tinyworld.scenes import (ERROR_KINDS, HELDOUT_PAIRS, error_kind, is_caption, parse_caption,
                                          read_image_folder)
from trimdm.data.tinyworld.speech import read_speech_folder
from trimdm.eval.stats import chance_level, mean_se, pairing_test, ratio_se
from trimdm.sample.tasks import Tasks
from trimdm.streams import stream_seed
from trimdm.tokenizers.image import save_image_grid


class _Features(torch.nn.Module):
    """The feature network torchmetrics' FID calls: a judge's features of uint8 images, or the rows
    it is given when they are already features (speech, whose clips have different lengths)."""

    def __init__(self, num_features: int, judge=None):
        super().__init__()
        self.num_features, self.judge = num_features, judge

    def forward(self, x):
        if self.judge is None:
            return x.double()
        return self.judge.features(x.permute(0, 2, 3, 1).cpu().numpy()).double()


def frechet(real, fake, num_features: int, judge=None) -> float:
    # imported here: torchmetrics pulls in transformers and scipy.signal (about 2 s), which every
    # `trimdm` command would otherwise pay at start-up
    from torchmetrics.image.fid import FrechetInceptionDistance

    metric = FrechetInceptionDistance(feature=_Features(num_features, judge), reset_real_features=True)
    metric.update(real, real=True)
    metric.update(fake, real=False)
    return float(metric.compute())


def _images_tensor(images: list[np.ndarray] | np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()


def _group(scene) -> str:
    if len(scene.objects) == 2:
        return "two_object"
    o = scene.objects[0]
    return "heldout_single" if (o.color, o.shape) in HELDOUT_PAIRS else "seen_single"


def attribute_match(text: str, scene) -> float:
    """Partial credit: the fraction of the attributes a caption names (shape, colour, size, location)
    that some object of the scene has, best object per mention; 0 for an unreadable caption or no scene.
    A smoother signal than all-attributes-right while a model is still learning."""
    try:
        parsed = parse_caption(text)
    except ValueError:
        return 0.0
    if not parsed or scene is None:
        return 0.0
    hits = total = 0
    for d in parsed:
        keys = [k for k in ("shape", "color", "size") if k in d] + (["location"] if "row" in d else [])
        total += len(keys)
        hits += max(sum(((d["row"], d["col"]) == (o.row, o.col)) if k == "location" else d[k] == getattr(o, k)
                        for k in keys) for o in scene.objects)
    return hits / total if total else 0.0


def error_counts(errors: list[list[str]]) -> dict[str, int]:
    """Per error kind (scenes.ERROR_KINDS), how many items have at least one error of that kind; an item
    can count under several kinds, a right one under none."""
    counts = dict.fromkeys(ERROR_KINDS, 0)
    for errs in errors:
        for kind in {error_kind(e) for e in errs}:
            counts[kind] += 1
    return counts


def _caption_scores(captions: list[str], scenes: list, outputs: str) -> tuple[np.ndarray, np.ndarray]:
    """(all right, attribute match) of every caption–scene pair as (n, n) arrays indexed [output,
    reference]; the outputs are the `captions` (I2T: caption i against scene j) or the `scenes` (T2I: the
    scene the judge read in image i against caption j)."""
    n = len(captions)
    ok, partial = np.zeros((n, n)), np.zeros((n, n))
    for a in range(n):
        for b in range(n):
            caption, scene = (captions[a], scenes[b]) if outputs == "captions" else (captions[b], scenes[a])
            ok[a, b], partial[a, b] = not judge_caption(caption, scene), attribute_match(caption, scene)
    return ok, partial


def _caption_tests(ok_NN: np.ndarray, partial_NN: np.ndarray, seed: int, name: str) -> dict:
    """`pairing_test` of the all-right accuracy and of the attribute match (`_caption_scores`)."""
    n = len(ok_NN)
    acc = pairing_test(ok_NN, n, True, stream_seed(seed, f"{name} accuracy"))
    am = pairing_test(partial_NN, n, True, stream_seed(seed, f"{name} attribute match"))
    return {**acc, "attribute_match_shuffled": am["shuffled"], "attribute_match_shuffled_p": am["shuffled_p"]}


def source_subsets(texts: list[str]) -> dict[str, list[int]]:
    """Indices of the texts that speak a caption (a closed vocabulary) and of the sentences (open text),
    each only when it has any."""
    spoken = [is_caption(t) for t in texts]
    subsets = {key: [j for j, c in enumerate(spoken) if c == keep] for key, keep in (("captions", True),
                                                                                      ("sentences", False))}
    return {key: sub for key, sub in subsets.items() if sub}


def _cer_scores(hyps: list[str], refs: list[str], edits_NN: np.ndarray, chance_NN: np.ndarray,
                lengths: np.ndarray, seed: int, name: str) -> dict:
    """CER of `hyps` against `refs` with its SE, the chance level from `chance_NN` (the real-data outputs
    against every reference) and the pairing test of the outputs (`edits_NN`, every output against every
    reference)."""
    e, c = edits(hyps, refs)
    err, err_se = float(e.sum() / c.sum()), ratio_se(e, c)
    chance, chance_se = chance_level(chance_NN, lengths)
    return {"cer": err, "n": len(refs), "chance": chance, "cer_se": err_se, "chance_se": chance_se,
            **pairing_test(edits_NN, float(lengths.sum()), False, stream_seed(seed, name))}


def cer_results(hyps: list[str], refs: list[str], chance_hyps: list[str], seed: int, name: str) -> dict:
    """`_cer_scores` over every utterance, and under `captions` and `sentences` over those that speak a
    caption and those that do not (`source_subsets`): each subset's chance pairs it with its own
    references. `chance_hyps` are the real-data outputs: real speech heard by the judge (T2S) or the
    transcripts themselves (S2T). The edit distances are computed once, for all three."""
    edits, lengths = pairwise_edits(hyps, refs)
    chance_edits, _ = pairwise_edits(chance_hyps, refs)
    out = _cer_scores(hyps, refs, edits, chance_edits, lengths, seed, name)
    for key, sub in source_subsets(refs).items():
        ix = np.ix_(sub, sub)
        out[key] = _cer_scores([hyps[j] for j in sub], [refs[j] for j in sub], edits[ix], chance_edits[ix],
                               lengths[sub], seed, f"{name} {key}")
    return out


def generation_metrics(loaded, data_dir: Path, judges: dict, run_dir: Path, prompts: int, utterances: int,
                       seed: int = 0, log=print, sample=None) -> dict:
    """Every generation metric of a run; writes the samples it scores under RUN/samples/eval/. `sample`:
    the sampling settings (default: the run's)."""
    t0 = time.time()
    tasks = Tasks(loaded, sample)
    out_dir = Path(run_dir) / "samples" / "eval"
    raw = Path(data_dir) / "raw"
    items, _ = read_image_folder(raw / "images_val")
    c = tasks.cfg
    result: dict = {"settings": {**{m: vars(c[m]).copy() for m in ("text", "image", "audio")},
                                 "best of R": {"rerank": c.rerank, "rerank_draws": c.rerank_draws,
                                               "refine": c.refine, "refine_top": c.refine_top,
                                               "refine_tasks": ",".join(c.refine_tasks)}}}
    result["t2i"], result["fid_image"] = _t2i(tasks, items, judges["image"], out_dir, prompts, seed)
    shown = ", ".join(f"{g} {v['accuracy']:.0%} (chance {v['chance']:.0%})" for g, v in result["t2i"]["groups"].items())
    log(f"eval: T2I {shown} ({time.time() - t0:.0f}s)")
    result["i2t"] = _i2t(tasks, items, out_dir, prompts, seed)
    log(f"eval: I2T {result['i2t']['accuracy']:.0%} (chance {result['i2t']['chance']:.0%}) ({time.time() - t0:.0f}s)")
    speech, _ = read_speech_folder(raw / "speech_val", max_seconds=None)
    speech = speech[:utterances]
    waves, texts = [w for w, _ in speech], [t for _, t in speech]
    result["t2s"], result["fad_audio"] = _t2s(tasks, waves, texts, judges["speech"], out_dir, seed)
    log(f"eval: T2S CER {result['t2s']['cer']:.1%} (chance {result['t2s']['chance']:.1%}, judge on real "
        f"speech {result['t2s']['judge_cer_on_real_speech']:.1%}) ({time.time() - t0:.0f}s)")
    result["s2t"] = _s2t(tasks, waves, texts, out_dir, seed)
    log(f"eval: S2T CER {result['s2t']['cer']:.1%} (chance {result['s2t']['chance']:.1%}) "
        f"({time.time() - t0:.0f}s)")
    result["seconds"] = round(time.time() - t0, 1)
    return result


def text_figures(scores: TextScores) -> dict:
    """The text judge's figures of a set of texts: perplexity (2^bits per word), bits per word with its
    SE (a ratio of sums over texts), mean unigram entropy with its SE, words per text, unseen-word rate."""
    n_words = float(scores.words.sum())
    nan = float("nan")  # every text empty (a model that ends at once): nothing to judge
    bits, bits_se = (float(scores.bits.sum() / n_words), ratio_se(scores.bits, scores.words)) if n_words else (nan, nan)
    return {"n": len(scores.words), "perplexity": 2.0 ** bits, "perplexity_se": 2.0 ** bits * np.log(2) * bits_se,
            "bits_per_word": bits, "bits_per_word_se": bits_se,
            "unigram_entropy": float(scores.entropy.mean()), "unigram_entropy_se": mean_se(scores.entropy),
            "words_per_text": float(scores.words.mean()),
            "unseen_word_rate": float(scores.unseen.sum() / n_words) if n_words else nan}


def text_metrics(loaded, judge: TextJudge, n: int, seed: int = 0, sample=None, log=print) -> dict:
    """Free text without a prompt, `n` samples, against held-out text of the same length, both by the
    text judge (module docstring). `sample`: the sampling settings (default: the run's)."""
    t0 = time.time()
    tasks = Tasks(loaded, sample)
    made = tasks.text("", n, seed)
    gen_len = tasks.cfg.gen_len
    reference = [tasks.text_tok.decode(tasks.text_tok.encode(doc).tolist()[:gen_len]) for doc in judge.heldout]
    scores = score_texts(judge.lm, made)
    result = {"judge": judge.describe(), "settings": {**vars(tasks.cfg.text), "gen_len": gen_len},
              "samples": text_figures(scores), "reference": text_figures(score_texts(judge.lm, reference)),
              "items": [{"text": t, "words": int(w), "perplexity": float(2.0 ** (b / w)) if w else None,
                         "unigram_entropy": float(h)}
                        for t, w, b, h in zip(made, scores.words, scores.bits, scores.entropy)]}
    result["seconds"] = round(time.time() - t0, 1)
    s, r = result["samples"], result["reference"]
    log(f"eval: text judge perplexity {s['perplexity']:.1f} (held-out KJV {r['perplexity']:.1f}), unigram "
        f"entropy {s['unigram_entropy']:.2f} bits (held-out {r['unigram_entropy']:.2f}) ({result['seconds']:.0f}s)")
    return result


def _t2i(tasks: Tasks, items: list, image_judge, out_dir: Path, prompts: int, seed: int) -> tuple[dict, float]:
    """T2I on an equal share of held-out captions per group, in split order; (results, Fréchet distance)."""
    per_group = max(1, prompts // 3)
    chosen: dict[str, list[int]] = {"seen_single": [], "heldout_single": [], "two_object": []}
    for i, (_, _, scene) in enumerate(items):
        g = chosen[_group(scene)]
        if len(g) < per_group:
            g.append(i)
    order = [i for g in chosen.values() for i in g]
    captions = [items[i][1] for i in order]
    images, _ = tasks.t2i(captions, seed)
    read = image_judge.predict(np.stack(images))
    errors = [judge_caption(c, s) for c, s in zip(captions, read)]
    correct = [not e for e in errors]
    real_read = image_judge.predict(np.stack([items[i][0] for i in order]))
    groups, k = {}, 0
    for name, idx in chosen.items():
        n = len(idx)
        if n == 0:
            continue
        ok = correct[k:k + n]
        # chance: the real image of each prompt read against the other prompts of its group
        real_ok, real_partial = _caption_scores(captions[k:k + n], real_read[k:k + n], "scenes")
        chance, _ = chance_level(real_ok)
        partial_chance, partial_chance_se = chance_level(real_partial)
        scores = _caption_scores(captions[k:k + n], read[k:k + n], "scenes")  # drawn images, every prompt
        partial = np.diag(scores[1])
        groups[name] = {"accuracy": float(np.mean(ok)), "n": n, "chance": chance,
                        "attribute_match": float(np.mean(partial)),
                        "attribute_match_chance": partial_chance,
                        "attribute_match_se": mean_se(partial), "attribute_match_chance_se": partial_chance_se,
                        **_caption_tests(*scores, seed, f"t2i {name}"),
                        "errors": error_counts(errors[k:k + n])}
        k += n
    (out_dir / "t2i").mkdir(parents=True, exist_ok=True)
    samples = []
    for j, (cap, im, ok) in enumerate(zip(captions, images, correct)):
        name = f"t2i/{j:03d}.png"
        Image.fromarray(im).save(out_dir / name)
        samples.append({"prompt": cap, "png": f"samples/eval/{name}", "correct": bool(ok)})
    starts = np.cumsum([0] + [len(g) for g in chosen.values()])[:-1]  # `order` lists the groups in turn
    show = [int(a) + j for a, g in zip(starts, chosen.values()) for j in range(min(8, len(g)))]
    save_image_grid(np.stack([images[j] for j in show]), out_dir / "t2i" / "grid.png", cols=8)
    fid = frechet(_images_tensor([it[0] for it in items[:max(len(order), 64)]]), _images_tensor(images),
                  image_judge.cfg.feature_dim, image_judge)
    return {"groups": groups, "grid": "samples/eval/t2i/grid.png", "grid_prompts": [captions[j] for j in show],
            "samples": samples}, fid


def _i2t(tasks: Tasks, items: list, out_dir: Path, prompts: int, seed: int) -> dict:
    """I2T on the first `prompts` held-out images, and on their single-object (and held-out) subsets."""
    idx = list(range(min(prompts, len(items))))
    real_images = np.stack([items[i][0] for i in idx])
    scenes = [items[i][2] for i in idx]
    refs = [items[i][1] for i in idx]
    made = tasks.i2t(real_images, seed)
    errors = [judge_caption(c, s) for c, s in zip(made, scenes)]
    ok = [not e for e in errors]
    real_ok, real_partial = _caption_scores(refs, scenes, "captions")  # chance: real captions, other scenes
    chance, _ = chance_level(real_ok)
    groups = [_group(s) for s in scenes]
    single = [j for j, s in enumerate(scenes) if len(s.objects) == 1]
    (out_dir / "i2t").mkdir(parents=True, exist_ok=True)
    i2t_samples = []
    for j in range(min(16, len(idx))):
        name = f"i2t/{j:03d}.png"
        Image.fromarray(real_images[j]).save(out_dir / name)
        i2t_samples.append({"png": f"samples/eval/{name}", "caption": made[j], "reference": refs[j],
                            "correct": bool(ok[j])})
    scores = _caption_scores(made, scenes, "captions")  # every caption against every scene: the pairing test
    partial = np.diag(scores[1])
    partial_chance, partial_chance_se = chance_level(real_partial)
    result = {"accuracy": float(np.mean(ok)), "n": len(idx), "chance": chance,
              "attribute_match": float(np.mean(partial)),
              "attribute_match_chance": partial_chance,
              "attribute_match_se": mean_se(partial), "attribute_match_chance_se": partial_chance_se,
              **_caption_tests(*scores, seed, "i2t"),
              "errors": error_counts(errors), "samples": i2t_samples,
              "items": [{"caption": m, "reference": r, "correct": o, "group": g}
                        for m, r, o, g in zip(made, refs, ok, groups)]}
    # the single-object images alone, and those of a held-out colour-shape pair; chance pairs each
    # subset's references among themselves
    heldout = [j for j in single if groups[j] == "heldout_single"]
    for key, sub in (("single", single), ("single_heldout", heldout)):
        if sub:
            result[key] = {"accuracy": float(np.mean([ok[j] for j in sub])), "n": len(sub),
                           "chance": chance_level(real_ok[np.ix_(sub, sub)])[0],
                           **_caption_tests(*(m[np.ix_(sub, sub)] for m in scores), seed, f"i2t {key}")}
    return result


def _t2s(tasks: Tasks, waves: list, texts: list[str], speech_judge, out_dir: Path, seed: int) -> tuple[dict, float]:
    """T2S of held-out transcripts, heard by the speech judge; (results, Fréchet distance of speech)."""
    rate = tasks.media["audio"].sample_rate
    spoken, _ = tasks.t2s(texts, seed)
    heard = speech_judge.transcribe(spoken)
    heard_real = speech_judge.transcribe(waves)
    (out_dir / "t2s").mkdir(parents=True, exist_ok=True)
    samples = []
    for j in range(min(8, len(texts))):
        name = f"t2s/{j:03d}.wav"
        sf.write(out_dir / name, np.clip(spoken[j], -1, 1), rate, subtype="PCM_16")
        samples.append({"prompt": texts[j], "wav": f"samples/eval/{name}", "heard": heard[j]})
    # chance: real speech, heard by the judge, against other transcripts
    result = {**cer_results(heard, texts, heard_real, seed, "t2s"),
              "judge_cer_on_real_speech": cer(heard_real, texts), "samples": samples,
              "items": [{"prompt": t, "heard": h} for t, h in zip(texts, heard)]}
    feats_real = speech_judge.features(waves)
    feats_fake = speech_judge.features([w if len(w) else np.zeros(rate // 10, np.float32) for w in spoken])
    return result, frechet(feats_real, feats_fake, feats_real.shape[1])


def _s2t(tasks: Tasks, waves: list, texts: list[str], out_dir: Path, seed: int) -> dict:
    """S2T of held-out utterances: CER against their transcripts."""
    rate = tasks.media["audio"].sample_rate
    transcripts = tasks.s2t(waves, seed)
    (out_dir / "s2t").mkdir(parents=True, exist_ok=True)
    samples = []
    for j in range(min(8, len(texts))):
        name = f"s2t/{j:03d}.wav"
        sf.write(out_dir / name, np.clip(waves[j], -1, 1), rate, subtype="PCM_16")
        samples.append({"wav": f"samples/eval/{name}", "transcript": transcripts[j], "reference": texts[j]})
    # chance: another item's transcript as the output
    return {**cer_results(transcripts, texts, texts, seed, "s2t"), "samples": samples,
            "items": [{"transcript": t, "reference": r} for t, r in zip(transcripts, texts)]}
