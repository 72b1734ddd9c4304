"""The KJV's offline text judge: does generated text read as the text the model was trained on?

Owns: the judge's words (`words`), an interpolated Kneser–Ney n-gram model over them (`KneserNey`, a
trigram by default), the unigram entropy of a text (`unigram_entropy`), per-text scores (`score_texts`)
and the judge of the KJV (`kjv_judge`: fitted on the training split of data/kjv.py, with the held-out
chapters beside it for the reference). Does not own generating the texts or the statistics over them
(eval/generation.py: `text_metrics`).

Words, not the run's BPE tokens, so that the judge is one fixed instrument: the same for every run,
whatever its tokenizer or vocabulary size. A word is a run of ASCII letters (inner apostrophes kept, case
kept: "And" opens a verse, "and" joins) and every other non-space character is a word of its own
(",", ";", ":"), which is what makes "said,,, the to and" expensive. The vocabulary is the training
split's words plus `<unk>`; a word never seen in training (a non-word such as "theedb" that BPE pieces
spell) is `<unk>`, whose only mass is the uniform floor of the lowest order: it costs about 21 to 25
bits in the KJV judge.

Interpolated Kneser–Ney (Kneser & Ney 1995; Chen & Goodman 1998, eq. 17 with one discount per order):

    p_n(w | u) = max(c(u w) − D_n, 0) / c(u ·) + D_n · N1+(u ·) / c(u ·) · p_{n−1}(w | u')

for a context u of n − 1 words seen in training (u' drops its first word; an unseen context backs off
whole, p_n = p_{n−1}), with the lowest order interpolated with the uniform distribution over the
vocabulary, so that every word has a probability and they sum to one for any context. c is the raw
count at the highest order and, below it, the continuation count N1+(· u w), the number of distinct words
seen before the n-gram; an n-gram that begins with the document start `<s>` has no word before it and
keeps its raw count (as KenLM does). D_n = n1 / (n1 + 2·n2) from that order's counts of counts, held in
[0.1, 0.9] so that a toy corpus (no count of two) still leaves mass to back off to. Documents are padded
on the left with n − 1 `<s>`; no end-of-document event is modelled (generated samples are cut at a
length, not at an end), so the vocabulary the probabilities sum over is the training words and `<unk>`.
Fitting the KJV's 0.89M training words takes about a second with numpy; nothing is cached.
"""
from __future__ import annotations

import re
import time
from collections import Counter
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from trimdm.data import kjv

_WORD = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)*|\S")
UNK, BOS = "<unk>", "<s>"


def words(text: str) -> list[str]:
    """The judge's words of a text: letter runs (case and inner apostrophes kept) and single other characters."""
    return _WORD.findall(text)


def unigram_entropy(tokens: Sequence[str]) -> float:
    """Entropy (bits) of the empirical distribution of the tokens of one text: log2 of the number of
    distinct tokens when each appears equally often, 0 for a text of one repeated token (or none). It
    grows with the text's length, so texts are compared at equal lengths."""
    if not tokens:
        return 0.0
    counts = np.array(list(Counter(tokens).values()), dtype=np.float64)
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum())


def _lookup(keys: np.ndarray, values: np.ndarray, query: np.ndarray) -> np.ndarray:
    """values[k] for each query key present in the sorted `keys`, 0 where absent."""
    if len(keys) == 0:
        return np.zeros(query.shape, dtype=values.dtype)
    i = np.minimum(np.searchsorted(keys, query), len(keys) - 1)
    return np.where(keys[i] == query, values[i], 0)


@dataclass
class _Order:
    """The counts of one order n: every n-gram seen (encoded keys, sorted) with its count as used at this
    order (raw at the top, continuation below), and per context its total and number of distinct words."""

    keys: np.ndarray
    counts: np.ndarray
    context_keys: np.ndarray
    context_totals: np.ndarray
    context_types: np.ndarray
    discount: float


