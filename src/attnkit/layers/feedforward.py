"""Position-wise feed-forward network (Vaswani et al. 2017, eq. 2): ``FFN(x) = W_2 act(W_1 x + b_1) + b_2``,
applied to every position alike. Axes: ``b`` batch, ``n`` positions, ``d`` model width, ``f`` inner width.
"""

from __future__ import annotations

from typing import Callable

import torch.nn.functional as F
from torch import Tensor, nn

from attnkit.attention.call import check_flag

from .checks import check_float, runs_hooks
from .dropout import Dropout, relu_dropout

__all__ = ["FeedForward", "ACTIVATIONS", "get_activation"]

# "gelu" is the exact (erf) GELU, Hendrycks & Gimpel 2016; "gelu_tanh" their tanh approximation.
# The names follow the `hidden_act` values of Hugging Face configs ("gelu_new" = "gelu_tanh").
ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "relu": F.relu,
    "gelu": F.gelu,
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "silu": F.silu,
}


def get_activation(name: str) -> Callable[[Tensor], Tensor]:
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


class FeedForward(nn.Module):
    """``x (b, n, d_model) → (b, n, d_model)`` through ``d_ff`` hidden units.

    ``dropout`` applies to the hidden activations (as in PyTorch's Transformer layers); the dropout on
    the output belongs to the residual connection around this module.
    """

    def __init__(
        self, d_model: int, d_ff: int, *, activation: str = "relu", dropout: float = 0.0, bias: bool = True
    ) -> None:
        super().__init__()
        if d_model <= 0 or d_ff <= 0:
            raise ValueError(f"d_model and d_ff must be positive, got {d_model} and {d_ff}")
        bias = check_flag("bias", bias)
        self.activation_name = activation
        self.activation = get_activation(activation)
        self.d_model = d_model
        self.linear1 = nn.Linear(d_model, d_ff, bias=bias)
        self.linear2 = nn.Linear(d_ff, d_model, bias=bias)
        self.dropout = Dropout(dropout)
        # True when linear1 applies the activation itself (layers.packed.pack_for_inference fuses ReLU).
        self.fused_activation = False

    def forward(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor) or x.shape[-1] != self.d_model:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"FeedForward expects (..., d_model={self.d_model}), got {shape}")
        check_float("FeedForward input", x, self, "linear1.weight")
        h = self.linear1(x)  # (b, n, f)
        if self.fused_activation:
            h = self.dropout(h)
        elif self.activation is F.relu and type(self.dropout) is Dropout and not runs_hooks((self.dropout,)):
            h = relu_dropout(h, self.dropout.p, self.dropout.training)  # one pass each way when compiled
        else:
            h = self.dropout(self.activation(h))
        return self.linear2(h)  # (b, n, d)

    def extra_repr(self) -> str:
        return f"activation={self.activation_name!r}"
