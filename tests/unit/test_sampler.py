"""The sampler with stand-in models: exact unmasking schedule, frozen reveals, guidance, output slices."""
import numpy as np
import torch

from trimdm.diffusion.schedules import make_schedule, parse_schedule
from trimdm.sample.sampler import Decoding, decode, level_stages, masked_counts, truncate_after_eos
from trimdm.sequence.layout import RowTables, paired_row
from trimdm.tokenizers.vocab import JointVocab

V = JointVocab(n_text=30, n_image=12, audio_levels=3, audio_codebook=7)


class StandIn(torch.nn.Module):
    """Hidden state = a fixed random vector per (id, position) plus the row's mean; logits = a fixed random projection
    over the full vocabulary, sliced like the real model's head. Records every canvas it sees."""

    def __init__(self, seed=0, d=16, length=64):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.emb = torch.randn(V.size, d, generator=g)
        self.pos = torch.randn(length, d, generator=g)
        self.out = torch.randn(V.size, d, generator=g) * 3
        self.seen = []

    def forward(self, ids, pad=None):
        self.seen.append(ids.clone())
        e = self.emb[ids]
        return e + self.pos[: ids.shape[1]] + e.mean(1, keepdim=True)  # every position sees the whole row

    def head(self, h, lo, hi, extra=None):
        w = self.out[lo:hi] if extra is None else torch.cat([self.out[lo:hi], self.out[extra:extra + 1]])
        return h @ w.T


def canvases(n=4):
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        text = rng.integers(0, 30, 3 + i)
        row = paired_row(V, "audio", text, V.audio_ids(rng.integers(0, 7, (5, 3))), 40)
        start = int(np.nonzero(row == V.BOS_audio)[0][0]) + 1
        row[start:start + 15] = V.MASK_audio
        rows.append(row)
    return torch.from_numpy(np.stack(rows))


def test_masked_count_follows_the_schedule_and_reveals_never_change():
    for name in ("cosine", "linear", "polynomial:2"):
        schedule = parse_schedule(name)
        model = StandIn()
        canvas = canvases()
        steps = 6
        out = decode(model, V, canvas, Decoding(steps, schedule), generator=torch.Generator().manual_seed(0))
        n0 = (canvas == V.MASK_audio).sum(1)
        expected = masked_counts(n0, schedule, steps)
        seen = model.seen + [out]
        for k, x in enumerate(seen):
            assert torch.equal((x == V.MASK_audio).sum(1), expected[k]), (name, k)
        for a, b in zip(seen, seen[1:]):
            revealed = a != V.MASK_audio
            assert torch.equal(a[revealed], b[revealed])  # a revealed token never changes again
        assert not (out == V.MASK_audio).any()


def test_steps_that_reveal_nothing_cost_no_pass():
    canvas = canvases()
    schedule = make_schedule("cosine")
    n0 = (canvas == V.MASK_audio).sum(1)  # 15 per row
    steps = 40
    expected = masked_counts(n0, schedule, steps)
    useful = [k for k in range(1, steps + 1) if bool((expected[k - 1] > expected[k]).any())]
    assert 0 < len(useful) < steps
    model = StandIn()
    out = decode(model, V, canvas, Decoding(steps, schedule), generator=torch.Generator().manual_seed(0))
    assert len(model.seen) == len(useful)
    for x, k in zip(model.seen + [out], useful + [steps + 1]):
        assert torch.equal((x == V.MASK_audio).sum(1), expected[k - 1])  # the schedule, minus empty steps


def test_level_order_decodes_each_level_on_its_own_schedule_after_the_coarser_ones():
    tables = RowTables.from_vocab(V)
    canvas = canvases()
    stage, stage_steps = level_stages(canvas, V, steps=4)
    assert stage_steps == [4, 1, 1]
    model = StandIn()
    schedule = make_schedule("linear")  # 5 masked codes per level and row: every one of the 4 steps reveals some
    out = decode(model, V, canvas, Decoding(4, schedule), stages=(stage, stage_steps),
                 generator=torch.Generator().manual_seed(0))
    level = tables.audio_level(canvas)
    masked0 = canvas == V.MASK_audio
    seen, k = model.seen + [out], 0
    for lv, n_steps in enumerate(stage_steps):
        expected = masked_counts((masked0 & (level == lv)).sum(1), schedule, n_steps)
        for j in range(n_steps + 1):
            x = seen[k + j]
            assert torch.equal(((x == V.MASK_audio) & (level == lv)).sum(1), expected[j]), (lv, j)
            # finer levels wait, fully masked, until this level is done
            assert torch.equal((x == V.MASK_audio) & (level > lv), masked0 & (level > lv))
        k += n_steps
    for a, b in zip(seen, seen[1:]):
        revealed = a != V.MASK_audio
        assert torch.equal(a[revealed], b[revealed])
    assert not (out == V.MASK_audio).any()


def test_guidance_zero_equals_the_conditional_pass():
    canvas = canvases()
    uncond = torch.where(canvas < V.n_text, V.MASK_text, canvas)
    lin = make_schedule("linear")
    plain = decode(StandIn(), V, canvas, Decoding(5, lin), generator=torch.Generator().manual_seed(3))
    w0 = decode(StandIn(), V, canvas, Decoding(5, lin, guidance=0.0), uncond_BL=uncond,
                generator=torch.Generator().manual_seed(3))
    assert torch.equal(plain, w0)
    model = StandIn()
    w2 = decode(model, V, canvas, Decoding(5, lin, guidance=2.0), uncond_BL=uncond,
                generator=torch.Generator().manual_seed(3))
    assert len(model.seen) == 10  # two passes per step
    assert any((s[:, 2:5] == V.MASK_text).all() for s in model.seen)  # the unconditional canvas has its condition masked
    assert not torch.equal(plain, w2)


def test_predictions_stay_in_their_output_slice():
    tables = RowTables.from_vocab(V)
    for seed in range(3):
        canvas = canvases()
        out = decode(StandIn(seed), V, canvas, Decoding(4, make_schedule("cosine"), temperature=2.0),
                     generator=torch.Generator().manual_seed(seed))
        filled = canvas == V.MASK_audio
        level = tables.audio_level(out)
        lo = V.off_audio + level * V.audio_codebook
        ok = (out >= lo) & (out < lo + V.audio_codebook)
        assert ok[filled].all()  # no EOS either: the row already ends with a clean EOS_audio


def test_eos_truncation_pads_the_rest_of_the_span_only():
    v = V
    row = torch.tensor([[v.TASK_image_text, v.BOS_text, 3, v.EOS_text, 5, v.MASK_text, v.BOS_image,
                         v.off_image + 1, v.EOS_image, v.PAD_text]])
    out = truncate_after_eos(row, RowTables.from_vocab(v), v)
    assert out[0].tolist() == [v.TASK_image_text, v.BOS_text, 3, v.EOS_text, v.PAD_text, v.PAD_text, v.BOS_image,
                               v.off_image + 1, v.EOS_image, v.PAD_text]
