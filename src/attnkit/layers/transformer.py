"""Transformer encoder and decoder blocks (Vaswani et al. 2017, section 3.1), pre-norm or post-norm.

- post-norm (the paper): ``x = LayerNorm(x + Dropout(Sublayer(x)))``;
- pre-norm (the default here, Wang et al. 2019; Xiong et al. 2020): ``x = x + Dropout(Sublayer(LayerNorm(x)))``,
  which trains without warm-up tricks in deep stacks. A pre-norm *stack* needs one final LayerNorm
  after its last block; that belongs to the model that stacks the blocks.

Axes: ``b`` batch, ``i`` target positions, ``j`` source positions, ``h`` heads, ``d`` model width.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Literal

import torch
from torch import Tensor, nn

from attnkit import native
from attnkit.attention.call import check_dropout, check_flag

from .cache import KVCache, StaticKVCache
from .checks import check_count, runs_hooks
from .dropout import Dropout, residual_dropout
from .feedforward import ACTIVATIONS, FeedForward
from .multihead import MultiHeadAttention

__all__ = ["BlockConfig", "BlockOutput", "DecoderCache", "EncoderBlock", "DecoderBlock"]


@dataclass(frozen=True)
class BlockConfig:
    """One Transformer block. ``attention_dropout`` defaults to ``dropout``; ``memory_dim`` (decoder
    only) is the encoder's width when it differs from ``d_model``."""

    d_model: int
    num_heads: int
    d_ff: int
    dropout: float = 0.1
    attention_dropout: float | None = None
    activation: str = "relu"
    norm: Literal["pre", "post"] = "pre"
    layer_norm_eps: float = 1e-5
    bias: bool = True
    memory_dim: int | None = None

    def __post_init__(self) -> None:
        for name in ("d_model", "num_heads", "d_ff"):
            check_count(f"BlockConfig.{name}", getattr(self, name), least=1)
        if self.d_model % self.num_heads:
            raise ValueError(f"BlockConfig: num_heads={self.num_heads} does not divide d_model={self.d_model}")
        check_dropout("BlockConfig.dropout", self.dropout)
        if self.attention_dropout is not None:  # None: the same as dropout
            check_dropout("BlockConfig.attention_dropout", self.attention_dropout)
        check_flag("BlockConfig.bias", self.bias)
        if self.norm not in ("pre", "post"):
            raise ValueError(f"BlockConfig.norm must be 'pre' or 'post', got {self.norm!r}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"BlockConfig.activation must be one of {sorted(ACTIVATIONS)}, got {self.activation!r}")
        eps = self.layer_norm_eps
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not (math.isfinite(eps) and eps > 0):
            raise ValueError(f"BlockConfig.layer_norm_eps must be a finite number > 0, got {eps!r}")

    @property
    def attn_dropout(self) -> float:
        return self.dropout if self.attention_dropout is None else self.attention_dropout


@dataclass(frozen=True)
class BlockOutput:
    """A block's output ``hidden (b, i, d)`` and, when asked, its attention weights per head
    ``(b, h, i, ·)``: ``self_weights`` and (decoder) ``cross_weights``."""

    hidden: Tensor
    self_weights: Tensor | None = None
    cross_weights: Tensor | None = None


@dataclass
class DecoderCache:
    """Everything one decoder block remembers between steps: its growing self-attention cache and the
    encoder memory's keys/values, projected once (see :meth:`DecoderBlock.new_cache`)."""

    memory: StaticKVCache
    self_attn: KVCache = field(default_factory=KVCache)

    def __len__(self) -> int:
        """Target positions decoded so far (the position of the next one)."""
        return len(self.self_attn)


Sublayer = Callable[[Tensor], tuple[Tensor, Tensor | None]]


def _add_dropout(x: Tensor, y: Tensor, dropout: nn.Module) -> Tensor:
    """``x + dropout(y)``: in one pass (:func:`residual_dropout`) when ``dropout`` is attnkit's own
    :class:`Dropout` and no hook must see its call; a module put in its place is called."""
    if type(dropout) is not Dropout or runs_hooks((dropout,)):
        return x + dropout(y)
    return residual_dropout(x, y, dropout.p, dropout.training)


def _pre_norm(x: Tensor, norm: nn.LayerNorm, sublayer: Sublayer, dropout: Dropout) -> tuple[Tensor, Tensor | None]:
    y, weights = sublayer(norm(x))
    return _add_dropout(x, y, dropout), weights


def _post_norm(x: Tensor, norm: nn.LayerNorm, sublayer: Sublayer, dropout: Dropout) -> tuple[Tensor, Tensor | None]:
    y, weights = sublayer(x)
    if _native_add_norm(x, y, norm, dropout):  # the same function in one pass (decoding)
        return native.add_layer_norm(x, y, norm.weight, norm.bias, norm.eps), weights
    return norm(_add_dropout(x, y, dropout)), weights


def _native_add_norm(x: Tensor, y: Tensor, norm: nn.LayerNorm, dropout: Dropout) -> bool:
    """Whether ``norm(x + dropout(y))`` can be the compiled ``add_layer_norm``: inference on float32 CPU
    tensors of one shape, dropout off, a plain LayerNorm over the last axis with weight and bias."""
    return (torch.is_inference_mode_enabled() and x.shape == y.shape and not (dropout.training and dropout.p > 0)
            and type(norm) is nn.LayerNorm and norm.weight is not None and norm.bias is not None
            and len(norm.normalized_shape) == 1 and native.applies(x, y, norm.weight, norm.bias))


_RESIDUAL = {"pre": _pre_norm, "post": _post_norm}


class _Block(nn.Module):
    def __init__(self, config: BlockConfig) -> None:
        super().__init__()
        if not isinstance(config, BlockConfig):
            raise TypeError(f"expected a BlockConfig, got {type(config).__name__}")
        self.config = config
        self._residual = _RESIDUAL[config.norm]
        self.dropout = Dropout(config.dropout)
        self.ffn = FeedForward(
            config.d_model, config.d_ff, activation=config.activation, dropout=config.dropout, bias=config.bias
        )
        self.ffn_norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)

    def _attention(self, config: BlockConfig, kdim: int | None = None) -> MultiHeadAttention:
        return MultiHeadAttention(
            config.d_model, config.num_heads, kdim=kdim, vdim=kdim, dropout=config.attn_dropout, bias=config.bias
        )

    def _feed_forward(self, x: Tensor) -> Tensor:
        return self._residual(x, self.ffn_norm, lambda h: (self.ffn(h), None), self.dropout)[0]


