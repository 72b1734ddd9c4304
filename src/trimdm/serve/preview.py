"""Pictures of a canvas while it decodes: what the web page shows after each step (sampler.Step).

Owns: turning a partly revealed canvas into something to look at.
- image: the image span's tokens through the run's image decoder, with every still-masked token's
  patch painted grey. A masked position has no code, and the decoder needs one at every cell of its
  grid, so it gets a stand-in (the middle code of the codebook: FSQ's zero latent, a neutral colour);
  the decoder's convolutions spread each code a little into its neighbours, so the revealed patches
  next to hidden ones are approximate until the end. The final outputs are decoded from real codes only.
- text: the first text span of each row, revealed tokens decoded, each masked position shown as ░.
- audio: the share of the audio span revealed so far (a waveform of half its codes says little).
Does not own the decoding (sample/) or HTTP (app.py).
"""
from __future__ import annotations

import base64
import io
import math

import numpy as np
from PIL import Image

MASK_GLYPH = "░"
HIDDEN_GREY = np.array([150, 150, 150], dtype=np.uint8)


def png_base64(image: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


class Preview:
    """`Preview(loaded)(step)` -> the step's picture as JSON-ready data."""

    def __init__(self, loaded):
        self.vocab, self.text_tok = loaded.vocab, loaded.tokenizer
        self.image_tok = loaded.media_tokenizers.get("image")

    def __call__(self, step) -> dict:
        rows = step.canvas_BL.cpu().tolist()
        head = {"step": step.step, "steps": step.steps, "stage": step.stage, "stages": step.stages,
                "target": step.target, "first_row": step.first_row, "rows": step.rows or len(rows)}
        if step.target == "image" and self.image_tok is not None:
            return {**head, "images": [png_base64(im) for im in self.images(rows)]}
        if step.target == "audio":
            return {**head, "revealed": [self.revealed(r, "audio") for r in rows]}
        return {**head, "texts": [self.text(r) for r in rows]}

    def _span(self, row: list[int], modality: str) -> list[int]:
        """The ids of a row's `modality` span: after its BOS (text: the first text span) up to the first id
        that is neither content nor that modality's MASK (its EOS, padding, the next span)."""
        v = self.vocab
        start = row.index(v.bos(modality)) + 1 if v.bos(modality) in row else 1
        lo, hi = v.content_range(modality)
        out = []
        for t in row[start:]:
            if not (lo <= t < hi or t == v.mask(modality)):
                break
            out.append(t)
        return out

    def text(self, row: list[int]) -> str:
        """Revealed tokens decoded in runs, a glyph per masked position."""
        mask, pieces, run = self.vocab.MASK_text, [], []
        for t in self._span(row, "text") + [None]:
            if t is not None and t != mask:
                run.append(t)
                continue
            if run:
                pieces.append(self.text_tok.decode(run))
                run = []
            if t == mask:
                pieces.append(MASK_GLYPH)
        return "".join(pieces)

    def revealed(self, row: list[int], modality: str) -> float:
        span = self._span(row, modality)
        return round(sum(t != self.vocab.mask(modality) for t in span) / max(1, len(span)), 4)

    def images(self, rows: list[list[int]]) -> np.ndarray:
        """uint8 (B, H, W, 3): each row's image, hidden patches grey."""
        v, tok = self.vocab, self.image_tok
        n = int(tok.rate)
        grid = math.isqrt(n)
        codes = np.zeros((len(rows), n), dtype=np.int64)
        hidden = np.ones((len(rows), n), dtype=bool)
        for i, row in enumerate(rows):
            span = np.array(self._span(row, "image")[:n], dtype=np.int64)
            known = span != v.MASK_image
            codes[i, :len(span)] = np.where(known, span - v.off_image, tok.codebook_sizes[0] // 2)
            codes[i, len(span):] = tok.codebook_sizes[0] // 2
            hidden[i, :len(span)] = ~known
        images = tok.decode(codes).copy()
        patch = tok.image_size // grid
        cover = hidden.reshape(-1, grid, grid).repeat(patch, 1).repeat(patch, 2)  # (B, H, W)
        images[cover] = HIDDEN_GREY
        return images