class KneserNey:
    """An interpolated Kneser–Ney n-gram model over words (module docstring). `fit` builds it from
    documents (lists of words); `log2probs` scores a text's words, each given the n − 1 before it."""

    def __init__(self, order: int, types: list[str], orders: list[_Order], raw: list[tuple[np.ndarray, np.ndarray]]):
        self.order, self.types = order, types
        self.index = {w: i for i, w in enumerate(types)}
        self.unk, self.bos = len(types), len(types) + 1
        self.base = len(types) + 2  # ids: the types, <unk>, <s>
        self._orders, self._raw = orders, raw

    @property
    def vocab_size(self) -> int:
        """The words probabilities are spread over: the training words and <unk> (never <s>)."""
        return len(self.types) + 1

    @property
    def discounts(self) -> list[float]:
        return [o.discount for o in self._orders]

    @classmethod
    def fit(cls, docs: Iterable[Sequence[str]], order: int = 3) -> KneserNey:
        docs = [list(d) for d in docs]
        if order < 1:
            raise ValueError(f"order={order} must be >= 1")
        types = sorted({w for d in docs for w in d})
        if not types or UNK in types or BOS in types:
            raise ValueError(f"documents to fit an n-gram model on need words, and none of {UNK}, {BOS}")
        index = {w: i for i, w in enumerate(types)}
        bos, base = len(types) + 1, len(types) + 2
        if base ** order >= 2 ** 62:
            raise ValueError(f"order={order} with {len(types):,} words does not fit 64-bit n-gram keys")
        pad = order - 1
        ids = np.concatenate([np.array([bos] * pad + [index[w] for w in d], dtype=np.int64) for d in docs])
        is_word = ids != bos  # n-grams end at every word of every document; the pads only precede
        ends = np.nonzero(is_word)[0]
        raw, key = [], np.zeros(len(ends), dtype=np.int64)
        for n in range(1, order + 1):  # key of the n-gram ending at each word: n words in base `base`
            key = key + ids[ends - n + 1] * base ** (n - 1)
            raw.append(np.unique(key, return_counts=True))
        orders: list[_Order] = [None] * order  # type: ignore[list-item]
        for n in range(order, 0, -1):
            keys, counts = raw[n - 1]
            if n < order:  # continuation count: distinct words seen before the n-gram (one order up)
                up = raw[n][0]
                suffix, left = np.unique(up % base ** n, return_counts=True)
                assert np.array_equal(suffix, keys), "every n-gram below the top extends to the left"
                starts = keys // base ** (n - 1) == bos  # n-grams that open a document: raw counts
                counts = np.where(starts, counts, left)
            ctx = keys // base
            context_keys, first, types_n = np.unique(ctx, return_index=True, return_counts=True)
            totals = np.add.reduceat(counts, first) if len(counts) else counts
            n1, n2 = int((counts == 1).sum()), int((counts == 2).sum())
            discount = min(max(n1 / (n1 + 2 * n2), 0.1), 0.9) if n1 + n2 else 0.5
            orders[n - 1] = _Order(keys, counts, context_keys, totals.astype(np.int64), types_n, discount)
        return cls(order, types, orders, raw)

    def encode(self, tokens: Sequence[str]) -> np.ndarray:
        """Ids of words, <unk> for any word not seen in training."""
        return np.array([self.index.get(w, self.unk) for w in tokens], dtype=np.int64)

    def count(self, gram: Sequence[str]) -> int:
        """How often an n-gram (1 to `order` words, `<s>` for the document start) occurs in training."""
        ids = [self.bos if w == BOS else self.index.get(w, self.unk) for w in gram]
        if not 1 <= len(ids) <= self.order:
            raise ValueError(f"an n-gram of 1 to {self.order} words, got {len(ids)}")
        key = np.array([sum(i * self.base ** (len(ids) - 1 - j) for j, i in enumerate(ids))], dtype=np.int64)
        keys, counts = self._raw[len(ids) - 1]
        return int(_lookup(keys, counts, key)[0])

    def _prob(self, context_NC: np.ndarray, word_N: np.ndarray) -> np.ndarray:
        """p(word | the last order − 1 ids of the context) for N queries at once."""
        lowest = self._orders[0]
        total = float(lowest.context_totals[0])
        c = _lookup(lowest.keys, lowest.counts, word_N)
        p = (np.maximum(c - lowest.discount, 0) + lowest.discount * len(lowest.keys) / self.vocab_size) / total
        ctx = np.zeros(len(word_N), dtype=np.int64)
        for n in range(2, self.order + 1):
            o = self._orders[n - 1]
            ctx = ctx + context_NC[:, -(n - 1)] * self.base ** (n - 2)  # the last n − 1 context ids
            total = _lookup(o.context_keys, o.context_totals, ctx).astype(np.float64)
            distinct = _lookup(o.context_keys, o.context_types, ctx)
            c = _lookup(o.keys, o.counts, ctx * self.base + word_N)
            seen = total > 0
            safe = np.where(seen, total, 1.0)
            p = np.where(seen, (np.maximum(c - o.discount, 0) + o.discount * distinct * p) / safe, p)
        return p

    def log2probs(self, tokens: Sequence[str]) -> np.ndarray:
        """log2 p of each word of a text given the order − 1 words before it (a text opens a document)."""
        if len(tokens) == 0:
            return np.zeros(0)
        pad = self.order - 1
        ids = np.concatenate([np.full(pad, self.bos, dtype=np.int64), self.encode(tokens)])
        context = np.lib.stride_tricks.sliding_window_view(ids[:-1] if pad else ids, pad)[:len(tokens)]
        return np.log2(self._prob(context, ids[pad:]))

    def distribution(self, context: Sequence[str]) -> np.ndarray:
        """p(w | context) for every word of the vocabulary (ids: `types` in order, then <unk>); a context
        shorter than order − 1 words is the start of a document."""
        ids = [self.bos] * (self.order - 1) + [self.bos if w == BOS else self.index.get(w, self.unk) for w in context]
        ctx = np.array(ids[len(ids) - (self.order - 1):] if self.order > 1 else [], dtype=np.int64)
        words_V = np.arange(self.vocab_size, dtype=np.int64)
        return self._prob(np.broadcast_to(ctx, (self.vocab_size, len(ctx))), words_V)


