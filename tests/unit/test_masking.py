import numpy as np
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
    tau, u = draw_noise(len(clean), clean.shape[1], torch.Generator().manual_seed(0), 0.001, 0.999)
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
