"""The run report (eval/report.py): both files written, report.html self-contained, every eval.json
section's numbers shown, absent sections and files skipped, text escaped, bad eval.json named."""

import base64
import html
import json
import math
import re

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from trimdm.eval.report import MAX_CLIPS, fmt, write_report
from trimdm.eval.stats import binomial_tail, vs_chance

NASTY = '<script>alert("x")</script> & <b>bold</b>'


def png(path, size=8, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(path)
    return path


def wav(path, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.random.default_rng(seed).uniform(-0.1, 0.1, 400), 8000, subtype="PCM_16")
    return path


def metrics(n=40, eval_every=10):
    out = []
    for step in range(1, n + 1):
        r = {"step": step, "tokens": step * 1024, "loss": 5.0 - step / n, "lr": 1e-3, "tokens_per_s": 2048.0,
             "mfu": 0.25, "nelbo_text": 8 - step / n, "nelbo_image": 6 - step / n, "nelbo_audio": 7 - step / n}
        if step % eval_every == 0:
            r.update(val_nelbo_text=8.5 - step / n, val_nelbo_image=6.5 - step / n, val_nelbo_audio=7.5 - step / n)
        out.append(r)
    return out


# the text judge's section (eval/generation.py:text_metrics), numbers chosen to be findable
TEXT_JUDGED = {
    "judge": {"model": "interpolated Kneser-Ney word 3-gram", "corpus": "KJV training split", "train_words": 887474,
              "vocabulary": 13602, "discounts": [0.566, 0.6932, 0.7527]},
    "settings": {"steps": 64, "schedule": "polynomial:2", "temperature": 0.7, "block": 16, "gen_len": 64},
    "samples": {"n": 32, "perplexity": 187.5, "perplexity_se": 12.25, "bits_per_word": 7.551,
                "bits_per_word_se": 0.0938, "unigram_entropy": 3.125, "unigram_entropy_se": 0.1406,
                "words_per_text": 55.5, "unseen_word_rate": 0.03125},
    "reference": {"n": 30, "perplexity": 55.91, "perplexity_se": 9.105, "bits_per_word": 5.805,
                  "bits_per_word_se": 0.235, "unigram_entropy": 4.888, "unigram_entropy_se": 0.0503,
                  "words_per_text": 50.47, "unseen_word_rate": 0.0092},
    "items": [{"text": "And the LORD said unto Moses", "words": 6, "perplexity": 21.75, "unigram_entropy": 2.585}],
}


def full_eval(run):
    """eval.json with every section, media files written where it says they are."""
    rec = run / "samples" / "reconstructions"
    png(rec / "images.png", 16)
    utts = []
    for i in range(2):
        wav(rec / f"u{i}_original.wav", i)
        wav(rec / f"u{i}_codec.wav", 10 + i)
        utts.append({"text": f"utterance number {i}", "original": f"u{i}_original.wav", "codec": f"u{i}_codec.wav"})
    png(run / "samples/eval/t2i/grid.png", 16)
    t2i_samples = [{"prompt": NASTY if i == 0 else f"a red ball {i}", "png": f"samples/eval/t2i/{i}.png",
                    "correct": i % 2 == 0} for i in range(4)]
    for i in range(4):
        png(run / f"samples/eval/t2i/{i}.png", seed=i)
    i2t = [{"png": f"samples/eval/i2t/{i}.png", "caption": f"caption {i}", "reference": f"reference {i}",
            "correct": i == 0} for i in range(3)]
    for i in range(3):
        png(run / f"samples/eval/i2t/{i}.png", seed=20 + i)
    t2s = [{"prompt": f"say {i}", "wav": f"samples/eval/t2s/{i}.wav", "heard": f"heard {i}"} for i in range(3)]
    s2t = [{"wav": f"samples/eval/s2t/{i}.wav", "transcript": f"transcript {i}", "reference": f"spoken {i}"}
           for i in range(3)]
    for i in range(3):
        wav(run / f"samples/eval/t2s/{i}.wav", 30 + i)
        wav(run / f"samples/eval/s2t/{i}.wav", 40 + i)
    return {
        "nelbo": {"text": {"bits_per_token": 7.125, "perplexity_bound": 139.6, "tokens": 25980},
                  "image": {"bits_per_token": 3.5, "perplexity_bound": 11.31, "tokens": 4096},
                  "audio": {"bits_per_token": 6.25, "perplexity_bound": 76.11, "tokens": 9000}},
        "conditional_nelbo": {"image|text": {"bits_per_token": 3.25, "perplexity_bound": 9.514, "tokens": 4096},
                              "text|audio": {"bits_per_token": 5.875, "perplexity_bound": 58.69, "tokens": 777}},
        "baselines": {"text_unigram_bits": 8.75, "image_uniform_bits": 10.0},
        "rows": {"text": 102, "image_text": 64}, "tau_points": 8, "seed": 1234,
        # written relative to another working directory, as eval/reconstruct.py does
        "reconstructions": {"directory": f"elsewhere/runs/{run.name}/samples/reconstructions",
                            "image_grid": "images.png", "utterances": utts,
                            "image_metrics": {"psnr": 21.5, "ssim": 0.8125},
                            "audio_metrics": {"stoi": 0.6875, "mel_distance": 1.375}},
        "judges": {"image": {"accuracy": 0.9375, "ceiling_on_reconstructions": 0.8438},
                   "speech": {"cer": 0.0625, "ceiling_cer": 0.1094}},
        "generation": {
            "t2i": {"groups": {"seen_single": {"accuracy": 0.75, "n": 48, "chance": 0.125,
                                               "errors": {"shape": 9, "color": 5, "location": 0}},
                               "heldout_single": {"accuracy": 0.375, "n": 24, "chance": 0.125},
                               "two_object": {"accuracy": 0.1, "n": 20, "chance": 0.125}},
                    "grid": "samples/eval/t2i/grid.png", "samples": t2i_samples},
            "i2t": {"accuracy": 0.5, "n": 16, "chance": 0.25, "samples": i2t,
                    "single": {"accuracy": 0.5625, "n": 9, "chance": 0.0625},
                    "single_heldout": {"accuracy": 0.25, "n": 4, "chance": 0.125},
                    "errors": {"shape": 6, "color": 3, "location": 0, "count": 7}},
            "t2s": {"cer": 0.45, "n": 12, "chance": 0.9, "samples": t2s, "shuffled": 0.8125, "shuffled_p": 0.001},
            "s2t": {"cer": 0.95, "n": 12, "chance": 0.9, "samples": s2t},
            "fid_image": 41.25, "fad_audio": 3.875,
            "text": TEXT_JUDGED,
            "settings": {"t2i": {"steps": 48, "cfg": 2.5}, "s2t": {"steps": 32, "temperature": 0.7}}},
        "multiple_choice": [{"file": "mc/colors.jsonl", "questions": 100, "accuracy": 0.6, "chance": 0.25},
                            {"file": "mc/shapes.jsonl", "questions": 10, "accuracy": 0.3, "chance": 0.25}],
        "checkpoint": "runs/x/checkpoints/step_00000040", "seconds": 12.5,
    }


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    from trimdm.tokenizers.vocab import JointVocab

    run = tmp_path_factory.mktemp("run") / "tri_run"
    run.mkdir()
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in metrics()))
    cfg = {"recipe": "tiny_tri", "model": {"d_model": 64, "n_layers": 2, "n_heads": 2, "mlp_hidden": 0},
           "data": {"dataset": "tinyworld", "seq_len": 128,
                    "mix": {"text": 0.5, "image_text": 0.25, "audio_text": 0.25}},
           "train": {"tokens": 40960}, "derived": {"batch": 8, "steps": 40, "lr": 0.002}}
    (run / "config.json").write_text(json.dumps(cfg))
    JointVocab(n_text=64, n_image=32, audio_levels=2, audio_codebook=16).save(run / "vocab.json")
    ev = full_eval(run)
    (run / "eval.json").write_text(json.dumps(ev))
    out = write_report(run)
    return run, ev, out, out["md"].read_text(encoding="utf-8"), out["html"].read_text(encoding="utf-8")


