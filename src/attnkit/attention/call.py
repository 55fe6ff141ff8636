"""The small value types shared by the attention functions and their backends."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from torch import Tensor

__all__ = ["AttentionOutput", "AttentionCall"]


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
