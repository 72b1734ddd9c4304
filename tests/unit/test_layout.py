import numpy as np
import pytest
import torch

from trimdm.sequence.layout import PAIRED_TEXT_START, PackedText, RowTables, paired_row
from trimdm.tokenizers.vocab import JointVocab

V = JointVocab(n_text=50, n_image=16, audio_levels=2, audio_codebook=8)


def test_packed_rows_follow_the_stream():
    docs = [np.arange(1, 6), np.arange(10, 13), np.arange(20, 30)]
    tokens = np.concatenate(docs)
    offsets = np.array([0, 5, 8, 18])
    packed = PackedText(tokens, offsets, V, seq_len=6)
    stream = []
    for d in docs:
        stream += [V.BOS_text, *d.tolist(), V.EOS_text]
    assert len(packed) == len(stream) // 5
    rows = packed.rows(np.arange(len(packed)))
    assert (rows[:, 0] == V.TASK_text).all()
    assert rows[:, 1:].reshape(-1).tolist() == stream[:len(packed) * 5]  # documents continue across rows
    assert not (rows == V.PAD_text).any()


def test_paired_row_layout_and_padding():
    text = np.array([3, 4, 5])
    media = V.image_ids(np.array([0, 1, 15]))
    row = paired_row(V, "image", text, media, seq_len=16)
    assert row.tolist()[:12] == [V.TASK_image_text, V.BOS_text, 3, 4, 5, V.EOS_text, V.BOS_image,
                                 50, 51, 65, V.EOS_image, V.PAD_text]
    assert (row[11:] == V.PAD_text).all()
    assert row[PAIRED_TEXT_START:PAIRED_TEXT_START + len(text)].tolist() == text.tolist()
    tables = RowTables.from_vocab(V)
    ids = torch.from_numpy(row)[None]
    maskable = tables.maskable(ids)[0].tolist()
    assert maskable[:12] == [False, False, True, True, True, True, False, True, True, True, True, False]
    assert tables.pad(ids)[0].sum() == 5
    assert tables.modality(ids)[0, 7] == 1 and tables.modality(ids)[0, 3] == 0


def test_paired_row_too_long_is_an_error():
    with pytest.raises(ValueError, match="data.seq_len=8"):
        paired_row(V, "audio", np.arange(3), V.audio_ids(np.zeros((2, 2), int)), seq_len=8)


def test_bad_offsets_are_an_error():
    with pytest.raises(ValueError, match="offsets"):
        PackedText(np.arange(5), np.array([0, 3]), V, 4)