def test_files_written(full):
    run, _, out, md, page = full
    assert set(out) == {"md", "html", "loss_png"}
    assert out["md"] == run / "report.md" and out["html"] == run / "report.html"
    with Image.open(out["loss_png"]) as im:
        assert im.size[0] > 400 and im.size[1] > 200
    assert "![loss curves](loss_curves.png)" in md
    assert "tiny_tri" in md and "tiny_tri" in page


def test_html_is_self_contained(full):
    run, _, _, _, page = full
    refs = re.findall(r"""(?:src|href)\s*=\s*["']?([^"'\s>]+)""", page, flags=re.I)
    assert refs and all(r.startswith("data:") for r in refs), [r[:40] for r in refs if not r.startswith("data:")]
    assert "url(" not in page and "<link" not in page and "<script" not in page
    # loss curves, T2I grid, 3 I2T samples, reconstruction grid
    assert page.count("<img ") == 6
    # 3 T2S + 3 S2T + 2 reconstruction pairs
    assert page.count("<audio ") == 10
    # a data URI holds the file's exact bytes
    first_s2t = re.findall(r'src="data:audio/wav;base64,([^"]+)"', page)[3]
    assert base64.b64decode(first_s2t) == (run / "samples/eval/s2t/0.wav").read_bytes()
    assert "missing file" not in page


