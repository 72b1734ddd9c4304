"""Offline judges of the embedded data set tinyworld: its stand-ins for CLIP (image.py: reads an image
back into its scene) and Whisper (speech.py: a CTC character recogniser), method §9.

Owns: `settings()`, every default that shapes a trained judge (the prepare stage hashes it, so changing
a default retrains only the judges), and `load_judges`, the judges a prepared data set holds under
judges/{image,speech}/. Does not own where they are trained (data/tinyworld/dataset.py, stage
`judges`) or the generation metrics that use them (eval/generation.py).
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from trimdm.data.tinyworld.judges import image, speech


def settings() -> dict:
    """The default architecture and training settings of both judges, as plain JSON."""
    out = {"image": {"config": dataclasses.asdict(image.ImageJudgeConfig()),
                     "training": dataclasses.asdict(image.ImageJudgeTraining())},
           "speech": {"config": dataclasses.asdict(speech.SpeechJudgeConfig()),
                      "training": dataclasses.asdict(speech.SpeechJudgeTraining())}}
    return json.loads(json.dumps(out))  # tuples become lists, as in a stored manifest


def load_judges(data_dir: str | Path) -> dict:
    """{"image": ImageJudge, "speech": SpeechJudge} of a prepared tinyworld directory."""
    root = Path(data_dir) / "judges"
    if not root.is_dir():
        raise ValueError(f"{root} not found: prepare the tinyworld data set first (its judges stage)")
    return {"image": image.ImageJudge.load(root / "image"), "speech": speech.SpeechJudge.load(root / "speech")}
