"""The sampler with stand-in models: exact unmasking schedule in both directions, frozen reveals, guidance,
output slices."""
import math

import numpy as np
import pytest
import torch

from trimdm.diffusion.schedules import make_schedule, parse_schedule
from trimdm.sample.sampler import Decoding, block_stages, decode, level_stages, masked_counts, truncate_after_eos
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


def old_masked_counts(n_masked_B, schedule, steps):
    """The sampler's counts before the schedules were named as in the literature (commit 158cf03), frozen."""
    k = torch.arange(steps + 1, dtype=torch.float64)
    frac = schedule.beta(1 - k / steps).clamp(0, 1)
    counts = torch.floor(frac[:, None] * n_masked_B[None, :].double()).long()
    counts[0] = n_masked_B
    return torch.minimum(counts, n_masked_B[None, :])


# what the old "cosine" kept masked after each of 16 steps of a 256-token span (recorded with that code)
OLD_COSINE_256_16 = [256, 230, 206, 181, 158, 135, 113, 93, 74, 58, 43, 30, 19, 11, 4, 1, 0]


def test_cosine_reveals_few_tokens_first_as_maskgit_does():
    n, steps = torch.tensor([256]), 16
    r = torch.arange(steps + 1, dtype=torch.float64) / steps
    for spec, kept in [("cosine", torch.cos(math.pi / 2 * r)), ("polynomial:2", 1 - r ** 2),
                       ("polynomial:3", 1 - r ** 3), ("linear", 1 - r)]:
        counts = masked_counts(n, parse_schedule(spec), steps)[:, 0]
        assert counts.tolist() == torch.floor(256 * kept).long().tolist(), spec  # MaskGIT's γ(r)
    reveals = -masked_counts(n, parse_schedule("cosine"), steps)[:, 0].diff()
    assert reveals.tolist() == [2, 3, 7, 8, 11, 13, 15, 16, 19, 20, 22, 23, 23, 25, 24, 25]
    back = -masked_counts(n, parse_schedule("reverse-cosine"), steps)[:, 0].diff()
    assert back.tolist() == [26, 24, 25, 23, 23, 22, 20, 19, 16, 15, 13, 11, 8, 7, 3, 1]


@pytest.mark.parametrize("spec", ["cosine", "polynomial:2", "polynomial:0.5", "linear", "loglinear"])
def test_the_reverse_direction_reproduces_the_old_counts_exactly(spec):
    old, new = parse_schedule(spec), parse_schedule("reverse-" + spec)
    for steps in (1, 2, 3, 7, 16, 32, 64):
        n = torch.arange(0, 300)
        assert torch.equal(masked_counts(n, new, steps), old_masked_counts(n, old, steps)), steps
    if spec == "cosine":
        assert masked_counts(torch.tensor([256]), new, 16)[:, 0].tolist() == OLD_COSINE_256_16
    if spec == "linear":  # its own reverse: the old and the new "linear" are one decoding
        assert torch.equal(masked_counts(n, old, 16), old_masked_counts(n, old, 16))


def test_every_schedule_reveals_the_whole_span_in_its_steps():
    n = torch.tensor([1000, 7, 0])
    for spec in ("loglinear:eps=0.01", "reverse-loglinear:eps=0.01", "cosine", "reverse-polynomial:3"):
        counts = masked_counts(n, parse_schedule(spec), 5)
        assert torch.equal(counts[0], n) and not counts[-1].any(), spec
        assert (counts.diff(dim=0) <= 0).all(), spec


def test_masked_count_follows_the_schedule_and_reveals_never_change():
    for name in ("cosine", "reverse-cosine", "linear", "polynomial:2"):
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


class Blind(StandIn):
    """StandIn that masks the condition (every text content id) of whatever canvas it is given."""

    def forward(self, ids, pad=None):
        return super().forward(torch.where(ids < V.n_text, V.MASK_text, ids), pad)


