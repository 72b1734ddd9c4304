"""Every generation task end to end on a tiny trained tri-modal checkpoint: files, sidecars,
reproduction from a sidecar, and clear errors for bad requests."""
import json
import re
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from trimdm.sample.run import generate, generate_from_sidecar

QUIET = {"log": lambda *a: None}


def test_every_task_writes_outputs_and_sidecars(tiny_tri_run, tmp_path):
    _, run = tiny_tri_run
    t2i = generate(str(run), "t2i", "a red circle in the centre", n=3, seed=1, out=str(tmp_path / "t2i"), **QUIET)
    assert [s["output"] for s in t2i] == ["000.png", "001.png", "002.png"]
    image = np.asarray(Image.open(tmp_path / "t2i" / "000.png"))
    assert image.shape == (32, 32, 3) and (tmp_path / "t2i" / "grid.png").exists()
    side = json.loads((tmp_path / "t2i" / "001.json").read_text())
    assert side["prompt"] == "a red circle in the centre" and side["seed"] == 1 and side["index"] == 1
    assert side["settings"]["image"]["steps"] > 0 and side["checkpoint"]

    t2s = generate(str(run), "t2s", "a blue square", n=2, seed=0, out=str(tmp_path / "t2s"), **QUIET)
    wave, rate = sf.read(tmp_path / "t2s" / "000.wav")
    assert rate == 16000 and len(wave) > 0 and t2s[0]["seconds"] > 0

    i2t = generate(str(run), "i2t", n=2, input_path=str(tmp_path / "t2i" / "000.png"), out=str(tmp_path / "i2t"),
                   **QUIET)
    s2t = generate(str(run), "s2t", n=2, input_path=str(tmp_path / "t2s" / "000.wav"), out=str(tmp_path / "s2t"),
                   **QUIET)
    assert all(isinstance(s["text"], str) for s in i2t + s2t)
    assert (tmp_path / "i2t" / "000.txt").exists() and i2t[0]["input_sha256"]

    text = generate(str(run), "infill", "a red circle in the centre", n=2, span="2:12", out=str(tmp_path / "inf"),
                    **QUIET)
    assert all(s["text"].startswith("a ") and s["text"].endswith("in the centre") for s in text)
    img = generate(str(run), "infill", n=1, input_path=str(tmp_path / "t2i" / "000.png"), span="0:32",
                   out=str(tmp_path / "infi"), **QUIET)
    regenerated = np.asarray(Image.open(tmp_path / "infi" / "000.png"))
    assert regenerated.shape == (32, 32, 3) and img[0]["span_positions"][1] - img[0]["span_positions"][0] == 32
    aud = generate(str(run), "infill", "a blue square", n=1, input_path=str(tmp_path / "t2s" / "000.wav"),
                   span="0.1:0.3", out=str(tmp_path / "infa"), **QUIET)
    assert sf.read(tmp_path / "infa" / "000.wav")[0].shape == wave.shape
    # the untouched part of the input row is kept: image tokens outside the span are the input's
    assert aud[0]["span_positions"][0] > 0

    again = generate_from_sidecar(tmp_path / "t2i" / "002.json", out=str(tmp_path / "again"), **QUIET)
    assert again[2]["output"] == "002.png"
    assert (tmp_path / "again" / "002.png").read_bytes() == (tmp_path / "t2i" / "002.png").read_bytes()
    again = generate_from_sidecar(tmp_path / "s2t" / "001.json", out=str(tmp_path / "again_s2t"), **QUIET)
    assert again[1]["text"] == s2t[1]["text"]
    # by default into a fresh folder beside the sidecar; an explicit --out that holds files is refused
    for name in ("reproduced", "reproduced-1"):
        generate_from_sidecar(tmp_path / "s2t" / "001.json", **QUIET)
        assert (tmp_path / "s2t" / name / "001.txt").read_text() == (tmp_path / "s2t" / "001.txt").read_text()
    before = (tmp_path / "again" / "000.png").read_bytes()
    with pytest.raises(ValueError, match="never overwritten"):
        generate_from_sidecar(tmp_path / "t2s" / "000.json", out=str(tmp_path / "again"), **QUIET)
    assert (tmp_path / "again" / "000.png").read_bytes() == before


