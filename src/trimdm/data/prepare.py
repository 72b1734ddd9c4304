"""`trimdm prepare`: raw samples -> tokenizers -> token shards, cached and resumable per stage.

Owns: the stage directories under `data.root` and their build order. Each stage is rebuilt only when
its manifest is missing or does not match its files (shards.verify_stage). Does not own the sources
(kjv.py, tinyworld/) or the formats (shards.py).

Text stage `kjv-bpe{V}[-docs{N}]`: chapters of the KJV -> BPE trained on the training split ->
`train`/`val` shards, plus the unigram distribution of the training tokens (for the demo's baseline).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trimdm.config import DataConfig
from trimdm.data import kjv
from trimdm.data.corpus import load_corpus
from trimdm.data.kjv_judge import TextJudge, kjv_judge
from trimdm.data.shards import Shard, finish_stage, new_stage_dir, verify_stage, write_shard
from trimdm.data.tinyworld.dataset import prepare_tinyworld
from trimdm.sequence.layout import PackedText
from trimdm.tokenizers.text import TextTokenizer
from trimdm.tokenizers.vocab import JointVocab


@dataclass
class TextData:
    directory: Path
    manifest: dict
    tokenizer: TextTokenizer

    def vocab(self) -> JointVocab:
        return JointVocab(n_text=self.tokenizer.codebook_sizes[0])

    def rows(self, split: str, vocab: JointVocab, seq_len: int) -> PackedText:
        shard = Shard(self.directory, split, self.manifest["shards"][split])
        return PackedText(shard.tokens, shard.offsets, vocab, seq_len)

    def sources(self, split: str, vocab: JointVocab, seq_len: int, tasks=("text",)) -> dict[str, PackedText]:
        """Row sources per task of a split; text rows are packed, so every token is content."""
        return {"text": self.rows(split, vocab, seq_len)} if "text" in tasks else {}

    def tokens_per_row(self, seq_len: int) -> dict[str, float]:
        return {"text": float(seq_len)}

    def save_tokenizers(self, run_dir: Path) -> None:
        self.tokenizer.save(Path(run_dir) / "tokenizer")

    def unigram_bits(self) -> float:
        """Cross-entropy (bits/token) of held-out text tokens (with EOS) under the training unigram."""
        return self.manifest["unigram"]["val_cross_entropy_bits"]


def prepare(cfg: DataConfig, log=print, evaluation: bool = True):
    """The prepared data set a run needs (built on first use, then read from its cache). With
    `evaluation=False` what only evaluation reads (tinyworld's judges) is left out: training passes it,
    so that a fresh `trimdm train` starts minutes sooner and `trimdm eval` builds the rest."""
    if cfg.dataset == "tinyworld":
        return prepare_tinyworld(cfg, log=log, strict=cfg.strict, judges=evaluation)
    if cfg.dataset == "corpus":  # the user's own data, prepared by `trimdm prepare --text/...` (ingest.py)
        return load_corpus(cfg.corpus, log=log)
    return prepare_text(cfg, log=log)


def text_judge(cfg: DataConfig) -> TextJudge | None:
    """The judge of generated text (kjv_judge.py) for a data set whose text is the KJV (kjv, tinyworld),
    fitted now; None for a corpus of the user's own, whose text no judge knows. Needs no prepared data."""
    return kjv_judge() if cfg.dataset in ("kjv", "tinyworld") else None


def text_stage_dir(cfg: DataConfig) -> Path:
    name = f"{cfg.dataset}-bpe{cfg.text_vocab}" + (f"-docs{cfg.max_docs}" if cfg.max_docs else "")
    return Path(cfg.root) / name


def prepare_text(cfg: DataConfig, log=print) -> TextData:
    if cfg.dataset != "kjv":
        raise ValueError(f"data.dataset={cfg.dataset!r}: this version prepares 'kjv' only")
    final = text_stage_dir(cfg)
    manifest, reason = verify_stage(final)
    if manifest is None:
        if final.exists():
            log(f"prepare: rebuilding {final} ({reason})")
        _build_text(cfg, final, log)
        manifest, reason = verify_stage(final)
        assert manifest is not None, reason
    return TextData(final, manifest, TextTokenizer.load(final))


def _build_text(cfg: DataConfig, final: Path, log) -> None:
    t0 = time.time()
    docs = kjv.chapters()
    parts = kjv.split(docs)
    if cfg.max_docs:  # tiny runs: a prefix of each split, enough for a few hundred rows
        parts = {"train": parts["train"][:cfg.max_docs], "val": parts["val"][:max(2, cfg.max_docs // 20)]}
    tmp = new_stage_dir(final)
    tok = TextTokenizer.train(parts["train"], cfg.text_vocab)
    tok.save(tmp)
    n_text = tok.codebook_sizes[0]
    shards, counts = {}, {}
    for split, texts in parts.items():
        encoded = tok.encode_batch(texts)
        shards[split] = write_shard(tmp, split, encoded, n_text)
        # unigram counts over content tokens plus one EOS per document (the maskable text tokens)
        c = np.bincount(np.concatenate(encoded), minlength=n_text + 1).astype(np.float64)
        c[n_text] += len(encoded)
        counts[split] = c
    p = (counts["train"] + 1) / (counts["train"].sum() + len(counts["train"]))  # add-one smoothing
    val = counts["val"]
    unigram = {
        "train_entropy_bits": float(-(p * np.log2(p)).sum()),
        "val_cross_entropy_bits": float(-(val * np.log2(p)).sum() / val.sum()),
    }
    info = {"stage": "text", "dataset": cfg.dataset, "text_vocab": n_text, "max_docs": cfg.max_docs,
            "shards": shards, "unigram": unigram, "seconds": round(time.time() - t0, 2)}
    finish_stage(tmp, final, info)
    log(f"prepare: {final}: {shards['train']['tokens']:,} train / {shards['val']['tokens']:,} val tokens, "
        f"BPE {n_text}, unigram cross-entropy {unigram['val_cross_entropy_bits']:.3f} bits "
        f"({time.time() - t0:.1f}s)")
    if math.isnan(unigram["val_cross_entropy_bits"]):
        raise ValueError(f"{final}: empty validation split")
