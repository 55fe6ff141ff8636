"""Output lengths for the decoders: how long a translation may grow, and the GNMT length penalty."""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["max_lengths", "gnmt_length_penalty"]


def max_lengths(
    src: Tensor,
    src_mask: Tensor | None,
    pad_id: int,
    *,
    max_len: int | None,
    max_len_ratio: float,
    max_len_offset: int,
) -> Tensor:
    """``(b,)`` the most decoding steps (output tokens, EOS included) each sentence may take:
    ``max_len`` for all, or else ``int(max_len_ratio × source length + max_len_offset)``."""
    b = src.shape[0]
    if max_len is not None:
        return torch.full((b,), int(max_len), dtype=torch.long)
    src_len = (src != pad_id).sum(1) if src_mask is None else src_mask.sum(1)
    return (src_len.float() * max_len_ratio + max_len_offset).long().cpu()


def gnmt_length_penalty(length: Tensor | int, alpha: float) -> Tensor | float:
    """``lp(Y) = ((5 + |Y|) / 6) ** alpha`` (Wu et al. 2016, "Google's Neural Machine Translation
    System", eq. 14); a hypothesis is ranked by ``log P(Y | X) / lp(Y)``. ``alpha = 0`` gives 1 (no
    penalty); larger ``alpha`` favours longer outputs. ``|Y|`` counts every scored token, EOS included."""
    if not math.isfinite(alpha):
        raise ValueError(f"length_penalty (alpha) must be a finite number, got {alpha}")
    if isinstance(length, Tensor):
        return ((5.0 + length.double()) / 6.0) ** alpha
    return ((5.0 + length) / 6.0) ** alpha
