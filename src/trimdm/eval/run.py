"""`trimdm eval`: evaluate a run into RUN/eval.json (held-out NELBO per modality, with baselines)."""
from __future__ import annotations

import json
import time
from pathlib import Path

from trimdm.data.prepare import prepare
from trimdm.eval.likelihood import heldout_nelbo
from trimdm.train.trainer import load_run


def evaluate_run(run: str | Path, overrides: list[str] = ()) -> dict:
    t0 = time.time()
    loaded = load_run(run)
    cfg = loaded.cfg.override(list(overrides), only="eval")
    data = prepare(cfg.data)
    val = data.sources("val", loaded.vocab, cfg.data.seq_len)
    result = heldout_nelbo(loaded.model, loaded.vocab, val, cfg, loaded.device, conditional=True)
    result["baselines"] = {"text_unigram_bits": data.unigram_bits()}
    run_dir = Path(loaded.checkpoint).parent.parent
    if hasattr(data, "tokenizers"):  # a data set with media: show and measure its tokenizers
        from trimdm.eval.reconstruct import write_reconstructions

        result["reconstructions"] = write_reconstructions(run_dir, data)
    result["checkpoint"] = str(loaded.checkpoint)
    result["seconds"] = round(time.time() - t0, 2)
    (run_dir / "eval.json").write_text(json.dumps(result, indent=2) + "\n")
    return result
