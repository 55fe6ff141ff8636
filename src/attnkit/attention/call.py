"""The small value types shared by the attention functions and their backends."""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor

__all__ = ["AttentionOutput", "AttentionCall", "check_flag", "check_dropout"]

_INTEGERS = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


def check_flag(name: str, value: Any) -> bool:
    """``value`` as a bool when it is ``True`` or ``False`` (or NumPy's, or the integers 1 and 0), else a
    ``TypeError`` naming ``name``: Python would take the string ``"no"`` as true and ``None`` as false, so a
    flag given as either would silently do what was not meant."""
    if value is True or value is False:  # first, and cheap: layers check their flags at every call
        return value
    if isinstance(value, np.bool_) or isinstance(value, numbers.Integral) and value in (0, 1):
        return bool(value)
    raise TypeError(f"{name} must be True or False, got {value!r} ({type(value).__name__})")


def check_dropout(name: str, value: Any) -> float:
    """``value`` as a float when it is a dropout probability: a number in [0, 1) — a Python or NumPy number,
    or a tensor holding one. Else a ``TypeError`` naming ``name`` for what is not a number (the string
    ``"0.1"``, which ``float`` would read; a bool, a flag given where a probability is meant; a list), or a
    ``ValueError`` for a number outside [0, 1) (NaN included)."""
    number = (isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))
              or isinstance(value, Tensor) and value.numel() == 1 and (value.is_floating_point() or value.dtype in _INTEGERS))
    if not number:
        raise TypeError(f"{name} must be a number in [0, 1), got {value!r} ({type(value).__name__})")
    p = float(value)
    if not 0.0 <= p < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {p}")
    return p


@dataclass(frozen=True)
class AttentionOutput:
    """What attention returns: the ``context`` ``(..., i, dv)`` and, only when asked, the ``weights``
    ``(..., i, j)`` (per head, never averaged; before dropout)."""

    context: Tensor
    weights: Tensor | None = None

    def __iter__(self):  # allows ``context, weights = attend(...)``
        yield self.context
        yield self.weights


@dataclass(frozen=True)
class AttentionCall:
    """Everything a backend needs to know besides the tensors ``q, k, v``: already validated."""

    score: str | Callable[..., Tensor]
    normalize: str | Callable[..., Tensor]
    mask: Tensor | None = None
    dropout: float = 0.0
    need_weights: bool = False
    score_params: dict[str, Any] = field(default_factory=dict)
    normalize_params: dict[str, Any] = field(default_factory=dict)
