"""Stage 1 of attention: the similarity score between every query and every key.

Every score maps queries ``q (..., i, d_q)`` and keys ``k (..., j, d_k)`` to scores ``(..., i, j)``.
Parameters that a score needs (a bilinear matrix, the additive MLP) are passed in explicitly: these are
pure functions, the modules in :mod:`attnkit.layers` own the parameters.

A score that is a dot product of transformed queries and keys can be *rewritten* as
``scale * q' @ k'.T`` (:func:`as_scaled_dot`), which lets the fused kernel compute it exactly.
"""

from __future__ import annotations

import functools
import inspect
import math
import numbers
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import Tensor

__all__ = ["dot", "scaled_dot", "cosine", "general", "additive", "SCORES", "ScoreSpec", "get_score", "as_scaled_dot"]


def batched_matmul(a: Tensor, b: Tensor) -> Tensor:
    """``a (..., i, d) @ b (..., d, j)``. With equal batch shapes it is one ``torch.bmm`` over 3-D views:
    ``torch.matmul`` of 4-D operands copies a transposed ``b`` (keys, ``k.transpose(-2, -1)``) into a
    contiguous tensor first, which costs more than the product for a decoding step's single query."""
    if a.dim() > 3 and a.shape[:-2] == b.shape[:-2]:
        n = math.prod(a.shape[:-2])  # not -1: an empty axis leaves -1 undetermined
        out = torch.bmm(a.reshape(n, *a.shape[-2:]), b.reshape(n, *b.shape[-2:]))  # (n, i, j)
        return out.view(*a.shape[:-2], *out.shape[-2:])
    return a @ b


def dot(q: Tensor, k: Tensor) -> Tensor:
    """Dot-product score ``s_ij = q_i · k_j`` (Luong et al. 2015, eq. 8 "dot")."""
    return batched_matmul(q, k.transpose(-2, -1))


def scaled_dot(q: Tensor, k: Tensor, scale: float | None = None) -> Tensor:
    """Scaled dot product ``s_ij = q_i · k_j / sqrt(d)`` (Vaswani et al. 2017, eq. 1).

    Dividing by ``sqrt(d)`` keeps the variance of the score at ~1 when the components of ``q`` and ``k``
    are independent with unit variance, so the softmax does not saturate. ``scale`` overrides ``1/sqrt(d)``.
    """
    scale = default_scale(q) if scale is None else scale
    # Scaling the (i, d) queries is cheaper than scaling the (i, j) scores.
    return batched_matmul(q * scale, k.transpose(-2, -1))


def default_scale(q: Tensor) -> float:
    """``1/sqrt(d)`` for queries ``(..., i, d)``; ``ValueError`` naming the query when ``d`` is 0 (no
    features: the division is undefined)."""
    d = q.shape[-1]
    if d == 0:
        raise ValueError(f"score 'scaled_dot' divides by sqrt(d), but query {tuple(q.shape)} has d = 0 features")
    return 1.0 / math.sqrt(d)


def cosine(q: Tensor, k: Tensor, temperature: float = 1.0, eps: float = 1e-8) -> Tensor:
    """Cosine similarity divided by a temperature: ``s_ij = cos(q_i, k_j) / temperature``.

    Scores lie in ``[-1/temperature, 1/temperature]``; a small temperature sharpens the distribution
    (Graves et al. 2014 use cosine similarity for content addressing).
    """
    check_positive("cosine temperature", temperature)
    qn = q / q.norm(dim=-1, keepdim=True).clamp_min(eps)
    kn = k / k.norm(dim=-1, keepdim=True).clamp_min(eps)
    return (qn / temperature) @ kn.transpose(-2, -1)


def general(q: Tensor, k: Tensor, weight: Tensor) -> Tensor:
    """Bilinear ("general") score ``s_ij = q_iᵀ W k_j`` with ``W (d_q, d_k)`` (Luong et al. 2015, eq. 8)."""
    if not isinstance(weight, Tensor):
        raise TypeError(f"general score: weight must be a tensor (d_q, d_k), got {type(weight).__name__}")
    if weight.dtype != q.dtype:
        raise TypeError(f"general score: weight has dtype {weight.dtype} but the queries {q.dtype}")
    if weight.dim() != 2 or weight.shape != (q.shape[-1], k.shape[-1]):
        raise ValueError(
            f"general score: weight must have shape (d_q, d_k) = ({q.shape[-1]}, {k.shape[-1]}), "
            f"got {tuple(weight.shape)}"
        )
    return (q @ weight) @ k.transpose(-2, -1)


