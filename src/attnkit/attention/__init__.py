"""The mathematics of attention as pure functions: scores, normalisers, masks and backends.

    from attnkit.attention import attend
    out = attend(q, k, v, score="scaled_dot", normalize="softmax", need_weights=True)
    out.context  # (..., i, dv)
    out.weights  # (..., i, j)
"""

from .backends import BACKENDS, Backend, choose_backend, get_backend, register_backend
from .call import AttentionCall, AttentionOutput
from .core import attend
from .masks import causal_mask, check_mask, combine_masks, padding_mask
from .normalize import NORMALIZERS, get_normalizer, gumbel, hard, relu, softmax, sparsemax
from .scores import SCORES, additive, as_scaled_dot, cosine, dot, general, get_score, scaled_dot

__all__ = [
    "attend", "AttentionOutput", "AttentionCall",
    "BACKENDS", "Backend", "choose_backend", "get_backend", "register_backend",
    "padding_mask", "causal_mask", "combine_masks", "check_mask",
    "SCORES", "get_score", "as_scaled_dot", "dot", "scaled_dot", "cosine", "general", "additive",
    "NORMALIZERS", "get_normalizer", "softmax", "relu", "sparsemax", "hard", "gumbel",
]
