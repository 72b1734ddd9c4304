"""Speech judge: tinyworld's offline stand-in for Whisper (method §9, T2S intelligibility and speech match,
FAD-style distances).

Owns: a small CTC character recogniser (Graves et al. 2006) over log-mel features of 16 kHz speech, its
config, training on (wave, transcript) pairs, greedy batched transcription, `features` for Fréchet
distances, the transcript normalisation it is scored under, the character error rate, and save/load
(safetensors + JSON).

Does not own: the speech itself (data/tinyworld/speech.py), the mel filterbank (tokenizers/audio.py,
imported so that the judge hears the same bands as the codec), the Fréchet distance, or generation.

Architecture: log-mel (80 bands, 10 ms hop) normalised per band with training statistics -> a strided
convolution to 50 frames/s -> five residual dilated 1-D convolution blocks (BatchNorm, ReLU) -> a
linear layer over the CTC alphabet (blank, space, apostrophe, a-z). Measured on tinyworld (demo size,
450 steps): a bidirectional GRU (128) on three conv blocks read worse (CER 11.5% vs 9.8%) and cost 50%
more time, so there is none. The recogniser has no language model: its errors are mostly spellings
of what it hears ("curst" for "cursed"), and KJV names.

Text normalisation (`normalize_text`): lower case, accents stripped (NFKD), hyphens and other word
separators become spaces, every character outside a-z, space and apostrophe is dropped, runs of
spaces collapse, ends stripped.
"""
from __future__ import annotations

import dataclasses
import math
import re
import time
import unicodedata
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from trimdm.data.tinyworld.judges.image import load_judge
from trimdm.data.tinyworld.judges.training import fit_judge
from trimdm.fileio import save_module

FORMAT = "trimdm.speech_judge"
SAMPLE_RATE = 16_000
ALPHABET = " '" + "abcdefghijklmnopqrstuvwxyz"  # CTC class k + 1 is ALPHABET[k]; class 0 is the blank
_SEPARATORS = re.compile(r"[-_/\s]+")
_DROP = re.compile(r"[^a-z' ]")
_SPACES = re.compile(r" +")
_BATCH_FRAMES = 40_000  # mel frames per forward pass at inference; bounds memory


def normalize_text(text: str) -> str:
    """The form transcripts are scored in: lower case a-z, apostrophe and single spaces."""
    if not isinstance(text, str):
        raise ValueError(f"text must be a str, got {type(text).__name__}")
    t = unicodedata.normalize("NFKD", text.lower())  # "é" -> "e" + a combining accent, dropped below
    t = _DROP.sub("", _SEPARATORS.sub(" ", t))
    return _SPACES.sub(" ", t).strip()


def _edit_distance(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i] + [0] * len(b)
        for j, cb in enumerate(b, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb))
        prev = cur
    return prev[-1]


def _normalized(hyps: Sequence[str], refs: Sequence[str]) -> tuple[list[str], list[str]]:
    if len(hyps) != len(refs):
        raise ValueError(f"need as many hypotheses as references, got {len(hyps)} and {len(refs)}")
    h, r = [normalize_text(x) for x in hyps], [normalize_text(x) for x in refs]
    if sum(len(x) for x in r) == 0:
        raise ValueError("the references hold no characters after normalisation")
    return h, r


