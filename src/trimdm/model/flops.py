"""Parameter and FLOP counts beside the model (method §5), embedding and non-embedding separately.

Scaling fits depend on which N is used: at small scale the embedding tables are a large share of the
parameters (the paper's 320M pilot has about 240M embedding parameters), so both counts are reported.
FLOPs count multiply-adds as 2 and training as 3× the forward pass (forward + backward).
"""
from __future__ import annotations

from trimdm.model.transformer import TransformerArgs


def param_counts(a: TransformerArgs) -> dict[str, int]:
    d, h = a.d_model, a.hidden
    per_block = 4 * d * d + 3 * d * h + 2 * d + 2 * a.head_dim  # qkv+out, SwiGLU, 2 norms, QK-norms
    non_embedding = a.n_layers * per_block + d  # + final norm
    embedding = 2 * a.vocab_size * d  # input embedding and unembedding (untied)
    return {"embedding": embedding, "non_embedding": non_embedding, "total": embedding + non_embedding}


def train_flops_per_token(a: TransformerArgs, seq_len: int, logit_width: float, logit_fraction: float) -> float:
    """Training FLOPs per input token.

    logit_width: mean number of output ids per predicted position (a modality slice + EOS);
    logit_fraction: fraction of positions whose logits are computed (the masked ones)."""
    d, h = a.d_model, a.hidden
    matmul = a.n_layers * (4 * d * d + 3 * d * h)  # weights touched per token
    attention = a.n_layers * 2 * seq_len * d  # QKᵀ and AV per token
    head = logit_fraction * logit_width * d
    return 6.0 * (matmul + attention + head)
