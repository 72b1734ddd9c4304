"""Generation tasks (method §8): build the canvas of a task, decode it, turn ids back into outputs.

Every task is a row in the training layout (sequence/layout.py) with the target span set to MASK:

    text    TASK_text BOS_text prompt MASK_text × gen_len                    (cut at the first EOS_text)
    t2i     TASK_image_text BOS_text caption EOS_text BOS_image MASK_image × 64 EOS_image
    t2s     TASK_audio_text BOS_text text EOS_text BOS_audio MASK_audio × N·K EOS_audio
    i2t     TASK_image_text BOS_text MASK_text × n EOS_text BOS_image image EOS_image
    s2t     TASK_audio_text BOS_text MASK_text × n EOS_text BOS_audio audio EOS_audio
    infill  any of the rows above, clean, with a span of its text, image or audio set to MASK

Lengths. An image is always h·w tokens. A T2S canvas has N frames from the data set's length rule
N = round(a + b·(text tokens)) (fitted at prepare time, carried by the run in
tokenizers/audio/length_rule.json), or with `sample.audio_length=eos` as many whole frames as the row
holds, and positions after a revealed EOS_audio become padding (EOS-truncation). Captions and
transcripts (i2t, s2t) come before their medium in the layout, so the medium's position tells the
model how long the text is; a free-length span would be read as a long caption. They are decoded at a
few candidate lengths n (speech: the inverted length rule ± 2 tokens; images: every length of the
training captions, recorded with the run in tokenizers/image/caption_lengths.json) and the text under
which the model finds the medium most probable is kept (`_describe`): a short caption of a two-object
scene is confident word by word but explains half the image, and a canvas one token longer than the
caption the model would write gets a filler word ("an image image of ...").

Blocks. Free text (task text, and a text span of infill) is decoded semi-autoregressively when
`sample.text.block` > 0: in blocks of that many tokens, left to right, each by confidence
(sampler.block_stages; LLaDA). Captions and transcripts (i2t, s2t) are decoded whole: they are short (one
to three blocks of 8 on the demo), their length is already chosen by the candidate search, the words
their medium settles (a colour, a shape, a place) often come last, and whole-span confidence decoding
lets the model fix those first; the text row's other settings were tuned on I2T (docs/sampling.md).

Guidance. The unconditional canvas of a task is its canvas with the condition span (the prompt's
tokens and its EOS, or the medium's tokens and its EOS) replaced by its modality's MASK.

Best of R (`sample.rerank` = R). i2t and s2t keep, of R draws at every candidate length, the text under
which the model finds the medium most probable; t2i keeps, of R images, the one the model finds most
probable for the caption (`_best_of`). Both judge with log p(medium | text), the direction a masked
diffusion model learns first, estimated as in multiple choice. Judging images by log p(caption | image)
instead picked worse on held-out compositions, and t2s draws once: neither direction's likelihood picked
better speech (docs/sampling.md). After the pick, `sample.refine` rounds of local search (i2t by default)
try every one-token change the model finds likely under the joint log p(text) + log p(medium | text)
(`_refine`).

Does not own the decoding loop (sampler.py) or file output (run.py).
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from trimdm.diffusion.likelihood import draw_uniforms, masked_logits, mc_answer_loglik
from trimdm.diffusion.schedules import parse_schedule
from trimdm.sample.sampler import Decoding, block_stages, decode, level_stages
from trimdm.sequence.layout import PAIRED_TEXT_START, paired_row, row_tables
from trimdm.tokenizers.vocab import MODALITIES

TASKS = ("text", "t2i", "t2s", "i2t", "s2t", "infill")
TARGET = {"text": "text", "t2i": "image", "t2s": "audio", "i2t": "text", "s2t": "text"}


@dataclass
class Canvas:
    ids_BL: torch.Tensor  # conditional canvas
    uncond_BL: torch.Tensor | None  # condition span masked (None: nothing to guide on)
    target: str  # the modality whose span is generated (picks the sampling settings)
    # free text (task text, text infill): decoded in `sample.text.block`-token blocks left to right
    # (sampler.block_stages); captions and transcripts (i2t, s2t) are decoded whole
    blocks: bool = False


def _pad_rows(rows: list[list[int]], pad: int, seq_len: int, what: str) -> torch.Tensor:
    longest = max(len(r) for r in rows)
    if longest > seq_len:
        raise ValueError(f"{what} needs {longest} positions but the model's rows hold data.seq_len={seq_len}")
    return torch.tensor([r + [pad] * (longest - len(r)) for r in rows], dtype=torch.long)


class Tasks:
    """The tasks of one trained run: `Tasks(loaded).t2i(["a red circle in the centre"], seed=0)`.
    `on_step` sees every decoding step of every canvas a task decodes (sampler.Step, with the batch's
    place in the task's canvas); it changes no output."""

    def __init__(self, loaded, sample_cfg=None, batch_size: int = 64, on_step=None):
        self.on_step = on_step
        self.loaded, self.vocab, self.text_tok = loaded, loaded.vocab, loaded.tokenizer
        self.media = loaded.media_tokenizers
        self.cfg = sample_cfg or loaded.cfg.sample
        self.seq_len = loaded.cfg.data.seq_len
        self.batch_size = batch_size
        tokenizers = Path(loaded.home) / "tokenizers"
        rule = tokenizers / "audio" / "length_rule.json"
        self.length_rule = json.loads(rule.read_text()) if rule.exists() else None
        spread = tokenizers / "image" / "caption_lengths.json"
        self.caption_spread = json.loads(spread.read_text()) if spread.exists() else None
        fit = tokenizers / "image" / "fit.json"  # how the training images were fitted (a corpus run)
        self.image_fit = json.loads(fit.read_text())["fit"] if fit.exists() else "crop"

    @property
    def image_tokens(self) -> int:
        return int(self.media["image"].rate)

    # -- pieces of rows -----------------------------------------------------------------------------
    def encode_text(self, text: str, what: str = "prompt") -> list[int]:
        if not text or not text.strip():
            raise ValueError(f"empty {what}: give some text")
        return self.text_tok.encode(text).tolist()

    def _need(self, modality: str) -> None:
        if modality not in self.media:
            raise ValueError(f"this run has no {modality} tokenizer (it was trained on text only)")

    def image_ids(self, images_NHW3: np.ndarray) -> list[list[int]]:
        self._need("image")
        codes = self.media["image"].encode(images_NHW3)
        return [self.vocab.image_ids(c.reshape(-1)).tolist() for c in codes]

    def audio_ids(self, waves: list[np.ndarray]) -> list[list[int]]:
        self._need("audio")
        return [self.vocab.audio_ids(self.media["audio"].encode(w)).tolist() for w in waves]

    def audio_frames(self, n_text_tokens: int) -> int:
        """Frames of a T2S canvas: the length rule, or every whole frame the row can hold."""
        K = self.vocab.audio_levels
        room = (self.seq_len - 5 - n_text_tokens) // K
        if self.cfg.audio_length == "eos" or self.length_rule is None:
            if self.cfg.audio_length == "rule":
                raise ValueError("sample.audio_length=rule but the run carries no "
                                 "tokenizers/audio/length_rule.json; use sample.audio_length=eos")
            return room
        r = self.length_rule
        return int(min(room, max(1, round(r["intercept"] + r["slope"] * n_text_tokens))))

    # -- canvases -----------------------------------------------------------------------------------
    def paired_canvas(self, modality: str, text: list[int] | None, media: list[int] | None,
                      text_len: int = 0, media_len: int = 0) -> tuple[list[int], list[int]]:
        """(row, uncond row) for `TASK_m BOS_text text EOS_text BOS_m media EOS_m`; None = generate."""
        v = self.vocab
        mask_t, mask_m = v.MASK_text, v.mask(modality)
        # a generated caption has a given length: in training the caption's end sits right before the
        # medium, so the layout itself tells the model how long the text is (see `caption_lengths`)
        text_part = text + [v.EOS_text] if text is not None else [mask_t] * text_len + [v.EOS_text]
        fixed_eos = modality == "image" or (modality == "audio" and self.cfg.audio_length == "rule")
        if media is not None:
            media_part = media + [v.eos(modality)]
        else:
            media_part = [mask_m] * media_len + ([v.eos(modality)] if fixed_eos else [])
        head = [v.task(f"{modality}_text"), v.BOS_text]
        row = head + text_part + [v.bos(modality)] + media_part
        if text is not None and media is None:  # condition: the text
            uncond = head + [mask_t] * len(text_part) + [v.bos(modality)] + media_part
        elif media is not None and text is None:  # condition: the medium
            uncond = head + text_part + [v.bos(modality)] + [mask_m] * len(media_part)
        else:
            uncond = None
        return row, uncond

    def _canvas(self, pairs: list[tuple[list[int], list[int] | None]], target: str, what: str) -> Canvas:
        pad = self.vocab.PAD_text
        ids = _pad_rows([r for r, _ in pairs], pad, self.seq_len, what)
        uncond = None
        if all(u is not None for _, u in pairs):
            uncond = _pad_rows([u for _, u in pairs], pad, self.seq_len, what)
        return Canvas(ids, uncond, target)

    # -- decoding -----------------------------------------------------------------------------------
    def run(self, canvas: Canvas, seed: int) -> torch.Tensor:
        """Decode a canvas in batches of `batch_size` rows with the target modality's settings."""
        s = self.cfg[canvas.target]
        how = Decoding(steps=s.steps, schedule=parse_schedule(s.schedule), temperature=s.temperature,
                       top_k=self.cfg.top_k, top_p=self.cfg.top_p, confidence_noise=self.cfg.confidence_noise,
                       remasking=s.remasking, guidance=s.guidance, threshold=s.threshold,
                       cache_refresh=s.cache_refresh)
        device = self.loaded.device
        gen = torch.Generator(device=device).manual_seed(seed)
        out = []
        for a in range(0, len(canvas.ids_BL), self.batch_size):
            ids = canvas.ids_BL[a:a + self.batch_size].to(device)
            unc = canvas.uncond_BL[a:a + self.batch_size].to(device) if canvas.uncond_BL is not None else None
            stages = None
            if s.order == "levels":
                stages = level_stages(ids, self.vocab, s.steps)
            elif canvas.blocks and s.block:
                stages = block_stages(ids, self.vocab, s.block, s.steps)
            x = decode(self.loaded.model, self.vocab, ids, how, uncond_BL=unc, generator=gen, eos_truncate=True,
                       autocast_dtype=self.loaded.autocast_dtype, stages=stages,
                       on_step=self._batch_steps(a, len(canvas.ids_BL), canvas.target))
            out.append(x.cpu())
        return torch.cat(out)

    def _batch_steps(self, first_row: int, rows: int, target: str):
        """`on_step` for one batch of a canvas: its steps, told where the batch sits."""
        if self.on_step is None:
            return None
        return lambda step: self.on_step(dataclasses.replace(step, first_row=first_row, rows=rows, target=target))

    # -- reading results back -----------------------------------------------------------------------
    def span(self, row: torch.Tensor, modality: str) -> list[int]:
        """Content ids of a row's `modality` span (text: its first text span), up to its EOS or padding."""
        v = self.vocab
        ids = row.tolist()
        start = ids.index(v.bos(modality)) + 1 if v.bos(modality) in ids else 1
        lo, hi = v.content_range(modality)
        out = []
        for t in ids[start:]:
            if not lo <= t < hi:
                break
            out.append(t)
        return out

    def text_of(self, row: torch.Tensor) -> str:
        return self.text_tok.decode(self.span(row, "text"))

    def image_of(self, row: torch.Tensor) -> np.ndarray:
        ids = np.array(self.span(row, "image"))
        assert len(ids) == self.image_tokens, f"image span of {len(ids)} tokens, expected {self.image_tokens}"
        return self.media["image"].decode(ids - self.vocab.off_image)

    def wave_of(self, row: torch.Tensor) -> np.ndarray:
        return self.wave_of_ids(self.span(row, "audio"))

    def wave_of_ids(self, audio_ids: list[int]) -> np.ndarray:
        """The codec's waveform of joint audio ids (whole frames; a trailing partial frame is dropped)."""
        K = self.vocab.audio_levels
        ids = np.array(audio_ids, dtype=np.int64)
        ids = ids[:len(ids) // K * K]
        if len(ids) == 0:
            return np.zeros(0, dtype=np.float32)
        return self.media["audio"].decode(self.vocab.audio_codes(ids)).astype(np.float32)

    # -- the tasks ----------------------------------------------------------------------------------
    def text(self, prompt: str, n: int, seed: int) -> list[str]:
        v = self.vocab
        ids = self.text_tok.encode(prompt).tolist() if prompt else []
        row = [v.TASK_text, v.BOS_text, *ids] + [v.MASK_text] * self.cfg.gen_len
        canvas = self._canvas([(row, None)] * n, "text", "prompt + sample.gen_len")
        out = self.run(dataclasses.replace(canvas, blocks=True), seed)
        texts = []
        for r in out[:, 2 + len(ids):].tolist():
            r = r[:r.index(v.EOS_text)] if v.EOS_text in r else r
            texts.append(prompt + self.text_tok.decode([t for t in r if t < v.n_text]))
        return texts

    def t2i(self, captions: list[str], seed: int) -> tuple[list[np.ndarray], torch.Tensor]:
        self._need("image")
        pairs = [self.paired_canvas("image", self.encode_text(c, "caption"), None, media_len=self.image_tokens)
                 for c in captions]
        out = self._best_of(self._canvas(pairs, "image", "caption + image"), captions, seed)
        return [self.image_of(r) for r in out], out

    def _best_of(self, canvas: Canvas, texts: list[str], seed: int) -> torch.Tensor:
        """Decode a media canvas `sample.rerank` = R times (seeds seed, seed+1, ...) and keep, per row, the
        draw the model finds most probable given the row's text (log p(medium | text))."""
        draws = [self.run(canvas, seed + r) for r in range(self.cfg.rerank)]
        if len(draws) == 1:
            return draws[0]
        modality = canvas.target
        kept = []
        for i, text in enumerate(texts):
            media = [self.span(d[i], modality) for d in draws]
            score = self._pair_loglik(modality, [text] * len(draws), media, modality, seed)
            kept.append(draws[int(np.argmax(score))][i])
        return torch.stack(kept)

    def t2s(self, texts: list[str], seed: int,
            audio: list[list[int]] | None = None) -> tuple[list[np.ndarray], torch.Tensor]:
        """Speech for each text. `audio` (one per text) fixes the audio span instead of the length rule:
        joint audio ids, MASK_audio where generated; the given ids stay as they are in both the row and
        its unconditional twin (benchmarks/t2s_levels.py gives the real codes of some levels)."""
        self._need("audio")
        K = self.vocab.audio_levels
        if audio is not None and len(audio) != len(texts):
            raise ValueError(f"t2s: {len(audio)} given audio spans for {len(texts)} texts")
        pairs = []
        for i, t in enumerate(texts):
            ids = self.encode_text(t, "text to speak")
            n = len(audio[i]) if audio is not None else K * self.audio_frames(len(ids))
            row, uncond = self.paired_canvas("audio", ids, None, media_len=n)
            if audio is not None:
                start = row.index(self.vocab.BOS_audio) + 1
                row[start:start + n] = uncond[start:start + n] = audio[i]
            pairs.append((row, uncond))
        out = self.run(self._canvas(pairs, "audio", "text + speech"), seed)
        return [self.wave_of(r) for r in out], out

    def _caption_len(self, media_len: int) -> int:
        return max(1, min(self.cfg.caption_len, self.seq_len - 6 - media_len))

    def caption_lengths(self, modality: str, media: list[int]) -> list[int]:
        """Candidate text lengths for a medium: speech from the inverted audio length rule (± 2 tokens
        around text ≈ (frames − a)/b), images every length of the training captions (a run saved
        before they were recorded: a spread from 6 to 24), at most `caption_len`."""
        top = self._caption_len(len(media))
        if modality == "audio" and self.length_rule:
            r = self.length_rule
            centre = round((len(media) / self.vocab.audio_levels - r["intercept"]) / max(r["slope"], 1e-6))
            cands = [centre - 2, centre, centre + 2]
        elif self.caption_spread:
            cands = list(range(self.caption_spread["min"], self.caption_spread["max"] + 1))
        else:
            cands = [6, 9, 12, 16, 20, 24]
        return sorted({min(max(c, 1), top) for c in cands})

    def _describe(self, modality: str, media: list[list[int]], seed: int) -> list[str]:
        """Text for each medium. Each of `sample.rerank` = R draws (seeds seed, seed+1, ...) decodes a
        canvas per candidate length; of all the distinct texts proposed for an item, the one under which
        the model finds the medium most probable is kept (`_pair_loglik`): the medium-given-text
        direction (T2I, T2S), which a masked diffusion model learns first, judges the texts the
        text-given-medium direction proposed, and picks the length with them."""
        proposals = [[] for _ in media]
        for r in range(self.cfg.rerank):
            for i, texts in enumerate(self._describe_once(modality, media, seed + r)):
                proposals[i] += texts
        out = []
        for m, texts in zip(media, proposals):
            cands = list(dict.fromkeys(texts))  # distinct, in proposal order
            if len(cands) == 1:
                out.append(cands[0])
                continue
            score = self._pair_loglik(modality, cands, [m] * len(cands), modality, seed)
            out.append(cands[int(np.argmax(score))])
        searched = self.cfg.refine and {"image": "i2t", "audio": "s2t"}[modality] in self.cfg.refine_tasks
        return self._refine(modality, media, out, seed) if searched else out

    def _refine(self, modality: str, media: list[list[int]], texts: list[str], seed: int) -> list[str]:
        """`sample.refine` rounds of local search around each chosen text (the tasks of
        `sample.refine_tasks`): the text and its one-token neighbours (`_neighbours`) compete under the
        joint log p(text) + log p(medium | text); the best is kept. A later round searches only the texts
        the round before changed, and a round that changes none ends the search. Sampling rarely
        proposes a composition that training never showed ("a yellow square" when yellow squares were
        held out): the text-given-medium direction follows the words it saw together, while the
        medium-given-text direction still prefers the right one. The prior
        log p(text) (the row with its medium masked) keeps the search from rewording the words the
        medium does not depend on, which log p(medium | text) alone would swap on noise
        (docs/sampling.md)."""
        ids = [self.text_tok.encode(t).tolist() for t in texts]
        active = list(range(len(ids)))  # a text that kept itself would find the same neighbours and scores again
        for _ in range(self.cfg.refine):
            moved = []
            near = self._neighbours(modality, [media[j] for j in active], [ids[j] for j in active])
            for j, nj in zip(active, near):
                cands = [ids[j]] + [c for c in dict.fromkeys(map(tuple, nj)) if list(c) != ids[j]]
                if len(cands) == 1:
                    continue
                given = [media[j]] * len(cands)
                joint = (self._pair_loglik(modality, cands, given, modality, seed)
                         + self._pair_loglik(modality, cands, given, "text", seed, hide_media=True))
                best = int(np.argmax(joint))  # the text itself (index 0) wins ties
                if best:
                    ids[j] = list(cands[best])
                    moved.append(j)
            if not moved:
                break
            active = moved
        return [self.text_tok.decode(t) for t in ids]

    def _neighbours(self, modality: str, media: list[list[int]], ids: list[list[int]]) -> list[list[list[int]]]:
        """Per text (BPE ids), the texts one token away: each token masked alone, in the row with its
        medium, and replaced by each of the model's `sample.refine_top` likeliest other tokens there."""
        v = self.vocab
        clean, where = [], []
        for j, (t, m) in enumerate(zip(ids, media)):
            row = paired_row(v, modality, np.asarray(t, dtype=np.int64), np.asarray(m, dtype=np.int64), self.seq_len)
            clean += [row] * len(t)
            where += [(j, i) for i in range(len(t))]
        out: list[list[list[int]]] = [[] for _ in ids]
        if not clean:
            return out
        clean_RL = torch.tensor(np.stack(clean))
        noisy_RL = clean_RL.clone()
        noisy_RL[torch.arange(len(where)), torch.tensor([PAIRED_TEXT_START + i for _, i in where])] = v.MASK_text
        top = []
        for _, _, heads, logits in masked_logits(self.loaded.model, row_tables(v), clean_RL, noisy_RL, 128,
                                                 self.loaded.device, self.loaded.autocast_dtype):
            (_, lo, hi, _, _), = heads  # one masked text position per row: the head's rows follow the batch's
            top.append(logits[0][:, :hi - lo].float().topk(self.cfg.refine_top + 1, dim=-1).indices.cpu() + lo)
        for (j, i), cands in zip(where, torch.cat(top).tolist()):
            for c in [c for c in cands if c != ids[j][i]][:self.cfg.refine_top]:
                out[j].append(ids[j][:i] + [c] + ids[j][i + 1:])
        return out

    def _describe_once(self, modality: str, media: list[list[int]], seed: int) -> list[list[str]]:
        """One draw: per medium, the text decoded at each of its candidate lengths."""
        texts: list[list[str]] = [[] for _ in media]
        lengths = [self.caption_lengths(modality, m) for m in media]
        for j in range(max(len(c) for c in lengths)):
            idx = [i for i, c in enumerate(lengths) if j < len(c)]
            pairs = [self.paired_canvas(modality, None, media[i], text_len=lengths[i][j]) for i in idx]
            rows = self.run(self._canvas(pairs, "text", f"text + {modality}"), seed)
            for i, r in zip(idx, rows):
                texts[i].append(self.text_of(r))
        return texts

    def _pair_loglik(self, modality: str, texts: list, media: list[list[int]], of: str, seed: int,
                     hide_media: bool = False) -> np.ndarray:
        """Monte-Carlo estimate of log p(`of` | the other) for each (text, medium) pair, `of` the text or
        the medium (the LLaDA estimator of diffusion/likelihood.py, method §9); texts are strings or BPE
        ids. With `hide_media`, the medium's span is MASK: log p(text), the text's prior in that task's
        rows. The candidates share the answer's length and the same mask draws, so that their
        differences carry little noise."""
        v = self.vocab
        if hide_media and of != "text":
            raise ValueError(f"with the {modality} hidden only log p(text) can be scored, not log p({of})")
        rows = torch.tensor(np.stack([
            paired_row(v, modality, np.asarray(self.text_tok.encode(t) if isinstance(t, str) else t, dtype=np.int64),
                       np.asarray(m, dtype=np.int64), self.seq_len)
            for t, m in zip(texts, media)]))
        tables = row_tables(v)
        if hide_media:
            hidden = (tables.modality(rows) == MODALITIES.index(modality)) & tables.maskable(rows)
            rows = torch.where(hidden, v.mask(modality), rows)
        answer = (tables.modality(rows) == MODALITIES.index(of)) & tables.maskable(rows)
        n_answer = int(answer[0].sum())
        if not bool((answer.sum(1) == n_answer).all()):
            raise ValueError(f"candidates scored as log p({of} | ...) must share the {of}'s length")
        uniforms = draw_uniforms(self.cfg.rerank_draws, n_answer, np.random.default_rng(seed))
        ll = mc_answer_loglik(self.loaded.model, v, rows, answer, *uniforms,
                              device=self.loaded.device, autocast_dtype=self.loaded.autocast_dtype)
        return ll.mean(1).numpy()

    def i2t(self, images: np.ndarray, seed: int) -> list[str]:
        return self._describe("image", self.image_ids(images), seed)

    def s2t(self, waves: list[np.ndarray], seed: int) -> list[str]:
        return self._describe("audio", self.audio_ids(waves), seed)

    def infill(self, row: list[int], positions, modality: str, n: int, seed: int) -> torch.Tensor:
        """Regenerate the given positions of a clean row (all of `modality`; any set of them, e.g. a
        range, or the cells of a rectangle of an image's raster) n times."""
        mask = self.vocab.mask(modality)
        masked = list(row)
        for p in positions:
            masked[p] = mask
        return self.run(Canvas(_pad_rows([masked] * n, self.vocab.PAD_text, self.seq_len, "infill row"), None,
                               modality, blocks=modality == "text"), seed)
