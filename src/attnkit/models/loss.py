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
    keep = target != ignore_index
    logits = logits if logits.dtype in (torch.float32, torch.float64) else logits.float()
    fused = _NativeSmoothedNLL if _native_fits(logits) else _SmoothedNLL
    loss = fused.apply(logits, target.clamp_min(0), keep, float(smoothing))  # (...)
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    if reduction == "mean":
        return loss.sum() / keep.sum().clamp_min(1)
    raise ValueError(f"reduction must be 'sum', 'mean' or 'none', got {reduction!r}")


class _SmoothedNLL(torch.autograd.Function):
    """Per-position loss ``keep · ((1 - ε)(-log p_y) + ε · mean_v(-log p_v))`` and its gradient
    ``keep · g · (p - (1 - ε)·onehot(y) - ε / V)``, computed from the saved log-probabilities in place: the
    backward pass writes one tensor instead of scattering into a zero tensor and chaining three
    backward functions."""

    @staticmethod
    def forward(ctx, logits: Tensor, target: Tensor, keep: Tensor, smoothing: float) -> Tensor:
        logp = torch.log_softmax(logits, dim=-1)  # (..., V)
        nll = -logp.gather(-1, target.unsqueeze(-1)).squeeze(-1)
        loss = (1.0 - smoothing) * nll - smoothing * logp.mean(-1) if smoothing else nll
        ctx.save_for_backward(logp, target, keep)
        ctx.smoothing = smoothing
        return loss * keep

    @staticmethod
    def backward(ctx, grad: Tensor):
        logp, target, keep = ctx.saved_tensors
        eps, vocab = ctx.smoothing, logp.shape[-1]
        weight = (grad * keep).unsqueeze(-1)  # (..., 1)
        out = logp.exp()  # p
        if eps:
            out.sub_(eps / vocab)
        out.scatter_add_(-1, target.unsqueeze(-1), torch.full_like(weight, -(1.0 - eps)))
        return out.mul_(weight), None, None, None


def _native_fits(logits: Tensor) -> bool:
    from attnkit import native

    return logits.dim() >= 1 and native.applies(logits)


class _NativeSmoothedNLL(torch.autograd.Function):
    """:class:`_SmoothedNLL` by the compiled kernels (:mod:`attnkit.native`): the forward pass reads the
    logits once more for ``log Σ exp`` and keeps only that per row (not the log-probabilities), the
    backward pass writes the gradient in one pass over the logits."""

    @staticmethod
    def forward(ctx, logits: Tensor, target: Tensor, keep: Tensor, smoothing: float) -> Tensor:
        from attnkit import native

        rows = logits.reshape(-1, logits.shape[-1]).contiguous()  # (n, V)
        flat = target.reshape(-1)
        loss, lse = native.smoothed_nll_forward(rows, flat, smoothing)
        ctx.save_for_backward(rows, lse, flat, keep)
        ctx.smoothing, ctx.shape = smoothing, logits.shape
        return loss.view(target.shape) * keep

    @staticmethod
    def backward(ctx, grad: Tensor):
        from attnkit import native

        rows, lse, flat, keep = ctx.saved_tensors
        weight = (grad * keep).reshape(-1).to(torch.float32).contiguous()  # (n,)
        return native.smoothed_nll_backward(rows, lse, flat, weight, ctx.smoothing).view(ctx.shape), None, None, None
