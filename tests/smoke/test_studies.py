"""Every design-space study at `--scale smoke` through the sweep runner: the plumbing, the files and the
fits run end to end on tiny runs (the science is `--scale cpu`'s, docs/studies.md)."""
import json

import pytest

from trimdm.study import STUDIES
from trimdm.study.sweep import run_study


@pytest.mark.parametrize("name", ["schedule", "antimask", "mixing", "critical-batch", "scaling"])
def test_study_at_smoke_scale(name, tmp_path, data_root, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the runs prepare their data under ./data (shared by the study's runs)
    result = run_study(STUDIES[name], tmp_path / name, scale="smoke", overrides=[f"data.root={data_root}"],
                       jobs=2, cores=2, log=lambda *a: None)
    saved = json.loads((tmp_path / name / "results.json").read_text())
    assert saved["study"] == result["study"] == name
    text = (tmp_path / name / "study.md").read_text()
    assert "Question" in text and any(w in text for w in ("**agree**", "**disagree**", "**inconclusive**"))
    assert list((tmp_path / name).glob("*.png")), "no plot"
    runs = json.loads((tmp_path / name / "sweep.json").read_text())["runs"]
    assert runs and all(r["status"] in ("done", "skipped") for r in runs)
    # likelihood only: the data set's tokenizer reconstructions are left out of a study's evals
    assert all("reconstructions" not in json.loads((tmp_path / name / r["name"] / "eval.json").read_text())
               for r in runs)
    if name == "critical-batch":  # every run measures the online gradient noise scale (two micro-batches)
        assert all(row["noise_scale"] is not None for row in saved["runs"])