def condition_masked(x):
    return (x[:, 2:5] == V.MASK_text).all()


def test_guidance_one_is_the_conditional_pass_without_an_unconditional_one():
    canvas = canvases()
    uncond = torch.where(canvas < V.n_text, V.MASK_text, canvas)
    lin = make_schedule("linear")
    plain = decode(StandIn(), V, canvas, Decoding(5, lin), generator=torch.Generator().manual_seed(3))
    model = StandIn()
    w1 = decode(model, V, canvas, Decoding(5, lin, guidance=1.0), uncond_BL=uncond,
                generator=torch.Generator().manual_seed(3))
    assert torch.equal(plain, w1)
    assert len(model.seen) == 5 and not any(condition_masked(s) for s in model.seen)  # one pass per step
    assert Decoding(5, lin).guidance == 1.0  # the neutral weight is the default


def test_guidance_zero_is_the_unconditional_canvas_alone():
    canvas = canvases()
    uncond = torch.where(canvas < V.n_text, V.MASK_text, canvas)
    lin = make_schedule("linear")
    model = StandIn()
    w0 = decode(model, V, canvas, Decoding(5, lin, guidance=0.0), uncond_BL=uncond,
                generator=torch.Generator().manual_seed(3))
    assert len(model.seen) == 5 and all(condition_masked(s) for s in model.seen)  # no conditional pass
    blind = decode(Blind(), V, canvas, Decoding(5, lin), generator=torch.Generator().manual_seed(3))
    assert torch.equal(w0, blind)  # = the conditional decoding of a model that never sees the condition
    assert torch.equal(w0[:, :5], canvas[:, :5])  # the condition stays in the returned canvas
    plain = decode(StandIn(), V, canvas, Decoding(5, lin), generator=torch.Generator().manual_seed(3))
    assert not torch.equal(w0, plain)  # before config version 1, w = 0 was the conditional pass


def test_guidance_above_one_runs_both_passes():
    canvas = canvases()
    uncond = torch.where(canvas < V.n_text, V.MASK_text, canvas)
    lin = make_schedule("linear")
    model = StandIn()
    w2 = decode(model, V, canvas, Decoding(5, lin, guidance=2.0), uncond_BL=uncond,
                generator=torch.Generator().manual_seed(3))
    assert len(model.seen) == 10  # two passes per step
    assert any(condition_masked(s) for s in model.seen)  # the unconditional canvas has its condition masked
    # the stand-in's distributions are peaked, so one seed may draw the same tokens either way: over a
    # few seeds the guided decoding differs from the conditional one
    differs = [not torch.equal(decode(StandIn(), V, canvas, Decoding(5, lin), generator=torch.Generator().manual_seed(s)),
                               decode(StandIn(), V, canvas, Decoding(5, lin, guidance=2.0), uncond_BL=uncond,
                                      generator=torch.Generator().manual_seed(s))) for s in range(4)]
    assert any(differs)


def test_an_old_config_decodes_as_the_old_code_did():
    """A config without a version, image row schedule "cosine" and guidance 0 (then: the conditional pass
    alone), loads as reverse-cosine and w = 1 and reveals exactly the old counts, with no unconditional pass."""
    from trimdm.config import Config
    from trimdm.recipes import tiny

    d = tiny().to_dict()
    del d["version"]
    d["sample"]["image"].update(steps=6, schedule="cosine", guidance=0.0)
    row = Config.from_dict(d).sample.image
    assert (row.schedule, row.guidance) == ("reverse-cosine", 1.0)
    canvas = canvases()
    uncond = torch.where(canvas < V.n_text, V.MASK_text, canvas)
    model = StandIn()
    how = Decoding(row.steps, parse_schedule(row.schedule), guidance=row.guidance)
    out = decode(model, V, canvas, how, uncond_BL=uncond, generator=torch.Generator().manual_seed(0))
    old = old_masked_counts((canvas == V.MASK_audio).sum(1), parse_schedule("cosine"), 6)
    steps = [k for k in range(1, 7) if bool((old[k - 1] > old[k]).any())]
    assert len(model.seen) == len(steps) and not any(condition_masked(s) for s in model.seen)
    for x, k in zip(model.seen + [out], steps + [7]):
        assert torch.equal((x == V.MASK_audio).sum(1), old[k - 1])
    conditional = decode(StandIn(), V, canvas, Decoding(6, parse_schedule("reverse-cosine")),
                         generator=torch.Generator().manual_seed(0))
    assert torch.equal(out, conditional)


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


