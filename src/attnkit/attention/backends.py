"""Backends: functions with one signature that compute attention, and the registry that names them.

``run(q, k, v, call) -> AttentionOutput`` with ``q (..., i, d)``, ``k (..., j, d)``, ``v (..., j, dv)``
and an already validated :class:`AttentionCall`. ``why_not(call)`` returns ``None`` when the backend can
do what was asked and otherwise the reason it cannot.

- ``eager``: the reference; any score, any normaliser, returns weights.
- ``sdpa``: PyTorch's fused ``scaled_dot_product_attention``; softmax over a score that is exactly a
  scaled dot product (``scaled_dot``, ``dot``, ``general``, ``cosine``, see ``scores.as_scaled_dot``);
  no weights.
- ``chunked``: exact attention over key blocks with an online softmax (``attention/chunked.py``).
- ``native``: attnkit's compiled kernels (:mod:`attnkit.native`): softmax over a (scaled) dot product,
  float32 on a CPU, boolean masks, no weights. A decoding step (few queries per (batch, head) block, under
  ``torch.inference_mode``, a mask over keys only) runs the decoding kernel; anything else the training
  kernel, forward and backward, with dropout on the weights (meant for short sequences: it keeps the
  weights for the backward pass, as ``eager`` does; second derivatives recompute it with PyTorch
  operations).

``auto`` (see :func:`choose_backend`) takes ``native``, when the kernels are built, for a decoding step
and for short attention over many blocks on a CPU; else ``sdpa`` when it can do the call and is the
faster one, and ``eager`` otherwise.
"""

from __future__ import annotations

import ctypes
import functools
import math
import sys
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from .masks import fill_value
from .normalize import get_normalizer
from .scores import as_scaled_dot, batched_matmul, default_scale, get_score
from .call import AttentionCall, AttentionOutput

__all__ = ["Backend", "BACKENDS", "register_backend", "get_backend", "choose_backend"]


@dataclass(frozen=True)
class Backend:
    name: str
    run: Callable[[Tensor, Tensor, Tensor, AttentionCall], AttentionOutput]
    why_not: Callable[[AttentionCall], str | None]


BACKENDS: dict[str, Backend] = {}


def register_backend(name: str, run, why_not) -> Backend:
    """Add a backend to the registry (used for the built-in ones; open to users)."""
    backend = Backend(name, run, why_not)
    BACKENDS[name] = backend
    return backend


def get_backend(name: str) -> Backend:
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose 'auto' or one of {sorted(BACKENDS)}")
    return BACKENDS[name]


# ---------------------------------------------------------------------------------------------- eager


# Below this size a scores buffer is left to the allocator as it is.
_HUGE_PAGE_MIN_BYTES = 8 << 20
_HUGE_PAGE = 2 << 20
_MADV_HUGEPAGE = 14  # <sys/mman.h>, Linux


