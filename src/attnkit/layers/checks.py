"""Input checks shared by the layers: clear errors that name the argument, its shape and the size expected."""

from __future__ import annotations

from torch import Tensor

__all__ = ["check_features"]


def check_features(name: str, x: Tensor, dim: int, dim_name: str) -> None:
    """Raise unless ``x`` is a batch-first ``(b, positions, dim)`` tensor."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 3:
        raise ValueError(f"{name} must have shape (b, positions, {dim_name}={dim}) (batch first), got {tuple(x.shape)}")
    if x.shape[-1] != dim:
        raise ValueError(
            f"{name} has {x.shape[-1]} features but this layer was built with {dim_name}={dim} "
            f"(got shape {tuple(x.shape)})"
        )