def test_markdown_references_relative_paths(full):
    run, _, _, md, _ = full
    for rel in ("samples/eval/t2i/grid.png", "samples/eval/i2t/0.png", "samples/eval/t2s/2.wav",
                "samples/reconstructions/images.png", "samples/reconstructions/u1_codec.wav"):
        assert f"]({rel})" in md, rel
        assert (run / rel).exists()


def test_every_number_appears(full):
    _, ev, _, md, page = full
    expected = []
    for r in list(ev["nelbo"].values()) + list(ev["conditional_nelbo"].values()):
        expected += [fmt(r["bits_per_token"]), fmt(r["perplexity_bound"]), fmt(r["tokens"])]
    expected += [fmt(v) for v in ev["baselines"].values()]
    rec = ev["reconstructions"]
    expected += [fmt(v) for v in (*rec["image_metrics"].values(), *rec["audio_metrics"].values())]
    expected += [fmt(v) for d in ev["judges"].values() for v in d.values()]
    gen = ev["generation"]
    for r in (*gen["t2i"]["groups"].values(), gen["i2t"], gen["i2t"]["single"], gen["i2t"]["single_heldout"]):
        expected += [fmt(r["accuracy"]), fmt(r["n"]), fmt(r["chance"])]
    expected += ["image→text (single-object)", "image→text (held-out single)"]
    for r in (gen["t2s"], gen["s2t"]):
        expected += [fmt(r["cer"]), fmt(r["n"]), fmt(r["chance"])]
    expected += [fmt(gen["fid_image"]), fmt(gen["fad_audio"]), "steps=48", "cfg=2.5", "temperature=0.7"]
    for r in ev["multiple_choice"]:
        expected += [fmt(r["accuracy"]), fmt(r["questions"]), fmt(r["chance"])]
    expected += ["187.5 ± 12.25", "55.91 ± 9.105", "7.551 ± 0.0938", "3.125 ± 0.1406", "4.888 ± 0.0503", "0.03125",
                 "887,474", "13,602", "block 16", "And the LORD said unto Moses", "21.75", "Free text"]
    texts = ["caption 2", "reference 1", "heard 0", "say 2", "transcript 1", "spoken 2", "utterance number 1",
             "a red ball 3", "colors.jsonl", "seen_single", "two_object"]
    expected += ["What the wrong ones got wrong", "T2I seen_single"]
    # the error-kind table: a column per kind found in any task (size is absent), zeros where a task lacks one
    assert "| task | n | shape | color | location | count |" in md
    assert "| T2I seen_single | 48 | 9 | 5 | 0 | 0 |" in md and "| I2T | 16 | 6 | 3 | 0 | 7 |" in md
    assert "7.125" in expected and "25,980" in expected and "0.8438" in expected  # fmt is not vacuous
    for s in expected + texts:
        assert s in md, s
        assert s in page, s


def test_chance_flags(full):
    _, _, _, md, _ = full

    def row(label):
        (line,) = [ln for ln in md.splitlines() if ln.startswith(f"| {label} ")]
        return line

    assert "| yes (p=" in row("text→image (seen_single)")
    assert row("text→image (two_object)").endswith("| no | — |")  # 0.1 < chance 0.125; no pairing test
    assert "| yes" in row("text→speech")  # CER 0.45 < chance 0.9
    assert row("text→speech").endswith("| 0.8125, p=0.001 |")  # the pairing test, where eval recorded one
    assert row("speech→text").endswith("| no | — |")  # CER 0.95 > chance 0.9
    assert "| yes (p=" in row("colors.jsonl")
    assert "above chance, not significant" in row("shapes.jsonl")  # 3/10 against 0.25


def test_text_is_escaped(full):
    _, _, _, md, page = full
    assert NASTY not in page and "<script>" not in page and "<b>bold" not in page
    assert html.escape(NASTY) in page
    assert "\\<script>" in md  # Markdown: not raw HTML either


def test_parameter_count_from_config_and_vocab(full):
    from trimdm.model.flops import param_counts
    from trimdm.model.transformer import TransformerArgs
    from trimdm.tokenizers.vocab import JointVocab

    run, _, _, md, _ = full
    n = param_counts(TransformerArgs(vocab_size=JointVocab.load(run / "vocab.json").size, d_model=64, n_layers=2,
                                     n_heads=2))
    assert fmt(n["total"]) in md and fmt(n["non_embedding"]) in md