def additive(q: Tensor, k: Tensor, w_q: Tensor, w_k: Tensor | None, v: Tensor) -> Tensor:
    """Additive (MLP) score ``s_ij = vᵀ tanh(W_q q_i + W_k k_j)`` (Bahdanau et al. 2015, eq. 6 / A.1.2).

    ``w_q (a, d_q)``, ``w_k (a, d_k)``, ``v (a,)``. ``w_k=None`` means the keys are already projected
    (``k = W_k h``, ``(..., j, a)``): a decoder computes that once per source instead of at every step.
    The ``(..., i, j, a)`` hidden layer is materialised; the ``chunked`` backend computes it one key
    block at a time for long inputs.
    """
    for name, t in (("w_q", w_q), ("w_k", w_k), ("v", v)):
        if not (isinstance(t, Tensor) or (name == "w_k" and t is None)):
            raise TypeError(f"additive score: {name} must be a tensor, got {type(t).__name__}")
    if w_q.dim() != 2 or w_q.shape[1] != q.shape[-1]:
        raise ValueError(f"additive score: w_q must be (a, d_q={q.shape[-1]}), got {tuple(w_q.shape)}")
    if w_k is None:
        if k.shape[-1] != w_q.shape[0]:
            raise ValueError(
                f"additive score with w_k=None takes keys already projected to a={w_q.shape[0]} features, "
                f"got key {tuple(k.shape)}"
            )
    elif w_k.dim() != 2 or w_k.shape[1] != k.shape[-1] or w_k.shape[0] != w_q.shape[0]:
        raise ValueError(
            f"additive score: w_k must be (a={w_q.shape[0]}, d_k={k.shape[-1]}), got {tuple(w_k.shape)}"
        )
    if v.shape != (w_q.shape[0],):
        raise ValueError(f"additive score: v must be (a={w_q.shape[0]},), got {tuple(v.shape)}")
    pq = q @ w_q.T  # (..., i, a)
    pk = k if w_k is None else k @ w_k.T  # (..., j, a)
    hidden = torch.tanh(pq.unsqueeze(-2) + pk.unsqueeze(-3))  # (..., i, j, a)
    return hidden @ v  # (..., i, j)


def _bad_number(value) -> str | None:
    """Why ``value`` is not a finite real number (or a tensor of them); None when it is."""
    if isinstance(value, Tensor):
        if not (value.is_floating_point() or value.dtype in (torch.int32, torch.int64)):
            return f"a tensor of dtype {value.dtype}"
        return None if bool(torch.isfinite(value.detach()).all()) else "a tensor with NaN or infinite entries"
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):  # numpy's numbers are Real
        return f"{value!r} ({type(value).__name__})"
    return None if math.isfinite(value) else repr(value)


def check_number(name: str, value) -> None:
    """Raise ``ValueError`` naming ``name`` unless ``value`` is a finite number or a tensor of them."""
    why = _bad_number(value)
    if why is not None:
        raise ValueError(f"{name} must be a finite number, got {why}")


def check_positive(name: str, value) -> None:
    """:func:`check_number`, and > 0."""
    check_number(name, value)
    positive = bool((value > 0).all()) if isinstance(value, Tensor) else value > 0
    if not positive:
        raise ValueError(f"{name} must be > 0, got {value}")