@functools.lru_cache(maxsize=None)
def _madvise():
    """libc's ``madvise`` on Linux, or None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn


def _new_scores_buffer(shape: tuple[int, ...], like: Tensor) -> Tensor:
    """An uninitialised ``(..., i, j)`` buffer that is about to be written in full.

    A large one is fresh memory, and first touching fresh pages costs more than the arithmetic on these
    machines (~0.2 s/GiB in 4 KiB page faults). On Linux the buffer's pages are therefore advised as
    transparent huge pages (``MADV_HUGEPAGE``), so that each fault maps 2 MiB: an (8, 2048, 2048) float32
    buffer is then faulted in about 4x faster. A hint only: where THP is off it does nothing.
    """
    out = like.new_empty(shape)
    nbytes = out.numel() * out.element_size()
    if out.device.type == "cpu" and nbytes >= _HUGE_PAGE_MIN_BYTES:
        madvise = _madvise()
        if madvise is not None:
            start = -(-out.data_ptr() // _HUGE_PAGE) * _HUGE_PAGE  # whole huge pages inside the buffer
            stop = (out.data_ptr() + nbytes) // _HUGE_PAGE * _HUGE_PAGE
            if stop > start:
                madvise(start, stop - start, _MADV_HUGEPAGE)  # failure is harmless
    return out


def _eager_scores(q: Tensor, k: Tensor, call: AttentionCall, grad: bool) -> Tensor:
    """``score(q, k)``. Without autograd, large ``dot``/``scaled_dot`` scores — the same product as
    ``scores.dot``/``scores.scaled_dot`` — are written into a buffer from :func:`_new_scores_buffer`."""
    params = call.score_params
    batch = q.shape[:-2] if q.shape[:-2] == k.shape[:-2] else torch.broadcast_shapes(q.shape[:-2], k.shape[:-2])
    shape = (*batch, q.shape[-2], k.shape[-2])
    fast = (
        not grad
        and q.device.type == "cpu"
        and call.score in ("dot", "scaled_dot")
        and set(params) <= ({"scale"} if call.score == "scaled_dot" else set())
        and not isinstance(params.get("scale"), Tensor)
        and math.prod(shape) * q.element_size() >= _HUGE_PAGE_MIN_BYTES
    )
    if not fast:
        return get_score(call.score)(q, k, **params)
    if call.score == "scaled_dot":
        scale = params.get("scale")
        q = q * (default_scale(q) if scale is None else scale)  # exactly as scores.scaled_dot
    return torch.matmul(q, k.transpose(-2, -1), out=_new_scores_buffer(shape, q))


def _softmax_inplace(scores: Tensor, mask: Tensor | None) -> Tensor:
    """Softmax written over the freshly computed ``scores`` buffer (inference only).

    Touching fresh memory is slow on these machines, so the (i, j) scores buffer becomes the weights
    instead of allocating a second one.
    """
    if mask is not None:
        scores.masked_fill_(~mask, fill_value(scores.dtype))
    torch._softmax(scores, -1, False, out=scores)
    if mask is not None:
        row_any = mask.any(dim=-1, keepdim=True)
        if not bool(row_any.all()):
            scores.mul_(row_any)
    return scores


def _check_callable_scores(scores, q: Tensor, k: Tensor) -> None:
    want = (*q.shape[:-2], q.shape[-2], k.shape[-2])
    if not isinstance(scores, Tensor):
        raise TypeError(f"the score callable must return a tensor (..., i, j), got {type(scores).__name__}")
    if tuple(scores.shape) != want:
        raise ValueError(f"the score callable returned scores of shape {tuple(scores.shape)}; "
                         f"expected (..., i, j) = {want} for query {tuple(q.shape)} and key {tuple(k.shape)}")
    if scores.dtype != q.dtype:  # integer scores would fail deep in the softmax, others in the product with v
        raise TypeError(f"the score callable returned scores of dtype {scores.dtype}; expected the queries' {q.dtype}")


def _check_callable_weights(weights, scores: Tensor) -> None:
    if not isinstance(weights, Tensor):
        raise TypeError(f"the normalize callable must return a tensor of weights (..., i, j), got {type(weights).__name__}")
    if weights.shape != scores.shape or weights.dtype != scores.dtype:
        raise ValueError(f"the normalize callable returned weights of shape {tuple(weights.shape)} and dtype "
                         f"{weights.dtype}; expected those of the scores, {tuple(scores.shape)} and {scores.dtype}")


def _eager_run(q: Tensor, k: Tensor, v: Tensor, call: AttentionCall) -> AttentionOutput:
    grad = torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad)
    scores = _eager_scores(q, k, call, grad)  # (..., i, j)
    if not isinstance(call.score, str):
        _check_callable_scores(scores, q, k)
    grad = grad or (torch.is_grad_enabled() and scores.requires_grad)
    if call.normalize == "softmax" and not grad and not call.normalize_params and isinstance(call.score, str):
        weights = _softmax_inplace(scores, call.mask)  # a built-in score's fresh buffer, never the caller's
    else:
        weights = get_normalizer(call.normalize)(scores, call.mask, **call.normalize_params)
        if not isinstance(call.normalize, str):
            _check_callable_weights(weights, scores)
    dropped = F.dropout(weights, call.dropout) if call.dropout > 0 else weights
    context = batched_matmul(dropped, v)  # (..., i, dv)
    return AttentionOutput(context, weights if call.need_weights else None)


def _eager_why_not(call: AttentionCall) -> str | None:
    return None


register_backend("eager", _eager_run, _eager_why_not)


# ----------------------------------------------------------------------------------------------- sdpa


def _sdpa_why_not(call: AttentionCall) -> str | None:
    if call.need_weights:
        return "the fused kernel does not return attention weights (use backend='eager' for weights)"
    if call.normalize != "softmax" or call.normalize_params:
        return f"the fused kernel computes softmax only, not normalize={call.normalize!r}"
    if call.score not in ("scaled_dot", "dot", "general", "cosine"):
        name = call.score if isinstance(call.score, str) else "a custom callable"
        return f"score {name!r} is not a scaled dot product, which is all the fused kernel computes"
    if isinstance(call.score_params.get("scale"), Tensor) or isinstance(call.score_params.get("temperature"), Tensor):
        return "the fused kernel takes a number as scale, not a tensor (whose gradient it would drop)"
    return None


def _sdpa_run(q: Tensor, k: Tensor, v: Tensor, call: AttentionCall) -> AttentionOutput:
    q2, k2, scale = as_scaled_dot(call.score, q, k, call.score_params)
    mask = call.mask
    empty_rows = None
    if mask is not None:
        row_any = mask.any(dim=-1, keepdim=True)  # (..., i, 1)
        if not bool(row_any.all()):
            # Let fully masked rows attend everywhere (no NaN forward or backward), then zero them.
            empty_rows = ~row_any
            mask = mask | empty_rows
    context = F.scaled_dot_product_attention(q2, k2, v, attn_mask=mask, dropout_p=call.dropout, scale=scale)
    if empty_rows is not None:
        context = context.masked_fill(empty_rows, 0.0)
    return AttentionOutput(context, None)


register_backend("sdpa", _sdpa_run, _sdpa_why_not)


# On a CPU the fused kernel's fixed cost per (batch, head) block outweighs its gain for short attention
# over many blocks. Measured on this project's machines (2 cores, float32, heads of 64): with 256
# (batch, head) blocks eager attention is 1.6x faster for 24 keys in training (forward + backward),
# 1.1-3.4x faster for decoding steps (1-4 queries over 16-31 keys), 1.35x faster at 96 keys with 64
# blocks, and even at 192 keys with 32; with 8 blocks (benchmarks/attention.py's batch of 1) the fused
# kernel is faster up to ~96 keys.
CPU_EAGER_MAX_KEYS = 128
CPU_EAGER_MIN_BLOCKS = 32


# ---------------------------------------------------------------------------------------------- native


# Queries per (batch, head) block up to which the decoding kernel is used (in inference): a decoding step
# has one per row (self-attention) or the beam's k per sentence (grouped cross-attention). Measured on this
# project's machines over 1,024 blocks of 15-30 keys: 2.4-2.9x faster than ``eager`` with 1 query, 2.5x
# with 4 (64 x 4 blocks of 21 keys). The training kernel (forward + backward, 64 x 4 blocks of 24 x 24,
# heads of 64) measured 2.0-2.5x faster than ``eager`` with and without a causal mask and dropout.
NATIVE_MAX_QUERIES = 8


def _native_why_not(call: AttentionCall) -> str | None:
    if call.need_weights:
        return "the compiled kernel does not return attention weights (use backend='eager' for weights)"
    if call.normalize != "softmax" or call.normalize_params:
        return f"the compiled kernel computes softmax only, not normalize={call.normalize!r}"
    allowed = {"scale"} if call.score == "scaled_dot" else set()
    if call.score not in ("scaled_dot", "dot") or set(call.score_params) - allowed:
        name = call.score if isinstance(call.score, str) else "a custom callable"
        return (f"the compiled kernel computes (scaled) dot-product scores only, not score {name!r} "
                f"with {sorted(call.score_params)}")
    if isinstance(call.score_params.get("scale"), Tensor):
        return "the compiled kernel takes a number as scale, not a tensor"
    return None


def _native_key_mask(q: Tensor, k: Tensor, mask: Tensor | None) -> tuple[bool, Tensor | None]:
    """``(fits, key_mask (n, t))``: the decoding kernel takes a mask over keys only, the same for every head
    and query."""
    if mask is None:
        return True, None
    n, t = q.shape[0], k.shape[2]
    if (mask.dtype != torch.bool or mask.dim() != 4 or mask.shape[1:3] != (1, 1) or mask.shape[3] != t
            or mask.shape[0] not in (1, n)):
        return False, None
    return True, mask[:, 0, 0, :].expand(n, t)


def _native_tensor_why_not(q: Tensor, k: Tensor, v: Tensor, call: AttentionCall) -> str | None:
    if q.device.type != "cpu" or q.dtype != torch.float32:
        return f"the compiled kernel takes float32 CPU tensors, got {q.dtype} on {q.device}"
    if q.dim() != 4:
        return f"the compiled kernel takes (batch, heads, positions, dim) tensors, got {q.dim()}-D"
    if q.numel() == 0 or k.numel() == 0:
        return "nothing to attend (an empty axis): left to the eager backend"
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.stride(-1) != 1:
            return f"the compiled kernel needs the last axis of {name} contiguous, got strides {t.stride()}"
    if call.mask is not None and call.mask.dtype != torch.bool:
        return f"the compiled kernel takes a boolean mask, got {call.mask.dtype}"
    return None


def _decoding_step(q: Tensor, k: Tensor, call: AttentionCall) -> bool:
    """Few queries per block, in inference, without dropout, with a mask over keys only: the decoding
    kernel's case."""
    return (torch.is_inference_mode_enabled() and q.shape[-2] <= NATIVE_MAX_QUERIES and call.dropout == 0
            and _native_key_mask(q, k, call.mask)[0])