def test_the_sweep_grid_covers_both_directions_without_a_duplicate_point():
    from trimdm.study.sampling import GRID

    n = torch.tensor([256])
    reveals = {spec: tuple((-masked_counts(n, parse_schedule(spec), 16)[:, 0].diff()).tolist())
               for spec in GRID["schedule"]}
    assert len(set(reveals.values())) == len(reveals)  # no two names for one decoding (linear = reverse-linear)
    assert any(r[0] < r[-1] for r in reveals.values()) and any(r[0] > r[-1] for r in reveals.values())
    for key, values in GRID.items():
        assert len(set(values)) == len(values), key


def test_a_step_callback_sees_every_step_and_changes_no_output():
    """`on_step` (the web page's live view) gets the canvas after each step that revealed tokens, stage by
    stage; the decoded canvas is bit-identical with and without it, and raising in it stops decoding."""
    canvas = canvases()
    stages = level_stages(canvas, V, steps=4)
    how = Decoding(4, make_schedule("linear"), guidance=2.0)
    uncond = canvas.clone()
    plain = decode(StandIn(), V, canvas, how, uncond_BL=uncond, stages=stages,
                   generator=torch.Generator().manual_seed(3))
    seen = []
    model = StandIn()
    watched = decode(model, V, canvas, how, uncond_BL=uncond, stages=stages,
                     generator=torch.Generator().manual_seed(3), on_step=seen.append)
    assert torch.equal(plain, watched)
    assert [(s.stage, s.step, s.steps, s.stages) for s in seen] == [(0, k, 4, 3) for k in (1, 2, 3, 4)] + \
        [(1, 1, 1, 3), (2, 1, 1, 3)]
    masked = [int((s.canvas_BL == V.MASK_audio).sum()) for s in seen]
    assert masked == sorted(masked, reverse=True) and masked[-1] == 0 and masked[0] < int((canvas == V.MASK_audio).sum())
    assert torch.equal(seen[-1].canvas_BL, watched)
    # the canvas passed at a step is not changed by later steps (a consumer may keep it)
    assert int((seen[0].canvas_BL == V.MASK_audio).sum()) == masked[0]

    class Stop(Exception):
        pass

    def stop_at_two(step):
        if step.step == 2:
            raise Stop
    model = StandIn()
    with pytest.raises(Stop):
        decode(model, V, canvas, how, stages=stages, generator=torch.Generator().manual_seed(3), on_step=stop_at_two)
    assert len(model.seen) == 2  # no forward pass after the step that raised


def tiny_transformer(seed=0):
    from trimdm.model.transformer import Transformer, TransformerArgs

    m = Transformer(TransformerArgs(vocab_size=V.size, d_model=32, n_layers=2, n_heads=4, max_seq_len=64,
                                    init_std=0.5))  # a large init: confident, varied predictions
    m.init_weights(torch.Generator().manual_seed(seed))
    return m.eval()


class Counting(torch.nn.Module):
    """A real network that counts its full and cached passes."""

    def __init__(self, net):
        super().__init__()
        self.net, self.full, self.cached = net, 0, 0

    def forward(self, ids, pad=None):
        self.full += 1
        return self.net(ids, pad)

    def trunk(self, ids, pad=None, cache=None):
        self.full += 1
        return self.net.trunk(ids, pad, cache=cache)

    def trunk_at(self, *args):
        self.cached += 1
        return self.net.trunk_at(*args)

    def head(self, *args):
        return self.net.head(*args)


