"""`trimdm study batch` end to end on the tiny recipe: one run per (arm, batch, seed), the table read
back from each run's eval.json, the plot and the conclusion written, and finished runs reused. The runs
are subprocesses of the sweep runner, two at a time with one thread each."""
import json

from trimdm.study.batch import run_batch_study, run_dir


def test_batch_study_trains_each_point_and_reuses_finished_runs(data_root, tmp_path):
    out = tmp_path / "study"
    overrides = [f"data.root={data_root}", "train.tokens=12288", "optim.base.tokens=12288", "train.log_every=2"]
    sweep = {"jobs": 2, "cores": 2}
    result = run_batch_study(out, "tiny", [4, 8], ["sde", "none"], [0], overrides, log=lambda *a: None, **sweep)
    assert [(r["arm"], r["batch"]) for r in result["runs"]] == [("sde", 4), ("sde", 8), ("none", 4), ("none", 8)]
    for r in result["runs"]:
        d = run_dir(out, r["arm"], r["batch"], r["seed"])
        ev, cfg = json.loads((d / "eval.json").read_text()), json.loads((d / "config.json").read_text())
        assert r["heldout_nelbo_bits"]["text"] == ev["nelbo"]["text"]["bits_per_token"]
        assert cfg["train"]["batch_size"] == r["batch"] and cfg["optim"]["reparam"] == r["arm"]
        assert r["steps"] == 12288 // (r["batch"] * 64)
    sde, none = (run_dir(out, a, 4, 0) for a in ("sde", "none"))
    k_sde = json.loads((sde / "config.json").read_text())["derived"]["kappa"]
    assert k_sde != 1.0 and json.loads((none / "config.json").read_text())["derived"]["kappa"] == 1.0
    s = result["summary"]["sde"]
    means = [v["mean"] for v in s["per_batch"].values()]
    assert s["spread_across_batches"] == max(means) - min(means)
    md = (out / "batch_study.md").read_text()
    assert "Measured: spread" in md and (out / "batch_study.png").stat().st_size > 0
    assert (out / "study.md").read_text() == md and json.loads((out / "results.json").read_text()) == \
        json.loads((out / "batch_study.json").read_text())
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*/eval.json")}
    again = run_batch_study(out, "tiny", [4, 8], ["sde", "none"], [0], overrides, log=lambda *a: None, **sweep)
    assert again["runs"] == result["runs"] and {p: p.stat().st_mtime_ns for p in stamps} == stamps
