"""Stage 2 of attention: turning scores ``(..., i, j)`` into weights ``(..., i, j)``.

Every normaliser takes ``scores`` and an optional boolean ``mask`` (True = may attend, broadcastable to
the scores) and returns weights that are exactly 0 on masked keys. A fully masked row gets all-zero
weights and a finite gradient, never NaN.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from .call import check_flag
from .masks import fill_value
from .scores import _param_names, check_positive

__all__ = ["softmax", "relu", "sparsemax", "hard", "gumbel", "NORMALIZERS", "get_normalizer"]


def _fill(scores: Tensor, mask: Tensor | None) -> Tensor:
    return scores if mask is None else scores.masked_fill(~mask, fill_value(scores.dtype))


def _zero_empty_rows(weights: Tensor, mask: Tensor | None) -> Tensor:
    """Zero the rows whose keys are all masked (elsewhere masked weights are already exactly 0)."""
    if mask is None:
        return weights
    row_any = mask.any(dim=-1, keepdim=True)
    if bool(row_any.all()):
        return weights
    return weights * row_any


def softmax(scores: Tensor, mask: Tensor | None = None) -> Tensor:
    """``w_ij = exp(s_ij) / Σ_j' exp(s_ij')`` over the unmasked keys.

    Masked scores are set to the most negative finite value, whose exponential underflows to exactly 0.
    """
    return _zero_empty_rows(torch.softmax(_fill(scores, mask), dim=-1), mask)


def relu(scores: Tensor, mask: Tensor | None = None, *, divide_by_length: bool = False) -> Tensor:
    """ReLU in place of softmax: ``w_ij = max(s_ij, 0)``, masked keys 0.

    This is what the notes propose: the weights are *not* normalised, so rows need not sum to 1 and a
    row whose scores are all negative attends to nothing. With ``divide_by_length=True`` each row is
    divided by its number of unmasked keys ``L`` (``w = relu(s) / L``, Wortsman et al. 2023), which keeps
    the output scale independent of sequence length.
    """
    divide_by_length = check_flag("relu divide_by_length", divide_by_length)
    w = torch.relu(scores)
    if mask is not None:
        w = w.masked_fill(~mask, 0.0)
    if divide_by_length:
        j = scores.shape[-1]
        n = mask.expand(*mask.shape[:-1], j).sum(-1, keepdim=True) if mask is not None else torch.tensor(float(j))
        w = w / n.clamp_min(1).to(w.dtype)
    return w


def sparsemax(scores: Tensor, mask: Tensor | None = None) -> Tensor:
    """Sparsemax: the Euclidean projection of the scores onto the probability simplex
    (Martins & Astudillo 2016, eq. 2 and Algorithm 1): ``w_ij = max(s_ij - τ_i, 0)`` with ``τ_i`` chosen
    so each row sums to 1. Low scores get exactly zero weight.

    Sparsemax is unchanged by a shift of the row, so each row is first shifted by its largest unmasked
    score: the top key then scores exactly 0 and is always in the support (``1 + 0 > 0``), however
    large the scores (unshifted, ``1 + z`` rounds to ``z`` above 2**24 in float32, 2**11 in float16).
    Masked scores are placed at -2: since ``τ ≥ max - 1 = -1`` they can never enter the support.
    Autograd through ``τ`` with the support fixed gives the paper's Jacobian.
    """
    if scores.shape[-1] == 0:  # no key: nothing to project
        return scores.new_zeros(scores.shape)
    row_max = _fill(scores.detach(), mask).amax(-1, keepdim=True)  # (..., i, 1)
    if mask is not None:
        row_max = row_max.masked_fill(~mask.any(-1, keepdim=True), 0.0)
    scores = scores - row_max.masked_fill(~torch.isfinite(row_max), 0.0)
    if mask is not None:
        scores = scores.masked_fill(~mask, -2.0)
    z_sorted, _ = torch.sort(scores, dim=-1, descending=True)
    j = scores.shape[-1]
    ks = torch.arange(1, j + 1, device=scores.device, dtype=scores.dtype)
    cumsum = z_sorted.cumsum(-1)
    support = 1 + ks * z_sorted > cumsum  # (..., i, j), a prefix of the sorted keys
    k_support = support.sum(-1, keepdim=True).clamp_min(1)  # (..., i, 1); 0 only for a NaN row, which stays NaN
    tau = (cumsum.gather(-1, k_support - 1) - 1) / k_support.to(scores.dtype)
    w = torch.clamp(scores - tau, min=0)
    if mask is not None:
        w = _zero_empty_rows(w.masked_fill(~mask, 0.0), mask)
    return w


def _straight_through(index: Tensor, soft: Tensor) -> Tensor:
    """One-hot at ``index`` in the forward pass, the gradient of ``soft`` in the backward pass."""
    one_hot = torch.zeros_like(soft).scatter_(-1, index, 1.0)
    return one_hot - soft.detach() + soft


def hard(scores: Tensor, mask: Tensor | None = None) -> Tensor:
    """Hard attention: all weight on the best-scoring unmasked key (``argmax``; ties go to the first).

    Trainable with a straight-through estimator (Bengio et al. 2013): the forward pass is one-hot, the
    backward pass uses the gradient of the softmax of the same scores.
    """
    if scores.shape[-1] == 0:  # no key to pick
        return scores.new_zeros(scores.shape)
    filled = _fill(scores, mask)
    soft = torch.softmax(filled, dim=-1)
    w = _straight_through(filled.argmax(-1, keepdim=True), soft)
    if mask is not None:
        w = _zero_empty_rows(w, mask)
    return w


def gumbel(
    scores: Tensor,
    mask: Tensor | None = None,
    *,
    tau: float = 1.0,
    generator: torch.Generator | None = None,
    hard: bool = True,
) -> Tensor:
    """Stochastic hard attention: sample one key with probability ``softmax(s)_j`` by the Gumbel-max
    trick, trainable by the straight-through Gumbel-softmax estimator (Jang et al. 2017, eq. 2).

    ``y = softmax((s + g) / tau)`` with ``g ~ Gumbel(0, 1)`` drawn from ``generator`` (pass a seeded
    ``torch.Generator`` for reproducible samples). With ``hard=True`` the forward pass is the one-hot of
    ``argmax(s + g)`` and the backward pass uses the gradient of ``y``; with ``hard=False`` ``y`` itself.
    """
    check_positive("gumbel tau", tau)
    hard = check_flag("gumbel hard", hard)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"gumbel generator must be a torch.Generator or None, got {type(generator).__name__}")
    if scores.shape[-1] == 0:  # no key to pick
        return scores.new_zeros(scores.shape)
    u = torch.rand(scores.shape, generator=generator, device=scores.device, dtype=scores.dtype)
    tiny = torch.finfo(scores.dtype).tiny
    g = -torch.log((-torch.log(u.clamp_min(tiny))).clamp_min(tiny))  # Gumbel(0, 1)
    # Divide by tau before masking: masked scores hold the most negative finite value, which a tau < 1
    # would turn into -inf, and a fully masked row into NaN.
    perturbed = _fill((scores + g) / tau, mask)
    soft = torch.softmax(perturbed, dim=-1)
    w = _straight_through(perturbed.argmax(-1, keepdim=True), soft) if hard else soft
    if mask is not None:
        w = _zero_empty_rows(w.masked_fill(~mask, 0.0) if not hard else w, mask)
    return w


NORMALIZERS: dict[str, Callable[..., Tensor]] = {
    "softmax": softmax,
    "relu": relu,
    "sparsemax": sparsemax,
    "hard": hard,
    "gumbel": gumbel,
}

# Normalisers whose backward pass is the true gradient (the others use a straight-through estimate).
DIFFERENTIABLE = ("softmax", "relu", "sparsemax")


def check_normalize_params(normalize: str, params: dict) -> None:
    """Raise ``ValueError`` (``TypeError`` for a flag that is not a bool) naming the parameter, unless
    ``params`` are options the named normaliser takes."""
    if not params:
        return
    names, _ = _param_names(NORMALIZERS[normalize])
    unknown = sorted(set(params) - set(names))
    if unknown:
        takes = f"takes {', '.join(names)}" if names else "takes no parameters"
        raise ValueError(f"normalize {normalize!r} {takes}; unknown normalize_params {unknown}")
    for flag in ("divide_by_length", "hard"):
        if flag in params:
            check_flag(f"normalize_params[{flag!r}]", params[flag])
    if "tau" in params:
        check_positive("normalize_params['tau']", params["tau"])


def get_normalizer(normalize: str | Callable[..., Tensor]) -> Callable[..., Tensor]:
    """The normaliser for a name in :data:`NORMALIZERS`, or ``normalize`` itself if it is callable."""
    if callable(normalize):
        return normalize
    if not isinstance(normalize, str) or normalize not in NORMALIZERS:
        raise ValueError(
            f"unknown normalize {normalize!r}; choose one of {sorted(NORMALIZERS)} "
            "or pass a callable (scores, mask) -> weights"
        )
    return NORMALIZERS[normalize]

