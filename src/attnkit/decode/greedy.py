"""Greedy decoding: at every step take the most likely next token, for a whole batch at once."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from attnkit.layers.checks import check_count
from attnkit.models.base import Seq2SeqModel, reserve_steps

from .lengths import max_lengths
from .select import step_top

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


def check_min_len(min_len: int) -> int:
    return check_count("min_len", min_len)


@torch.inference_mode()
def greedy_decode(
    model: Seq2SeqModel,
    src: Tensor,
    src_mask: Tensor | None = None,
    *,
    max_len: int | None = None,
    max_len_ratio: float = 2.0,
    max_len_offset: int = 10,
    min_len: int = 0,
    need_attention: bool = False,
) -> list[Hypothesis]:
    """Decode ``src (b, s)``; each sentence stops at its EOS or at ``max_len`` tokens
    (default ``max_len_ratio × source length + max_len_offset``). EOS cannot be chosen before
    ``min_len`` tokens (its log-prob is set to -inf after the softmax, as transformers' ``min_new_tokens``
    and CTranslate2's ``min_decoding_length`` do).

    The whole batch moves one step per decoder call (or, where the model has them, several steps per call
    of :meth:`~attnkit.models.Seq2SeqModel.decode_greedy_steps`, up to the next sentence to finish); a sentence
    that has finished leaves the decoder state (``state.reorder``), so the last steps cost only what the
    sentences still running need."""
    cfg = model.config
    check_min_len(min_len)
    need_attention = need_attention and model.has_cross_attention  # nothing to record without attention
    b = src.shape[0]
    limit = max_lengths(src, src_mask, cfg.pad_id, max_len=max_len, max_len_ratio=max_len_ratio,
                        max_len_offset=max_len_offset, model_steps=model.max_output_steps).to(src.device)
    T = int(limit.max()) if b else 0
    if T <= 0:  # (a negative max_len_offset can make every limit negative)
        return [Hypothesis([], 0.0, None) for _ in range(b)]
    if int(limit.min()) <= 0:  # some sentences may take no step: empty, as each is when decoded alone
        run = (limit > 0).nonzero().flatten()
        decoded = greedy_decode(model, src[run], None if src_mask is None else src_mask[run], max_len=max_len,
                                max_len_ratio=max_len_ratio, max_len_offset=max_len_offset, min_len=min_len,
                                need_attention=need_attention)
        out = [Hypothesis([], 0.0, None) for _ in range(b)]
        for n, hyp in zip(run.tolist(), decoded):
            out[n] = hyp
        return out
    # Each step's token and log-prob of every running sentence, written as they come; a sentence's output and
    # score are read from its row once decoding is over (few tensor operations per step: see the loop).
    chosen = torch.empty((b, T), dtype=torch.long, device=src.device)
    chosen_logp = torch.empty((b, T), dtype=torch.float64, device=src.device)  # any float dtype, exactly
    last = [T - 1] * b  # the step at which each sentence finished (its EOS, or its length limit)
    maps: Tensor | None = None  # (b, layers, heads, T, s), allocated at the first step
    state = model.encode(src, src_mask)
    reserve_steps(state, T)  # the caches allocated once for the longest output
    rows = torch.arange(b, device=src.device)  # the sentences still in the decoder state
    everyone = True  # rows is still all of them
    limits = limit.tolist()
    next_limit = min(limits)  # the first step + 1 at which a running sentence reaches its limit
    prev = torch.full((b,), cfg.bos_id, dtype=torch.long, device=src.device)
    step = 0
    while step < T:
        # Up to the first step at which a running sentence reaches its limit, the steps run in one compiled
        # call where the model has one (stopping at the first EOS); otherwise one step: the most likely token
        # and its log-prob (rows,); EOS gets -inf after normalising before min_len, as transformers does.
        run = None
        if not need_attention and isinstance(model, Seq2SeqModel):  # (objects that only act as models step)
            run = model.decode_greedy_steps(state, prev, next_limit - step, cfg.eos_id, max(0, min_len - step))
        at = slice(None) if everyone else rows  # a slice writes in place where an index would scatter
        if run is not None:
            tokens, logps, state = run  # (rows, k)
            k = tokens.shape[1]
            chosen[at, step:step + k] = tokens
            chosen_logp[at, step:step + k] = logps if everyone else logps.double()  # an index needs one dtype
            step += k - 1  # the run's last step is this iteration's step
            best = tokens[:, -1]
        else:
            best_logp, best, state, attention = step_top(model, state, prev, 1,
                                                         cfg.eos_id if step < min_len else None,
                                                         need_attention=need_attention)
            best = best[:, 0]
            chosen[at, step] = best
            chosen_logp[at, step] = best_logp[:, 0] if everyone else best_logp[:, 0].double()
            if need_attention:
                att = torch.stack([a[:, :, 0] for a in attention], 1)  # (rows, layers, heads, s)
                if maps is None:
                    maps = att.new_zeros(b, att.shape[1], att.shape[2], T, att.shape[3])
                maps[at, :, :, step] = att
        done = best == cfg.eos_id
        if step + 1 >= next_limit:
            done |= limit[at] <= step + 1
        if not bool(done.any()):
            prev = best
            step += 1
            continue
        flags = done.tolist()
        running = []
        for n, flag in zip(rows.tolist(), flags):
            if flag:
                last[n] = step
            else:
                running.append(n)
        if not running:
            break
        keep = (~done).nonzero().flatten()
        state, rows, prev = state.reorder(keep), rows[keep], best[keep]
        next_limit = min(limits[n] for n in running)
        everyone = False
        step += 1
    out = []
    tokens, logps = chosen.tolist(), chosen_logp.tolist()
    for n in range(b):
        steps = last[n] + 1
        eos = tokens[n][steps - 1] == cfg.eos_id
        length = steps - eos  # tokens without the EOS
        score = 0.0
        for value in logps[n][:steps]:  # summed in step order in double precision, as the steps come
            score += value
        att = maps[n, :, :, :steps].clone() if maps is not None else None
        out.append(Hypothesis(tokens[n][:length], score, att))
    return out
