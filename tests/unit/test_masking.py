import numpy as np
import pytest
import torch

from trimdm.diffusion.masking import draw_noise, mask_batch, stratified_tau, tau_bounds
from trimdm.diffusion.schedules import make_schedule
from trimdm.sequence.layout import RowTables, paired_row
from trimdm.tokenizers.vocab import JointVocab

V = JointVocab(n_text=50, n_image=16)
TABLES = RowTables.from_vocab(V)
LIN = [make_schedule("linear")] * 3


def batch(n=8):
    rng = np.random.default_rng(0)
    rows = [paired_row(V, "image", rng.integers(0, 50, 5), V.image_ids(rng.integers(0, 16, 9)), 24)
            for _ in range(n)]
    return torch.from_numpy(np.stack(rows))


def test_complement_pairs_partition_maskable_tokens():
    clean = batch()
    tau, u, _ = draw_noise(len(clean), clean.shape[1], torch.Generator().manual_seed(0), 0.001, 0.999)
    nb = mask_batch(clean, TABLES, LIN, "complement", tau, u)
    assert nb.noisy_BL.shape[0] == 2 * len(clean)
    a, b = nb.masked_BL[0::2], nb.masked_BL[1::2]
    maskable = TABLES.maskable(clean)
    assert not (a & b).any()
    assert torch.equal(a | b, maskable)
    assert torch.equal(nb.clean_BL[0::2], nb.clean_BL[1::2])
    w_plain, w_comp = nb.weight_BL[0::2], nb.weight_BL[1::2]
    rows = torch.arange(len(clean))[:, None].expand_as(a)
    torch.testing.assert_close(w_plain[a], (1 / tau)[rows[a]])
    torch.testing.assert_close(w_comp[b], (1 / (1 - tau))[rows[b]])


def test_masks_use_the_mask_id_of_each_modality_and_never_touch_specials():
    clean = batch()
    tau = torch.full((len(clean),), 1.0, dtype=torch.float64)
    nb = mask_batch(clean, TABLES, LIN, "none", tau, torch.zeros(clean.shape, dtype=torch.float64))
    maskable = TABLES.maskable(clean)
    assert torch.equal(nb.masked_BL, maskable)
    mod = TABLES.modality(clean)
    assert (nb.noisy_BL[maskable & (mod == 0)] == V.MASK_text).all()
    assert (nb.noisy_BL[maskable & (mod == 1)] == V.MASK_image).all()
    assert torch.equal(nb.noisy_BL[~maskable], clean[~maskable])


