"""`trimdm export` on a tiny trained tri-modal run: the folder describes itself, loads wherever a run
does and generates the same bits, its card carries the run's eval table, and loading names the file
that is missing, corrupt or does not fit."""
import json
import shutil
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from trimdm.cli import main
from trimdm.eval.run import evaluate_run
from trimdm.fileio import sha256_file
from trimdm.sample.run import generate, generate_from_sidecar
from trimdm.train.checkpoint import latest_checkpoint
from trimdm.train.export import export_run
from trimdm.train.run import build_model, load_run
from trimdm.train.trainer import init_weights_from

QUIET = {"log": lambda *a: None}
ROOT_FILES = {"config.json", "model.safetensors", "README.md", "sampling.json", "tokenizer", "tokenizers"}


def _copy_run(run: Path, dest: Path) -> Path:
    """The trained run without what other tests may have added to it (eval.json, samples)."""
    dest.mkdir()
    for name in ("checkpoints", "tokenizer", "tokenizers"):
        shutil.copytree(run / name, dest / name)
    for name in ("config.json", "vocab.json"):
        shutil.copyfile(run / name, dest / name)
    return dest


@pytest.fixture(scope="module")
def exported(tiny_tri_run, tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    run = _copy_run(Path(tiny_tri_run[1]), root / "run")
    return run, export_run(run, root / "model", **QUIET)


def test_the_folder_describes_itself(exported):
    run, folder = exported
    assert {p.name for p in folder.iterdir()} == ROOT_FILES  # not evaluated: no eval.json
    assert [p.name for p in folder.parent.iterdir() if p.name.startswith(".")] == []  # no temporary left
    meta = json.loads((folder / "config.json").read_text())
    assert (meta["format"], meta["version"], meta["library_name"]) == ("trimdm-model", 1, "trimdm")
    assert meta["trained"]["step"] == 20 and meta["trained"]["tokens"] == 20 * 8 * 384
    on_disk = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    assert set(meta["files"]) == on_disk - {"config.json", "README.md"}
    assert {"tokenizer/tokenizer.json", "tokenizers/image/model.safetensors", "tokenizers/audio/model.safetensors",
            "tokenizers/audio/length_rule.json", "tokenizers/image/caption_lengths.json"} <= set(meta["files"])
    for name, rec in meta["files"].items():
        assert rec == {"bytes": (folder / name).stat().st_size, "sha256": sha256_file(folder / name)}
    # the weights only, fp32, equal to the checkpoint's
    weights = load_file(folder / "model.safetensors")
    ckpt = load_file(latest_checkpoint(run) / "model.safetensors")
    assert weights.keys() == ckpt.keys() and all(v.dtype == torch.float32 for v in weights.values())
    assert all(torch.equal(weights[k], ckpt[k]) for k in ckpt)
    a, b = load_run(run), load_run(folder)
    assert b.checkpoint == folder and b.model_folder and b.home == folder
    assert "sample" not in meta["trimdm_config"] and b.cfg.to_dict() == a.cfg.to_dict()
    assert json.loads((folder / "sampling.json").read_text())["sample"] == json.loads(json.dumps(asdict(a.cfg.sample)))
    card = (folder / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: trimdm\n") and "\n- text-to-image\n" in card
    total = sum(v.numel() for v in weights.values())
    embedding = sum(v.numel() for k, v in weights.items() if k.startswith(("embed.", "unembed.")))
    assert "| d_model | 64 |" in card and f"| parameters | {total:,} |" in card
    assert f"| parameters without embeddings | {total - embedding:,} |" in card
    assert "| steps | 20 of 20 planned |" in card and "| tokens | 61,440 of 61,440 planned |" in card
    assert "| recipe | tiny_tri |" in card and "| dataset | tinyworld |" in card
    assert "This model was not evaluated" in card


def test_generation_from_the_folder_is_bit_identical_to_the_run(exported, tmp_path):
    run, folder = exported
    for task, prompt in (("text", "a red"), ("t2i", "a red circle"), ("t2s", "a blue square")):
        generate(str(run), task, prompt, n=2, seed=5, out=str(tmp_path / f"run-{task}"), **QUIET)
        sides = generate(str(folder), task, prompt, n=2, seed=5, out=str(tmp_path / f"folder-{task}"), **QUIET)
        assert sides[0]["checkpoint"] == str(folder)
        outputs = sorted(p.name for p in (tmp_path / f"run-{task}").iterdir() if p.suffix != ".json")
        assert len(outputs) >= 2 and outputs == sorted(p.name for p in (tmp_path / f"folder-{task}").iterdir()
                                                        if p.suffix != ".json")
        for name in outputs:
            assert (tmp_path / f"run-{task}" / name).read_bytes() == (tmp_path / f"folder-{task}" / name).read_bytes()
    again = generate_from_sidecar(tmp_path / "folder-t2i" / "001.json", out=str(tmp_path / "again"), **QUIET)
    assert again[1]["checkpoint"] == str(folder)
    assert (tmp_path / "again" / "001.png").read_bytes() == (tmp_path / "run-t2i" / "001.png").read_bytes()
    with pytest.raises(ValueError, match="is a model folder, which trimdm does not write into: pass --out"):
        generate(str(folder), "text", "a red", n=1, **QUIET)
    assert {p.name for p in folder.iterdir()} == ROOT_FILES


def _eval_json(checkpoint: str) -> dict:
    return {"nelbo": {"text": {"bits_per_token": 3.25, "perplexity_bound": 9.5, "tokens": 1000}},
            "conditional_nelbo": {"image|text": {"bits_per_token": 4.5, "tokens": 64}},
            "baselines": {"text_unigram_bits": 5.5},
            "generation": {"t2i": {"groups": {"seen_single": {"accuracy": 0.75, "chance": 0.125, "n": 8}}},
                           "t2s": {"cer": 0.4, "chance": 0.8, "n": 3}, "fid_image": 12.0},
            "multiple_choice": [{"file": "/x/questions.jsonl", "accuracy": 0.5, "chance": 0.25, "questions": 32}],
            "tau_points": 2, "checkpoint": checkpoint}


def test_the_card_carries_the_runs_eval_table(tiny_tri_run, tmp_path):
    run = _copy_run(Path(tiny_tri_run[1]), tmp_path / "run")
    latest = latest_checkpoint(run)
    (run / "eval.json").write_text(json.dumps(_eval_json(str(latest))))
    folder = export_run(run, tmp_path / "model", **QUIET)
    card = (folder / "README.md").read_text()
    assert "| held-out NELBO, text (bits/token) | 3.250 | unigram entropy 5.500 | 1,000 |" in card
    assert "| held-out NELBO, image given text (bits/token) | 4.500 |  | 64 |" in card
    assert "| T2I all attributes right, seen single | 75.0% | chance 12.5% | 8 |" in card
    assert "| T2S character error rate | 40.0% | chance 80.0% | 3 |" in card
    assert "| multiple choice, questions.jsonl | 50.0% | chance 25.0% | 32 |" in card
    assert "not evaluated" not in card
    assert (folder / "eval.json").read_bytes() == (run / "eval.json").read_bytes()
    assert "eval.json" in json.loads((folder / "config.json").read_text())["files"]
    # an eval of another checkpoint would misdescribe the export: left out, and the card says so
    (run / "eval.json").write_text(json.dumps(_eval_json(str(latest.with_name("step_00000010")))))
    other = export_run(run, tmp_path / "other", **QUIET)
    card = (other / "README.md").read_text()
    assert "evaluates checkpoint `step_00000010`, not the exported one" in card and "3.250" not in card
    assert not (other / "eval.json").exists()


def _edit_json(path: Path, fn) -> None:
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))


