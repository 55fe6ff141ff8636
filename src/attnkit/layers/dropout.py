"""Dropout with cheaper random draws.

``torch.nn.Dropout`` draws one random number per element; on a CPU that is most of its cost (~8% of
a Transformer training step on this project's machines). :func:`dropout` draws one 64-bit random
number per four elements and compares each 16-bit quarter with the threshold: an element is dropped
with probability ``p`` rounded to a multiple of 2⁻¹⁶ (0.1 → 6554 / 65536 = 0.100006), and the kept
ones are scaled by ``1 / (1 - p)`` (inverted dropout), exactly as ``nn.Dropout`` scales them. The
draws come from torch's generator, so ``torch.manual_seed`` makes them repeatable and checkpoints
that save the RNG state resume them exactly.

With attnkit's compiled kernels (:mod:`attnkit.native`; float32 on a CPU) the mask is drawn in the same
pass that applies it, from a counter-based generator (splitmix64) seeded by a single draw of torch's
generator, and drawn again in the backward pass instead of being stored: the same dropout rate and scale,
still repeatable with ``torch.manual_seed``, but other draws than without the kernels.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from attnkit import native

__all__ = ["Dropout", "dropout", "relu_dropout", "residual_dropout"]

_LEVELS = 1 << 16


def _check_p(p: float) -> float:
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability must be a number in [0, 1), got {p!r}")
    return float(p)


def dropout(x: Tensor, p: float, training: bool = True) -> Tensor:
    """Zero each element of ``x`` with probability ``p`` (to 2⁻¹⁶) and scale the rest by ``1 / (1 - p)``."""
    _check_p(p)
    if not training or p == 0.0 or x.numel() == 0:
        return x
    if native.applies(x):
        # The compiled kernel: x times a mask drawn in the same pass from a counter-based generator seeded by
        # one draw of torch's generator (so still repeatable with torch.manual_seed); the backward pass
        # draws the mask again from the seed instead of keeping it.
        return _NativeDropout.apply(x, p, native.draw_seed())
    n = x.numel()
    # random_ from the int64 minimum with no upper bound draws all 64 bits (no modulo, unlike randint)
    words = torch.empty((n + 3) // 4, dtype=torch.int64, device=x.device).random_(-(1 << 63), None)
    draws = words.view(torch.int16)[:n].view(x.shape)  # uniform over [-32768, 32767]
    threshold = round(p * _LEVELS) - _LEVELS // 2  # kept iff draw >= threshold: P(drop) = round(p · 65536) / 65536
    # The mask, 0 or s = 1/(1 - p), by arithmetic on the integer-valued draws d: (d - threshold + 1/2)·4s
    # is >= 2s when d >= threshold and <= -2s otherwise, far beyond float32 rounding (~0.02 here), so
    # clamping it to [0, s] gives exactly s or 0. Three vectorised passes, where comparing to a bool
    # mask and multiplying by it converts the bools to floats at every use.
    scale = 1.0 / (1.0 - p)
    mask = torch.mul(draws, 4.0 * scale).sub_((threshold - 0.5) * 4.0 * scale).clamp_(0.0, scale)  # float32
    return x * mask.to(x.dtype)  # autograd keeps the mask for the backward pass: grad · mask


class _NativeDropout(torch.autograd.Function):
    """``x * mask(p, seed)`` by :func:`attnkit.native.dropout_apply`; the gradient is the same function of
    the gradient (the mask is a function of the seed and the element's position)."""

    @staticmethod
    def forward(ctx, x: Tensor, p: float, seed: int) -> Tensor:
        ctx.p, ctx.seed = p, seed
        return native.dropout_apply(x, p, seed)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return _NativeDropout.apply(grad, ctx.p, ctx.seed), None, None  # itself differentiable (double backward)


def relu_dropout(x: Tensor, p: float, training: bool = True) -> Tensor:
    """``dropout(relu(x), p, training)``: with the compiled kernels in one pass each way — the output bit for bit
    the two operations', the gradient their values for finite inputs and gradients (a dropped positive
    element's 0 is +0 where theirs is 0 · grad) — the backward pass reading only the output, which the next
    product keeps anyway: ReLU's own copy of its output is not kept. (So that output must not be changed in
    place before the backward pass; autograd says so if it is.)"""
    _check_p(p)
    if not training or p == 0.0 or x.numel() == 0 or not native.applies(x):
        return dropout(torch.relu(x), p, training)
    return _NativeReluDropout.apply(x, p, native.draw_seed())


def residual_dropout(x: Tensor, y: Tensor, p: float, training: bool = True) -> Tensor:
    """``x + dropout(y, p, training)``, a residual connection: with the compiled kernels and ``x``, ``y`` of one
    shape in one pass (the same bits as the two operations)."""
    _check_p(p)
    if (not training or p == 0.0 or x.numel() == 0 or x.shape != y.shape or not native.applies(x, y)):
        return x + dropout(y, p, training)
    return _NativeResidualDropout.apply(x, y, p, native.draw_seed())


class _NativeReluDropout(torch.autograd.Function):
    """``relu(x) * mask(p, seed)`` by :func:`attnkit.native.relu_dropout_apply`; the gradient from the output:
    ``grad / (1 − p)`` where it is positive."""

    @staticmethod
    def forward(ctx, x: Tensor, p: float, seed: int) -> Tensor:
        out = native.relu_dropout_apply(x, p, seed)
        ctx.p = p
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        (out,) = ctx.saved_tensors
        return _ReluDropoutGrad.apply(grad, out, ctx.p), None, None


class _ReluDropoutGrad(torch.autograd.Function):
    """:func:`attnkit.native.relu_dropout_backward` as a function of ``grad``: linear in it, with itself as its
    gradient (and none with respect to the output, on which it depends only through where it is positive),
    so that ReLU + dropout stays twice differentiable."""

    @staticmethod
    def forward(ctx, grad: Tensor, out: Tensor, p: float) -> Tensor:
        ctx.p = p
        ctx.save_for_backward(out)
        return native.relu_dropout_backward(grad, out, p)

    @staticmethod
    def backward(ctx, gg: Tensor):
        (out,) = ctx.saved_tensors
        return _ReluDropoutGrad.apply(gg, out, ctx.p), None, None


class _NativeResidualDropout(torch.autograd.Function):
    """``x + y * mask(p, seed)`` by :func:`attnkit.native.residual_dropout_apply`; the gradients ``grad`` and
    :func:`dropout`'s of ``grad``."""

    @staticmethod
    def forward(ctx, x: Tensor, y: Tensor, p: float, seed: int) -> Tensor:
        ctx.p, ctx.seed = p, seed
        return native.residual_dropout_apply(x, y, p, seed)

    @staticmethod
    def backward(ctx, grad: Tensor):
        dy = _NativeDropout.apply(grad, ctx.p, ctx.seed) if ctx.needs_input_grad[1] else None
        return grad, dy, None, None


class Dropout(nn.Module):
    """``nn.Dropout`` with :func:`dropout`'s cheaper draws; identity in eval mode."""

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        self.p = _check_p(p)

    def forward(self, x: Tensor) -> Tensor:
        return dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"
