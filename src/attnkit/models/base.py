"""The one interface every translation model offers, and what its methods return.

    state = model.encode(src, src_mask)                       # src (b, s) token ids, src_mask (b, s) True = token
    logits, state, attention = model.decode_step(state, prev)  # prev (b,) -> logits (b, V)
    logits, attention = model(src, tgt_in)                     # teacher forcing: logits (b, t, V)

A model may also offer ``model.decode_step_top(state, prev, n, blocked)``: a step's ``n`` best log-probs of
each row without the logits (the Transformer does, once packed for inference), or ``None`` where it cannot;
the searches try it first (:func:`attnkit.decode.select.step_top`).

``attention`` is ``None`` unless asked for (``need_attention=True``); then it is a list with one
tensor per decoder layer of cross-attention weights ``(b, h, i, s)`` over the source positions
(an RNN decoder has one layer and one head; ``i`` is 1 in ``decode_step``).
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import Tensor, nn

__all__ = ["Seq2SeqModel", "DecoderState", "check_top", "reserve_steps", "source_mask"]


class DecoderState(Protocol):
    def reorder(self, index: Tensor) -> "DecoderState":
        """The state of the batch rows ``index`` (for beam search: which hypothesis continues where).
        It may reuse this state's memory: only the returned state is to be used afterwards."""

    # Optional: ``reserve(steps)``, room for ``steps`` more decoding steps allocated at once (the decoders
    # call it when the state has it, before the first step).


def reserve_steps(state: DecoderState, steps: int) -> None:
    """Call ``state.reserve(steps)`` when the state offers it (a Transformer's caches); else nothing."""
    reserve = getattr(state, "reserve", None)
    if callable(reserve):
        reserve(steps)


def source_mask(src: Tensor, pad_id: int) -> Tensor:
    """``(b, s)`` True where ``src`` holds a token, False on padding."""
    return src != pad_id


def check_tokens(name: str, tokens: Tensor, vocab_size: int, ndim: int) -> None:
    if not isinstance(tokens, Tensor) or tokens.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"{name} must be an integer (long) tensor of token ids, got {getattr(tokens, 'dtype', type(tokens))}")
    if tokens.dim() != ndim:
        shape = "(b, positions)" if ndim == 2 else "(b,)"
        raise ValueError(f"{name} must have shape {shape}, got {tuple(tokens.shape)}")
    if tokens.numel():
        lo, hi = (int(v) for v in torch.aminmax(tokens))  # one pass (decoding checks its tokens every step)
        if lo < 0 or hi >= vocab_size:
            raise ValueError(f"{name} holds ids outside the vocabulary [0, {vocab_size}): min {lo}, max {hi}")


def check_same_batch(src: Tensor, tgt_in: Tensor) -> None:
    if tgt_in.shape[0] != src.shape[0]:
        raise ValueError(f"tgt_in has {tgt_in.shape[0]} sentences but src {src.shape[0]}: one target per source")


def check_step_rows(prev_tokens: Tensor, rows: int) -> None:
    """A decoding step's ``prev_tokens`` has one token per row of the decoder state."""
    if prev_tokens.shape[0] != rows:
        raise ValueError(f"prev_tokens has {prev_tokens.shape[0]} rows but the state {rows}")


def check_top(width: int, n: int, blocked: int | None) -> None:
    """That the ``n`` best of ``width`` entries, ``blocked`` (a token id or None) left out, can be given."""
    if blocked is not None and not 0 <= blocked < width:
        raise ValueError(f"blocked must be a token id in [0, {width}), got {blocked}")
    usable = width - (blocked is not None)
    if not 1 <= n <= usable:
        raise ValueError(f"n must be in [1, {usable}], got {n}")


class Seq2SeqModel(nn.Module):
    """Base class: subclasses implement ``encode``, ``decode_step`` and ``forward``."""

    config: Any
    src_vocab_size: int
    tgt_vocab_size: int

    @property
    def has_cross_attention(self) -> bool:
        """Whether the decoder attends over the source (False for the fixed-context generations)."""
        return True

    @property
    def max_output_steps(self) -> int | None:
        """The most decoding steps the decoder can take (its learned positions), or None for no limit."""
        return None

    def encode(self, src: Tensor, src_mask: Tensor | None = None) -> DecoderState:
        raise NotImplementedError

    def decode_step(self, state: DecoderState, prev_tokens: Tensor, *, need_attention: bool = False):
        raise NotImplementedError

    def decode_step_top(self, state: DecoderState, prev_tokens: Tensor, n: int, blocked: int | None = None):
        """One decoding step's ``n`` best log-probs of each row without the ``(b, V)`` logits:
        ``(values (b, n), tokens (b, n), state)``, as ``decode_step`` then
        :func:`~attnkit.decode.select.top_log_probs` give them, token ``blocked`` left out after normalising;
        or ``None``, with ``state`` untouched, where the model has no such way (the searches then take
        ``decode_step``). ``n`` and ``blocked`` are checked by the caller (:func:`check_top`)."""
        return None

    def decode_greedy_steps(self, state: DecoderState, prev_tokens: Tensor, steps: int, eos: int,
                            blocked_steps: int = 0):
        """Up to ``steps`` greedy decoding steps from ``prev_tokens (b,)`` in one call, each step's best token the
        next step's input, stopping after the first step in which a row chose ``eos``: ``(tokens (b, k),
        log-probs (b, k), state)`` for the ``k`` steps taken, what ``k`` calls of :meth:`decode_step_top` with
        ``n = 1`` give (``eos`` blocked in the first ``blocked_steps`` of them); or ``None``, with ``state``
        untouched, where the model has no such way (greedy decoding then steps one position at a time)."""
        return None

    def training_flops(self, batch: int, src_len: int, tgt_len: int) -> float | None:
        """The FLOPs of the matrix products of one training step (forward and backward) on a padded batch of
        ``batch`` sources of ``src_len`` tokens and targets of ``tgt_len``, as the model computes them
        (padding included), for the model FLOPs utilisation ``attnkit train`` reports; None where the
        model does not count them."""
        return None

    def num_parameters(self, trainable_only: bool = False) -> int:
        """Number of distinct parameters (tied weights counted once)."""
        seen, total = set(), 0
        for p in self.parameters():
            if id(p) in seen or (trainable_only and not p.requires_grad):
                continue
            seen.add(id(p))
            total += p.numel()
        return total

    def _check_src(self, src: Tensor, src_mask: Tensor | None) -> Tensor:
        check_tokens("src", src, self.src_vocab_size, 2)
        if src_mask is None:
            src_mask = source_mask(src, self.config.pad_id)
        if src_mask.dtype != torch.bool or src_mask.shape != src.shape:
            raise ValueError(f"src_mask must be a boolean (b, s) tensor like src {tuple(src.shape)}, got "
                             f"{src_mask.dtype} {tuple(src_mask.shape)}")
        if src.shape[1] and not bool(src_mask.any(1).all()):
            raise ValueError("every source sentence needs at least one token (src_mask has an all-False row)")
        return src_mask