def test_a_sidecar_of_an_earlier_version_regenerates_the_same_bits(tiny_tri_run, tmp_path):
    """Before config versions a sidecar wrote "cosine" for today's reverse-cosine and guidance 0 for the
    conditional pass (w = 1 now): read in its own terms, it decodes as it did."""
    _, run = tiny_tri_run
    generate(str(run), "t2i", "a red circle", n=2, seed=3, out=str(tmp_path / "new"), **QUIET)
    side = json.loads((tmp_path / "new" / "001.json").read_text())
    assert side.pop("config_version") == 1
    rows = side["settings"]
    assert [(rows[m]["schedule"], rows[m]["guidance"]) for m in ("text", "image")] == [("reverse-cosine", 1.0)] * 2
    for m in ("text", "image", "audio"):
        rows[m]["schedule"] = "cosine"
    rows["image"]["guidance"] = 0.0
    (tmp_path / "old.json").write_text(json.dumps(side))
    again = generate_from_sidecar(tmp_path / "old.json", out=str(tmp_path / "again"), **QUIET)
    assert again[1]["settings"]["image"] == {**rows["image"], "schedule": "reverse-cosine", "guidance": 1.0}
    assert (tmp_path / "again" / "001.png").read_bytes() == (tmp_path / "new" / "001.png").read_bytes()


def test_bad_requests_fail_with_clear_errors(tiny_tri_run, tmp_path):
    _, run = tiny_tri_run
    with pytest.raises(ValueError, match="unknown task 'draw'"):
        generate(str(run), "draw", "x", **QUIET)
    with pytest.raises(ValueError, match="needs a non-empty --prompt"):
        generate(str(run), "t2i", "  ", **QUIET)
    with pytest.raises(ValueError, match="exceeds|needs .* positions"):
        generate(str(run), "t2s", "word " * 400, n=1, **QUIET)
    with pytest.raises(ValueError, match="nope.png: no such input file"):
        generate(str(run), "i2t", input_path=str(tmp_path / "nope.png"), **QUIET)
    bad_png = tmp_path / "bad.png"
    bad_png.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    with pytest.raises(ValueError, match="bad.png: not a readable"):
        generate(str(run), "i2t", input_path=str(bad_png), **QUIET)
    assert not (run / "samples" / "generate" / "i2t-seed0").exists()  # failed requests leave no folder
    bad_wav = tmp_path / "bad.wav"
    bad_wav.write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt junk")
    with pytest.raises(ValueError, match="bad.wav: not a readable audio file"):
        generate(str(run), "s2t", input_path=str(bad_wav), **QUIET)
    with pytest.raises(ValueError, match="bad.wav: not a readable audio file"):
        generate(str(run), "infill", "a red circle", input_path=str(bad_wav), span="0:1", **QUIET)
    with pytest.raises(ValueError, match="--span '5:2'"):
        generate(str(run), "infill", "a red circle", span="5:2", **QUIET)
    missing = subprocess.run([sys.executable, "-m", "trimdm", "generate", "--run", str(tmp_path / "nope"),
                              "--task", "t2i", "--prompt", "a red circle"], capture_output=True, text=True)
    assert missing.returncode == 2 and "nope" in missing.stderr