def _scale(q: Tensor, call: AttentionCall) -> float:
    if call.score == "dot":
        return 1.0
    scale = call.score_params.get("scale")
    return default_scale(q) if scale is None else float(scale)


class _TrainAttention(torch.autograd.Function):
    """Softmax attention with dropout on the weights by the compiled kernels (:mod:`attnkit.native`):
    forward and backward for (batch, head) blocks of short sequences; q, k, v are read in whatever layout
    they come (the heads of one projection) and the context ``(b, i, h, e)`` and the gradients are written
    as ``(b, n, h, d)``, so that merging the heads copies nothing. When the backward pass itself is being
    differentiated (``create_graph=True``), it recomputes the attention with PyTorch operations and the
    same dropout factors instead."""

    @staticmethod
    def forward(ctx, q, k, v, mask, scale, p, seed):
        from attnkit import native

        context, probs = native.attention_train_forward(q, k, v, mask, scale, p, seed)  # (b, i, h, e)
        ctx.save_for_backward(q, k, v, probs, mask)
        ctx.scale, ctx.p, ctx.seed = scale, p, seed
        return context

    @staticmethod
    def backward(ctx, grad):
        from attnkit import native

        q, k, v, probs, mask = ctx.saved_tensors
        grad = grad.transpose(1, 2)  # (b, h, i, e)
        if torch.is_grad_enabled():  # second derivatives: a differentiable recomputation
            b, h, i, j = probs.shape
            with torch.enable_grad():
                weights = get_normalizer("softmax")(get_score("scaled_dot")(q, k, scale=ctx.scale), mask)
                if ctx.p > 0:
                    weights = weights * native.attention_dropout_factors(b, h, i, j, ctx.p, ctx.seed)
                context = batched_matmul(weights, v)
            dq, dk, dv = torch.autograd.grad(context, (q, k, v), grad, create_graph=True, allow_unused=True)
            return dq, dk, dv, None, None, None, None
        if grad.numel() == 0:
            return torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v), None, None, None, None
        if grad.stride(-1) != 1:  # e.g. the expanded gradient of a sum
            grad = grad.contiguous()
        dq, dk, dv = native.attention_train_backward(grad, q, k, v, probs, ctx.scale, ctx.p, ctx.seed)
        return dq.transpose(1, 2), dk.transpose(1, 2), dv.transpose(1, 2), None, None, None, None


