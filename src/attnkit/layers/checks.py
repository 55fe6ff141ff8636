"""Input checks shared by the layers: clear errors that name the argument, its shape and the size expected."""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["check_features", "check_float"]


def check_float(name: str, x: Tensor, layer: nn.Module | None = None) -> None:
    """Raise ``TypeError`` unless ``x`` holds floating-point features of the dtype of ``layer``'s
    parameters (when it has floating-point ones): an integer tensor is token ids, not features."""
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor of features, got dtype {x.dtype} "
                        "(token ids go through an embedding first)")
    if layer is None:
        return
    weight = next((p for p in layer.parameters() if p.is_floating_point()), None)
    if weight is not None and weight.dtype != x.dtype:
        raise TypeError(f"{name} has dtype {x.dtype} but the layer's parameters are {weight.dtype}: convert "
                        f"one to the other (x.to({weight.dtype}) or layer.to({x.dtype}))")


def check_features(name: str, x: Tensor, dim: int, dim_name: str, layer: nn.Module | None = None) -> None:
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
    check_float(name, x, layer)
