"""The encoder–decoder Transformer (Vaswani et al. 2017) on the models' one interface.

Recurrence is replaced by self-attention: the encoder's self-attention lets every source word look at
every other; the decoder's causal self-attention looks at the words produced so far, and its
cross-attention gives every output word its own context over the source (the C_i of the RNN
attention decoder, computed by several heads in each layer).

Axes: ``b`` batch, ``s`` source positions, ``t`` target positions, ``d`` model width, ``h`` heads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from attnkit import native
from attnkit.layers import (
    BlockConfig,
    DecoderBlock,
    DecoderCache,
    EncoderBlock,
    LearnedPositionalEncoding,
    PackedLinear,
    SinusoidalPositionalEncoding,
)
from attnkit.layers.checks import check_count, runs_hooks

from .base import Seq2SeqModel, check_same_batch, check_step_rows, check_tokens
from .config import ConfigError, TransformerConfig

__all__ = ["TransformerSeq2Seq", "TransformerState", "training_flops"]


@dataclass
class TransformerState:
    """Decoder state: the source mask ``(b, s)`` and one cache per decoder layer (its growing
    self-attention keys/values and the encoder memory's keys/values, projected once)."""

    src_mask: Tensor
    caches: list[DecoderCache]
    padded: bool = True  # whether src_mask masks anything (False: attend without a mask)

    @property
    def position(self) -> int:
        return len(self.caches[0])

    def reserve(self, steps: int) -> None:
        """Room in the self-attention caches for ``steps`` more positions (see :meth:`KVCache.reserve`)."""
        for c in self.caches:
            c.self_attn.reserve(len(c.self_attn) + steps)

    def reorder(self, index: Tensor) -> "TransformerState":
        """The state of rows ``index``. The self-attention caches are reordered in place (most rows of a
        beam search stay where they are and are not copied): use only the returned state afterwards."""
        caches = []
        for c in self.caches:
            c.self_attn.reorder(index)
            caches.append(DecoderCache(c.memory.reorder(index), c.self_attn))
        return TransformerState(self.src_mask.index_select(0, index), caches, self.padded)


# Up to this many rows a step's output layer and top-n run as one call; beyond, oneDNN's product and the top-n
# pass measured faster (beam 4 over 64 sentences: 256 rows).
_FUSED_OUTPUT_ROWS = 128


def _key_mask(src_mask: Tensor) -> Tensor | None:
    """The source mask as attention takes it, ``(b, 1, s)``, or None when every source position is a
    token: attention then needs no mask (the same result, without masking every score)."""
    return None if bool(src_mask.all()) else src_mask.unsqueeze(1)


class TransformerSeq2Seq(Seq2SeqModel):
    def __init__(self, config: TransformerConfig, src_vocab_size: int, tgt_vocab_size: int):
        super().__init__()
        c = config
        self.config, self.src_vocab_size, self.tgt_vocab_size = c, src_vocab_size, tgt_vocab_size
        self.src_embed = nn.Embedding(src_vocab_size, c.d_model, padding_idx=c.pad_id)
        if c.share_embeddings:
            if src_vocab_size != tgt_vocab_size:
                raise ConfigError(
                    f"share_embeddings needs one joint vocabulary, got source {src_vocab_size} and target {tgt_vocab_size}"
                )
            self.tgt_embed = self.src_embed
        else:
            self.tgt_embed = nn.Embedding(tgt_vocab_size, c.d_model, padding_idx=c.pad_id)
        for emb in (self.src_embed, self.tgt_embed):
            nn.init.normal_(emb.weight, std=c.d_model**-0.5)  # so that the sqrt(d) scale gives unit variance
            nn.init.zeros_(emb.weight[c.pad_id])
        if c.positions == "sinusoidal":
            self.src_pos = SinusoidalPositionalEncoding(c.d_model, dropout=c.dropout)
            self.tgt_pos = SinusoidalPositionalEncoding(c.d_model, dropout=c.dropout)
        else:
            self.src_pos = LearnedPositionalEncoding(c.max_len, c.d_model, dropout=c.dropout)
            self.tgt_pos = LearnedPositionalEncoding(c.max_len, c.d_model, dropout=c.dropout)
        block = BlockConfig(c.d_model, c.heads, c.ffn_dim, dropout=c.dropout, attention_dropout=c.attention_dropout,
                            norm="pre" if c.norm_first else "post")
        self.encoder = nn.ModuleList(EncoderBlock(block) for _ in range(c.encoder_layers))
        self.decoder = nn.ModuleList(DecoderBlock(block) for _ in range(c.decoder_layers))
        # A pre-norm stack ends with a LayerNorm; post-norm blocks already end with one.
        self.encoder_norm = nn.LayerNorm(c.d_model) if c.norm_first else nn.Identity()
        self.decoder_norm = nn.LayerNorm(c.d_model) if c.norm_first else nn.Identity()
        self.output = nn.Linear(c.d_model, tgt_vocab_size, bias=False)
        if c.tie_output:
            self.output.weight = self.tgt_embed.weight
        self.scale = math.sqrt(c.d_model)

    @property
    def max_output_steps(self) -> int | None:
        return self.config.max_len if self.config.positions == "learned" else None

    def training_flops(self, batch: int, src_len: int, tgt_len: int) -> float:
        """See :func:`training_flops`."""
        return training_flops(self.config, self.tgt_vocab_size, batch, src_len, tgt_len)

    def _memory(self, src: Tensor, key_mask: Tensor | None, weights: list | None = None) -> Tensor:
        """The encoder output over ``src (b, s)``; ``key_mask`` from :func:`_key_mask`."""
        x = self.src_pos(self.src_embed(src) * self.scale)  # (b, s, d)
        for block in self.encoder:
            out = block(x, mask=key_mask, need_weights=weights is not None)
            x = out.hidden
            if weights is not None:
                weights.append(out.self_weights)  # (b, h, s, s)
        return self.encoder_norm(x)

    def encoder_attention(self, src: Tensor, src_mask: Tensor | None = None) -> list[Tensor]:
        """The self-attention weights of every encoder layer, ``[(b, h, s, s)]``: how each source
        position looks at the others."""
        src_mask = self._check_src(src, src_mask)
        weights: list[Tensor] = []
        self._memory(src, _key_mask(src_mask), weights)
        return weights

    def encode(self, src: Tensor, src_mask: Tensor | None = None) -> TransformerState:
        src_mask = self._check_src(src, src_mask)
        key_mask = _key_mask(src_mask)
        memory = self._memory(src, key_mask)
        return TransformerState(src_mask, [block.new_cache(memory) for block in self.decoder], key_mask is not None)

    def decode_step(self, state: TransformerState, prev_tokens: Tensor, *, need_attention: bool = False):
        """One target position. The caches in ``state`` grow in place; the same state is returned."""
        x, maps = self._decode_position(state, prev_tokens, need_attention)
        return self.output(x)[:, 0], state, maps  # (b, V)

    def decode_step_top(self, state: TransformerState, prev_tokens: Tensor, n: int, blocked: int | None = None):
        """:meth:`Seq2SeqModel.decode_step_top`: on a model packed by :func:`~attnkit.layers.pack_for_inference`,
        under ``torch.inference_mode``, for up to 128 rows, the output layer and the top-``n`` log-softmax are one
        compiled call (:func:`attnkit.native.linear_log_softmax_topk`), the ``(b, V)`` logits never reaching
        memory; ``None`` otherwise (and where a subclass computes its own ``decode_step``)."""
        output = self._modules["output"]
        if not (isinstance(prev_tokens, Tensor) and prev_tokens.dim() == 1 and prev_tokens.shape[0] <= _FUSED_OUTPUT_ROWS
                and type(self).decode_step is TransformerSeq2Seq.decode_step and self._fused_output(output)):
            return None
        x, _ = self._decode_position(state, prev_tokens, False)
        values, tokens = native.linear_log_softmax_topk(x.reshape(x.shape[0], -1), output.panels(),
                                                        output._parameters.get("bias"), self.tgt_vocab_size, n, blocked)
        return values, tokens, state

    def decode_greedy_steps(self, state: TransformerState, prev_tokens: Tensor, steps: int, eos: int,
                            blocked_steps: int = 0):
        """:meth:`Seq2SeqModel.decode_greedy_steps`: where :meth:`decode_step_top` takes its one-call path and
        the decoder stack its compiled step (:meth:`_fused_stack`), with an ``nn.Embedding`` for the target, a
        sinusoidal or learned position encoding and a final ``nn.LayerNorm`` or none (no hooks, none training),
        the steps run in one compiled call (:func:`attnkit.native.greedy_steps`) computing the same bits;
        ``None`` otherwise. The caches are first made to hold ``steps`` more positions (greedy decoding has
        reserved them for its longest output already)."""
        output, embed, pos, norm = (self._modules[name] for name in ("output", "tgt_embed", "tgt_pos", "decoder_norm"))
        if not (isinstance(prev_tokens, Tensor) and prev_tokens.dim() == 1 and prev_tokens.dtype == torch.int64
                and 0 < prev_tokens.shape[0] <= _FUSED_OUTPUT_ROWS and self._fused_output(output)):
            return None
        # what stepping runs, overridden by a subclass or on the instance (a wrapper), or an eos that is no target
        # token (stepping never chooses it): step
        if any(getattr(type(self), name) is not getattr(TransformerSeq2Seq, name) or name in self.__dict__
               for name in ("decode_step", "decode_step_top", "_decode_position", "_fused_stack", "_stack_inputs")) \
                or not 0 <= eos < self.tgt_vocab_size:
            return None
        if type(embed) is not nn.Embedding or embed.max_norm is not None or not native.applies(embed.weight) \
                or type(pos) not in (SinusoidalPositionalEncoding, LearnedPositionalEncoding) \
                or type(norm) not in (nn.LayerNorm, nn.Identity):
            return None
        modules = [embed, *pos.modules(), *norm.modules()]
        if any(m.training for m in modules) or runs_hooks(modules):
            return None
        final_weight = final_bias = None
        if type(norm) is nn.LayerNorm:
            final_weight, final_bias = norm._parameters.get("weight"), norm._parameters.get("bias")
            if final_weight is None or final_bias is None or norm.normalized_shape != (embed.embedding_dim,):
                return None
        check_tokens("prev_tokens", prev_tokens, self.tgt_vocab_size, 1)
        check_step_rows(prev_tokens, state.src_mask.shape[0])
        offset = state.position
        if type(pos) is LearnedPositionalEncoding:
            steps = min(steps, pos.max_len - offset)  # beyond, the step-by-step path says what is wrong
        if steps < 1:
            return None
        b, d = prev_tokens.shape[0], embed.embedding_dim
        inputs = self._stack_inputs(embed.weight.new_empty((b, 1, d)), state,
                                    state.src_mask.unsqueeze(1) if state.padded else None, steps)
        if inputs is None:
            return None
        positions = (pos.encoding(steps, offset, device=prev_tokens.device, dtype=embed.weight.dtype)
                     if type(pos) is SinusoidalPositionalEncoding else pos.encoding(steps, offset, device=prev_tokens.device))
        tokens, logps = native.greedy_steps(
            prev_tokens, embed.weight, self.scale, positions, *inputs, final_weight, final_bias,
            norm.eps if final_weight is not None else 0.0, output.panels(), output._parameters.get("bias"),
            self.tgt_vocab_size, eos, blocked_steps, steps)
        for c in state.caches:
            c.self_attn.advance(tokens.shape[1])
        return tokens, logps, state

    def _fused_output(self, output: nn.Module) -> bool:
        """Whether ``output`` is a packed layer that the fused output-and-top-n call computes the same as."""
        return (torch.is_inference_mode_enabled() and type(output) is PackedLinear and not output.relu
                and output.out_features == self.tgt_vocab_size and not output.training and not runs_hooks([output])
                and native.applies(output.weight))

    def _decode_position(self, state: TransformerState, prev_tokens: Tensor, need_attention: bool):
        """The decoder's output ``(b, 1, d)`` (after the final norm) at the next position, and the cross-attention
        maps of every layer when asked."""
        check_tokens("prev_tokens", prev_tokens, self.tgt_vocab_size, 1)
        check_step_rows(prev_tokens, state.src_mask.shape[0])
        x = self.tgt_pos(self.tgt_embed(prev_tokens[:, None]) * self.scale, offset=state.position)  # (b, 1, d)
        memory_mask = state.src_mask.unsqueeze(1) if state.padded else None  # (b, 1, s)
        if not need_attention:
            y = self._fused_stack(x, state, memory_mask)  # every block in one compiled call
            if y is not None:
                return self.decoder_norm(y), None
        maps = []
        for block, cache in zip(self.decoder, state.caches):
            fused = None if need_attention else block.fused_step(x, cache, memory_mask)  # one compiled call
            if fused is not None:
                x = fused
                continue
            out = block(x, None, memory_mask=memory_mask, cache=cache, need_weights=need_attention)
            x = out.hidden
            if need_attention:
                maps.append(out.cross_weights)  # (b, h, 1, s)
        return self.decoder_norm(x), (maps if need_attention else None)

    def _fused_stack(self, x: Tensor, state: TransformerState, memory_mask: Tensor | None) -> Tensor | None:
        """``x (b, 1, d)`` through every decoder block in one compiled call
        (:func:`attnkit.native.decoder_stack_step`), the caches grown by it as the blocks' own steps grow them:
        ``(b, 1, d)``, or ``None`` where :meth:`_stack_inputs` finds that the call does not apply; then each block
        takes its own step."""
        inputs = self._stack_inputs(x, state, memory_mask, 1)
        if inputs is None:
            return None
        b = x.shape[0]
        y = native.decoder_stack_step(x.reshape(b, -1).contiguous(), *inputs)
        for c in state.caches:
            c.self_attn.advance(1)
        return y.view(b, 1, -1)

    def _stack_inputs(self, x: Tensor, state: TransformerState, memory_mask: Tensor | None, room: int):
        """What :func:`attnkit.native.decoder_stack_step` takes besides ``x``, for ``x (b, 1, d)`` (its shape)
        and the state's caches, made to hold ``room`` more positions: ``(panels, biases, norms, key caches, value
        caches, t, memory keys, memory values, memory mask, scale, eps, pre_norm)``; or ``None`` where some
        block's :meth:`~attnkit.layers.DecoderBlock.fused_step` does not apply or the blocks differ in what the
        call shares (LayerNorm placement and eps, head size, feed-forward width, cache length)."""
        blocks, caches = list(self.decoder), state.caches
        if not blocks or len(caches) != len(blocks):
            return None
        steps = []
        for block, cache in zip(blocks, caches):
            step = block.fused_inputs(x, cache, memory_mask)
            if step is None:
                return None
            steps.append(step)
        parts, memories = zip(*steps)  # per block: (panels, biases, norms, eps), (keys, values, mask)
        shared = [(block.config.norm, eps, keys.shape[3], panels[5].shape[1], len(cache))
                  for block, cache, (panels, _, _, eps), (keys, _, _) in zip(blocks, caches, parts, memories)]
        if any(s != shared[0] for s in shared):
            return None
        norm, eps, head_dim, _, _ = shared[0]
        b = x.shape[0]
        rooms = [c.self_attn.room_for(room, x.new_empty((b, keys.shape[1], 0, head_dim)))
                 for c, (keys, _, _) in zip(caches, memories)]
        k_caches, v_caches, positions = zip(*rooms)
        return ([w for p in parts for w in p[0]], [w for p in parts for w in p[1]], [w for p in parts for w in p[2]],
                list(k_caches), list(v_caches), positions[0], [m[0] for m in memories], [m[1] for m in memories],
                memories[0][2], 1.0 / math.sqrt(head_dim), eps, norm == "pre")

    def forward(self, src: Tensor, tgt_in: Tensor, *, src_mask: Tensor | None = None, need_attention: bool = False):
        """Teacher forcing: ``tgt_in (b, t)`` starts with BOS; returns ``logits (b, t, V)`` and, when asked,
        the cross-attention of every decoder layer ``[(b, h, t, s)]``."""
        check_tokens("tgt_in", tgt_in, self.tgt_vocab_size, 2)
        src_mask = self._check_src(src, src_mask)
        check_same_batch(src, tgt_in)
        key_mask = _key_mask(src_mask)
        logits, cross, _ = self._decode_all(self._memory(src, key_mask), key_mask, tgt_in, need_attention)
        return logits, cross

    def _decode_all(self, memory: Tensor, memory_mask: Tensor | None, tgt_in: Tensor, need_attention: bool):
        """Teacher-forced decoder over ``memory``; ``memory_mask`` from :func:`_key_mask`."""
        x = self.tgt_pos(self.tgt_embed(tgt_in) * self.scale)  # (b, t, d)
        cross, own = [], []
        for block in self.decoder:
            out = block(x, memory, memory_mask=memory_mask, need_weights=need_attention)
            x = out.hidden
            if need_attention:
                cross.append(out.cross_weights)  # (b, h, t, s)
                own.append(out.self_weights)  # (b, h, t, t), causal
        logits = self.output(self.decoder_norm(x))
        return logits, (cross if need_attention else None), (own if need_attention else None)

    def decoder_attention(self, src: Tensor, tgt_in: Tensor, src_mask: Tensor | None = None) -> list[Tensor]:
        """The causal self-attention weights of every decoder layer over ``tgt_in``, ``[(b, h, t, t)]``:
        how each output position looks at the ones before it."""
        check_tokens("tgt_in", tgt_in, self.tgt_vocab_size, 2)
        src_mask = self._check_src(src, src_mask)
        check_same_batch(src, tgt_in)
        key_mask = _key_mask(src_mask)
        return self._decode_all(self._memory(src, key_mask), key_mask, tgt_in, True)[2]


def training_flops(config: TransformerConfig, tgt_vocab_size: int, batch: int, src_len: int, tgt_len: int) -> float:
    """The FLOPs of the matrix products of one training step of a Transformer on a padded batch (``batch``
    sources of ``src_len`` tokens → targets of ``tgt_len``): 2·m·k·n for every product of the forward pass —
    projections, attention scores and weighted sums (the decoder's causal scores as a full t × t matrix, as
    the kernels compute them), the output layer — times 3 for the backward pass (each product's two
    gradients); embeddings, norms, the loss and the optimizer count nothing."""
    for name, value in (("batch", batch), ("src_len", src_len), ("tgt_len", tgt_len)):
        check_count(f"training_flops: {name}", value)
    c, s, t = config, src_len, tgt_len
    d, f = c.d_model, c.ffn_dim
    encoder = c.encoder_layers * (2 * s * d * 3 * d + 2 * s * d * d  # q, k, v; out
                                  + 2 * 2 * s * d * f  # feed-forward
                                  + 2 * 2 * s * s * d)  # scores, weighted sums
    decoder = c.decoder_layers * (2 * t * d * 3 * d + 2 * t * d * d  # self-attention q, k, v; out
                                  + 2 * 2 * t * d * d + 2 * s * d * 2 * d  # cross-attention q, out; k, v of the memory
                                  + 2 * 2 * t * d * f  # feed-forward
                                  + 2 * 2 * t * t * d + 2 * 2 * t * s * d)  # self and cross scores, weighted sums
    output = 2 * t * d * tgt_vocab_size
    return 3.0 * batch * (encoder + decoder + output)