def test_eval_writes_generation_metrics_and_the_report(tiny_tri_run):
    from trimdm.eval.run import evaluate_run

    _, run = tiny_tri_run
    result = evaluate_run(run, ["eval.max_rows=8", "eval.tau_points=2", "eval.gen_prompts=6",
                                "eval.gen_utterances=3", "sample.audio.steps=5", "eval.gen_texts=3",
                                "sample.text.block=12"], log=lambda *a: None)
    gen = result["generation"]
    assert gen["settings"]["audio"]["steps"] == 5  # sample.* overrides decode, and are recorded
    text = gen["text"]  # tinyworld's text is the KJV: free text by the text judge, beside held-out KJV
    assert text["settings"]["block"] == 12 and text["samples"]["n"] == len(text["items"]) == 3
    assert text["reference"]["n"] == 30 and text["reference"]["perplexity"] < text["samples"]["perplexity"]
    for r in (text["samples"], text["reference"]):
        assert np.isfinite(r["perplexity_se"]) and 0 < r["unigram_entropy"] and 0 <= r["unseen_word_rate"] <= 1
    for r in (gen["t2s"], gen["s2t"]):
        assert np.isfinite(r["cer_se"]) and np.isfinite(r["chance_se"])
    with pytest.raises(ValueError, match="only eval.\\* and sample.\\* overrides"):
        evaluate_run(run, ["model.d_model=8"], log=lambda *a: None)
    assert set(gen["t2i"]["groups"]) <= {"seen_single", "heldout_single", "two_object"}
    for v in gen["t2i"]["groups"].values():
        assert 0 <= v["accuracy"] <= 1 and v["n"] >= 1
        assert 0 <= v["chance"] <= 1 if v["n"] > 1 else np.isnan(v["chance"])  # one item has no other to pair with
    assert 0 <= gen["i2t"]["accuracy"] <= 1 and gen["t2s"]["cer"] >= 0 and gen["s2t"]["cer"] >= 0
    single = gen["i2t"]["single"]
    assert 1 <= single["n"] <= gen["i2t"]["n"] and 0 <= single["accuracy"] <= 1
    assert 0 <= single["chance"] <= 1 if single["n"] > 1 else np.isnan(single["chance"])
    items = gen["i2t"]["items"]  # every caption, with its group: the subsets' figures are theirs
    assert len(items) == gen["i2t"]["n"]
    assert np.mean([x["correct"] for x in items]) == pytest.approx(gen["i2t"]["accuracy"])
    for key, groups in (("single", {"seen_single", "heldout_single"}), ("single_heldout", {"heldout_single"})):
        sub = [x["correct"] for x in items if x["group"] in groups]
        assert (key in gen["i2t"]) == bool(sub), key
        if sub:
            assert gen["i2t"][key]["n"] == len(sub) and gen["i2t"][key]["accuracy"] == pytest.approx(np.mean(sub))
    from trimdm.data.tinyworld.judges.speech import cer, normalize_text

    assert cer([x["heard"] for x in gen["t2s"]["items"]], [x["prompt"] for x in gen["t2s"]["items"]]) == \
        pytest.approx(gen["t2s"]["cer"]) and len(gen["t2s"]["items"]) == gen["t2s"]["n"]
    assert cer([x["transcript"] for x in gen["s2t"]["items"]], [x["reference"] for x in gen["s2t"]["items"]]) == \
        pytest.approx(gen["s2t"]["cer"]) and len(gen["s2t"]["items"]) == gen["s2t"]["n"]
    # the pairing test: the model's own outputs against every other item's reference
    for task, hyp, ref in (("t2s", "heard", "prompt"), ("s2t", "transcript", "reference")):
        hyps, refs = [x[hyp] for x in gen[task]["items"]], [x[ref] for x in gen[task]["items"]]
        n = len(hyps)
        others = [cer([hyps[i]], [refs[j]]) * len(normalize_text(refs[j])) for i in range(n) for j in range(n) if i != j]
        total = sum(len(normalize_text(r)) for r in refs)
        assert gen[task]["shuffled"] == pytest.approx(sum(others) / (n - 1) / total)
        assert 1 / 1000 <= gen[task]["shuffled_p"] <= 1
    for r in (*gen["t2i"]["groups"].values(), gen["i2t"]):
        assert {"shuffled", "shuffled_p", "attribute_match_shuffled", "attribute_match_shuffled_p"} <= r.keys()
    from trimdm.data.tinyworld.scenes import is_caption

    # the speech tasks apart on spoken captions and on sentences: the two split the items
    for task, hyp, ref in (("t2s", "heard", "prompt"), ("s2t", "transcript", "reference")):
        items = gen[task]["items"]
        for key, keep in (("captions", True), ("sentences", False)):
            sub = [x for x in items if is_caption(x[ref]) == keep]
            assert (key in gen[task]) == bool(sub), (task, key)
            if sub:
                assert gen[task][key]["n"] == len(sub)
                assert gen[task][key]["cer"] == pytest.approx(cer([x[hyp] for x in sub], [x[ref] for x in sub]))
    from trimdm.eval.summary import print_summary

    lines = []
    print_summary(result, out=lines.append)
    assert any(line.startswith("I2T caption all right, single-object") for line in lines)
    for r in (*gen["t2i"]["groups"].values(), gen["i2t"]):  # every wrong item has at least one kind of error
        wrong = round(r["n"] * (1 - r["accuracy"]))
        assert max(r["errors"].values(), default=0) <= wrong <= sum(r["errors"].values())
    assert np.isfinite(gen["fid_image"]) and np.isfinite(gen["fad_audio"])
    assert (run / gen["t2i"]["grid"]).exists() and (run / gen["t2s"]["samples"][0]["wav"]).exists()
    assert "judges" in result and (run / "report.html").exists() and (run / "report.md").exists()
    html = (run / "report.html").read_text()
    assert "data:image/png;base64" in html and "data:audio/wav;base64" in html