@functools.lru_cache(maxsize=None)
def _param_names(fn: Callable) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The parameters of a score ``fn(q, k, ...)`` or normaliser ``fn(scores, mask, ...)`` after its two
    tensors, and those of them without a default."""
    parameters = list(inspect.signature(fn).parameters.values())[2:]
    return tuple(p.name for p in parameters), tuple(p.name for p in parameters if p.default is inspect.Parameter.empty)


def check_score_params(score: str, params: dict, q: Tensor) -> None:
    """Raise ``ValueError`` (``TypeError`` for a tensor of another dtype) naming the parameter, unless
    ``params`` are the parameters the named ``score`` takes, with every required one present: a misspelt
    name would otherwise be ignored by the fused backends."""
    names, required = _param_names(SCORES[score].fn)
    if not params and not required:
        return
    unknown = sorted(set(params) - set(names))
    if unknown:
        takes = f"takes {', '.join(names)}" if names else "takes no parameters"
        raise ValueError(f"score {score!r} {takes}; unknown score_params {unknown}")
    missing = [n for n in required if n not in params]
    if missing:
        raise ValueError(f"score {score!r} needs score_params {missing}")
    for name, value in params.items():  # a number held in a 0-dim tensor is promoted as a number would be
        if isinstance(value, Tensor) and value.dim() and value.is_floating_point() and value.dtype != q.dtype:
            raise TypeError(f"score_params[{name!r}] has dtype {value.dtype} but the queries {q.dtype}")
    if params.get("scale") is not None:
        check_number("score_params['scale']", params["scale"])
    if "temperature" in params:
        check_positive("score_params['temperature']", params["temperature"])
    if "eps" in params:  # cosine's floor on the norms: 0 or less divides a zero vector by 0 (NaN)
        check_positive("score_params['eps']", params["eps"])
    for name in ("scale", "temperature"):
        _check_per_row(name, params.get(name), q)


def _check_per_row(name: str, value, q: Tensor) -> None:
    """A tensor ``scale``/``temperature`` multiplies (divides) the scores: it must broadcast to
    ``(..., i, 1)``, one number per score row at most. (It is applied to the queries ``(..., i, d)``, where
    a last axis of size ``d`` would silently weight each feature instead.)"""
    if not isinstance(value, Tensor) or value.dim() == 0:
        return
    rows = (*q.shape[:-1], 1)
    try:
        fits = value.dim() <= len(rows) and torch.broadcast_shapes(value.shape, rows) == rows
    except RuntimeError:
        fits = False
    if not fits:
        raise ValueError(
            f"score_params[{name!r}] of shape {tuple(value.shape)} must be a number or a tensor that broadcasts "
            f"to (..., i, 1) = {rows}, one value per row of scores at most, e.g. (h, 1, 1) per head"
        )


@dataclass(frozen=True)
class ScoreSpec:
    """A named score: its function and whether it needs ``d_q == d_k``."""

    fn: Callable[..., Tensor]
    same_dim: bool


SCORES: dict[str, ScoreSpec] = {
    "dot": ScoreSpec(dot, same_dim=True),
    "scaled_dot": ScoreSpec(scaled_dot, same_dim=True),
    "cosine": ScoreSpec(cosine, same_dim=True),
    "general": ScoreSpec(general, same_dim=False),
    "additive": ScoreSpec(additive, same_dim=False),
}


def get_score(score: str | Callable[..., Tensor]) -> Callable[..., Tensor]:
    """The score function for a name in :data:`SCORES`, or ``score`` itself if it is callable."""
    if callable(score):
        return score
    if not isinstance(score, str) or score not in SCORES:
        raise ValueError(f"unknown score {score!r}; choose one of {sorted(SCORES)} or pass a callable (q, k) -> (..., i, j)")
    return SCORES[score].fn


def as_scaled_dot(score: str | Callable, q: Tensor, k: Tensor, params: dict) -> tuple[Tensor, Tensor, float] | None:
    """Rewrite a score as ``scale * q' @ k'ᵀ`` when that is exact; ``None`` otherwise.

    - ``dot``: ``q' = q``, scale 1;  ``scaled_dot``: scale ``1/sqrt(d)`` (or the given one);
    - ``general``: ``q' = q W``, scale 1 (associativity of the matrix product);
    - ``cosine``: ``q', k'`` unit-normalised, scale ``1/temperature``.

    A tensor ``scale`` or ``temperature`` is not rewritten (the number a fused kernel takes would drop its
    gradient).
    """
    if isinstance(params.get("scale"), Tensor) or isinstance(params.get("temperature"), Tensor):
        return None  # a tensor (perhaps learned) stays a tensor, so that it keeps its gradient
    if score == "dot":
        return q, k, 1.0
    if score == "scaled_dot":
        scale = params.get("scale")
        return q, k, (default_scale(q) if scale is None else float(scale))
    if score == "general":
        weight = params["weight"]
        general(q[..., :0, :], k[..., :0, :], weight)  # validates the weight's shape
        return q @ weight, k, 1.0
    if score == "cosine":
        temperature = float(params.get("temperature", 1.0))
        check_positive("cosine temperature", temperature)
        eps = params.get("eps", 1e-8)
        qn = q / q.norm(dim=-1, keepdim=True).clamp_min(eps)
        kn = k / k.norm(dim=-1, keepdim=True).clamp_min(eps)
        return qn, kn, 1.0 / temperature
    return None