def _native_run(q: Tensor, k: Tensor, v: Tensor, call: AttentionCall) -> AttentionOutput:
    from attnkit import native

    reason = _native_tensor_why_not(q, k, v, call)
    if reason is not None:
        raise ValueError(f"backend 'native' cannot compute this attention: {reason}")
    if not native.available():
        raise ValueError("backend 'native' is not available: the compiled kernels could not be built (see the warning)")
    scale = _scale(q, call)
    if _decoding_step(q, k, call):
        return AttentionOutput(native.decode_attention(q, k, v, _native_key_mask(q, k, call.mask)[1], scale), None)
    b, h, i, j = q.shape[0], q.shape[1], q.shape[2], k.shape[2]
    mask = None if call.mask is None else torch.broadcast_to(call.mask, (b, h, i, j))
    seed = native.draw_seed() if call.dropout > 0 else 0
    context = _TrainAttention.apply(q, k, v, mask, scale, call.dropout, seed)  # (b, i, h, e)
    return AttentionOutput(context.transpose(1, 2), None)  # (b, h, i, e)


register_backend("native", _native_run, _native_why_not)


def _native_fits(call: AttentionCall, query: Tensor, key: Tensor, value: Tensor | None) -> bool:
    """Whether ``auto`` takes the compiled kernels: a decoding step's attention (few queries per block, in
    inference), or short attention over many blocks (where ``eager`` beats the fused kernel on a CPU), when
    the kernels are built. Checked last, so that nothing else triggers a build."""
    from attnkit import native

    if value is None or query.dim() != 4 or _native_why_not(call) is not None:
        return False
    if _native_tensor_why_not(query, key, value, call) is not None:
        return False
    return (_decoding_step(query, key, call) or _short_over_many_blocks(query, key)) and native.available()