def test_sampling_study_writes_table_plot_and_a_recommendation(tiny_tri_run, tmp_path):
    from trimdm.study.sampling import run_sampling_study

    _, run = tiny_tri_run
    grid = {"steps": [2, 4], "guidance": [1.0, 2.0]}
    result = run_sampling_study(str(run), tmp_path, n=3, modalities=("image", "text"), grid=grid,
                                log=lambda *a: None)
    assert len(result["points"]) == 8
    # the recommendation is the best-scoring value (ties: the current default, else the first tried)
    scores = {p["value"]: p["t2i_attribute_match"] for p in result["points"]
              if p["modality"] == "image" and p["setting"] == "steps"}
    ties = [v for v, score in scores.items() if score == max(scores.values())]
    current = result["current"]["image"]["steps"]
    assert result["recommended"]["image"]["steps"] == (current if current in ties else ties[0])
    assert (tmp_path / "sampling_study.png").exists() and "Recommended" in (tmp_path / "sampling_study.md").read_text()
    # a recommended row that differs is scored whole on two seeds; the current row's first score is the
    # sweep's own point at the current settings
    from trimdm.study.sampling import METRIC

    for m, both in result["together"].items():
        assert result["recommended"][m] != result["current"][m] and len(both["recommended"]) == 2
        point = next(p for p in result["points"] if p["modality"] == m and p["settings"] == result["current"][m])
        assert both["current"][0] == point[METRIC[m][0]]
    assert set(result["together"]) == {m for m in ("image", "text") if result["recommended"][m] != result["current"][m]}
    # `order` exists for audio only: swept there, skipped for the other modalities
    both = run_sampling_study(str(run), tmp_path / "order", n=2, modalities=("text", "audio"),
                              grid={"order": ["joint", "levels"]}, log=lambda *a: None)
    assert [(p["modality"], p["value"]) for p in both["points"]] == [("audio", "joint"), ("audio", "levels")]
    with pytest.raises(ValueError, match=re.escape("expected values among joint | levels")):
        run_sampling_study(str(run), tmp_path / "bad", n=2, modalities=("text",), grid={"order": ["joint", "lvls"]},
                           log=lambda *a: None)


