"""Tokenizer reconstructions of held-out data, written where a person can see and hear them.

`write_reconstructions` encodes and decodes held-out images (a PNG grid: originals above, their
reconstructions below) and utterances (WAV pairs), and returns the tokenizers' measured reconstruction
metrics on those same items, so the files and the numbers describe the same data.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

from trimdm.data.tinyworld.scenes import read_image_folder
from trimdm.data.tinyworld.speech import read_speech_folder
from trimdm.tokenizers.audio import reconstruction_metrics as audio_metrics
from trimdm.tokenizers.image import reconstruction_metrics as image_metrics
from trimdm.tokenizers.image import save_grid


def write_reconstructions(run_dir: Path, data, n_images: int = 16, n_utterances: int = 4) -> dict:
    out = Path(run_dir) / "samples" / "reconstructions"
    out.mkdir(parents=True, exist_ok=True)
    raw = Path(data.directory) / "raw"
    items, _ = read_image_folder(raw / "images_val")
    images = np.stack([img for img, _, _ in items[:n_images]])
    image_tok, codec = data.tokenizers["image"], data.tokenizers["audio"]
    recon = image_tok.decode(image_tok.encode(images))
    save_grid(images, recon, out / "images.png")
    speech, _ = read_speech_folder(raw / "speech_val", max_seconds=None)
    files = []
    for i, (wave, text) in enumerate(speech[:n_utterances]):
        sf.write(out / f"utterance{i}_original.wav", wave, codec.sample_rate, subtype="PCM_16")
        sf.write(out / f"utterance{i}_codec.wav", np.clip(codec.decode(codec.encode(wave)), -1, 1),
                 codec.sample_rate, subtype="PCM_16")
        files.append({"text": text, "original": f"utterance{i}_original.wav", "codec": f"utterance{i}_codec.wav"})
    return {"directory": str(out), "image_grid": "images.png", "utterances": files,
            "image_metrics": image_metrics(image_tok, images),
            "audio_metrics": audio_metrics(codec, [w for w, _ in speech[:n_utterances]])}