def test_loading_names_the_file_that_is_wrong(exported, tmp_path):
    folder = exported[1]

    def copy(name: str) -> Path:
        return Path(shutil.copytree(folder, tmp_path / name))

    f = copy("flipped")
    data = bytearray((f / "model.safetensors").read_bytes())
    data[-100] ^= 0xFF  # one weight's bits, same size
    (f / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"flipped/model\.safetensors: corrupt \(its SHA-256"):
        load_run(f)
    f = copy("truncated")
    (f / "model.safetensors").write_bytes(bytes(data[:-64]))
    with pytest.raises(ValueError, match=r"truncated/model\.safetensors: truncated or corrupt"):
        load_run(f)
    f = copy("shape")
    _edit_json(f / "config.json", lambda m: m["trimdm_config"]["model"].update(d_model=32))
    with pytest.raises(ValueError, match=r"shape/model\.safetensors: embed\.\w+ has shape \(\d+, 64\), but "
                                         r".*shape/config\.json describes \(\d+, 32\)"):
        load_run(f)
    f = copy("tokenizer")
    (f / "tokenizers" / "image" / "model.safetensors").unlink()
    with pytest.raises(ValueError, match=r"tokenizer/tokenizers/image/model\.safetensors: missing"):
        load_run(f)
    f = copy("config")
    (f / "config.json").write_text((folder / "config.json").read_text()[:200])
    with pytest.raises(ValueError, match=r"config/config\.json: unreadable model folder config"):
        load_run(f)
    f = copy("escape")
    _edit_json(f / "config.json", lambda m: m["files"].update({"../run/config.json": {"bytes": 1, "sha256": "0"}}))
    with pytest.raises(ValueError, match=r"bad file entry '\.\./run/config\.json'"):
        load_run(f)
    f = copy("card")  # the card is documentation: editing it changes nothing
    (f / "README.md").write_text("my own notes\n")
    assert load_run(f).checkpoint == f