def test_rerank_keeps_the_text_under_which_the_medium_is_most_probable(tiny_tri_run, monkeypatch):
    from trimdm.sample.tasks import Tasks
    from trimdm.train.run import load_run

    _, run = tiny_tri_run
    loaded = load_run(run)
    tasks = Tasks(loaded, loaded.cfg.override(["sample.rerank=2", "sample.rerank_draws=4"], only="sample").sample)
    image = tasks.image_ids(np.zeros((1, 32, 32, 3), dtype=np.uint8))
    # per draw (seed), the texts decoded at each candidate length; one repeat across draws
    proposals = {0: ["a red circle"], 1: ["a blue square on the left", "a red circle"]}
    monkeypatch.setattr(tasks, "_describe_once", lambda modality, media, seed: [proposals[seed]])
    texts = ["a red circle", "a blue square on the left"]
    scores = tasks._pair_loglik("image", texts, image * 2, "image", seed=0)
    assert scores.shape == (2,) and np.isfinite(scores).all() and scores[0] != scores[1]
    assert tasks._describe("image", image, seed=0) == [texts[scores.argmax()]]
    # the same draws for every text: a text scored alone gets the same estimate as in the pair
    alone = tasks._pair_loglik("image", texts[1:], image, "image", seed=0)
    assert alone[0] == pytest.approx(scores[1], rel=1e-5)
    # texts of different lengths cannot share the mask draws of a text answer
    with pytest.raises(ValueError, match="must share the text's length"):
        tasks._pair_loglik("image", texts, image * 2, "text", seed=0)


def test_refine_keeps_the_jointly_likeliest_one_token_neighbour(tiny_tri_run, monkeypatch):
    from trimdm.sample.tasks import Tasks
    from trimdm.sequence.layout import PAIRED_TEXT_START, paired_row
    from trimdm.train.run import load_run

    _, run = tiny_tri_run
    loaded = load_run(run)
    tasks = Tasks(loaded, loaded.cfg.override(["sample.refine=1", "sample.refine_top=2", "sample.rerank_draws=4"],
                                              only="sample").sample)
    v = tasks.vocab
    images = tasks.image_ids(np.stack([np.zeros((32, 32, 3), np.uint8), np.full((32, 32, 3), 200, np.uint8)]))
    text = "a red circle"
    ids = tasks.text_tok.encode(text).tolist()
    near = tasks._neighbours("image", images[:1], [ids])[0]
    # refine_top neighbours per token, each one token away, the model's likeliest other tokens there
    assert len(near) == 2 * len(ids)
    for n, i in zip(near, np.repeat(np.arange(len(ids)), 2)):
        assert len(n) == len(ids) and [j for j in range(len(ids)) if n[j] != ids[j]] == [i]
    row = torch.tensor(paired_row(v, "image", np.array(ids), np.array(images[0]), tasks.seq_len))
    row[PAIRED_TEXT_START] = v.MASK_text
    lo, hi = v.content_range("text")
    with torch.no_grad():
        logits = loaded.model(row[None], torch.zeros(1, len(row), dtype=torch.bool),
                              heads=[(row[None] == v.MASK_text, lo, hi, v.EOS_text)])[0][0, :hi - lo]
    top = [t + lo for t in logits.topk(3).indices.tolist() if t + lo != ids[0]][:2]
    assert [n[0] for n in near[:2]] == top
    # the prior log p(text) does not see the medium; the medium cannot be scored while hidden
    priors = [tasks._pair_loglik("image", [ids], [m], "text", seed=0, hide_media=True)[0] for m in images]
    assert priors[0] == pytest.approx(priors[1], rel=1e-6)
    with pytest.raises(ValueError, match="only log p\\(text\\)"):
        tasks._pair_loglik("image", [ids], images[:1], "image", seed=0, hide_media=True)
    # one round keeps the highest joint log p(text) + log p(image | text) of the text and its neighbours,
    # not the highest log p(image | text); when no neighbour beats the text, the text stays
    near = [[5, 6], [7, 8], [9, 10]]
    medium, prior = np.array([0.0, 5.0, -1.0, 2.0]), np.array([0.0, -10.0, 8.0, 1.0])  # joint 0, -5, 7, 3
    monkeypatch.setattr(tasks, "_neighbours", lambda modality, media, ids: [near])
    monkeypatch.setattr(tasks, "_pair_loglik", lambda modality, cands, given, of, seed, hide_media=False:
                        (prior if hide_media else medium)[:len(cands)])
    assert tasks._refine("image", images[:1], [text], seed=3) == [tasks.text_tok.decode([7, 8])]
    prior[2] = 0.0
    assert tasks._refine("image", images[:1], [text], seed=3) == [tasks.text_tok.decode([9, 10])]
    prior[1:] = -100.0
    assert tasks._refine("image", images[:1], [text], seed=3) == [text]