@dataclass
class TextScores:
    """Per text: its words, the sum of −log2 p over them, their unigram entropy, and words unseen in training."""

    words: np.ndarray
    bits: np.ndarray
    entropy: np.ndarray
    unseen: np.ndarray


def score_texts(lm: KneserNey, texts: Sequence[str]) -> TextScores:
    out = {"words": [], "bits": [], "entropy": [], "unseen": []}
    for text in texts:
        tokens = words(text)
        out["words"].append(len(tokens))
        out["bits"].append(float(-lm.log2probs(tokens).sum()))
        out["entropy"].append(unigram_entropy(tokens))
        out["unseen"].append(int((lm.encode(tokens) == lm.unk).sum()))
    return TextScores(**{k: np.array(v, dtype=np.float64) for k, v in out.items()})


@dataclass
class TextJudge:
    """A fitted n-gram model and the held-out documents of its corpus (the reference texts)."""

    lm: KneserNey
    heldout: list[str]
    corpus: str
    train_words: int
    seconds: float

    def describe(self) -> dict:
        return {"model": f"interpolated Kneser-Ney word {self.lm.order}-gram", "corpus": self.corpus,
                "train_words": self.train_words, "vocabulary": self.lm.vocab_size,
                "discounts": [round(d, 4) for d in self.lm.discounts], "fit_seconds": round(self.seconds, 2)}


def kjv_judge(order: int = 3) -> TextJudge:
    """The judge of the KJV: a word n-gram fitted on its training split (every chapter but the held-out
    ones of kjv.split, whatever share of it a run trained on), the held-out chapters as the reference."""
    t0 = time.perf_counter()
    parts = kjv.split(kjv.chapters())
    docs = [words(d) for d in parts["train"]]
    lm = KneserNey.fit(docs, order)
    return TextJudge(lm, parts["val"], "KJV training split (data/kjv.py)", sum(map(len, docs)),
                     time.perf_counter() - t0)