def edits(hyps: Sequence[str], refs: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(edit distance, reference length) per utterance, both texts normalised."""
    h, r = _normalized(hyps, refs)
    return (np.array([_edit_distance(a, b) for a, b in zip(h, r)], dtype=np.float64),
            np.array([len(x) for x in r], dtype=np.float64))


def cer(hyps: Sequence[str], refs: Sequence[str]) -> float:
    """Character error rate: total Levenshtein distance / total reference characters, both normalised."""
    e, c = edits(hyps, refs)
    return float(e.sum() / c.sum())


def pairwise_edits(hyps: Sequence[str], refs: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(edit distance of every hypothesis i to every reference j as an (n, n) array, reference lengths):
    the CER of any pairing π is E[i, π(i)] summed over i, over the lengths summed."""
    h, r = _normalized(hyps, refs)
    edits = np.array([[_edit_distance(a, b) for b in r] for a in h], dtype=np.float64)
    return edits, np.array([len(x) for x in r], dtype=np.float64)


def encode_text(text: str) -> list[int]:
    return [ALPHABET.index(c) + 1 for c in normalize_text(text)]


@dataclasses.dataclass(frozen=True)
class SpeechJudgeConfig:
    """Architecture and front end (saved with the weights)."""

    n_mels: int = 80
    n_fft: int = 512
    mel_hop: int = 160  # 10 ms at 16 kHz
    log_floor: float = 1e-5
    channels: int = 160
    kernel: int = 5
    dilations: tuple[int, ...] = (1, 2, 4, 1, 2)  # one residual block each; receptive field ±0.4 s

    def __post_init__(self) -> None:
        if isinstance(self.dilations, list):  # JSON gives lists
            object.__setattr__(self, "dilations", tuple(self.dilations))
        for name in ("n_mels", "n_fft", "mel_hop", "channels", "kernel"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"SpeechJudgeConfig.{name} must be a positive int, got {v!r}")
        if self.kernel % 2 == 0:
            raise ValueError(f"kernel must be odd, got {self.kernel}")
        if any(not isinstance(d, int) or d < 1 for d in self.dilations):
            raise ValueError(f"dilations must be positive ints, got {self.dilations!r}")
        if not self.log_floor > 0:
            raise ValueError(f"log_floor must be positive, got {self.log_floor}")

    @property
    def feature_dim(self) -> int:
        return 2 * self.channels


@dataclasses.dataclass(frozen=True)
class SpeechJudgeTraining:
    """Training settings. Steps scale with the data: `epochs` passes, within [min_steps, max_steps]."""

    batch: int = 32
    epochs: float = 7.5
    min_steps: int = 100
    max_steps: int = 1200
    lr: float = 4e-3
    weight_decay: float = 1e-4
    time_masks: int = 2  # SpecAugment (Park et al. 2019): masked spans per utterance, up to the widths below
    time_mask_frames: int = 15
    freq_masks: int = 2
    freq_mask_bands: int = 10
    seed: int = 0

    def batch_for(self, n: int) -> int:
        """`batch`, or smaller on a set too small for 16 batches per epoch (the miniature test data)."""
        return max(1, min(self.batch, math.ceil(n / 16)))

    def steps_for(self, n: int) -> int:
        return int(min(self.max_steps, max(self.min_steps, math.ceil(self.epochs * n / self.batch_for(n)))))


class _Block(nn.Module):
    def __init__(self, ch: int, kernel: int, dilation: int):
        super().__init__()
        self.conv = nn.Conv1d(ch, ch, kernel, padding=dilation * (kernel // 2), dilation=dilation, bias=False)
        self.norm = nn.BatchNorm1d(ch)

    def forward(self, x_BCT: torch.Tensor, mask_B1T: torch.Tensor) -> torch.Tensor:
        return (x_BCT + F.relu(self.norm(self.conv(x_BCT)))) * mask_B1T


class SpeechJudgeNet(nn.Module):
    """Normalised log-mel (B, n_mels, T) -> hidden (B, C, T') and CTC logits (B, T', 1 + len(ALPHABET))."""

    def __init__(self, cfg: SpeechJudgeConfig):
        super().__init__()
        from trimdm.tokenizers.audio import AudioCodecConfig, mel_filterbank

        self.cfg = cfg
        front = AudioCodecConfig(n_fft=cfg.n_fft, win=cfg.n_fft, mel_hop=cfg.mel_hop, hop=cfg.mel_hop,
                                 n_mels=cfg.n_mels, log_floor=cfg.log_floor)
        self.register_buffer("fb_MB", mel_filterbank(front), persistent=False)
        self.register_buffer("window", torch.hann_window(cfg.n_fft), persistent=False)
        self.register_buffer("mel_mean", torch.zeros(cfg.n_mels))  # per-band statistics, set from the
        self.register_buffer("mel_std", torch.ones(cfg.n_mels))  # training data
        self.stem = nn.Sequential(nn.Conv1d(cfg.n_mels, cfg.channels, cfg.kernel, stride=2, padding=cfg.kernel // 2,
                                            bias=False), nn.BatchNorm1d(cfg.channels), nn.ReLU())
        self.blocks = nn.ModuleList([_Block(cfg.channels, cfg.kernel, d) for d in cfg.dilations])
        self.out = nn.Linear(cfg.channels, 1 + len(ALPHABET))

    def log_mel(self, wave_T: torch.Tensor) -> torch.Tensor:
        """(T,) -> (n_mels, ceil(T / mel_hop)) natural-log mel magnitudes."""
        c = self.cfg
        spec = torch.stft(wave_T, c.n_fft, c.mel_hop, c.n_fft, self.window, center=True, pad_mode="constant",
                          return_complex=True).abs()
        n = -(-len(wave_T) // c.mel_hop)
        return torch.log(torch.clamp(self.fb_MB @ spec[:, :n], min=c.log_floor))

    def out_lengths(self, mel_lengths: torch.Tensor) -> torch.Tensor:
        return (mel_lengths - 1) // 2 + 1  # the stride-2 stem, padding kernel // 2

    def forward(self, mel_BMT: torch.Tensor, lengths_B: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Padded log-mel and its lengths in mel frames -> (hidden (B, C, T'), logits (B, T', V)).

        Every layer's output is zeroed past each utterance's end, as a lone utterance sees the
        convolutions' zero padding there: an utterance's output does not depend on its batch.
        """
        mask_B1M = (torch.arange(mel_BMT.shape[2]) < lengths_B[:, None])[:, None]
        x = (mel_BMT - self.mel_mean[:, None]) / self.mel_std[:, None] * mask_B1M
        h_BCT = self.stem(x)
        mask_B1T = (torch.arange(h_BCT.shape[2]) < self.out_lengths(lengths_B)[:, None])[:, None]
        h_BCT = h_BCT * mask_B1T
        for block in self.blocks:
            h_BCT = block(h_BCT, mask_B1T)
        return h_BCT, self.out(h_BCT.transpose(1, 2))


def _pad_mels(mels: Sequence[torch.Tensor], floor: float) -> tuple[torch.Tensor, torch.Tensor]:
    """list of (M, T_i) -> (B, M, max T) padded with silence (the log floor), lengths (B,)."""
    lengths = torch.tensor([m.shape[1] for m in mels])
    out = torch.full((len(mels), mels[0].shape[0], int(lengths.max())), math.log(floor))
    for i, m in enumerate(mels):
        out[i, :, :m.shape[1]] = m
    return out, lengths


def _as_wave(w) -> torch.Tensor:
    a = np.asarray(w)
    if a.ndim != 1 or not np.issubdtype(a.dtype, np.floating) or len(a) == 0:
        raise ValueError(f"a wave must be a non-empty 1-D float array, got {a.dtype} {a.shape}")
    return torch.from_numpy(a.astype(np.float32, copy=False))


class SpeechJudge:
    """Transcribes 16 kHz speech (float waves in [-1, 1]); see the module docstring."""

    def __init__(self, cfg: SpeechJudgeConfig, net: SpeechJudgeNet | None = None):
        self.cfg = cfg
        self.net = (net if net is not None else SpeechJudgeNet(cfg)).eval()

    def mels(self, waves: Sequence[np.ndarray]) -> list[torch.Tensor]:
        with torch.inference_mode():
            return [self.net.log_mel(_as_wave(w)) for w in waves]

    def _batches(self, waves: Sequence[np.ndarray]):
        """(indices, hidden (B, C, T'), logits (B, T', V), frame lengths (B,)) over length-sorted batches."""
        mels = self.mels(waves)
        order = sorted(range(len(mels)), key=lambda i: mels[i].shape[1])
        start = 0
        with torch.inference_mode():
            while start < len(order):
                end = start + 1
                while end < len(order) and (end - start + 1) * mels[order[end]].shape[1] <= _BATCH_FRAMES:
                    end += 1
                idx = order[start:end]
                x, lengths = _pad_mels([mels[i] for i in idx], self.cfg.log_floor)
                h, logits = self.net(x, lengths)
                yield idx, h, logits, self.net.out_lengths(lengths)
                start = end

    def transcribe(self, waves: Sequence[np.ndarray]) -> list[str]:
        """Greedy CTC: the best class per frame, repeats merged, blanks removed."""
        out = [""] * len(waves)
        for idx, _, logits, lengths in self._batches(waves):
            best = logits.argmax(-1)
            for row, i in enumerate(idx):
                seq = best[row, :lengths[row]].tolist()
                chars = [ALPHABET[k - 1] for j, k in enumerate(seq) if k and (j == 0 or seq[j - 1] != k)]
                out[i] = _SPACES.sub(" ", "".join(chars)).strip()
        return out

    def features(self, waves: Sequence[np.ndarray]) -> torch.Tensor:
        """(N, 2·channels) float32: mean and standard deviation over time of the last conv block."""
        out = torch.zeros(len(waves), self.cfg.feature_dim)
        for idx, h, _, lengths in self._batches(waves):
            for row, i in enumerate(idx):
                x = h[row, :, :lengths[row]]
                out[i] = torch.cat([x.mean(1), x.std(1, unbiased=False)])
        return out

    def save(self, directory: str | Path) -> None:
        save_module(directory, self.net.state_dict(), {"format": FORMAT, "config": dataclasses.asdict(self.cfg),
                                                       "alphabet": ALPHABET, "sample_rate": SAMPLE_RATE})

    @classmethod
    def load(cls, directory: str | Path) -> SpeechJudge:
        meta, cfg, net = load_judge(directory, FORMAT, SpeechJudgeConfig, SpeechJudgeNet)
        if meta.get("alphabet") != ALPHABET or meta.get("sample_rate") != SAMPLE_RATE:
            raise ValueError(f"{directory}: saved with another alphabet or sample rate than this code uses")
        return cls(cfg, net)


# ---------------------------------------------------------------------------------------------------
# training


def _spec_augment(x_BMT: torch.Tensor, lengths: torch.Tensor, t: SpeechJudgeTraining, floor: float,
                  gen: torch.Generator) -> torch.Tensor:
    """Time and frequency masks set to silence (Park et al. 2019, without time warping)."""
    x_BMT = x_BMT.clone()
    silence = math.log(floor)
    for b in range(len(x_BMT)):
        for _ in range(t.time_masks):
            w = int(torch.randint(t.time_mask_frames + 1, (1,), generator=gen))
            s = int(torch.randint(max(1, int(lengths[b]) - w), (1,), generator=gen))
            x_BMT[b, :, s:s + w] = silence
        for _ in range(t.freq_masks):
            w = int(torch.randint(t.freq_mask_bands + 1, (1,), generator=gen))
            s = int(torch.randint(max(1, x_BMT.shape[1] - w), (1,), generator=gen))
            x_BMT[b, s:s + w, :] = silence
    return x_BMT


def _length_batches(lengths: Sequence[int], batch: int, rng: np.random.Generator) -> list[np.ndarray]:
    """One epoch of batches of similar length: shuffle, sort within pools of 50 batches, shuffle batches."""
    order = rng.permutation(len(lengths))
    out = []
    pool = 50 * batch
    for s in range(0, len(order), pool):
        chunk = sorted(order[s:s + pool], key=lambda i: lengths[i])
        out += [np.array(chunk[k:k + batch]) for k in range(0, len(chunk), batch)]
    return [out[i] for i in rng.permutation(len(out))]


def train_speech_judge(
    waves: Sequence[np.ndarray],
    texts: Sequence[str],
    cfg: SpeechJudgeConfig = SpeechJudgeConfig(),
    training: SpeechJudgeTraining = SpeechJudgeTraining(),
    log: Callable[[str], None] | None = None,
    bf16: bool = False,
) -> tuple[SpeechJudge, dict[str, Any]]:
    """Train with CTC on 16 kHz waves and their transcripts; returns the judge and a report.

    Utterances whose transcript is empty or longer than the CTC frames are left out (counted in the
    report). Deterministic at a fixed thread count (seeded generators; torch's
    global one inside fork_rng). AdamW, 5% warm-up, cosine decay to 1% of `lr`, gradient clip 1;
    `bf16`: forward passes under bf16 autocast.
    """
    if len(waves) != len(texts) or len(waves) == 0:
        raise ValueError(f"need as many transcripts as waves (> 0), got {len(waves)} waves, {len(texts)} texts")
    t = training
    say = log or (lambda _m: None)
    t0, c0 = time.perf_counter(), time.process_time()
    judge = SpeechJudge(cfg)
    targets = [torch.tensor(encode_text(x), dtype=torch.long) for x in texts]
    mels = judge.mels(waves)
    keep = [i for i in range(len(mels)) if 0 < len(targets[i]) <= judge.net.out_lengths(torch.tensor(mels[i].shape[1]))]
    if not keep:
        raise ValueError("no utterance has a transcript that fits its length")
    mels, targets = [mels[i] for i in keep], [targets[i] for i in keep]
    feat_seconds = time.perf_counter() - t0
    steps, batch = t.steps_for(len(mels)), t.batch_for(len(mels))
    rng = np.random.default_rng(t.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(t.seed)
        net = SpeechJudgeNet(cfg)
        cat = torch.cat(mels, dim=1)
        net.mel_mean.copy_(cat.mean(1))
        net.mel_std.copy_(cat.std(1).clamp(min=1e-3))
        del cat
        gen = torch.Generator().manual_seed(t.seed)
        lengths = [m.shape[1] for m in mels]
        queue: list[np.ndarray] = []

        def loss_at(step):
            if not queue:
                queue.extend(_length_batches(lengths, batch, rng))
            idx = queue.pop()
            x, mel_len = _pad_mels([mels[i] for i in idx], cfg.log_floor)
            x = _spec_augment(x, mel_len, t, cfg.log_floor, gen)
            _, logits = net(x, mel_len)
            tgt = [targets[i] for i in idx]
            return F.ctc_loss(logits.float().log_softmax(-1).transpose(0, 1), torch.cat(tgt), net.out_lengths(mel_len),
                              torch.tensor([len(y) for y in tgt]), blank=0, reduction="mean", zero_infinity=True)

        losses = fit_judge(net, t, steps, loss_at, say, "speech judge", t0, label="ctc", bf16=bf16)
    net.eval()
    report = {"steps": steps, "batch": batch, "train_utterances": len(waves),
              "kept": len(mels), "threads": torch.get_num_threads(), "feature_seconds": round(feat_seconds, 1),
              "train_seconds": round(time.perf_counter() - t0, 1),
              "cpu_seconds": round(time.process_time() - c0, 1), "ctc_first": float(np.mean(losses[:10])),
              "ctc_last": float(np.mean(losses[-min(50, steps):])),
              "params": sum(p.numel() for p in net.parameters()),
              "config": dataclasses.asdict(cfg), "training": dataclasses.asdict(t)}
    return SpeechJudge(cfg, net), report