class EncoderBlock(_Block):
    """Self-attention then feed-forward, each inside a residual connection with LayerNorm."""

    def __init__(self, config: BlockConfig) -> None:
        super().__init__(config)
        self.self_attn = self._attention(config)
        self.self_attn_norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)

    def forward(self, x: Tensor, *, mask: Tensor | None = None, need_weights: bool = False) -> BlockOutput:
        """``x (b, i, d)``; ``mask`` boolean, True = may attend (e.g. key padding ``(b, 1, i)``)."""

        def attend(h: Tensor) -> tuple[Tensor, Tensor | None]:
            out = self.self_attn(h, mask=mask, need_weights=need_weights)
            return out.context, out.weights

        x, weights = self._residual(x, self.self_attn_norm, attend, self.dropout)
        return BlockOutput(self._feed_forward(x), weights)


class DecoderBlock(_Block):
    """Causal self-attention, cross-attention over the encoder memory, then feed-forward."""

    def __init__(self, config: BlockConfig) -> None:
        super().__init__(config)
        self.self_attn = self._attention(config)
        self.self_attn_norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.cross_attn = self._attention(config, kdim=config.memory_dim)
        self.cross_attn_norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)

    def new_cache(self, memory: Tensor) -> DecoderCache:
        """A cache for decoding step by step over ``memory (b, j, memory_dim)``, projected once here."""
        return DecoderCache(self.cross_attn.static_cache(memory))

    def fused_step(self, x: Tensor, cache: DecoderCache, memory_mask: Tensor | None = None) -> Tensor | None:
        """The next position ``x (b, 1, d)`` through this block in one compiled call
        (:func:`attnkit.native.decoder_layer_step`), growing ``cache`` by it as :meth:`forward` does; ``None``
        where that call does not apply, and then :meth:`forward` computes the same. It applies under
        ``torch.inference_mode`` to a block packed by :func:`~attnkit.layers.pack_for_inference` (a
        ``DecoderBlock`` itself, not a subclass, without hooks), with a ReLU feed-forward and scaled
        dot-product softmax attention, on float32 CPU tensors with the kernels built.
        ``memory_mask``: ``(b, 1, s)``, True = may attend, or ``None``."""
        step = self.fused_inputs(x, cache, memory_mask)
        if step is None:
            return None
        b = x.shape[0]
        (panels, biases, norms, eps), (keys, values, memory_mask) = step
        heads, head_dim = keys.shape[1], keys.shape[3]
        k_cache, v_cache, t = cache.self_attn.room_for(1, x.new_empty((b, heads, 0, head_dim)))
        y = native.decoder_layer_step(x.reshape(b, -1).contiguous(), panels, biases, norms, k_cache, v_cache, t,
                                      keys, values, memory_mask, 1.0 / math.sqrt(head_dim), eps,
                                      self.config.norm == "pre")
        cache.self_attn.advance(1)
        return y.view(b, 1, -1)

    def fused_inputs(self, x: Tensor, cache: DecoderCache, memory_mask: Tensor | None = None):
        """What the compiled step (:func:`attnkit.native.decoder_layer_step`, or
        :func:`~attnkit.native.decoder_stack_step` for a stack) takes from this block for ``x (b, 1, d)``,
        ``cache`` and ``memory_mask (b, 1, s)``, as ``((panels, biases, norms, eps), (memory keys, memory
        values, memory mask (b, s) or None))``; ``None`` where :meth:`fused_step` does not apply."""
        if not torch.is_inference_mode_enabled() or not isinstance(x, Tensor) or x.dim() != 3 or x.shape[1] != 1 \
                or x.shape[2] != self.config.d_model or x.shape[0] == 0:
            return None
        if not isinstance(cache, DecoderCache) or not isinstance(cache.memory, StaticKVCache):
            return None
        parts = self._fused_parts()
        if parts is None:
            return None
        memory, b = cache.memory, x.shape[0]
        keys, values = memory.keys, memory.values
        heads, head_dim = self.self_attn.num_heads, self.self_attn.head_dim
        if memory.batch_size != b or keys.shape[1] != heads or keys.shape[3] != head_dim \
                or values.shape[3] != head_dim or keys.stride(3) != 1 or values.stride(3) != 1:
            return None
        if memory_mask is not None:
            if not (isinstance(memory_mask, Tensor) and memory_mask.dtype == torch.bool
                    and memory_mask.shape == (b, 1, keys.shape[2]) and memory_mask.device.type == "cpu"):
                return None
            memory_mask = memory_mask[:, 0]  # (b, s)
        if not native.applies(x, keys, values):
            return None
        return parts, (keys, values, memory_mask)

    def _fused_parts(self) -> tuple[list[Tensor], list[Tensor | None], list[Tensor], float] | None:
        """What :func:`attnkit.native.decoder_layer_step` takes from this block: the weights as panels, the
        biases, the LayerNorms' weights and biases, and their eps (read afresh at every call, so that replaced
        parameters are the ones used); None when the block is not of that form. Runs at every decoding step:
        submodules and parameters are read from ``_modules``/``_parameters`` directly (nn.Module's
        ``__getattr__`` would take ~0.6 µs for each of the ~30)."""
        from .packed import PackedLinear

        blocks = self._modules
        sa, ca, ffn = blocks["self_attn"], blocks["cross_attn"], blocks["ffn"]
        if type(self) is not DecoderBlock or type(sa) is not MultiHeadAttention or type(ca) is not MultiHeadAttention \
                or type(ffn) is not FeedForward:
            return None  # a subclass may compute something else
        linears = (sa._modules.get("qkv_proj"), sa._modules["out_proj"], ca._modules["q_proj"], ca._modules["out_proj"],
                   ffn._modules["linear1"], ffn._modules["linear2"])
        for i, m in enumerate(linears):
            if type(m) is not PackedLinear or m.relu != (i == 4):
                return None
        if not ffn.fused_activation:
            return None
        norms = (blocks["self_attn_norm"], blocks["cross_attn_norm"], blocks["ffn_norm"])
        modules = (self, blocks["dropout"], sa, ca, ffn, ffn._modules["dropout"], *linears, *norms)
        if any(m.training for m in modules) or runs_hooks(modules):  # dropout could be on; hooks must run
            return None
        for attention in (sa, ca):
            if not (attention.score == "scaled_dot" and attention.normalize == "softmax" and not attention.score_params
                    and not attention.normalize_params and attention.backend in ("auto", "native")):
                return None
        eps = norms[0].eps
        params = []
        for n in norms:
            if type(n) is not nn.LayerNorm or len(n.normalized_shape) != 1 or n.eps != eps:
                return None
            weight, bias = n._parameters.get("weight"), n._parameters.get("bias")
            if weight is None or bias is None:
                return None
            params += (weight, bias)
        if not native.available():
            return None
        return [m.panels() for m in linears], [m._parameters.get("bias") for m in linears], params, eps

    def forward(
        self,
        x: Tensor,
        memory: Tensor | None = None,
        *,
        self_mask: Tensor | None = None,
        memory_mask: Tensor | None = None,
        cache: DecoderCache | None = None,
        need_weights: bool = False,
    ) -> BlockOutput:
        """``x (b, i, d)`` target positions; ``memory (b, j, memory_dim)`` the encoder output, or ``None``
        with a ``cache`` (which holds it projected). Self-attention is always causal; ``self_mask`` may add
        target padding, ``memory_mask`` (e.g. ``(b, 1, j)``) source padding. With a ``cache``, ``x`` holds
        the next position(s) only and the cache grows by them."""
        if cache is not None and memory is not None:
            raise ValueError("with a DecoderCache the encoder memory comes from the cache: pass memory=None")
        if cache is None and memory is None:
            raise ValueError("DecoderBlock needs the encoder memory, or a DecoderCache made by new_cache(memory)")
        self_cache = None if cache is None else cache.self_attn

        def self_attend(h: Tensor) -> tuple[Tensor, Tensor | None]:
            out = self.self_attn(h, mask=self_mask, causal=True, cache=self_cache, need_weights=need_weights)
            return out.context, out.weights

        def cross_attend(h: Tensor) -> tuple[Tensor, Tensor | None]:
            if cache is None:
                out = self.cross_attn(h, memory, mask=memory_mask, need_weights=need_weights)
            else:
                out = self.cross_attn(h, mask=memory_mask, cache=cache.memory, need_weights=need_weights)
            return out.context, out.weights

        x, self_weights = self._residual(x, self.self_attn_norm, self_attend, self.dropout)
        x, cross_weights = self._residual(x, self.cross_attn_norm, cross_attend, self.dropout)
        return BlockOutput(self._feed_forward(x), self_weights, cross_weights)
