"""``attend``: attention in three stages — score, normalise, weighted sum — with validated inputs.

    context_i = Σ_j  normalize(score(q_i, k_·))_j  v_j

Shapes: ``query (..., i, d)``, ``key (..., j, d)``, ``value (..., j, dv)`` with identical leading axes
``...`` (e.g. ``(b, h)``); ``context (..., i, dv)``, ``weights (..., i, j)``.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from torch import Tensor

from . import chunked as _chunked  # noqa: F401  (registers the chunked backend)
from .backends import choose_backend, get_backend
from .call import AttentionCall, AttentionOutput, check_dropout, check_flag
from .masks import check_mask
from .normalize import NORMALIZERS, check_normalize_params
from .scores import SCORES, check_score_params, default_scale

__all__ = ["attend"]


def attend(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    *,
    score: str | Callable[..., Tensor] = "scaled_dot",
    normalize: str | Callable[..., Tensor] = "softmax",
    mask: Tensor | None = None,
    dropout: float = 0.0,
    need_weights: bool = False,
    backend: str = "auto",
    score_params: Mapping[str, Any] | None = None,
    normalize_params: Mapping[str, Any] | None = None,
) -> AttentionOutput:
    """Attention of ``query`` over ``key``/``value``.

    - ``score``: ``"dot"``, ``"scaled_dot"``, ``"cosine"``, ``"general"``, ``"additive"`` (see
      :mod:`attnkit.attention.scores`) or a callable ``(q, k) -> (..., i, j)``; its parameters
      (``weight`` for general, ``w_q, w_k, v`` for additive, ``temperature`` for cosine, ``scale`` for
      scaled_dot) go in ``score_params``.
    - ``normalize``: ``"softmax"``, ``"relu"``, ``"sparsemax"``, ``"hard"``, ``"gumbel"`` (see
      :mod:`attnkit.attention.normalize`) or a callable ``(scores, mask) -> weights``; options such as
      gumbel's ``tau`` and ``generator`` go in ``normalize_params``.
    - ``mask``: boolean, True = may attend; 2-D ``(i, j)`` or of the scores' rank (see ``masks``).
    - ``dropout``: probability of zeroing a weight before the weighted sum (the returned weights are
      those before dropout). Pass ``0.0`` at inference.
    - ``need_weights``: also return the weights ``(..., i, j)``.
    - ``backend``: ``"auto"`` (see :func:`attnkit.attention.backends.choose_backend`), or a registered
      name: ``"eager"``, ``"sdpa"``, ``"chunked"``, ``"native"``. A backend that cannot do the call raises ``ValueError``.
    """
    call = AttentionCall(
        score=score,
        normalize=normalize,
        mask=mask,
        dropout=check_dropout("dropout", dropout),
        need_weights=check_flag("need_weights", need_weights),
        score_params=dict(score_params or {}),
        normalize_params=dict(normalize_params or {}),
    )
    _validate(query, key, value, call)
    name = choose_backend(call, query, key, value) if backend == "auto" else backend
    chosen = get_backend(name)
    reason = chosen.why_not(call)
    if reason is not None:
        raise ValueError(f"backend {name!r} cannot compute this attention: {reason}")
    return chosen.run(query, key, value, call)


def _validate(q: Tensor, k: Tensor, v: Tensor, call: AttentionCall) -> None:
    if not _tensors_look_right(q, k, v):
        _validate_tensors(q, k, v)  # says what is wrong
    _validate_call(q, k, call)


def _tensors_look_right(q: Tensor, k: Tensor, v: Tensor) -> bool:
    """All the checks of :func:`_validate_tensors` in one expression, so that valid input (every call
    but a failing one) costs about a microsecond: at N=128 the fused kernel itself takes ~250 µs."""
    if not (isinstance(q, Tensor) and isinstance(k, Tensor) and isinstance(v, Tensor)):
        return False
    qs, ks, vs = q.shape, k.shape, v.shape
    return (
        q.is_floating_point()
        and q.dtype == k.dtype == v.dtype
        and len(qs) >= 2
        and len(qs) == len(ks) == len(vs)
        and qs[:-2] == ks[:-2] == vs[:-2]
        and ks[-2] == vs[-2]
    )


def _validate_tensors(q: Tensor, k: Tensor, v: Tensor) -> None:
    for name, t in (("query", q), ("key", k), ("value", v)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got dtype {t.dtype} (convert with .float())")
        if t.dim() < 2:
            raise ValueError(f"{name} must have shape (..., positions, features), got {tuple(t.shape)}")
    if not (q.dim() == k.dim() == v.dim()):
        raise ValueError(
            f"query, key and value must have the same rank, got query {tuple(q.shape)}, key {tuple(k.shape)}, "
            f"value {tuple(v.shape)}"
        )
    if not (q.shape[:-2] == k.shape[:-2] == v.shape[:-2]):
        raise ValueError(
            f"query, key and value must have the same leading (batch/head) axes, got query {tuple(q.shape)}, "
            f"key {tuple(k.shape)}, value {tuple(v.shape)}"
        )
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(
            f"key and value must have the same number of positions j, got key {tuple(k.shape)} and value {tuple(v.shape)}"
        )
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"query, key and value must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")


def _validate_call(q: Tensor, k: Tensor, call: AttentionCall) -> None:
    if isinstance(call.score, str):
        if call.score not in SCORES:
            raise ValueError(
                f"unknown score {call.score!r}; choose one of {sorted(SCORES)} or pass a callable (q, k) -> (..., i, j)"
            )
        if SCORES[call.score].same_dim and q.shape[-1] != k.shape[-1]:
            raise ValueError(
                f"score {call.score!r} needs query and key of the same feature size, got query {tuple(q.shape)} "
                f"and key {tuple(k.shape)}"
            )
        check_score_params(call.score, call.score_params, q)
        if call.score == "scaled_dot" and call.score_params.get("scale") is None:
            default_scale(q)  # refuses queries without features, whose 1/sqrt(d) is undefined
    elif not callable(call.score):
        raise TypeError(f"score must be a name or a callable, got {type(call.score).__name__}")
    if isinstance(call.normalize, str):
        if call.normalize not in NORMALIZERS:
            raise ValueError(
                f"unknown normalize {call.normalize!r}; choose one of {sorted(NORMALIZERS)} "
                "or pass a callable (scores, mask) -> weights"
            )
        check_normalize_params(call.normalize, call.normalize_params)
    elif not callable(call.normalize):
        raise TypeError(f"normalize must be a name or a callable, got {type(call.normalize).__name__}")
    if call.mask is not None:
        check_mask(call.mask, (*q.shape[:-1], k.shape[-2]))

