"""Gradient clipping by the global norm: ``torch.nn.utils.clip_grad_norm_``'s function, in one compiled call
where the gradients allow it.

On a CPU, PyTorch's clipping runs one norm per parameter tensor and then one multiplication per tensor: a
Transformer of ~130 tensors pays ~260 small operations, ~6 ms per step for the model of the speed benchmark,
most of it dispatch. :func:`attnkit.native.clip_grad_norm_` does both in two passes over all the gradients.
The norm is summed in another order than PyTorch's (in double, over fixed blocks), so it may differ from
PyTorch's in the last bits; the scaling is the same formula.
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import Tensor

__all__ = ["clip_grad_norm"]


def clip_grad_norm(parameters: Iterable[torch.nn.Parameter], max_norm: float) -> Tensor:
    """Scale the gradients of ``parameters`` in place so that their 2-norm taken together is at most ``max_norm``
    (by ``min(1, max_norm / (norm + 1e-6))``), as ``torch.nn.utils.clip_grad_norm_(parameters, max_norm)``
    does; returns the norm before clipping. Parameters without a gradient are skipped. Contiguous float32 CPU
    gradients take the compiled kernels (:func:`attnkit.native.clip_grad_norm_`) when they are built; any
    others, PyTorch's function."""
    params = [p for p in parameters if p.grad is not None]
    grads = [p.grad for p in params]
    if grads and all(g.layout == torch.strided and g.is_contiguous() for g in grads):
        from attnkit import native

        if native.applies(*grads):
            return native.clip_grad_norm_(grads, max_norm)
    return torch.nn.utils.clip_grad_norm_(params, max_norm)
