"""Multi-head attention (Vaswani et al. 2017, section 3.2.2):

    MultiHead(Q, K, V) = Concat(head_1, …, head_h) W^O,   head_k = Attention(Q W_k^Q, K W_k^K, V W_k^V)

The module owns the four projections and calls :func:`attnkit.attention.attend` once for all heads.
Inputs are batch-first. Axes: ``b`` batch, ``i`` query positions, ``j`` key positions, ``h`` heads,
``d`` head dim (``d_model / h``), ``t`` cached positions.

Masks: boolean, True = may attend (the package convention — the opposite of
``torch.nn.MultiheadAttention``'s). Accepted shapes: ``(i, j)`` (e.g. causal), ``(b, i, j)`` /
``(b, 1, j)`` (per example; the head axis is added), or ``(b, h, i, j)`` with size-1 axes where shared.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnkit import native
from attnkit.attention import (AttentionOutput, attend, causal_mask, combine_masks, get_backend, get_normalizer,
                               get_score)
from attnkit.attention.call import check_dropout, check_flag

from .cache import KVCache, StaticKVCache
from .checks import check_count, check_features

__all__ = ["MultiHeadAttention"]

# Scores whose parameters a multi-head layer would have to own per head; those belong to
# AdditiveAttention / LuongAttention.
_SCORES_WITH_PARAMETERS = ("general", "additive")


class MultiHeadAttention(nn.Module):
    """Self- or cross-attention with ``num_heads`` heads over ``d_model`` features.

    - ``kdim``/``vdim``: feature sizes of ``key``/``value`` when they differ from ``d_model``
      (cross-attention over an encoder of another width).
    - ``dropout``: on the attention weights, in training only.
    - ``bias``: biases on the four projections.
    - ``score``/``normalize`` (+ ``score_params``/``normalize_params``): any of the core's parameter-free
      scores (``"scaled_dot"`` — the default — ``"dot"``, ``"cosine"``) or a callable, and any normaliser.
    - ``backend``: ``"auto"`` (the fused kernel when it computes exactly what was asked and no weights
      are requested, ``eager`` otherwise) or a backend name.
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        *,
        kdim: int | None = None,
        vdim: int | None = None,
        dropout: float = 0.0,
        bias: bool = True,
        score: str | Callable[..., Tensor] = "scaled_dot",
        normalize: str | Callable[..., Tensor] = "softmax",
        score_params: Mapping[str, Any] | None = None,
        normalize_params: Mapping[str, Any] | None = None,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        check_count("d_model", d_model, least=1)
        check_count("num_heads", num_heads, least=1)
        if d_model % num_heads:
            raise ValueError(
                f"num_heads={num_heads} does not divide d_model={d_model}: each head gets d_model / num_heads features"
            )
        self.kdim = d_model if kdim is None else check_count("kdim", kdim, least=1)
        self.vdim = d_model if vdim is None else check_count("vdim", vdim, least=1)
        dropout = check_dropout("dropout", dropout)
        bias = check_flag("bias", bias)
        if isinstance(score, str) and score in _SCORES_WITH_PARAMETERS:
            raise ValueError(
                f"score {score!r} has parameters of its own; use AdditiveAttention or LuongAttention, "
                "or pass a callable score"
            )
        get_score(score), get_normalizer(normalize)  # an unknown name refused now, not at the first forward pass
        if backend != "auto":
            get_backend(backend)
        self.d_model, self.num_heads, self.head_dim = d_model, num_heads, d_model // num_heads
        self.dropout = float(dropout)
        self.score, self.normalize, self.backend = score, normalize, backend
        self.score_params = dict(score_params or {})
        self.normalize_params = dict(normalize_params or {})
        self.q_proj = nn.Linear(d_model, d_model, bias=bias)
        self.k_proj = nn.Linear(self.kdim, d_model, bias=bias)
        self.v_proj = nn.Linear(self.vdim, d_model, bias=bias)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)
        # q/k/v of self-attention as one prepacked product, set by layers.packed.pack_for_inference.
        self.qkv_proj: nn.Module | None = None

    # ------------------------------------------------------------------------------------ helpers

    def _split_heads(self, x: Tensor) -> Tensor:
        b, n, _ = x.shape
        return x.view(b, n, self.num_heads, self.head_dim).transpose(1, 2)  # (b, h, n, d)

    def _qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Queries, keys and values of self-attention from one product with the stacked projections."""
        if self.qkv_proj is not None:
            q, k, v = self.qkv_proj(x).split(self.d_model, dim=-1)
            return self._split_heads(q), self._split_heads(k), self._split_heads(v)
        weight = torch.cat([self.q_proj.weight, self.k_proj.weight, self.v_proj.weight])  # (3·d_model, d_model)
        bias = None if self.q_proj.bias is None else torch.cat([self.q_proj.bias, self.k_proj.bias, self.v_proj.bias])
        q, k, v = F.linear(x, weight, bias).split(self.d_model, dim=-1)  # (b, n, d_model) each
        return self._split_heads(q), self._split_heads(k), self._split_heads(v)

    def _check_cache(self, cache: KVCache | StaticKVCache, b: int) -> None:
        if cache.keys is None:
            return
        _, h, _, d = cache.keys.shape
        dv = cache.values.shape[3]
        if (h, d, dv) != (self.num_heads, self.head_dim, self.head_dim):
            raise ValueError(
                f"cache mismatch: the cache holds {h} heads of key dim {d} and value dim {dv}, but this layer has "
                f"{self.num_heads} heads of dim {self.head_dim}"
            )
        if cache.batch_size != b:
            raise ValueError(f"cache mismatch: the cache holds a batch of {cache.batch_size}, the query a batch of {b}")

    @staticmethod
    def _head_mask(mask: Tensor | None) -> Tensor | None:
        """Give a per-example mask ``(b, i, j)`` its head axis ``(b, 1, i, j)``; pass others to ``attend``,
        which checks them."""
        if isinstance(mask, Tensor) and mask.dim() == 3:
            return mask.unsqueeze(1)  # (b, 1, i, j)
        return mask

    # ------------------------------------------------------------------------------------ public

    def static_cache(self, key: Tensor, value: Tensor | None = None) -> StaticKVCache:
        """Project a fixed memory ``key (b, j, kdim)`` (and ``value``, default ``key``) once, for
        cross-attention at every decoding step."""
        value = key if value is None else value
        check_features("key", key, self.kdim, "kdim", self, "out_proj.weight")
        check_features("value", value, self.vdim, "vdim", self, "out_proj.weight")
        keys, values = self._split_heads(self.k_proj(key)), self._split_heads(self.v_proj(value))  # (b, h, j, d)
        if not (torch.is_inference_mode_enabled() and native.applies(keys, values)):
            # made contiguous once here: PyTorch's matmul would copy the head-split views at every step. Where
            # the compiled decoding kernels run, they read the views with their strides: no copy at all.
            keys, values = keys.contiguous(), values.contiguous()
        return StaticKVCache(keys, values)

    def forward(
        self,
        query: Tensor,
        key: Tensor | None = None,
        value: Tensor | None = None,
        *,
        mask: Tensor | None = None,
        causal: bool = False,
        cache: KVCache | StaticKVCache | None = None,
        need_weights: bool = False,
        average_heads: bool = False,
    ) -> AttentionOutput:
        """Attend from ``query (b, i, d_model)`` over ``key (b, j, kdim)`` / ``value (b, j, vdim)``.

        - ``key`` defaults to ``query`` (self-attention), ``value`` to ``key``.
        - ``mask``: boolean, True = may attend (see the module docstring for shapes).
        - ``causal``: also forbid attending to later positions; with a cache of ``t`` earlier positions
          the queries are aligned with the last keys (query ``p`` sees keys ``≤ t + p``).
        - ``cache``: a :class:`KVCache` — the new keys/values are appended and attention runs over all
          cached positions — or a :class:`StaticKVCache` of a memory projected once (then pass no
          ``key``/``value``).
        - ``need_weights``: return the weights per head ``(b, h, i, j)``; ``average_heads`` averages
          them over heads ``(b, i, j)``.

        Returns ``AttentionOutput(context (b, i, d_model), weights or None)``.
        """
        check_features("query", query, self.d_model, "d_model", self, "out_proj.weight")
        causal = check_flag("causal", causal)
        need_weights = check_flag("need_weights", need_weights)
        average_heads = check_flag("average_heads", average_heads)
        b, i, _ = query.shape
        fused = (key is None and value is None and not isinstance(cache, StaticKVCache)
                 and self.kdim == self.vdim == self.d_model
                 and (self.qkv_proj is not None or type(self.q_proj) is nn.Linear))  # not once quantised
        if fused:  # self-attention: one (d_model → 3·d_model) product instead of three
            q, k, v = self._qkv(query)  # (b, h, i, d) each
        else:
            q = self._split_heads(self.q_proj(query))  # (b, h, i, d)
        if isinstance(cache, StaticKVCache):
            if key is not None or value is not None:
                raise ValueError("with a StaticKVCache the keys and values come from the cache: pass key=None, value=None")
            self._check_cache(cache, b)
            if cache.group > 1:
                grouped = self._grouped(q, cache, mask, need_weights, average_heads)
                if grouped is not None:
                    return grouped
                cache = cache.ungrouped()  # rows of a group with different masks: one memory row each
            k, v = cache.keys, cache.values  # (b, h, j, d)
        else:
            key = query if key is None else key
            value = key if value is None else value
            check_features("key", key, self.kdim, "kdim", self, "out_proj.weight")
            check_features("value", value, self.vdim, "vdim", self, "out_proj.weight")
            if key.shape[:2] != value.shape[:2]:
                raise ValueError(
                    f"key and value must agree on (b, j), got key {tuple(key.shape)} and value {tuple(value.shape)}"
                )
            if key.shape[0] != b:
                raise ValueError(f"query and key must have the same batch size, got {tuple(query.shape)} and {tuple(key.shape)}")
            if not fused:
                k = self._split_heads(self.k_proj(key))  # (b, h, n, d)
                v = self._split_heads(self.v_proj(value))  # (b, h, n, d)
            if cache is not None:
                if not isinstance(cache, KVCache):
                    raise TypeError(f"cache must be a KVCache or StaticKVCache, got {type(cache).__name__}")
                self._check_cache(cache, b)
                k, v = cache.append(k, v)  # (b, h, t + n, d)
        j = k.shape[2]
        if causal and i > 1:  # one query aligned with the last key sees every key: nothing to mask
            mask = combine_masks(self._head_mask(mask), causal_mask(i, j, device=query.device))
        out = attend(
            q,
            k,
            v,
            score=self.score,
            normalize=self.normalize,
            score_params=self.score_params,
            normalize_params=self.normalize_params,
            mask=self._head_mask(mask),
            dropout=self.dropout if self.training else 0.0,
            need_weights=need_weights,
            backend=self.backend,
        )
        context = out.context.transpose(1, 2).reshape(b, i, self.d_model)  # (b, i, h * d)
        weights = out.weights
        if weights is not None and average_heads:
            weights = weights.mean(dim=1)  # (b, i, j)
        return AttentionOutput(self.out_proj(context), weights)

    def _grouped(self, q: Tensor, cache: StaticKVCache, mask: Tensor | None, need_weights: bool,
                 average_heads: bool) -> AttentionOutput | None:
        """Cross-attention of ``q (b, h, i, d)`` over a memory shared by groups of ``g`` rows
        (``cache.keys (n, h, j, d)``, ``b = n·g``): the ``g`` rows' queries become ``g·i`` queries of one
        row. None when the mask is not one row per memory (then the caller expands the memory)."""
        b, h, i, d = q.shape
        g, n = cache.group, cache.keys.shape[0]
        m = self._head_mask(mask)
        if m is not None:
            if not (isinstance(m, Tensor) and m.dim() == 4 and m.shape[0] == b and m.shape[2] == 1):
                return None
            m = m.view(n, g, *m.shape[1:])
            if not bool((m == m[:, :1]).all()):
                return None
            m = m[:, 0]  # (n, 1|h, 1, j): broadcast over the g·i queries
        qg = q.view(n, g, h, i, d).transpose(1, 2).reshape(n, h, g * i, d)  # (n, h, g·i, d)
        out = attend(qg, cache.keys, cache.values, score=self.score, normalize=self.normalize,
                     score_params=self.score_params, normalize_params=self.normalize_params, mask=m,
                     dropout=self.dropout if self.training else 0.0, need_weights=need_weights, backend=self.backend)
        context = out.context.view(n, h, g, i, d).permute(0, 2, 3, 1, 4).reshape(b, i, self.d_model)  # (b, i, h·d)
        weights = out.weights
        if weights is not None:
            weights = weights.view(n, h, g, i, -1).transpose(1, 2).reshape(b, h, i, -1)  # (b, h, i, j)
            if average_heads:
                weights = weights.mean(dim=1)
        return AttentionOutput(self.out_proj(context), weights)

    # ------------------------------------------------------------------------------------ PyTorch

    @classmethod
    def from_torch(cls, module: nn.MultiheadAttention) -> MultiHeadAttention:
        """A layer with the weights (copied) of a ``torch.nn.MultiheadAttention``.

        The result is batch-first whatever ``module.batch_first`` says, and takes masks in attnkit's
        convention: pass ``~key_padding_mask`` / ``~attn_mask`` of a boolean PyTorch mask.
        ``add_bias_kv`` and ``add_zero_attn`` have no equivalent here and are refused.
        """
        if not isinstance(module, nn.MultiheadAttention):
            raise TypeError(f"from_torch expects a torch.nn.MultiheadAttention, got {type(module).__name__}")
        if module.bias_k is not None or module.add_zero_attn:
            raise ValueError("add_bias_kv and add_zero_attn are not supported by attnkit's MultiHeadAttention")
        bias = module.in_proj_bias is not None
        layer = cls(
            module.embed_dim, module.num_heads, kdim=module.kdim, vdim=module.vdim, dropout=module.dropout, bias=bias
        )
        e = module.embed_dim
        if module._qkv_same_embed_dim:
            w_q, w_k, w_v = module.in_proj_weight.detach().split(e, dim=0)  # 3 × (e, e)
        else:
            w_q, w_k, w_v = (module.q_proj_weight.detach(), module.k_proj_weight.detach(), module.v_proj_weight.detach())
        with torch.no_grad():
            for proj, w in ((layer.q_proj, w_q), (layer.k_proj, w_k), (layer.v_proj, w_v)):
                proj.weight.copy_(w)
            layer.out_proj.weight.copy_(module.out_proj.weight)
            if bias:
                for proj, b_ in zip((layer.q_proj, layer.k_proj, layer.v_proj), module.in_proj_bias.detach().split(e)):
                    proj.bias.copy_(b_)
                layer.out_proj.bias.copy_(module.out_proj.bias)
        return layer.to(device=module.out_proj.weight.device, dtype=module.out_proj.weight.dtype)

    def extra_repr(self) -> str:
        extra = "" if (self.kdim, self.vdim) == (self.d_model,) * 2 else f", kdim={self.kdim}, vdim={self.vdim}"
        return f"d_model={self.d_model}, num_heads={self.num_heads}{extra}, score={self.score!r}, normalize={self.normalize!r}"
