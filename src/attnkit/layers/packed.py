"""Linear layers with their weights prepacked for oneDNN: faster inference on a CPU.

``nn.Linear`` multiplies through MKL with the weight as stored, ``(out, in)``. For the few rows a
decoding step has (one per sentence or beam, 64-256 here) that runs at about half of what the machine's
float32 units do: measured on this project's machines, ``(64 × 256) @ (256 × 8000)`` — the output layer
of a greedy step — runs at ~100 GFLOP/s through ``F.linear`` and ~200 GFLOP/s with the weight reordered
once into oneDNN's blocked layout (``torch.ops.mkldnn._reorder_linear_weight``, the same kernel
``torch.compile`` uses when it freezes a model for CPU inference). The results are the same products
summed in another order (differences ~1e-6 relative).

:func:`pack_for_inference` returns a copy of a model in which every float32 ``nn.Linear`` is a
:class:`PackedLinear` and every self-attention's three projections are one packed product; the model the
caller holds is not touched. Where oneDNN is not available it returns the plain copy.

A packed layer is for inference only: if autograd needs its output (training), it computes with the
plain weight it keeps, so gradients still flow to that weight, never through the packed copy.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnkit.attention.call import check_flag

__all__ = ["PackedLinear", "can_pack", "pack_for_inference"]


def can_pack() -> bool:
    """True when this PyTorch has the oneDNN linear kernels :class:`PackedLinear` uses."""
    return bool(torch.backends.mkldnn.is_available()) and hasattr(torch.ops.mkldnn, "_linear_pointwise")


class PackedLinear(nn.Module):
    """``y = x Wᵀ + b`` with ``W (out, in)`` also held prepacked for oneDNN; float32 on a CPU only.

    ``weight`` and ``bias`` stay ordinary tensors, shared with the ones given (the state dict is that of
    an ``nn.Linear``); the packed copy is made once, here, so change the weights before packing.
    ``rows`` is a hint of how many rows the products will have (it picks the blocking, not a limit).
    """

    def __init__(self, weight: Tensor, bias: Tensor | None = None, *, rows: int = 64, relu: bool = False) -> None:
        super().__init__()
        if weight.dim() != 2:
            raise ValueError(f"PackedLinear: weight must be (out, in), got shape {tuple(weight.shape)}")
        if weight.dtype != torch.float32 or weight.device.type != "cpu":
            raise ValueError(f"PackedLinear packs float32 CPU weights, got {weight.dtype} on {weight.device}")
        if bias is not None and bias.shape != weight.shape[:1]:
            raise ValueError(f"PackedLinear: bias must be ({weight.shape[0]},), got {tuple(bias.shape)}")
        if not can_pack():
            raise RuntimeError("PackedLinear needs PyTorch built with oneDNN (torch.backends.mkldnn.is_available())")
        self.in_features, self.out_features = weight.shape[1], weight.shape[0]
        self.rows, self.relu = int(rows), check_flag("PackedLinear relu", relu)
        self.weight = nn.Parameter(weight.detach(), requires_grad=False)  # shared with the caller's tensor
        self.bias = None if bias is None else nn.Parameter(bias.detach(), requires_grad=False)
        with torch.no_grad():
            self._packed = torch.ops.mkldnn._reorder_linear_weight(self.weight.contiguous(), int(rows))
        self._panels: Tensor | None = None

    @classmethod
    def from_linear(cls, linear: nn.Linear, *, rows: int = 64, relu: bool = False) -> PackedLinear:
        return cls(linear.weight, linear.bias, rows=rows, relu=relu)

    def forward(self, x: Tensor) -> Tensor:
        """``x (..., in)`` → ``(..., out)``; with ``relu=True``, ``relu(x Wᵀ + b)`` in the same pass."""
        if x.shape[-1] != self.in_features:
            raise ValueError(f"PackedLinear: input has {x.shape[-1]} features, the layer takes {self.in_features}")
        if (torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad)) or x.dtype != torch.float32:
            y = F.linear(x, self.weight, self.bias)
            return F.relu(y) if self.relu else y
        return torch.ops.mkldnn._linear_pointwise(x, self._packed, self.bias, "relu" if self.relu else "none", [], "")

    def panels(self) -> Tensor:
        """The weight as :func:`attnkit.native.pack_panels` stores it, for the compiled decoder step; made on
        the first call and kept (like the packed copy, it does not follow later changes to the weight)."""
        if self._panels is None:
            from attnkit import native

            if not native.available():
                raise RuntimeError("PackedLinear.panels needs attnkit's compiled kernels, which are not available here")
            self._panels = native.pack_panels(self.weight.detach())
        return self._panels

    def __deepcopy__(self, memo):  # the packed tensor is opaque: pack the copy again
        return PackedLinear(copy.deepcopy(self.weight, memo), copy.deepcopy(self.bias, memo), rows=self.rows,
                            relu=self.relu)

    def extra_repr(self) -> str:
        relu = ", relu" if self.relu else ""
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"packed{relu}")


def pack_for_inference(model: nn.Module, *, rows: int = 64) -> nn.Module:
    """A copy of ``model`` in eval mode, without gradients, with its float32 CPU ``nn.Linear`` layers
    packed (:class:`PackedLinear`) and each self-attention's q/k/v projections packed as one product
    (``MultiHeadAttention.qkv_proj``), a ReLU feed-forward's activation computed by its first product
    (``FeedForward.fused_activation``). ``model`` itself is unchanged. Without oneDNN the copy is plain."""
    from .feedforward import FeedForward
    from .multihead import MultiHeadAttention

    if not isinstance(model, nn.Module):
        raise TypeError(f"pack_for_inference expects an nn.Module, got {type(model).__name__}")
    packed = copy.deepcopy(model).eval().requires_grad_(False)
    if not can_pack():
        return packed

    def packable(m: nn.Module) -> bool:
        return type(m) is nn.Linear and m.weight.dtype == torch.float32 and m.weight.device.type == "cpu"

    for module in list(packed.modules()):
        if isinstance(module, MultiHeadAttention) and all(
            packable(p) for p in (module.q_proj, module.k_proj, module.v_proj)
        ) and module.kdim == module.vdim == module.d_model:
            weight = torch.cat([module.q_proj.weight, module.k_proj.weight, module.v_proj.weight])
            biases = [module.q_proj.bias, module.k_proj.bias, module.v_proj.bias]
            bias = None if any(b is None for b in biases) else torch.cat(biases)
            module.qkv_proj = PackedLinear(weight, bias, rows=rows)
        if isinstance(module, FeedForward) and module.activation_name == "relu" and packable(module.linear1):
            module.linear1 = PackedLinear.from_linear(module.linear1, rows=rows, relu=True)  # relu in the product
            module.fused_activation = True
        for name, child in list(module.named_children()):
            if packable(child):
                setattr(module, name, PackedLinear.from_linear(child, rows=rows))
    return packed.eval()  # the new layers too