def test_crossmodal_masks_media_at_the_complementary_ratio():
    clean = batch(64)
    tau = torch.full((64,), 0.2, dtype=torch.float64)
    u = torch.rand(clean.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    nb = mask_batch(clean, TABLES, LIN, "crossmodal", tau, u)
    mod, maskable = TABLES.modality(clean), TABLES.maskable(clean)
    text_rate = nb.masked_BL[maskable & (mod == 0)].double().mean()
    image_rate = nb.masked_BL[maskable & (mod == 1)].double().mean()
    assert abs(text_rate - 0.2) < 0.06 and abs(image_rate - 0.8) < 0.06
    assert torch.allclose(nb.weight_BL[nb.masked_BL & (mod == 1)], torch.tensor(1 / 0.8, dtype=torch.float64))


def test_stratified_tau_covers_every_stratum_and_is_clamped():
    tau = stratified_tau(10, torch.Generator().manual_seed(3), 1e-3, 1.0)
    assert sorted((tau * 10).floor().long().tolist()) == list(range(10))
    lo, hi = tau_bounds([make_schedule("polynomial", k=2)] * 3, "complement", 1e-3)
    assert abs(lo - 1e-3 ** 0.5) < 1e-12 and abs(hi - (1 - 1e-3) ** 0.5) < 1e-12
    assert tau_bounds(LIN, "none", 1e-3) == (1e-3, 1.0)


def test_conditional_rows_keep_one_modality_clean_and_text_rows_untouched():
    from trimdm.diffusion.masking import MEDIA_GIVEN_TEXT, TEXT_GIVEN_MEDIA, conditional_modes
    from trimdm.tokenizers.vocab import IMAGE, TEXT

    clean = batch(6)
    text_row = torch.full((1, clean.shape[1]), 3)
    text_row[0, 0] = V.TASK_text
    clean = torch.cat([clean, text_row])
    mode = conditional_modes(torch.tensor([0.1, 0.3, 0.9, 0.1, 0.3, 0.9, 0.1], dtype=torch.float64), 0.5)
    assert mode.tolist()[:3] == [MEDIA_GIVEN_TEXT, TEXT_GIVEN_MEDIA, 0]
    tau = torch.ones(len(clean), dtype=torch.float64)
    nb = mask_batch(clean, TABLES, LIN, "none", tau, torch.zeros(clean.shape, dtype=torch.float64), mode_B=mode)
    m = nb.modality_BL
    assert not (nb.masked_BL[0] & (m[0] == TEXT)).any() and (nb.masked_BL[0] & (m[0] == IMAGE)).any()
    assert not (nb.masked_BL[1] & (m[1] == IMAGE)).any() and (nb.masked_BL[1] & (m[1] == TEXT)).any()
    assert torch.equal(nb.masked_BL[2], TABLES.maskable(clean[2]))  # joint: everything maskable masked
    assert torch.equal(nb.masked_BL[6], TABLES.maskable(clean[6]))  # text row: mode ignored
    assert torch.equal(nb.maskable_BL[0], TABLES.maskable(clean[0]) & (m[0] == IMAGE))


def test_conditional_direction_shares():
    from trimdm.diffusion.masking import JOINT, MEDIA_GIVEN_TEXT, TEXT_GIVEN_MEDIA, conditional_modes

    c = torch.tensor([0.05, 0.15, 0.25, 0.45, 0.55, 0.95], dtype=torch.float64)
    # f = 0.5, s = 0.8: [0, 0.1) media|text, [0.1, 0.5) text|media, [0.5, 1) joint
    assert conditional_modes(c, 0.5, 0.8).tolist() == [MEDIA_GIVEN_TEXT] + [TEXT_GIVEN_MEDIA] * 3 + [JOINT] * 2
    assert conditional_modes(c, 0.5, 0.5).tolist() == conditional_modes(c, 0.5).tolist()  # the default split
    assert conditional_modes(c, 1.0, 1.0).tolist() == [TEXT_GIVEN_MEDIA] * 6
    assert conditional_modes(c, 1.0, 0.0).tolist() == [MEDIA_GIVEN_TEXT] * 6
    with pytest.raises(ValueError, match="text_given_media"):
        conditional_modes(c, 0.5, 1.5)


def test_each_medium_takes_its_own_split():
    from trimdm.config import PerMedium
    from trimdm.diffusion.masking import JOINT, MEDIA_GIVEN_TEXT, TEXT_GIVEN_MEDIA, conditional_modes, text_shares

    v = JointVocab(n_text=50, n_image=16, audio_levels=2, audio_codebook=8)
    tables = RowTables.from_vocab(v)
    rng = np.random.default_rng(2)
    image = paired_row(v, "image", rng.integers(0, 50, 4), v.image_ids(rng.integers(0, 16, 9)), 30)
    audio = paired_row(v, "audio", rng.integers(0, 50, 3), v.audio_ids(rng.integers(0, 8, (6, 2))), 30)
    text = np.concatenate([[v.TASK_text], rng.integers(0, 50, 29)])
    clean = torch.from_numpy(np.stack([image, audio, image, audio, text]))
    shares = text_shares(clean, tables, PerMedium(image=0.5, audio=0.1))
    assert shares.tolist() == [0.5, 0.1, 0.5, 0.1, 0.5]
    # f = 0.8: image rows media|text below 0.4, audio rows below 0.72
    c = torch.tensor([0.5, 0.5, 0.3, 0.9, 0.5], dtype=torch.float64)
    assert conditional_modes(c, 0.8, shares).tolist() == [TEXT_GIVEN_MEDIA, MEDIA_GIVEN_TEXT, MEDIA_GIVEN_TEXT,
                                                          JOINT, TEXT_GIVEN_MEDIA]
    # one share for both media: the modes of a single float, whatever the rows hold
    same = text_shares(clean, tables, PerMedium(0.3, 0.3))
    assert torch.equal(conditional_modes(c, 0.8, same), conditional_modes(c, 0.8, 0.3))
    with pytest.raises(ValueError, match="text_given_media"):
        conditional_modes(c, 0.8, torch.tensor([0.5, 1.2, 0.5, 0.5, 0.5], dtype=torch.float64))


def test_compact_parts_give_the_same_loss_as_the_whole_batch():
    from trimdm.diffusion.loss import diffusion_loss
    from trimdm.diffusion.masking import compact
    from trimdm.model.transformer import Transformer, TransformerArgs

    torch.manual_seed(0)
    v = JointVocab(n_text=50, n_image=16, audio_levels=2, audio_codebook=8)
    tables = RowTables.from_vocab(v)
    rng = np.random.default_rng(1)
    rows = [paired_row(v, "image", rng.integers(0, 50, 5), v.image_ids(rng.integers(0, 16, 9)), 40),
            paired_row(v, "audio", rng.integers(0, 50, 3), v.audio_ids(rng.integers(0, 8, (6, 2))), 40),
            paired_row(v, "image", rng.integers(0, 50, 2), v.image_ids(rng.integers(0, 16, 9)), 40)]
    text = np.concatenate([[v.TASK_text], rng.integers(0, 50, 39)])
    clean = torch.from_numpy(np.stack(rows + [text]))
    tau, u, _ = draw_noise(len(clean), clean.shape[1], torch.Generator().manual_seed(0), 0.3, 0.9)
    nb = mask_batch(clean, tables, LIN, "none", tau, u)
    model = Transformer(TransformerArgs(vocab_size=v.size, d_model=32, n_layers=1, n_heads=2, max_seq_len=40,
                                        vocab_segments=v.segments()))
    model.init_weights()
    whole, s = diffusion_loss(model, v, nb, 100.0)
    parts = compact(nb, by_task=True)
    assert sorted(p.clean_BL.shape for p in parts) == [(1, 20), (1, 40), (2, 19)]
    total = sum(diffusion_loss(model, v, p, 100.0)[0] for p in parts)
    torch.testing.assert_close(total, whole, rtol=1e-5, atol=1e-6)


def test_audio_positions_predict_only_their_own_level():
    v = JointVocab(n_text=50, audio_levels=3, audio_codebook=8)
    tables = RowTables.from_vocab(v)
    codes = np.arange(15).reshape(5, 3) % 8
    row = torch.from_numpy(paired_row(v, "audio", np.array([1, 2]), v.audio_ids(codes), 30))[None]
    heads = tables.output_heads(row, tables.maskable(row))
    audio = [h for h in heads if h[4] == "audio"]
    assert len(audio) == 3
    for k, (sel, lo, hi, eos, _) in enumerate(audio):
        ids = row[sel]
        assert ((ids >= lo) & (ids < hi) | (ids == eos)).all()
        assert lo == v.off_audio + k * 8 and hi - lo == 8
