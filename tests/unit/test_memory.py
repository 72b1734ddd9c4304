"""Memory for larger models: activation checkpointing gives the plain model's gradients, the activation
estimate counts what autograd keeps, and the memory check refuses what does not fit with remedies."""
import copy

import pytest
import torch

from trimdm.distributed.parallelize import checkpoint_blocks
from trimdm.model.memory import GiB, MemoryPlan, block_bytes_per_token, training_memory
from trimdm.model.transformer import Transformer, TransformerArgs
from trimdm.recipes import tiny
from trimdm.tokenizers.vocab import JointVocab
from trimdm.train import memory


def _model(seq_len: int = 300) -> Transformer:
    model = Transformer(TransformerArgs(vocab_size=300, d_model=64, n_layers=3, n_heads=4, max_seq_len=seq_len))
    model.init_weights(torch.Generator().manual_seed(0))
    return model


def _grads(model: Transformer, seq_len: int, dtype: str) -> dict[str, torch.Tensor]:
    """Gradients of a masked-token cross-entropy on seeded ids, one row padded (the key mask in use)."""
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 300, (3, seq_len), generator=g)
    pad = torch.zeros(3, seq_len, dtype=torch.bool)
    pad[1, seq_len // 2:] = True
    select = (torch.rand(3, seq_len, generator=g) < 0.5) & ~pad
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bf16"):
        [logits] = model(ids, pad, heads=[(select, 0, 200, 250)])
        loss = torch.nn.functional.cross_entropy(logits.float(), ids[select].clamp(max=200))
    loss.backward()
    return {name: p.grad for name, p in model.named_parameters()}


@pytest.mark.parametrize("dtype,seq_len", [("fp32", 64), ("fp32", 300), ("bf16", 64), ("bf16", 300)])
def test_checkpointed_blocks_give_the_plain_models_gradients(dtype, seq_len):
    """fp32: equal bit for bit (the recompute replays the same kernels on the same inputs). bf16
    autocast: the recompute runs under the same autocast state, so a difference can only come from a
    kernel rounding differently on the second pass; each such rounding moves a bf16 value by at most
    its unit roundoff u = 2^-8 relative, and we allow four of them on the largest entry of each gradient
    (|Δg| ≤ 4u·max|g|). On this CPU the bf16 gradients are in fact bit-identical as well (max |Δg| = 0)."""
    plain = _model(seq_len)
    checkpointed = copy.deepcopy(plain)
    checkpoint_blocks(checkpointed)
    calls = []
    checkpointed.blocks[0].attn.register_forward_hook(lambda *a: calls.append(1))
    want, got = _grads(plain, seq_len, dtype), _grads(checkpointed, seq_len, dtype)
    assert len(calls) == 2  # the block's forward ran again in the backward pass: activations were not kept
    assert want.keys() == got.keys()  # parameter names unchanged (checkpoints and optimizer groups rely on them)
    for name in want:
        if dtype == "fp32":
            assert torch.equal(want[name], got[name]), name
        else:
            tol = 4 * 2.0**-8 * float(want[name].abs().max())
            torch.testing.assert_close(got[name], want[name], rtol=0, atol=tol, msg=name)


def _saved_bytes_per_token(model: Transformer, seq_len: int, dtype: str) -> tuple[float, float]:
    """(bytes per position, fixed bytes) that autograd keeps for one block's backward pass, from the
    tensors it saves (each storage once; parameters and the RoPE tables excluded), by differencing two
    batch sizes."""
    def saved(batch):
        x = torch.randn(batch, seq_len, model.args.d_model, requires_grad=True)
        cos, sin = model.rope_cos[:seq_len], model.rope_sin[:seq_len]
        skip = {t.untyped_storage().data_ptr() for t in [*model.parameters(), cos, sin]}
        storages = {}

        def pack(t):
            storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bf16"), \
                torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model.blocks[0](x, cos, sin, None)
        return sum(n for ptr, n in storages.items() if ptr not in skip)

    small, large = saved(2), saved(4)
    per_token = (large - small) / (2 * seq_len)
    return per_token, small - per_token * 2 * seq_len


@pytest.mark.parametrize("dtype,seq_len,d_model,heads,hidden", [("fp32", 128, 128, 4, 0), ("fp32", 64, 256, 2, 0),
                                                               ("fp32", 64, 128, 8, 320), ("bf16", 128, 128, 4, 0),
                                                               ("bf16", 512, 128, 4, 0), ("bf16", 512, 256, 8, 0),
                                                               ("bf16", 512, 128, 2, 320)])
def test_the_activation_estimate_counts_what_autograd_keeps(dtype, seq_len, d_model, heads, hidden):
    """Per position to 1% (the SwiGLU width set apart from d_model in two cases, so the d and h terms
    cannot trade places); the fixed bytes are the bf16 weight copies, RoPE tables and QK-norm gains."""
    args = TransformerArgs(vocab_size=100, d_model=d_model, n_layers=1, n_heads=heads, max_seq_len=seq_len,
                           mlp_hidden=hidden)
    model = Transformer(args)
    per_token, fixed = _saved_bytes_per_token(model, seq_len, dtype)
    plan = MemoryPlan(micro_tokens=1, seq_len=seq_len, logit_width=1, bf16=dtype == "bf16",
                      explicit_attention=dtype == "bf16" and seq_len <= 256)
    assert block_bytes_per_token(args, plan) == pytest.approx(per_token, rel=0.01)
    block_params = 4 * d_model**2 + 3 * d_model * args.hidden
    if dtype == "bf16":  # bf16 copies of the block's matrices (the estimate's weight_copies), and, small
        # and left out of the estimate, of the RoPE tables (cos and sin, for q and k) and the two QK-norms'
        # gains in fp32 (RMSNormFunction keeps the gain at the input's precision in fp32)
        rope = 4 * 2 * seq_len * args.head_dim
        assert fixed == pytest.approx(2 * block_params + rope + 2 * 4 * args.head_dim, rel=0.01)
    else:
        assert fixed == 0


def test_checkpointing_and_sharding_shrink_the_estimate():
    args = TransformerArgs(vocab_size=50_000, d_model=1024, n_layers=24, n_heads=16)
    plain = training_memory(args, MemoryPlan(micro_tokens=8192, seq_len=1024, logit_width=40_001))
    ckpt = training_memory(args, MemoryPlan(micro_tokens=8192, seq_len=1024, logit_width=40_001, checkpointing=True))
    fsdp = training_memory(args, MemoryPlan(micro_tokens=8192, seq_len=1024, logit_width=40_001, shards=8))
    # checkpointed: each block's fp32 input (4·d per position) and one block's intermediates, against 24
    # blocks' intermediates (a = 24·d + 8·h + 12·H + 8 = 46,792 bytes per position: 0.13 of them)
    a = block_bytes_per_token(args, MemoryPlan(micro_tokens=1, seq_len=1024, logit_width=1))
    assert ckpt["activations"] == 8192 * (24 * 4 * 1024 + a) < plain["activations"] / 5
    assert ckpt["peak"] < plain["peak"]
    assert fsdp["adamw"] == plain["adamw"] / 8 and fsdp["peak"] < plain["peak"]


VOCAB = JointVocab(n_text=512)


def _cfg(*overrides):
    return tiny().override(["train.threads=0", *overrides]).derive()


def test_a_run_that_does_not_fit_is_refused_with_what_would_fit(monkeypatch):
    """16 rows of 2,048 at d_model 1024 (100M parameters): activations are most of the estimate (11.4
    of 15.4 GiB). With 5 GiB free, 2-row micro-batches fit (4.2 GiB; 4 rows, 5.8 GiB, do not); the
    message names that, activation checkpointing and FSDP with what each would need, and the key that
    skips the check."""
    cfg = _cfg("model.d_model=1024", "model.n_layers=8", "model.n_heads=8", "data.seq_len=2048",
               "train.batch_size=16", "optim.base.batch=16", "train.tokens=1e7")
    device = torch.device("cpu")
    full = memory.estimate(cfg, VOCAB, 1, device)["peak"]
    assert full > memory.estimate(cfg, VOCAB, 1, device, micro=4)["peak"] > 5 * GiB
    assert 5 * GiB > memory.estimate(cfg, VOCAB, 1, device, micro=2)["peak"]
    monkeypatch.setattr(memory, "available_memory", lambda device: (5 * GiB, "test"))
    with pytest.raises(ValueError) as err:
        memory.check_memory(cfg, VOCAB, 1, device)
    msg = str(err.value)
    assert f"needs about {full / GiB:.1f} GiB" in msg and "5.0 GiB available (test)" in msg
    assert "train.micro_batch_size=2 " in msg  # the largest that fits and divides the batch
    checkpointed = memory.estimate(cfg, VOCAB, 1, device, checkpointing=True)["peak"]
    assert f"train.activation_checkpointing=true ({checkpointed / GiB:.1f} GiB" in msg and "train.parallel=fsdp on" in msg
    assert "train.memory_check=false" in msg
    off = copy.deepcopy(cfg)
    off.train.memory_check = False
    assert memory.check_memory(off, VOCAB, 1, device)["peak"] == full  # estimated, not refused
    monkeypatch.setattr(memory, "available_memory", lambda device: (full * 1.01, "test"))
    memory.check_memory(cfg, VOCAB, 1, device)  # fits


def test_cpu_ranks_share_the_nodes_memory(monkeypatch):
    one = memory.available_memory(torch.device("cpu"))
    assert one is not None and one[0] > 0
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    four = memory.available_memory(torch.device("cpu"))
    assert four[0] == pytest.approx(one[0] / 4, rel=0.2) and "shared by 4 processes" in four[1]