def valid_audio(out, canvas):
    """Every masked position filled with a code of its own level (or EOS/padding), the rest untouched."""
    tables = RowTables.from_vocab(V)
    masked = canvas == V.MASK_audio
    assert not (out == V.MASK_audio).any()
    assert torch.equal(out[~masked], canvas[~masked])
    filled = out[masked]
    level = tables.audio_level(canvas)[masked]
    lo = V.off_audio + level * V.audio_codebook
    ok = ((filled >= lo) & (filled < lo + V.audio_codebook)) | (filled == V.EOS_audio) | (filled == tables.pad_id)
    assert ok.all()


@pytest.mark.parametrize("guidance", [1.0, 2.0])
def test_the_cache_refreshed_every_pass_is_the_uncached_decoder(guidance):
    canvas = canvases()
    uncond = torch.where(canvas < V.n_text, V.MASK_text, canvas)
    lin = make_schedule("linear")
    plain = decode(tiny_transformer(), V, canvas, Decoding(6, lin, guidance=guidance), uncond_BL=uncond,
                   generator=torch.Generator().manual_seed(1))
    model = Counting(tiny_transformer())
    cached = decode(model, V, canvas, Decoding(6, lin, guidance=guidance, cache_refresh=1), uncond_BL=uncond,
                    generator=torch.Generator().manual_seed(1))
    assert torch.equal(plain, cached) and model.cached == 0


def test_the_cached_decoder_recomputes_only_between_refreshes_and_fills_valid_codes():
    canvas = canvases()
    uncond = torch.where(canvas < V.n_text, V.MASK_text, canvas)
    model = Counting(tiny_transformer())
    out = decode(model, V, canvas, Decoding(6, make_schedule("linear"), guidance=2.0, cache_refresh=3),
                 uncond_BL=uncond, generator=torch.Generator().manual_seed(1))
    assert (model.full, model.cached) == (4, 8)  # per canvas: full, cached, cached, full, cached, cached
    valid_audio(out, canvas)
    again = decode(tiny_transformer(), V, canvas, Decoding(6, make_schedule("linear"), guidance=2.0, cache_refresh=3),
                   uncond_BL=uncond, generator=torch.Generator().manual_seed(1))
    assert torch.equal(out, again)  # reproducible from its settings and seed


def test_threshold_decoding_reveals_more_per_pass_and_never_exceeds_the_steps():
    canvas = canvases()
    seen = []
    kw = dict(generator=torch.Generator().manual_seed(2), on_step=lambda s: seen.append(s.step))
    model = Counting(tiny_transformer())
    out = decode(model, V, canvas, Decoding(15, make_schedule("linear"), threshold=0.3), **kw)
    valid_audio(out, canvas)
    assert len(seen) == model.full
    base = Counting(tiny_transformer())
    decode(base, V, canvas, Decoding(15, make_schedule("linear")), generator=torch.Generator().manual_seed(2))
    assert base.full >= 13  # the schedule alone: one position per pass (the floors merge a step or two)
    assert model.full < base.full - 3  # confident positions came out together: fewer passes
    # a threshold no probability exceeds leaves the schedule's counts (at least one per row and pass):
    # the span still ends within the steps
    never = Counting(tiny_transformer())
    valid_audio(decode(never, V, canvas, Decoding(15, make_schedule("linear"), threshold=0.999999),
                       generator=torch.Generator().manual_seed(2)), canvas)
    assert base.full <= never.full <= 15


def test_a_batch_of_prompts_of_different_lengths_decodes_as_each_alone():
    """Rows of different lengths share a batch through padding: with greedy choices and no confidence noise
    (no random draws whose order depends on the batch), each row decodes as it does alone."""
    canvas = canvases()  # captions of 3..6 tokens: rows padded to the longest
    tables = RowTables.from_vocab(V)
    assert tables.pad(canvas).any(1).sum() >= 1
    how = Decoding(5, make_schedule("linear"), temperature=0.0, confidence_noise=0.0)
    batch = decode(tiny_transformer(), V, canvas, how)
    for i in range(len(canvas)):
        n = int((~tables.pad(canvas[i:i + 1])).sum())
        alone = decode(tiny_transformer(), V, canvas[i:i + 1, :n], how)
        assert torch.equal(batch[i, :n], alone[0])


