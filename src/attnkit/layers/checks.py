"""Checks shared by the layers: input checks with clear errors that name the argument, its shape and the size
expected, and whether hooks would see a module's call (which the fused paths skip); and the check that a size
or count is a whole number, which the models, decoding and the exports use too."""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor, nn

__all__ = ["check_count", "check_features", "check_float", "runs_hooks"]


def check_count(name: str, value: Any, *, least: int = 0, error: Callable[[str], Exception] = ValueError) -> int:
    """``value`` when it is an ``int`` of at least ``least`` (0: a non-negative integer, 1: a positive one),
    else raise ``error`` with a message naming ``name``. ``True`` and ``False`` are refused although Python
    counts them as ints: a flag where a size is meant is a mistake, not 1 or 0."""
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        what = {0: "a non-negative integer", 1: "a positive integer"}.get(least, f"an integer >= {least}")
        raise error(f"{name} must be {what}, got {value!r}")
    return value


def check_float(name: str, x: Tensor, layer: nn.Module | None = None, weight: str = "weight") -> None:
    """Raise ``TypeError`` unless ``x`` holds floating-point features of the dtype of ``layer``'s
    parameters, read from its submodule or parameter named ``weight`` (a dotted path): an integer tensor
    is token ids, not features. Under autocast any floating-point dtype passes, as autocast casts."""
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor of features, got dtype {x.dtype} "
                        "(token ids go through an embedding first)")
    if layer is None:
        return
    param = _weight(layer, weight)
    if param is not None and param.dtype != x.dtype and not torch.is_autocast_enabled(x.device.type):
        raise TypeError(f"{name} has dtype {x.dtype} but the layer's parameters are {param.dtype}: convert "
                        f"one to the other (x.to({param.dtype}) or layer.to({x.dtype}))")


def _weight(layer: nn.Module, path: str) -> Tensor | None:
    """The tensor at ``path`` under ``layer`` (None where it is not a tensor, e.g. a quantised module's)."""
    obj = layer
    for part in path.split("."):
        obj = getattr(obj, part, None)
    return obj if isinstance(obj, Tensor) and obj.is_floating_point() else None


def check_features(name: str, x: Tensor, dim: int, dim_name: str, layer: nn.Module | None = None,
                   weight: str = "weight") -> None:
    """Raise unless ``x`` is a batch-first ``(b, positions, dim)`` tensor (of ``layer``'s dtype, see
    :func:`check_float`)."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 3:
        raise ValueError(f"{name} must have shape (b, positions, {dim_name}={dim}) (batch first), got {tuple(x.shape)}")
    if x.shape[-1] != dim:
        raise ValueError(
            f"{name} has {x.shape[-1]} features but this layer was built with {dim_name}={dim} "
            f"(got shape {tuple(x.shape)})"
        )
    check_float(name, x, layer, weight)


def runs_hooks(modules) -> bool:
    """Whether a hook would run on any of ``modules`` — forward or backward, pre-hook or not, the module's own
    or a global one: a fused path that skips those modules' calls must not be taken then."""
    from torch.nn.modules import module as torch_module

    if (torch_module._global_forward_hooks or torch_module._global_forward_pre_hooks
            or torch_module._global_backward_hooks or torch_module._global_backward_pre_hooks):
        return True
    return any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks
               for m in modules)
