"""The ``chunked`` backend: exact attention one (query block, key block) tile at a time.

Softmax is computed online (Milakov & Gimelshein 2018; Dao et al. 2022, Algorithm 1): for each query
block a row shift ``m``, normaliser ``l`` and unnormalised context ``acc`` are carried over the key
blocks, so only one ``(..., bq, bk)`` tile of scores exists at a time. The backward pass recomputes each
tile from the saved row log-sum-exp instead of storing the scores, so memory is linear in the sequence
length both ways.

Speed (see ``benchmarks/attention.py``): the tile is one buffer reused for the whole call; the
scaled-dot family computes each tile as one batched matrix product already shifted by ``m``; scores are
kept in log2 units so the exponential is ``exp2``; ``m`` moves (rescaling ``l`` and ``acc``) only when
a tile's maximum exceeds it by a fixed headroom; key blocks that the mask hides entirely are skipped.
None of this changes the result beyond rounding.

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

from .backends import _check_callable_scores, register_backend
from .call import AttentionCall, AttentionOutput
from .scores import as_scaled_dot, get_score

# One score tile holds at most about this many elements (4 MiB in float32). The tile buffer is allocated
# once per call and reused for every (query block, key block) pair, so no page is faulted in per tile,
# and the tile stays in the last-level cache across the few elementwise passes over it.
TILE_ELEMENTS = 1 << 20
# Keys per tile: long enough for an efficient matrix product with the values, short enough to leave room
# for a few hundred query rows per tile.
KEY_BLOCK = 512
# Scores are kept in units of log2 so that the exponential is exp2, which PyTorch computes about three
# times faster than exp on CPU; exp2(s·log2 e - m) = exp(s - m ln 2) exactly in real arithmetic.
LOG2E = 1.0 / math.log(2.0)


def _blocks(n: int, size: int):
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def _mask_tile(mask: Tensor | None, rows: slice, cols: slice) -> Tensor | None:
    if mask is None:
        return None
    r = rows if mask.shape[-2] != 1 else slice(None)
    c = cols if mask.shape[-1] != 1 else slice(None)
    return mask[..., r, c]


def _block_sizes(lead: int, i: int, j: int) -> tuple[int, int]:
    """Query and key block sizes for ``lead`` (batch × heads) score matrices of ``(i, j)``."""
    bk = max(1, min(j, KEY_BLOCK))
    bq = max(1, min(i, TILE_ELEMENTS // max(1, lead * bk)))
    if bq < min(i, 64) and bk > 128:  # many heads: trade key columns for query rows
        bk = max(1, min(j, 128))
        bq = max(1, min(i, TILE_ELEMENTS // max(1, lead * bk)))
    return bq, bk


class _Tiles:
    """Score tiles ``(L, bq, bk)`` of one call, ``L`` the flattened leading axes; ``units`` multiplies the
    scores (``LOG2E`` for softmax, 1 for relu).

    With ``scale`` given, the score is ``scale · q kᵀ`` (the scaled-dot family after the exact rewrite of
    ``scores.as_scaled_dot``): each query block is scaled once and every tile is one batched matrix
    product written into a buffer reused for the whole call. Otherwise ``score_fn(q_blk, k_blk, *params)``
    is called on blocks that keep their leading axes.
    """

    def __init__(self, q, k, lead, bq, bk, scale, score_fn, params, units):
        self.q, self.k, self.lead, self.units = q, k, lead, units
        self.L = math.prod(lead)
        self.scale, self.score_fn, self.params = scale, score_fn, params
        if scale is not None:
            self.qf = _flat(q, lead)  # (L, i, d)
            self.kf = _flat(k, lead)  # (L, j, d)
            self.q_buf = q.new_empty(self.L * bq * q.shape[-1])
            self.s_buf = q.new_empty(self.L * bq * bk)

    def start_rows(self, rows: slice) -> None:
        self.rows = rows
        if self.scale is not None:
            blk = self.qf[:, rows]
            self.q_blk = torch.mul(blk, self.scale * self.units, out=self.q_buf[: blk.numel()].view(blk.shape))

    def scores(self, cols: slice, shift: Tensor | None = None) -> Tensor:
        """The tile for the current query block and ``cols``, ``(L, bq, bk)``, minus ``shift`` ``(L, bq, 1)``
        if given; a buffer free to overwrite."""
        if self.scale is not None:
            k_t = self.kf[:, cols].transpose(1, 2)  # (L, d, bk)
            n, c = self.q_blk.shape[1], k_t.shape[2]
            out = self.s_buf[: self.L * n * c].view(self.L, n, c)
            if shift is None:
                return torch.bmm(self.q_blk, k_t, out=out)
            return torch.baddbmm(shift.neg().expand(self.L, n, c), self.q_blk, k_t, out=out)
        s = self.score_fn(self.q[..., self.rows, :], self.k[..., cols, :], *self.params)
        s = s * self.units if self.units != 1 else s.clone()  # a fresh tensor: the tile is overwritten
        s = s.expand(*self.lead, *s.shape[-2:]).reshape(self.L, *s.shape[-2:])
        return s if shift is None else s.sub_(shift)


def _flat(t: Tensor, lead) -> Tensor:
    """``t (..., n, c)`` broadcast to the leading axes ``lead`` and flattened to ``(L, n, c)``."""
    return t.expand(*lead, *t.shape[-2:]).reshape(math.prod(lead), *t.shape[-2:])  # not -1: an axis may be empty


class _ChunkedAttention(torch.autograd.Function):
    """softmax/relu(score(q, k)) @ v over tiles; ``score_fn(q_blk, k_blk, *params) -> (..., bq, bk)``.

    ``scale`` is not None when the score is exactly ``scale · q kᵀ``: the forward pass then takes the
    fast path of :class:`_Tiles` and a softmax backward pass :func:`_softmax_backward_dot`. Otherwise
    (and for relu) the backward pass differentiates ``score_fn`` on each tile with autograd.
    """

    @staticmethod
    def forward(ctx, normalize, divide_by_length, scale, score_fn, mask, q, k, v, *params):
        lead = torch.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
        i, j = q.shape[-2], k.shape[-2]
        bq, bk = _block_sizes(math.prod(lead), i, j)
        with torch.no_grad():
            units = LOG2E if normalize == "softmax" else 1.0
            tiles = _Tiles(q, k, lead, bq, bk, scale, score_fn, params, units)
            vf = _flat(v, lead)  # (L, j, e)
            out = q.new_empty(tiles.L, i, v.shape[-1])
            stat = q.new_empty(tiles.L, i, 1)  # softmax: row log-sum-exp in log2 units; relu: keys per row
            for rows in _blocks(i, bq):
                tiles.start_rows(rows)
                if normalize == "softmax":
                    _softmax_rows(tiles, mask, vf, rows, bk, out[:, rows], stat[:, rows])
                else:
                    _relu_rows(tiles, mask, vf, rows, bk, divide_by_length, out[:, rows], stat[:, rows])
            out = out.view(*lead, i, v.shape[-1])
            stat = stat.view(*lead, i, 1)
        ctx.normalize, ctx.score_fn, ctx.scale, ctx.blocks = normalize, score_fn, scale, (bq, bk)
        ctx.save_for_backward(mask if mask is not None else torch.empty(0), q, k, v, out, stat, *params)
        ctx.has_mask = mask is not None
        return out

    @staticmethod
    def backward(ctx, d_out):
        mask, q, k, v, out, stat, *params = ctx.saved_tensors
        mask = mask if ctx.has_mask else None
        bq, bk = ctx.blocks
        if ctx.normalize == "softmax" and ctx.scale is not None:
            return (None,) * 5 + _softmax_backward_dot(ctx.scale, mask, q, k, v, out, stat, d_out, bq, bk)
        dq, dk, dv = torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)
        dparams = [torch.zeros_like(p) for p in params]
        need_param_grads = any(ctx.needs_input_grad[8:])
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
                    w = torch.exp2(s.detach() * LOG2E - stat[..., rows, :])  # as in the forward pass
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
        return (None, None, None, None, None, dq, dk, dv, *dparams)


def _softmax_backward_dot(scale, mask, q, k, v, out, lse2, d_out, bq, bk):
    """Gradients of softmax(scale · q kᵀ) v, recomputing each tile's weights from the saved log-sum-exp
    (Dao et al. 2022, Algorithm 4; Dao 2023, Algorithm 2), with matrix products into reused buffers:

        P = exp2(scale·log2e · q kᵀ - lse),  dV += Pᵀ dO,  dS = P ⊙ (dO Vᵀ - Δ),  Δ = rowsum(dO ⊙ O),
        dQ += scale · dS K,  dK += scale · dSᵀ Q.
    """
    lead = torch.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    L, i, j = math.prod(lead), q.shape[-2], k.shape[-2]
    qf, kf, vf = _flat(q, lead), _flat(k, lead), _flat(v, lead)  # (L, i, d), (L, j, d), (L, j, e)
    gf, lse2 = _flat(d_out, lead), _flat(lse2, lead)  # (L, i, e), (L, i, 1)
    delta = (gf * _flat(out, lead)).sum(-1, keepdim=True)  # (L, i, 1)
    dq, dk, dv = qf.new_zeros(qf.shape), kf.new_zeros(kf.shape), vf.new_zeros(vf.shape)
    p_buf, ds_buf, q_buf = q.new_empty(L * bq * bk), q.new_empty(L * bq * bk), q.new_empty(L * bq * q.shape[-1])
    for rows in _blocks(i, bq):
        n = rows.stop - rows.start
        q_blk = qf[:, rows]
        q2 = torch.mul(q_blk, scale * LOG2E, out=q_buf[: q_blk.numel()].view(q_blk.shape))
        g_blk, neg_lse, delta_blk = gf[:, rows], lse2[:, rows].neg(), delta[:, rows]
        for cols in _blocks(j, bk):
            m, live = _live_tile(mask, rows, cols)
            if not live:
                continue
            c = cols.stop - cols.start
            k_blk, v_blk = kf[:, cols], vf[:, cols]
            p = torch.baddbmm(neg_lse.expand(L, n, c), q2, k_blk.transpose(1, 2), out=p_buf[: L * n * c].view(L, n, c))
            if m is not None:
                p.view(*lead, n, c).masked_fill_(~m, -math.inf)
            p.exp2_()  # the tile's weights; 0 on masked keys and on fully masked rows (lse = +inf)
            dv[:, cols].baddbmm_(p.transpose(1, 2), g_blk)
            ds = torch.bmm(g_blk, v_blk.transpose(1, 2), out=ds_buf[: L * n * c].view(L, n, c))
            ds.sub_(delta_blk).mul_(p)
            dq[:, rows].baddbmm_(ds, k_blk, alpha=scale)
            dk[:, cols].baddbmm_(ds.transpose(1, 2), q_blk, alpha=scale)
    return tuple(
        g.view(*lead, *t.shape[-2:]).sum_to_size(t.shape) for g, t in ((dq, q), (dk, k), (dv, v))
    )


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


def _live_tile(mask: Tensor | None, rows: slice, cols: slice):
    """The mask tile, and whether any key of the tile may be attended (a fully masked tile, e.g. above
    a causal diagonal, contributes exactly nothing and is skipped)."""
    m = _mask_tile(mask, rows, cols)
    return m, m is None or bool(m.any())


def _softmax_rows(tiles: _Tiles, mask, vf, rows, bk, out, lse) -> None:
    """Online softmax over key blocks for one query block; writes the context ``(L, bq, e)`` into ``out``
    and the row log-sum-exp in log2 units, ``log2 Σ_j exp2(s_ij log2 e)`` (+inf for a fully masked row),
    into ``lse``.

    Per row, in log2 units: a ``shift``, the normaliser ``l = Σ exp2(s - shift)`` and the unnormalised
    context ``acc = Σ exp2(s - shift) v``. The shift is a row maximum seen so far; it is moved up —
    rescaling ``l`` and ``acc`` by ``exp2(old - new)`` — only when a tile's maximum exceeds it by more
    than ``_headroom``, so a tile is usually computed already shifted (one ``baddbmm``) and needs no
    correction pass. Any shift gives the same ``acc / l``; the headroom only bounds the terms, and the
    shift is always a real score so the largest term is >= 1 and nothing that matters underflows.
    """
    L, n = tiles.L, rows.stop - rows.start
    headroom = _headroom(vf.dtype)
    shift = vf.new_zeros(L, n, 1)
    seen = torch.zeros(L, n, 1, dtype=torch.bool, device=vf.device)  # shift is a real maximum
    l_run = vf.new_zeros(L, n, 1)
    acc = vf.new_zeros(L, n, vf.shape[-1])
    for cols in _blocks(vf.shape[1], bk):
        m, live = _live_tile(mask, rows, cols)
        if not live:
            continue
        s = tiles.scores(cols, shift)  # (L, bq, bk), log2 units, minus the shift
        if m is not None:
            s.view(*tiles.lead, *s.shape[-2:]).masked_fill_(~m, -math.inf)
        top = s.amax(-1, keepdim=True)  # the tile's row maxima above the shift
        grow = (top > headroom) | (~seen & (top > -math.inf))
        if bool(grow.any()):
            delta = torch.where(grow, top, 0.0)
            s.sub_(delta)
            correction = torch.where(seen, delta.neg().exp2(), 0.0)  # l and acc are 0 where not seen
            l_run.mul_(correction)
            acc.mul_(correction)
            shift.add_(delta)
            seen |= grow
        s.exp2_()  # the tile's unnormalised weights, in place; at most 2**headroom
        l_run.add_(s.sum(-1, keepdim=True))
        acc.baddbmm_(s, vf[:, cols])
    empty = l_run == 0  # fully masked rows: acc is 0 there, so the context is 0
    torch.div(acc, l_run.masked_fill_(empty, 1.0), out=out)
    torch.add(shift, l_run.log2_(), out=lse).masked_fill_(empty, math.inf)


def _headroom(dtype: torch.dtype) -> float:
    """How far (in log2 units) a score may exceed its row's shift before the shift moves. Terms up to
    2**8 sum safely in float32/64 and bfloat16; float16 (max 65504) gets no headroom."""
    return 0.0 if dtype == torch.float16 else 8.0


def _relu_rows(tiles: _Tiles, mask, vf, rows, bk, divide_by_length, out, count_out) -> None:
    """ReLU weights need no running statistics: writes the context and the per-row divisor."""
    L, n, j = tiles.L, rows.stop - rows.start, vf.shape[1]
    acc = vf.new_zeros(L, n, vf.shape[-1])
    for cols in _blocks(j, bk):
        m, live = _live_tile(mask, rows, cols)
        if not live:
            continue
        s = tiles.scores(cols).relu_()  # (L, bq, bk)
        if m is not None:
            s.view(*tiles.lead, *s.shape[-2:]).masked_fill_(~m, 0.0)
        acc.baddbmm_(s, vf[:, cols])
    if divide_by_length:
        if mask is None:
            count = vf.new_full((L, n, 1), float(j))
        else:
            m = _mask_tile(mask, rows, slice(None))
            count = m.expand(*m.shape[:-1], j).sum(-1, keepdim=True).to(vf.dtype).clamp_min(1)
            count = _flat(count.expand(*tiles.lead, n, 1), tiles.lead)
    else:
        count = vf.new_ones(L, n, 1)
    torch.div(acc, count, out=out)
    count_out.copy_(count)


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
    scale = None
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
            scores = fn(a, b, **fixed, **dict(zip(tensor_names, ps)))
            if not isinstance(call.score, str):  # checked as eager checks it, on each tile
                _check_callable_scores(scores, a, b)
            return scores

    divide = bool(call.normalize_params.get("divide_by_length", False))
    context = _ChunkedAttention.apply(call.normalize, divide, scale, score_fn, call.mask, q, k, v, *params)
    return AttentionOutput(context, None)


register_backend("chunked", _chunked_run, _chunked_why_not)
