"""How much memory decoding holds at once: enough to refuse a beam or a batch the machine cannot hold
before decoding starts. Out of memory, the kernel kills the process without a word (``attnkit translate
--beam 100000`` was), so a setting that cannot fit is better refused up front, naming it.

The estimate counts the tensors that grow with the rows of the decoder state, ``rows = sentences × beam``
(greedy decoding: ``beam = 1``), for an output of up to ``T`` steps over ``s`` source positions, ``V``
target tokens and ``c = min(2·beam, V)`` candidates a row (see :mod:`attnkit.decode.beam`), in bytes per row:

- the step's logits ``(rows, V)`` and its ``c`` best log-probs, their tokens (int64) and float64 sums;
- a Transformer's self-attention caches, reserved for the longest output: keys and values of
  ``d_model`` per position and decoder layer, ``2 · layers · d_model · T``; an RNN's copy of the encoder
  memory for attention ``s · K`` (``K`` the encoder's output width) and its hidden state;

and in bytes per sentence, the buffers allocated at once for its longest output, whenever it stops:

- its output tokens ``T`` int64 (greedy decoding's chosen tokens, beam search's finished hypotheses);
- with attention recorded, its cross-attention ``layers · heads · T · s`` (greedy decoding's maps, beam
  search's finished hypotheses').

What grows step by step — beam search's alive prefixes and their attention, held twice as a step appends
to them — is left out: decoding usually stops long before ``T`` (at every sentence's EOS), and counting it
to ``T`` would refuse settings that fit. The model's weights, the encoder's activations (once per sentence)
and the small bookkeeping are left out too: it is a floor, not a ceiling — a setting above it cannot fit
(once the beams are formed: a sentence stopped at its first step never has them), one below it may still
be close.
"""

from __future__ import annotations

import torch

from attnkit.models import Seq2SeqModel
from attnkit.models.config import RNNConfig, TransformerConfig

__all__ = ["decoding_bytes", "format_bytes"]


def decoding_bytes(model: Seq2SeqModel, sentences: int, beam: int, src_len: int, steps: int,
                   need_attention: bool = False) -> int:
    """The bytes decoding ``sentences`` sources of ``src_len`` positions at once with ``beam`` hypotheses
    each (1: greedy) holds for outputs of up to ``steps`` tokens (the module docstring lists what it counts)."""
    cfg = model.config
    item = _itemsize(model)
    vocab = model.tgt_vocab_size
    candidates = min(2 * beam, vocab) if beam > 1 else 1
    per_row = vocab * item + candidates * (item + 8 + 8)
    per_sentence = steps * 8
    layers, heads = 1, 1
    if isinstance(cfg, TransformerConfig):
        layers, heads = cfg.decoder_layers, cfg.heads
        per_row += 2 * layers * cfg.d_model * steps * item
    elif isinstance(cfg, RNNConfig):
        width = cfg.hidden * (2 if cfg.bidirectional else 1)
        per_row += cfg.layers * cfg.hidden * item * (2 if cfg.cell == "lstm" else 1) + width * item
        if model.has_cross_attention:
            per_row += src_len * width * item
    if need_attention and model.has_cross_attention:
        per_sentence += layers * heads * steps * src_len * item
    return sentences * (beam * per_row + per_sentence)


def _itemsize(model: Seq2SeqModel) -> int:
    for p in model.parameters():
        if p.is_floating_point():
            return p.element_size()
    return torch.tensor([], dtype=torch.get_default_dtype()).element_size()


def format_bytes(n: int) -> str:
    """``n`` bytes as the refusals write them: ``1.4 GiB``, ``414.2 KiB``, ``512 bytes``."""
    for unit, name in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if n >= unit:
            return f"{n / unit:.1f} {name}"
    return f"{n} bytes"