def test_t2i_keeps_the_image_most_probable_for_its_caption(tiny_tri_run):
    from trimdm.sample.tasks import Tasks
    from trimdm.train.run import load_run

    _, run = tiny_tri_run
    loaded = load_run(run)
    captions = ["a red circle in the centre", "a large blue square on the left", "a cyan cross at the top"]
    one = Tasks(loaded)
    draws = [one.t2i(captions, seed=5 + r)[1] for r in range(3)]  # what R = 3 draws, seeds 5, 6, 7
    tasks = Tasks(loaded, loaded.cfg.override(["sample.rerank=3", "sample.rerank_draws=4"], only="sample").sample)
    _, kept = tasks.t2i(captions, seed=5)
    for i, caption in enumerate(captions):
        media = [tasks.span(d[i], "image") for d in draws]
        scores = tasks._pair_loglik("image", [caption] * 3, media, "image", seed=5)
        assert len(set(scores.tolist())) == 3
        assert torch.equal(kept[i], draws[int(scores.argmax())][i])


def test_i2t_tries_every_caption_length_of_the_training_data(tiny_tri_run):
    from trimdm.data.tinyworld.scenes import read_image_folder
    from trimdm.sample.tasks import Tasks
    from trimdm.train.run import load_run

    data_dir, run = tiny_tri_run
    tasks = Tasks(load_run(run))
    items, _ = read_image_folder(data_dir / "raw" / "images_train")
    n = [len(tasks.encode_text(caption)) for _, caption, _ in items]
    image = tasks.image_ids(np.zeros((1, 32, 32, 3), dtype=np.uint8))[0]
    top = min(max(n), tasks.cfg.caption_len)  # the tiny BPE spells captions in up to ~50 tokens
    assert min(n) < top and tasks.caption_lengths("image", image) == list(range(min(n), top + 1))


def test_t2s_keeps_given_audio_codes_and_fills_the_rest(tiny_tri_run):
    from trimdm.sample.tasks import Tasks
    from trimdm.train.run import load_run

    _, run = tiny_tri_run
    tasks = Tasks(load_run(run))
    v, K = tasks.vocab, tasks.vocab.audio_levels
    real = tasks.audio_ids([np.sin(np.arange(8000) * 0.05).astype(np.float32) * 0.3])[0]
    given = [tok if j % K == 0 else v.MASK_audio for j, tok in enumerate(real)]  # the coarse level given
    texts = ["a red circle"]
    waves, rows = tasks.t2s(texts, seed=3, audio=[given])
    out = tasks.span(rows[0], "audio")
    assert len(out) == len(real)  # the given span sets the length, not the length rule
    assert [out[j] for j in range(0, len(real), K)] == real[::K]
    assert all(lo <= t < hi for t in out for lo, hi in [v.content_range("audio")])
    assert len(waves[0]) > 0
    _, rows = tasks.t2s(texts, seed=3, audio=[real])  # everything given: nothing changes
    assert tasks.span(rows[0], "audio") == real
    with pytest.raises(ValueError, match="2 given audio spans for 1 texts"):
        tasks.t2s(texts, seed=3, audio=[real, real])