def text_canvas(span=20, prompts=(0, 1, 3)):
    """Rows `TASK_text BOS_text prompt MASK_text × span`, prompts of different lengths, right-padded."""
    rows = [[V.TASK_text, V.BOS_text] + list(range(1, 1 + p)) + [V.MASK_text] * span for p in prompts]
    width = max(map(len, rows))
    return torch.tensor([r + [V.PAD_text] * (width - len(r)) for r in rows])


def test_block_stages_count_blocks_from_the_left_of_each_rows_span_and_split_the_steps():
    canvas = text_canvas()
    stage, steps = block_stages(canvas, V, block=6, steps=10)
    assert stage.shape == canvas.shape and steps == [3, 3, 2, 2]  # 4 blocks (6, 6, 6, 2 tokens), 10 steps in all
    masked = canvas == V.MASK_text
    for row, p in zip(range(3), (0, 1, 3)):
        assert stage[row][masked[row]].tolist() == [j // 6 for j in range(20)]
        assert (stage[row][~masked[row]] == 0).all()
        assert masked[row][2 + p:22 + p].all()
    assert block_stages(canvas, V, block=20, steps=10)[1] == [10]  # one block: the whole span
    zero, whole = block_stages(canvas, V, block=0, steps=7)
    assert whole == [7] and (zero == 0).all()
    with pytest.raises(ValueError, match="steps=3 is fewer than the 4 blocks"):
        block_stages(canvas, V, block=6, steps=3)
    with pytest.raises(ValueError, match="block=-1 must be >= 0"):
        block_stages(canvas, V, block=-1, steps=3)


def test_blocks_are_decoded_left_to_right_on_a_tiny_random_model():
    """With block stages no position of block j + 1 is revealed before block j is complete, every block
    is decoded in its own steps, and the steps add up to `steps` (on_step sees every one)."""
    from trimdm.model.transformer import Transformer, TransformerArgs

    torch.manual_seed(0)
    model = Transformer(TransformerArgs(vocab_size=V.size, d_model=32, n_layers=1, n_heads=2, max_seq_len=32,
                                        vocab_segments=V.segments()))
    model.init_weights()
    model.eval()
    canvas = text_canvas()
    stage, stage_steps = block_stages(canvas, V, block=6, steps=10)
    masked0 = canvas == V.MASK_text
    seen = []
    out = decode(model, V, canvas, Decoding(10, make_schedule("linear")), stages=(stage, stage_steps),
                 generator=torch.Generator().manual_seed(0), on_step=seen.append)
    assert [(s.stage, s.step) for s in seen] == [(j, k) for j, n in enumerate(stage_steps) for k in range(1, n + 1)]
    for s in seen:
        still = s.canvas_BL == V.MASK_text
        assert not (still & masked0 & (stage < s.stage)).any(), "an earlier block is incomplete"
        assert torch.equal(still & (stage > s.stage), masked0 & (stage > s.stage)), "a later block was touched"
        if s.step == s.steps:
            assert not (still & (stage == s.stage)).any(), "a block ends complete"
    assert not (out == V.MASK_text).any() and torch.equal(out[~masked0], canvas[~masked0])
    # one block as long as the span is plain decoding, bit for bit
    how, gen = Decoding(10, make_schedule("linear")), (lambda: torch.Generator().manual_seed(1))
    whole = decode(model, V, canvas, how, stages=block_stages(canvas, V, block=20, steps=10), generator=gen())
    assert torch.equal(whole, decode(model, V, canvas, how, generator=gen()))
