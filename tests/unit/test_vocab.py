import numpy as np
import pytest
import torch

from trimdm.tokenizers.vocab import AUDIO, IMAGE, TEXT, JointVocab


@pytest.fixture
def vocab():
    return JointVocab(n_text=100, n_image=64, audio_levels=4, audio_codebook=16)


def test_ranges_are_contiguous_in_order(vocab):
    assert vocab.content_range("text") == (0, 100)
    assert vocab.content_range("image") == (100, 164)
    assert vocab.content_range("audio") == (164, 164 + 64)
    specials = sorted(vocab.specials.values())
    assert specials == list(range(228, 228 + len(specials)))
    assert vocab.size == 228 + len(specials)
    for name in ["BOS_text", "EOS_text", "MASK_text", "BOS_image", "EOS_image", "MASK_image", "BOS_audio",
                 "EOS_audio", "MASK_audio", "PAD_text", "TASK_text", "TASK_image_text", "TASK_audio_text"]:
        assert name in vocab.specials
    assert len(set(vocab.specials.values())) == len(vocab.specials)


def test_audio_levels_have_separate_ranges_frame_major(vocab):
    codes = np.array([[0, 1, 2, 3], [15, 15, 15, 15]])
    ids = vocab.audio_ids(codes)
    assert ids.tolist() == [164, 181, 198, 215, 179, 195, 211, 227]
    np.testing.assert_array_equal(vocab.audio_codes(ids), codes)
    with pytest.raises(ValueError, match="outside"):
        vocab.audio_ids(np.array([[16, 0, 0, 0]]))


def test_modality_and_maskable_tables(vocab):
    mod, maskable = vocab.modality_table(), vocab.maskable_table()
    assert mod[5] == TEXT and mod[120] == IMAGE and mod[200] == AUDIO
    assert mod[vocab.EOS_image] == IMAGE and mod[vocab.MASK_audio] == AUDIO
    assert maskable[5] and maskable[vocab.EOS_audio] and maskable[vocab.EOS_text]
    for name in ["BOS_text", "PAD_text", "TASK_text", "TASK_image_text", "MASK_text", "BOS_audio"]:
        assert not maskable[vocab.specials[name]], name
    assert vocab.modality_of(vocab.PAD_text) == "special"
    assert vocab.modality_of(120) == "image"


def test_output_slice_and_local_ids(vocab):
    out = vocab.output_ids("image")
    assert out[0] == 100 and out[-2] == 163 and out[-1] == vocab.EOS_image
    ids = torch.tensor([100, 163, vocab.EOS_image])
    local = vocab.to_local("image", ids)
    assert local.tolist() == [0, 63, 64]
    assert torch.equal(vocab.to_joint("image", local), ids)


def test_roundtrip_and_bad_file(vocab, tmp_path):
    vocab.save(tmp_path / "v.json")
    assert JointVocab.load(tmp_path / "v.json") == vocab
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="bad.json"):
        JointVocab.load(tmp_path / "bad.json")


def test_text_only_vocab_has_empty_media_ranges():
    v = JointVocab(n_text=10)
    assert not v.has("image") and not v.has("audio")
    assert v.size == 10 + 13 + 5


def test_every_tokenizer_implements_the_protocol():
    from trimdm.tokenizers.audio import AudioCodec, AudioCodecConfig
    from trimdm.tokenizers.base import Tokenizer
    from trimdm.tokenizers.image import ImageTokenizer, ImageTokenizerConfig
    from trimdm.tokenizers.text import TextTokenizer

    text = TextTokenizer.train(["in the beginning god created the heaven and the earth"] * 4, 300)
    for tok in (text, ImageTokenizer(ImageTokenizerConfig()), AudioCodec(AudioCodecConfig())):
        assert isinstance(tok, Tokenizer), type(tok)
        assert tok.modality in ("text", "image", "audio") and all(c > 0 for c in tok.codebook_sizes)