def _short_over_many_blocks(query: Tensor, key: Tensor) -> bool:
    """At most :data:`CPU_EAGER_MAX_KEYS` keys over at least :data:`CPU_EAGER_MIN_BLOCKS` (batch, head) blocks."""
    return key.shape[-2] <= CPU_EAGER_MAX_KEYS and math.prod(query.shape[:-2]) >= CPU_EAGER_MIN_BLOCKS


def choose_backend(call: AttentionCall, query: Tensor | None = None, key: Tensor | None = None,
                   value: Tensor | None = None) -> str:
    """The rule behind ``backend="auto"``: the fused kernel when it can compute exactly what was asked
    (softmax over a scaled dot product, possibly after the exact rewrite of ``dot``, ``general`` or
    ``cosine``, without weights) and is the faster one; otherwise ``eager``, the only backend that
    returns weights or handles every normaliser. Given the tensors, short attention over many blocks on a
    CPU (at most :data:`CPU_EAGER_MAX_KEYS` keys, at least :data:`CPU_EAGER_MIN_BLOCKS` (batch, head)
    blocks) goes to ``eager`` too, which is faster there. Given ``value`` too, a decoding step's attention
    (at most :data:`NATIVE_MAX_QUERIES` queries per block, in inference) and that short attention over many
    blocks go to the compiled kernels (``native``) when they are built. ``chunked`` is never
    chosen automatically: it trades speed for memory, so it is picked by name for inputs too long for
    the others.
    """
    if query is not None and key is not None and _native_fits(call, query, key, value):
        return "native"
    if _sdpa_why_not(call) is not None:
        return "eager"
    if query is not None and key is not None and query.device.type == "cpu" and _short_over_many_blocks(query, key):
        return "eager"
    return "sdpa"
