"""Label-smoothed cross-entropy (Szegedy et al. 2016; used by Vaswani et al. 2017 with ε = 0.1)."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["label_smoothed_nll"]


def label_smoothed_nll(
    logits: Tensor, target: Tensor, *, smoothing: float = 0.1, ignore_index: int = 0, reduction: str = "sum"
) -> Tensor:
    """``(1 - ε) · NLL(target) + ε · mean_v(-log p_v)`` over the non-ignored positions.

    ``logits (..., V)``, ``target (...)``. The smoothing mass ε is spread uniformly over all V classes
    (the target included), which is what ``torch.nn.functional.cross_entropy(label_smoothing=ε)``
    computes. ``reduction``: ``"sum"`` (the trainer divides by the token count) or ``"mean"`` or ``"none"``.
    """
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"smoothing must be in [0, 1), got {smoothing}")
    if logits.shape[:-1] != target.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and target {tuple(target.shape)} do not match")
    logp = torch.log_softmax(logits.float(), dim=-1)
    keep = target != ignore_index
    nll = -logp.gather(-1, target.clamp_min(0).unsqueeze(-1)).squeeze(-1)
    loss = (1.0 - smoothing) * nll + smoothing * (-logp.mean(-1)) if smoothing else nll
    loss = loss * keep
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    if reduction == "mean":
        return loss.sum() / keep.sum().clamp_min(1)
    raise ValueError(f"reduction must be 'sum', 'mean' or 'none', got {reduction!r}")