def test_eval_without_generation_keeps_the_generation_metrics_of_the_same_checkpoint(tiny_tri_run):
    import json

    from trimdm.eval.run import evaluate_run
    from trimdm.train.run import load_run

    _, run = tiny_tri_run
    path = run / "eval.json"
    saved = path.read_bytes() if path.exists() else None
    checkpoint = str(load_run(run).checkpoint)
    earlier = {"t2s": {"cer": 0.5, "n": 3}, "marker": "an earlier eval"}
    quick, quiet = ["eval.max_rows=8", "eval.tau_points=2"], (lambda *a: None)
    try:
        path.write_text(json.dumps({"checkpoint": checkpoint, "generation": earlier}))
        assert evaluate_run(run, quick, generation=False, log=quiet)["generation"] == earlier
        assert json.loads(path.read_text())["generation"] == earlier
        path.write_text(json.dumps({"checkpoint": "another checkpoint", "generation": earlier}))
        assert "generation" not in evaluate_run(run, quick, generation=False, log=quiet)
        path.write_text("{not json")  # unreadable: rewritten whole
        assert "generation" not in evaluate_run(run, quick, generation=False, log=quiet)
    finally:
        if saved is not None:
            path.write_bytes(saved)


@pytest.mark.parametrize("task,prompt,changes", [
    ("t2i", "a red circle in the centre", ["sample.image.threshold=0.2", "sample.image.cache_refresh=3"]),
    ("t2s", "a blue square", ["sample.audio.threshold=0.2", "sample.audio.cache_refresh=2"]),
])
def test_threshold_and_cached_decoding_reproduce_from_their_sidecars(tiny_tri_run, tmp_path, task, prompt, changes):
    _, run = tiny_tri_run
    out = generate(str(run), task, prompt, n=2, seed=3, overrides=changes, out=str(tmp_path / "a"), **QUIET)
    m = "image" if task == "t2i" else "audio"
    assert out[1]["settings"][m]["threshold"] == 0.2 and out[1]["settings"][m]["cache_refresh"] > 1
    again = generate_from_sidecar(tmp_path / "a" / "001.json", out=str(tmp_path / "b"), **QUIET)
    name = again[1]["output"]
    assert (tmp_path / "b" / name).read_bytes() == (tmp_path / "a" / name).read_bytes()
    plain = generate(str(run), task, prompt, n=2, seed=3, out=str(tmp_path / "c"), **QUIET)
    assert plain[1]["settings"][m]["threshold"] == 0.0  # the methods are off unless asked for


def test_free_text_decodes_in_blocks_and_captions_whole(tiny_tri_run, tmp_path):
    """sample.text.block: task text decodes block by block, each block in its share of the steps; an i2t
    caption is decoded whole; a sidecar records the block and regenerates the same text."""
    from trimdm.sample.run import sample_settings
    from trimdm.sample.tasks import Tasks
    from trimdm.train.run import load_run

    _, run = tiny_tri_run
    loaded = load_run(run)
    blocks = ["sample.text.block=8", "sample.text.steps=6"]  # gen_len 24: 3 blocks of 8, 2 steps each
    seen = []
    tasks = Tasks(loaded, sample_settings(loaded, blocks).sample, on_step=seen.append)
    tasks.text("And God said", 2, seed=0)
    assert seen and all((s.stages, s.steps, s.target) == (3, 2, "text") for s in seen)
    assert [s.stage for s in seen] == sorted(s.stage for s in seen) and seen[0].stage == 0
    seen.clear()
    size = tasks.media["image"].image_size
    tasks.i2t(np.random.default_rng(0).integers(0, 256, (1, size, size, 3), dtype=np.uint8), seed=0)
    assert seen and all(s.stages == 1 and s.steps == 6 for s in seen)
    made = generate(str(run), "text", "And God said", n=2, seed=4, overrides=blocks, out=str(tmp_path / "t"), **QUIET)
    assert made[0]["settings"]["text"]["block"] == 8
    again = generate_from_sidecar(tmp_path / "t" / "001.json", out=str(tmp_path / "again"), **QUIET)
    assert [s["text"] for s in again] == [s["text"] for s in made]
    with pytest.raises(ValueError, match="sample.text.steps=2 is fewer than the 3 blocks"):
        generate(str(run), "text", "And God said", n=1, overrides=["sample.text.block=8", "sample.text.steps=2"],
                 out=str(tmp_path / "bad"), **QUIET)
