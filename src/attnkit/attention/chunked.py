"""The ``chunked`` backend: exact attention one (query block, key block) tile at a time.

Softmax is computed online (Milakov & Gimelshein 2018; Dao et al. 2022, Algorithm 1): for each query
block a running row maximum ``m``, normaliser ``l`` and unnormalised context ``acc`` are rescaled as
each key block arrives, so only one ``(..., bq, bk)`` tile of scores exists at a time. The backward
pass recomputes each tile from the saved row log-sum-exp (Dao et al. 2022, Algorithm 2) instead of
storing the scores, so memory is linear in the sequence length both ways.

Supported: any score computable on a key block — the scaled-dot family through a fast path (after the
exact rewrite of ``scores.as_scaled_dot``), and ``additive`` or any callable through autograd on each
tile — with ``softmax`` or ``relu``. Weights, dropout and the normalisers that need a whole row at once
(``sparsemax``, ``hard``, ``gumbel``) are refused with the reason.

Axes: ``i`` queries, ``j`` keys, ``d`` head dim, ``e`` value dim; leading axes ``...`` are carried.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .backends import register_backend
from .call import AttentionCall, AttentionOutput
from .scores import as_scaled_dot, get_score

# One score tile holds about this many elements (16 MiB in float32): small enough to stay below
# glibc's mmap threshold, so the allocator reuses memory instead of faulting in fresh pages.
TILE_ELEMENTS = 1 << 22


def _blocks(n: int, size: int):
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def _mask_tile(mask: Tensor | None, rows: slice, cols: slice) -> Tensor | None:
    if mask is None:
        return None
    r = rows if mask.shape[-2] != 1 else slice(None)
    c = cols if mask.shape[-1] != 1 else slice(None)
    return mask[..., r, c]


def _block_sizes(q: Tensor, k: Tensor) -> tuple[int, int]:
    lead = max(1, math.prod(torch.broadcast_shapes(q.shape[:-2], k.shape[:-2])))
    i, j = q.shape[-2], k.shape[-2]
    bq = max(1, min(i, 1024))
    bk = max(1, min(j, TILE_ELEMENTS // (lead * bq)))
    if bk < 128 and bq > 128:  # many heads: trade query rows for key columns
        bq = max(1, min(i, TILE_ELEMENTS // (lead * 128)))
        bk = max(1, min(j, 128))
    return bq, bk


class _ChunkedAttention(torch.autograd.Function):
    """softmax/relu(score(q, k)) @ v over tiles; ``score_fn(q_blk, k_blk, *params) -> (..., bq, bk)``."""

    @staticmethod
    def forward(ctx, normalize, divide_by_length, score_fn, mask, q, k, v, *params):
        bq, bk = _block_sizes(q, k)
        i, j = q.shape[-2], k.shape[-2]
        lead = torch.broadcast_shapes(q.shape[:-2], k.shape[:-2])
        out = q.new_zeros(*lead, i, v.shape[-1])
        stat = q.new_zeros(*lead, i, 1)  # softmax: row log-sum-exp; relu: keys per row
        with torch.no_grad():
            for rows in _blocks(i, bq):
                q_blk = q[..., rows, :]
                if normalize == "softmax":
                    out[..., rows, :], stat[..., rows, :] = _softmax_rows(score_fn, mask, q_blk, k, v, rows, bk, params)
                else:
                    out[..., rows, :], stat[..., rows, :] = _relu_rows(
                        score_fn, mask, q_blk, k, v, rows, bk, params, divide_by_length, j
                    )
        ctx.normalize, ctx.score_fn, ctx.blocks = normalize, score_fn, (bq, bk)
        ctx.save_for_backward(mask if mask is not None else torch.empty(0), q, k, v, out, stat, *params)
        ctx.has_mask = mask is not None
        return out

    @staticmethod
    def backward(ctx, d_out):
        mask, q, k, v, out, stat, *params = ctx.saved_tensors
        mask = mask if ctx.has_mask else None
        bq, bk = ctx.blocks
        dq, dk, dv = torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)
        dparams = [torch.zeros_like(p) for p in params]
        need_param_grads = any(ctx.needs_input_grad[7:])
        delta = (d_out * out).sum(-1, keepdim=True) if ctx.normalize == "softmax" else None  # (..., i, 1)
        for rows in _blocks(q.shape[-2], bq):
            for cols in _blocks(k.shape[-2], bk):
                q_t = q[..., rows, :].detach().requires_grad_(True)
                k_t = k[..., cols, :].detach().requires_grad_(True)
                p_t = [p.detach().requires_grad_(True) for p in params]
                with torch.enable_grad():
                    s = ctx.score_fn(q_t, k_t, *p_t)  # (..., bq, bk)
                m = _mask_tile(mask, rows, cols)
                v_t, g = v[..., cols, :], d_out[..., rows, :]
                if ctx.normalize == "softmax":
                    w = torch.exp(s.detach() - stat[..., rows, :])
                    if m is not None:
                        w = w.masked_fill(~m, 0.0)
                    d_s = w * (g @ v_t.transpose(-2, -1) - delta[..., rows, :])
                else:
                    live = s.detach() > 0
                    if m is not None:
                        live = live & m
                    w = torch.where(live, s.detach(), 0.0) / stat[..., rows, :]
                    d_s = (g @ v_t.transpose(-2, -1)) * live / stat[..., rows, :]
                _add_reduced(dv, (..., cols, slice(None)), w.transpose(-2, -1) @ g)
                inputs = [q_t, k_t] + (p_t if need_param_grads else [])
                grads = torch.autograd.grad(s, inputs, d_s, allow_unused=True)
                _add_reduced(dq, (..., rows, slice(None)), grads[0])
                _add_reduced(dk, (..., cols, slice(None)), grads[1])
                for acc, gp in zip(dparams, grads[2:]):
                    if gp is not None:
                        acc += gp
        return (None, None, None, None, dq, dk, dv, *dparams)


def _add_reduced(target: Tensor, index, grad: Tensor | None) -> None:
    """``target[index] += grad``, summing over axes along which ``target`` was broadcast."""
    if grad is None:
        return
    view = target[index]
    while grad.dim() > view.dim():
        grad = grad.sum(0)
    dims = [a for a, (gs, ts) in enumerate(zip(grad.shape, view.shape)) if ts == 1 and gs != 1]
    if dims:
        grad = grad.sum(dims, keepdim=True)
    view += grad


def _softmax_rows(score_fn, mask, q_blk, k, v, rows, bk, params):
    """Online softmax over key blocks for one query block: returns (context, log-sum-exp)."""
    lead = torch.broadcast_shapes(q_blk.shape[:-2], k.shape[:-2])
    n = q_blk.shape[-2]
    m_run = q_blk.new_full((*lead, n, 1), -math.inf)
    l_run = q_blk.new_zeros(*lead, n, 1)
    acc = q_blk.new_zeros(*lead, n, v.shape[-1])
    for cols in _blocks(k.shape[-2], bk):
        s = score_fn(q_blk, k[..., cols, :], *params)  # (..., bq, bk)
        m = _mask_tile(mask, rows, cols)
        if m is not None:
            s.masked_fill_(~m, -math.inf)
        m_new = torch.maximum(m_run, s.amax(-1, keepdim=True))
        m_safe = torch.where(torch.isinf(m_new), 0.0, m_new)  # rows with no key seen yet
        s.sub_(m_safe).exp_()  # the tile's unnormalised weights, in place
        correction = torch.exp(m_run - m_safe)
        l_run.mul_(correction).add_(s.sum(-1, keepdim=True))
        acc.mul_(correction).add_(s @ v[..., cols, :])
        m_run = m_new
    empty = l_run == 0  # fully masked rows: zero context, and a finite log-sum-exp
    context = torch.where(empty, 0.0, acc / torch.where(empty, 1.0, l_run))
    lse = torch.where(empty, math.inf, torch.where(torch.isinf(m_run), 0.0, m_run) + torch.log(l_run))
    return context, lse


def _relu_rows(score_fn, mask, q_blk, k, v, rows, bk, params, divide_by_length, j):
    """ReLU weights need no running statistics: returns (context, per-row divisor)."""
    lead = torch.broadcast_shapes(q_blk.shape[:-2], k.shape[:-2])
    n = q_blk.shape[-2]
    acc = q_blk.new_zeros(*lead, n, v.shape[-1])
    for cols in _blocks(k.shape[-2], bk):
        s = torch.relu_(score_fn(q_blk, k[..., cols, :], *params))
        m = _mask_tile(mask, rows, cols)
        if m is not None:
            s.masked_fill_(~m, 0.0)
        acc += s @ v[..., cols, :]
    if divide_by_length:
        if mask is None:
            count = q_blk.new_full((*lead, n, 1), float(j))
        else:
            m = _mask_tile(mask, rows, slice(None))
            count = m.expand(*m.shape[:-1], j).sum(-1, keepdim=True).to(q_blk.dtype).clamp_min(1)
            count = count.expand(*lead, n, 1)
    else:
        count = q_blk.new_ones(*lead, n, 1)
    return acc / count, count


def _chunked_why_not(call: AttentionCall) -> str | None:
    if call.need_weights:
        return "chunked attention never holds all the weights at once, so it cannot return them (use 'eager')"
    if call.dropout > 0:
        return "chunked attention does not apply dropout to the weights (use 'eager' or 'sdpa')"
    if call.normalize not in ("softmax", "relu"):
        return f"normalize={call.normalize!r} needs a whole row of scores at once; chunked supports softmax and relu"
    extra = set(call.normalize_params) - ({"divide_by_length"} if call.normalize == "relu" else set())
    if extra:
        return f"chunked does not support the normalize parameters {sorted(extra)}"
    return None


def _chunked_run(q: Tensor, k: Tensor, v: Tensor, call: AttentionCall) -> AttentionOutput:
    rewrite = as_scaled_dot(call.score, q, k, call.score_params)
    if rewrite is not None:
        q, k, scale = rewrite  # autograd flows through the rewrite; the tiles see a plain dot product

        def score_fn(a, b):
            return (a * scale) @ b.transpose(-2, -1)

        params: tuple = ()
    else:
        fn = get_score(call.score)
        names = list(call.score_params)
        tensors = [call.score_params[n] for n in names]
        # Tensor parameters (e.g. the additive MLP) become inputs of the autograd function so that they
        # receive gradients; the others are bound here.
        tensor_names = [n for n, t in zip(names, tensors) if isinstance(t, Tensor)]
        fixed = {n: t for n, t in zip(names, tensors) if not isinstance(t, Tensor)}
        params = tuple(call.score_params[n] for n in tensor_names)

        def score_fn(a, b, *ps):
            return fn(a, b, **fixed, **dict(zip(tensor_names, ps)))

    divide = bool(call.normalize_params.get("divide_by_length", False))
    context = _ChunkedAttention.apply(call.normalize, divide, score_fn, call.mask, q, k, v, *params)
    return AttentionOutput(context, None)


register_backend("chunked", _chunked_run, _chunked_why_not)