def test_missing_sections_are_skipped(tmp_path):
    (tmp_path / "eval.json").write_text(json.dumps({"nelbo": {"text": {"bits_per_token": 7.5}}}))
    out = write_report(tmp_path)
    assert out["loss_png"] is None and not (tmp_path / "loss_curves.png").exists()
    md, page = out["md"].read_text(), out["html"].read_text()
    assert "7.5" in md and "7.5" in page
    for heading in ("Generation", "Judges", "Tokenizer reconstructions", "Multiple choice", "Training curves",
                    "Conditional NELBO"):
        assert heading not in md and heading not in page
    (tmp_path / "eval.json").write_text("{}")
    write_report(tmp_path)  # nothing to show but the summary


def test_a_text_only_run_shows_the_text_judge_in_the_report_and_the_summary(tmp_path):
    """A run on the KJV alone: generation holds only the text judge's section."""
    from trimdm.eval.summary import print_summary

    ev = {"nelbo": {"text": {"bits_per_token": 7.5, "perplexity_bound": 181.0, "tokens": 100}},
          "baselines": {"text_unigram_bits": 9.25}, "generation": {"text": TEXT_JUDGED}}
    (tmp_path / "eval.json").write_text(json.dumps(ev))
    md = write_report(tmp_path)["md"].read_text()
    assert "Free text" in md and "| held-out KJV, same length | 30 | 50.47 | 55.91 ± 9.105 |" in md
    lines = []
    print_summary(ev, out=lines.append)
    (gen,) = [ln for ln in lines if ln.startswith("generated (no prompt)")]
    (ref,) = [ln for ln in lines if ln.startswith("held-out KJV, same length")]
    assert "187.5 ± 12.2" in gen and "3.12 ± 0.14" in gen and "55.9 ± 9.1" in ref and "4.89 ± 0.05" in ref


def test_missing_media_are_named_not_fatal(tmp_path):
    ev = {"generation": {"t2i": {"grid": "samples/gone.png", "samples": [{"prompt": "p", "correct": True}]},
                         "t2s": {"cer": 0.5, "n": 2, "chance": 0.9, "samples": [{"prompt": "p", "wav": "nope.wav"}]}}}
    (tmp_path / "eval.json").write_text(json.dumps(ev))
    page = write_report(tmp_path)["html"].read_text()
    assert "missing file: samples/gone.png" in page and "missing file: nope.wav" in page


def test_audio_is_capped(tmp_path):
    samples = [{"prompt": f"p{i}", "wav": f"w{i}.wav", "heard": "h"} for i in range(3 * MAX_CLIPS)]
    for i in range(3 * MAX_CLIPS):
        wav(tmp_path / f"w{i}.wav", i)
    (tmp_path / "eval.json").write_text(json.dumps({"generation": {"t2s": {"samples": samples}}}))
    page = write_report(tmp_path)["html"].read_text()
    assert page.count("<audio ") == MAX_CLIPS
    assert f"Showing {MAX_CLIPS} of {3 * MAX_CLIPS} samples." in page


def test_loss_panel_falls_back_to_loss(tmp_path):
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "loss": 3.0 / s}) + "\n" for s in (1, 2)))
    (tmp_path / "eval.json").write_text("{}")
    assert write_report(tmp_path)["loss_png"].exists()


@pytest.mark.parametrize("content, match", [(None, "eval.json: missing"), ("{not json", "eval.json: not valid JSON"),
                                            ("[1, 2]", "eval.json: expected a JSON object"),
                                            ('{"generation": 3}', "section 'generation'")])
def test_bad_eval_json(tmp_path, content, match):
    if content is not None:
        (tmp_path / "eval.json").write_text(content)
    with pytest.raises(ValueError, match=match):
        write_report(tmp_path)


def test_binomial_tail_matches_enumeration():
    for n, p in ((10, 0.25), (37, 0.125), (5, 0.5)):
        for k in range(n + 2):
            exact = sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k, n + 1))
            assert binomial_tail(k, n, p) == pytest.approx(exact, rel=1e-9, abs=1e-300)
    assert 0 < binomial_tail(1200, 4000, 0.25) < 1e-9  # log space: no overflow at large n


def test_vs_chance_words():
    assert vs_chance(0.25, 0.25, 100) == "no"
    assert vs_chance(0.9, 0.5, 50).startswith("yes (p=")
    assert vs_chance(0.2, 0.9, higher_is_better=False) == "yes (untested)"
    assert vs_chance(0.6, 0.8, higher_is_better=False, se=0.05).startswith("yes (z=4.0")
    assert vs_chance(0.6, 0.8, higher_is_better=False, se=0.2).startswith("below chance, not significant (z=1.0")
    assert vs_chance(0.30, 0.25, 100, se=0.1).startswith("above chance, not significant (z=0.5")  # se wins
    assert vs_chance(None, 0.5) == "—"
    assert vs_chance(1.0, float("nan"), 1) == "—"  # one item: no chance level
