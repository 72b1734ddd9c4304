"""Where T2S errors come from: the speech judge's character error rate on val utterances when parts of
the audio are given from the real recording. Prints JSON.

    python benchmarks/t2s_levels.py [--run runs/demo] [--utterances 32] [--seed 0] [key=value sample overrides]

The run defaults to runs/demo, which `make demo` trains; without it the script says so and stops.

Rows (tinyworld runs only: the speech judge scores the samples):
    real_speech        the judge on the recordings themselves
    codec              the judge on the codec's reconstructions (the ceiling of any generation)
    rule_length        T2S as `trimdm eval` runs it (canvas length from the data set's length rule)
    real_length        T2S on a canvas as long as the real recording
    level0_given       the real coarsest codebook level given, levels 1..K-1 generated
    fine_levels_given  levels 1..K-1 given, level 0 generated
If `level0_given` is near `codec` while `fine_levels_given` stays near `real_length`, the coarse level
carries what the model gets wrong (docs/generation.md).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time

import numpy as np

from trimdm.data.prepare import prepare
from trimdm.data.tinyworld.judges.speech import cer
from trimdm.data.tinyworld.speech import read_speech_folder
from trimdm.sample.tasks import Tasks

from trained_run import add_run_flag, load_trained_run


def main() -> None:
    ap = argparse.ArgumentParser()
    add_run_flag(ap)
    ap.add_argument("--utterances", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("overrides", nargs="*", help="sample.* overrides")
    args = ap.parse_args()
    t0 = time.time()
    loaded = load_trained_run(args.run)
    data = prepare(loaded.cfg.data)
    if not hasattr(data, "judges"):
        raise SystemExit(f"{args.run}: a tinyworld run is needed (its speech judge scores the samples)")
    judge = data.judges()["speech"]
    tasks = Tasks(loaded, loaded.cfg.override(list(args.overrides), only="sample").sample)
    speech, _ = read_speech_folder(data.directory / "raw" / "speech_val", max_seconds=None)
    waves = [w for w, _ in speech[:args.utterances]]
    texts = [t for _, t in speech[:args.utterances]]
    v, K = tasks.vocab, tasks.vocab.audio_levels
    real = tasks.audio_ids(waves)

    def given(levels: set[int]) -> list[np.ndarray]:
        """T2S at the real recording's length with the real codes of `levels` given."""
        audio = [[tok if j % K in levels else v.MASK_audio for j, tok in enumerate(r)] for r in real]
        return tasks.t2s(texts, args.seed, audio=audio)[0]

    result = {"real_speech": cer(judge.transcribe(waves), texts),
              "codec": cer(judge.transcribe([tasks.wave_of_ids(r) for r in real]), texts),
              "rule_length": cer(judge.transcribe(tasks.t2s(texts, args.seed)[0]), texts),
              "real_length": cer(judge.transcribe(given(set())), texts),
              "level0_given": cer(judge.transcribe(given({0})), texts),
              "fine_levels_given": cer(judge.transcribe(given(set(range(1, K)))), texts)}
    print(json.dumps({"run": args.run, "utterances": len(texts), "audio_levels": K,
                      "sample": dataclasses.asdict(tasks.cfg["audio"]),
                      "cer": {k: round(float(x), 4) for k, x in result.items()},
                      "seconds": round(time.time() - t0, 1)}, indent=2))


if __name__ == "__main__":
    main()
