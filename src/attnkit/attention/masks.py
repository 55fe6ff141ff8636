"""Masks: one convention for the whole package.

A mask is a boolean tensor where ``True`` means *may attend*. It is either 2-D ``(i, j)`` (shared by
every batch element and head, e.g. a causal mask) or has exactly the rank of the scores
``(..., i, j)`` with size-1 axes where it is shared (e.g. a key padding mask ``(b, 1, 1, j)`` for scores
``(b, h, i, j)``). Any other rank is refused: a ``(b, j)`` mask against ``(b, h, i, j)`` scores would
broadcast ``b`` against ``i`` and silently mask the wrong thing.

Axes: ``b`` batch, ``h`` heads, ``i`` query positions, ``j`` key positions.
"""

from __future__ import annotations

import numbers

import numpy as np
import torch
from torch import Tensor

__all__ = ["padding_mask", "causal_mask", "combine_masks", "check_mask", "fill_value"]


def padding_mask(lengths: Tensor | list[int], max_len: int | None = None, *, ndim: int = 4) -> Tensor:
    """Key padding mask from sequence lengths.

    ``lengths`` has shape ``(b,)``. The result is ``True`` for positions ``< length`` and has shape
    ``(b, 1, ..., 1, j)`` with ``ndim`` axes, ready for scores of rank ``ndim`` (4 for ``(b, h, i, j)``,
    3 for ``(b, i, j)``). ``ndim=2`` is refused: a ``(b, j)`` mask would be read as ``(i, j)``.
    """
    lengths = torch.as_tensor(lengths)
    if lengths.dim() != 1:
        raise ValueError(f"lengths must be 1-D (b,), got shape {tuple(lengths.shape)}")
    if lengths.dtype.is_floating_point or lengths.dtype == torch.bool:
        raise TypeError(f"lengths must be an integer tensor, got {lengths.dtype}")
    if isinstance(ndim, (bool, np.bool_)) or not isinstance(ndim, numbers.Integral) or ndim < 3:
        raise ValueError(
            f"ndim must be an integer >= 3 (the scores' rank: 4 for (b, h, i, j), 3 for (b, i, j)), got {ndim!r}: "
            "a 2-D (b, j) mask would be read as (i, j), the convention's shared mask"
        )
    if len(lengths) and int(lengths.min()) < 0:
        raise ValueError(f"lengths must be >= 0, got {lengths.tolist()}")
    longest = int(lengths.max()) if len(lengths) else 0
    if max_len is None:
        max_len = longest
    elif not _is_int(max_len):
        raise TypeError(f"max_len must be an integer or None, got {max_len!r} ({type(max_len).__name__})")
    elif max_len < longest:
        raise ValueError(f"max_len={max_len} is shorter than the longest length {longest}")
    positions = torch.arange(max_len, device=lengths.device)
    mask = positions < lengths[:, None]  # (b, j)
    return mask.view(mask.shape[0], *([1] * (ndim - 2)), max_len)


def _is_int(n) -> bool:
    return not isinstance(n, (bool, np.bool_)) and isinstance(n, numbers.Integral)


def causal_mask(i: int, j: int | None = None, *, offset: int | None = None, device=None) -> Tensor:
    """Causal mask ``(i, j)``: query ``p`` may attend key ``q`` iff ``q <= p + offset``.

    ``offset`` defaults to ``j - i``, which aligns the last query with the last key: the right mask
    when ``i`` new queries are appended to a cache of ``j - i`` earlier keys.
    """
    j = i if j is None else j
    for name, n in (("i", i), ("j", j), ("offset", offset)):
        if n is not None and not _is_int(n):
            raise TypeError(f"causal_mask {name} must be an integer, got {n!r} ({type(n).__name__})")
    if i < 0 or j < 0:
        raise ValueError(f"causal_mask sizes must be >= 0, got i={i}, j={j}")
    offset = j - i if offset is None else offset
    rows = torch.arange(i, device=device)[:, None]
    cols = torch.arange(j, device=device)[None, :]
    return cols <= rows + offset


def combine_masks(*masks: Tensor | None) -> Tensor | None:
    """Logical AND of the given masks (``None`` entries are skipped); ``None`` if all are ``None``."""
    out = None
    for m in masks:
        if m is None:
            continue
        if m.dtype != torch.bool:
            raise TypeError(f"masks must be boolean (True = may attend), got {m.dtype}")
        if out is None:
            out = m
            continue
        try:
            shape = torch.broadcast_shapes(out.shape, m.shape)
        except RuntimeError:
            raise ValueError(f"cannot combine masks of shapes {tuple(out.shape)} and {tuple(m.shape)}") from None
        if len(shape) > 2 and 2 < min(out.dim(), m.dim()) < len(shape):
            raise ValueError(f"cannot combine masks of ranks {out.dim()} and {m.dim()}: see the mask convention above")
        out = out & m
    return out


def check_mask(mask: Tensor, scores_shape: torch.Size | tuple[int, ...], name: str = "mask") -> None:
    """Raise a clear error unless ``mask`` follows the convention for scores of ``scores_shape``."""
    if not isinstance(mask, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(mask).__name__}")
    if mask.dtype != torch.bool:
        raise TypeError(
            f"{name} must be a boolean tensor (True = may attend), got dtype {mask.dtype}; "
            "for an additive float mask use mask = (m == 0) or build one with attnkit.attention.padding_mask"
        )
    want = tuple(scores_shape)
    if mask.dim() != 2 and mask.dim() != len(want):
        raise ValueError(
            f"{name} has shape {tuple(mask.shape)} but the scores are {want} (..., i, j): a mask must be "
            f"2-D (i, j) or have rank {len(want)}, with size-1 axes where shared, e.g. "
            f"(b, 1, 1, j) for key padding"
        )
    for got, size in zip(reversed(mask.shape), reversed(want)):
        if got != 1 and got != size:
            raise ValueError(f"{name} of shape {tuple(mask.shape)} cannot broadcast to the scores {want}")


def fill_value(dtype: torch.dtype) -> float:
    """The value written into masked scores: the most negative finite number of ``dtype``.

    Finite rather than ``-inf`` so that a fully masked row gives no NaN in the forward or backward
    pass; its weights are then set to zero explicitly.
    """
    return torch.finfo(dtype).min
