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
    model_steps: int | None = None,
) -> Tensor:
    """``(b,)`` the most decoding steps (output tokens, EOS included) each sentence may take:
    ``max_len`` for all, or else ``int(max_len_ratio × source length + max_len_offset)``, at most
    ``model_steps`` (the decoder's learned positions, :attr:`Seq2SeqModel.max_output_steps`). Raises
    ``ValueError`` naming the argument for a ``src`` that is not ``(b, s)`` or a length setting that is not a
    number of steps, and for a ``max_len`` beyond ``model_steps``."""
    if not isinstance(src, Tensor) or src.dim() != 2:
        raise ValueError(f"src must be a (batch, positions) tensor of token ids, got {_shape(src)}")
    if max_len is not None:
        if isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < 0:
            raise ValueError(f"max_len must be a non-negative integer or None, got {max_len!r}")
        if model_steps is not None and max_len > model_steps:
            raise ValueError(f"max_len={max_len} exceeds the decoder's {model_steps} learned positions "
                             f"(the model's max_len); ask for at most {model_steps}")
        return torch.full((src.shape[0],), max_len, dtype=torch.long)
    if isinstance(max_len_ratio, bool) or not isinstance(max_len_ratio, (int, float)) or not (
            math.isfinite(max_len_ratio) and max_len_ratio >= 0):
        raise ValueError(f"max_len_ratio must be a finite number >= 0, got {max_len_ratio!r}")
    if isinstance(max_len_offset, bool) or not isinstance(max_len_offset, int):
        raise ValueError(f"max_len_offset must be an integer, got {max_len_offset!r}")
    src_len = (src != pad_id).sum(1) if src_mask is None else src_mask.sum(1)
    # in double precision, the int(max_len_ratio × length + max_len_offset) of Python's floats: in float32,
    # 2.1 × 50 + 10 came out as 114.99999 and the limit as 114
    limit = (src_len.double() * max_len_ratio + max_len_offset).long().cpu()
    return limit if model_steps is None else limit.clamp_max(model_steps)


def _shape(x) -> str:
    return f"shape {tuple(x.shape)}" if isinstance(x, Tensor) else type(x).__name__


def gnmt_length_penalty(length: Tensor | int, alpha: float) -> Tensor | float:
    """``lp(Y) = ((5 + |Y|) / 6) ** alpha`` (Wu et al. 2016, "Google's Neural Machine Translation
    System", eq. 14); a hypothesis is ranked by ``log P(Y | X) / lp(Y)``. ``alpha = 0`` gives 1 (no
    penalty); larger ``alpha`` favours longer outputs. ``|Y|`` counts every scored token, EOS included."""
    if not math.isfinite(alpha):
        raise ValueError(f"length_penalty (alpha) must be a finite number, got {alpha}")
    if isinstance(length, Tensor):
        return ((5.0 + length.double()) / 6.0) ** alpha
    return ((5.0 + length) / 6.0) ** alpha
