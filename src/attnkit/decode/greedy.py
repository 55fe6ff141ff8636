"""Greedy decoding: at every step take the most likely next token, for a whole batch at once."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from attnkit.models.base import Seq2SeqModel

from .lengths import max_lengths

__all__ = ["Hypothesis", "greedy_decode"]


@dataclass(frozen=True)
class Hypothesis:
    """One output: ``tokens`` (without BOS/EOS), its log-probability ``score`` (summed over the tokens
    and the EOS), and, when asked, ``attention (layers, heads, len(tokens) + 1, s)`` over the source —
    the last row is the step that produced EOS (absent if decoding stopped at ``max_len``).
    ``penalised`` is the score beam search ranks by, ``score / lp`` (see
    :func:`~attnkit.decode.lengths.gnmt_length_penalty`); greedy decoding leaves it ``None``."""

    tokens: list[int]
    score: float
    attention: Tensor | None = None
    penalised: float | None = None


@torch.inference_mode()
def greedy_decode(
    model: Seq2SeqModel,
    src: Tensor,
    src_mask: Tensor | None = None,
    *,
    max_len: int | None = None,
    max_len_ratio: float = 2.0,
    max_len_offset: int = 10,
    need_attention: bool = False,
) -> list[Hypothesis]:
    """Decode ``src (b, s)``; each sentence stops at its EOS or at ``max_len`` tokens
    (default ``max_len_ratio × source length + max_len_offset``)."""
    cfg = model.config
    need_attention = need_attention and model.has_cross_attention  # nothing to record without attention
    state = model.encode(src, src_mask)
    b = src.shape[0]
    limit = max_lengths(src, src_mask, cfg.pad_id, max_len=max_len, max_len_ratio=max_len_ratio,
                        max_len_offset=max_len_offset)
    prev = torch.full((b,), cfg.bos_id, dtype=torch.long, device=src.device)
    tokens = [[] for _ in range(b)]
    scores = torch.zeros(b, dtype=torch.float64)
    maps: list[list[Tensor]] = [[] for _ in range(b)]
    alive = torch.ones(b, dtype=torch.bool)
    for step in range(int(limit.max())):
        logits, state, attention = model.decode_step(state, prev, need_attention=need_attention)
        logp = torch.log_softmax(logits.float(), -1)
        best = logp.argmax(-1)
        for n in alive.nonzero().flatten().tolist():
            if step >= int(limit[n]):
                alive[n] = False
                continue
            scores[n] += float(logp[n, best[n]])
            if need_attention:
                maps[n].append(torch.stack([a[n, :, 0] for a in attention]))  # (layers, heads, s)
            if int(best[n]) == cfg.eos_id:
                alive[n] = False
            else:
                tokens[n].append(int(best[n]))
        if not bool(alive.any()):
            break
        prev = best
    return [
        Hypothesis(tokens[n], float(scores[n]), torch.stack(maps[n], 2) if need_attention and maps[n] else None)
        for n in range(b)
    ]
