"""Gradient clipping by the global norm: ``torch.nn.utils.clip_grad_norm_``'s function, in one compiled call
where the gradients allow it.

On a CPU, PyTorch's clipping runs one norm per parameter tensor and then one multiplication per tensor: a
Transformer of ~130 tensors pays ~260 small operations, ~6 ms per step for the model of the speed benchmark,
most of it dispatch. :func:`attnkit.native.clip_grad_norm_` does both in two passes over all the gradients.
The norm is summed in another order than PyTorch's (in double, over fixed blocks), so it may differ from
PyTorch's in the last bits (it is nearer the exact norm); the scaling is the same formula.
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import Tensor

__all__ = ["clip_grad_norm"]


def clip_grad_norm(parameters: Tensor | Iterable[Tensor], max_norm: float, norm_type: float = 2.0,
                   error_if_nonfinite: bool = False, foreach: bool | None = None) -> Tensor:
    """``torch.nn.utils.clip_grad_norm_`` with the same arguments: scale the gradients of ``parameters`` (a tensor
    or an iterable of them) in place so that their norm taken together is at most ``max_norm`` (by
    ``min(1, max_norm / (norm + 1e-6))``); returns the norm before clipping. Parameters without a gradient are
    skipped. The 2-norm of contiguous float32 CPU gradients, none overlapping another, takes the
    compiled kernels (:func:`attnkit.native.clip_grad_norm_`) when they are built; anything else (another
    ``norm_type``, ``error_if_nonfinite=True``, other gradients) PyTorch's function."""
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    params = [p for p in parameters if p.grad is not None]
    grads = [p.grad for p in params]
    if (grads and float(norm_type) == 2.0 and not error_if_nonfinite
            and all(g.layout == torch.strided and g.is_contiguous() for g in grads)
            and _apart([g for g in grads if g.numel()])):
        from attnkit import native

        if native.applies(*grads):
            with torch.no_grad():
                norm = native.clip_grad_norm_(grads, max_norm)
            torch.autograd.graph.increment_version(grads)  # changed in place, as autograd must know
            return norm
    return torch.nn.utils.clip_grad_norm_(params, max_norm, norm_type, error_if_nonfinite, foreach)


def _apart(grads: list[Tensor]) -> bool:
    """Whether no two of ``grads`` (contiguous) overlap in memory: a tensor listed twice, or two views of the same
    elements, would be scaled twice, which PyTorch's function handles its own way. Views of disjoint parts of
    one buffer are apart; autograd makes them (the gradients of the q, k and v weights of an attention computed
    in one product are views of one tensor)."""
    spans = sorted((g.data_ptr(), g.data_ptr() + g.numel() * g.element_size()) for g in grads)
    return all(end <= start for (_, end), (start, _) in zip(spans, spans[1:]))