def test_the_folder_s_sampling_defaults_are_the_ones_used(exported, tmp_path):
    f = Path(shutil.copytree(exported[1], tmp_path / "resampled"))
    _edit_json(f / "sampling.json", lambda s: s["sample"]["image"].update(steps=3, guidance=2.5))
    with pytest.raises(ValueError, match=r"resampled/sampling\.json: (truncated or )?corrupt"):  # edited, not re-listed
        load_run(f)
    _edit_json(f / "config.json", lambda m: m["files"]["sampling.json"].update(
        bytes=(f / "sampling.json").stat().st_size, sha256=sha256_file(f / "sampling.json")))
    loaded = load_run(f)
    assert (loaded.cfg.sample.image.steps, loaded.cfg.sample.image.guidance) == (3, 2.5)
    side = generate(str(f), "t2i", "a red circle", n=1, seed=0, out=str(tmp_path / "t2i"), **QUIET)[0]
    assert side["settings"]["image"]["steps"] == 3 and side["settings"]["image"]["guidance"] == 2.5


def test_export_refuses_to_overwrite_and_leaves_nothing_behind(exported, tmp_path, capsys):
    run, folder = exported
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="taken: exists and is not an empty folder; an export never overwrites"):
        export_run(run, taken, **QUIET)
    assert [p.name for p in taken.iterdir()] == ["keep.txt"] and (taken / "keep.txt").read_text() == "mine"
    assert main(["export", "--run", str(run), "--out", str(taken)]) == 2
    assert "never overwrites" in capsys.readouterr().err
    with pytest.raises(ValueError, match="a model folder already"):
        export_run(folder, tmp_path / "again", **QUIET)
    with pytest.raises(ValueError, match="no such run"):
        export_run(tmp_path / "nope", tmp_path / "out", **QUIET)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["export", "--run", str(run), "--out", str(empty)]) == 0
    assert {p.name for p in empty.iterdir()} == ROOT_FILES
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "taken"]  # no temporary folder left


def test_eval_and_train_init_take_a_folder(exported, tmp_path, capsys):
    run, folder = exported
    before = sorted(p.relative_to(folder) for p in folder.rglob("*"))
    assert main(["eval", "--run", str(folder), "--no-generation"]) == 2
    assert "pass --out DIR" in capsys.readouterr().err
    quick = ["eval.max_rows=8", "eval.tau_points=2"]
    assert main(["eval", "--run", str(folder), "--out", str(tmp_path / "ev"), "--no-generation", *quick]) == 0
    ev = json.loads((tmp_path / "ev" / "eval.json").read_text())
    assert ev["checkpoint"] == str(folder) and ev["nelbo"]["text"]["bits_per_token"] > 0
    assert (tmp_path / "ev" / "report.md").exists()
    with pytest.raises(ValueError, match="a model folder, which trimdm does not write into"):
        evaluate_run(run, quick, generation=False, out=folder, **QUIET)
    assert sorted(p.relative_to(folder) for p in folder.rglob("*")) == before
    loaded = load_run(run)
    model = build_model(loaded.cfg, loaded.vocab)
    assert init_weights_from(model, loaded.vocab, folder) == folder
    assert all(torch.equal(v, loaded.model.state_dict()[k]) for k, v in model.state_dict().items())
