"""Batched beam search over the models' one interface (``encode`` + ``decode_step``; see
:func:`attnkit.decode.select.step_top`).

Axes: ``B`` sentences in the batch, ``b`` sentences still being decoded (the active batch), ``k`` beam
size, ``V`` target vocabulary, ``c`` candidates examined per sentence and step (``min(2k, kV)``),
``n`` hypotheses kept per sentence (``n_best``), ``t`` steps taken, ``T`` the longest allowed output,
``l`` decoder layers, ``h`` heads, ``s`` source positions.

The search, per sentence
------------------------
The ``k`` alive prefixes (without EOS) of a sentence live in ``k`` consecutive rows of the decoder
state, whose batch is ``b × k`` rows, sentence-major. At the start one prefix (BOS) has log-prob 0 and
the other ``k - 1`` rows ``-inf``, so the first step cannot yield ``k`` copies of one hypothesis.
Every step:

1. *expand*: every alive prefix × every token, ``k × V`` candidates scored by summed log-prob, of which
   the ``2k`` best are examined (each prefix has one EOS extension, so at least ``k`` of them do not
   end in EOS);
2. *finish*: an EOS candidate ranked among the ``k`` best is a finished hypothesis (its score includes
   the EOS log-prob); at a sentence's last allowed step its alive candidates finish too, without EOS;
3. *prune*: the ``k`` best candidates that do not end in EOS stay alive, so the beam stays full;
4. finished hypotheses are ranked by the penalised score ``log P / lp`` (GNMT, Wu et al. 2016) and
   only the ``n`` best are kept.

With ``k = 1`` and no length penalty this is greedy decoding: the best candidate either ends in EOS
(finished, and then nothing can beat it, see below) or stays alive.

Stopping rule (exact)
---------------------
A sentence leaves the batch when it reaches its length limit, when no alive prefix has a finite score,
or (``early_stop=True``) when its ``n``-th best finished penalised score is at least an upper bound on
the penalised score of anything it could still finish. Log-probs are ≤ 0, so a hypothesis finished
later scores at most ``M``, the best alive log-prob, and its length ``L'`` lies between ``t + 1`` and
the limit; ``M ≤ 0`` and ``lp`` is monotone in the length, so its penalised score is at most
``M / max lp(L')`` over that range. Then nothing finished later can enter the n-best list, and stopping
returns exactly what decoding to the length limit would (ties keep the earlier hypothesis either way).
Without a length penalty the bound is ``M`` itself and sentences stop as soon as they can; with
``alpha > 0`` it assumes the longest output, so sentences run longer — the price of exactness.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from attnkit.layers.checks import check_count
from attnkit.models.base import Seq2SeqModel, reserve_steps

from .greedy import Hypothesis, check_min_len
from .lengths import gnmt_length_penalty, max_lengths
from .select import step_top

__all__ = ["beam_search"]

NEG_INF = float("-inf")


@dataclass
class _Alive:
    """The alive prefixes of the ``b`` active sentences, ``k`` rows each, in decoder-state order."""

    sentence: Tensor  # (b,) position in the whole batch
    scores: Tensor  # (b, k) float64 summed log-probs; -inf marks an empty slot
    tokens: Tensor  # (b·k, t)
    attention: Tensor | None  # (b·k, l, h, t, s), only when asked


@dataclass
class _Top:
    """The ``c`` best candidates of each active sentence, best first."""

    scores: Tensor  # (b, c) float64
    parent: Tensor  # (b, c) which alive slot (0..k-1) they extend
    token: Tensor  # (b, c)


@dataclass
class _Finished:
    """The ``n`` best finished hypotheses of every sentence, best first; ``-inf`` marks an empty slot."""

    penalised: Tensor  # (B, n) float64
    score: Tensor  # (B, n) float64
    length: Tensor  # (B, n) tokens without EOS
    eos: Tensor  # (B, n) bool: ended with EOS (its attention has one row more)
    tokens: Tensor  # (B, n, T)
    attention: Tensor | None = None  # (B, n, l, h, T, s), allocated by the first add() that has it

    @classmethod
    def empty(cls, B: int, n: int, T: int, device: torch.device) -> "_Finished":
        return cls(
            torch.full((B, n), NEG_INF, dtype=torch.float64, device=device),
            torch.full((B, n), NEG_INF, dtype=torch.float64, device=device),
            torch.zeros(B, n, dtype=torch.long, device=device),
            torch.zeros(B, n, dtype=torch.bool, device=device),
            torch.zeros(B, n, T, dtype=torch.long, device=device),
        )

    def add(self, rows: Tensor, penalised: Tensor, score: Tensor, length: Tensor, eos: Tensor,
            tokens: Tensor, attention: Tensor | None) -> None:
        """Merge candidates ``(r, c)`` of the sentences ``rows (r,)`` (``-inf`` penalised = not finished);
        ``tokens (r, c, w)``, ``attention (r, c, l, h, w, s)`` with ``w ≤ T``."""
        n, T = self.penalised.shape[1], self.tokens.shape[2]
        # A stable sort puts the hypotheses already kept first among equals: ties keep the earlier one.
        order = torch.cat([self.penalised[rows], penalised], 1).sort(dim=1, descending=True, stable=True).indices[:, :n]
        pick = (torch.arange(len(rows), device=rows.device)[:, None], order)  # (r, n) into (r, n + c)

        def merge(old: Tensor, new: Tensor) -> Tensor:
            return torch.cat([old[rows], new], 1)[pick]

        self.penalised[rows] = merge(self.penalised, penalised)
        self.score[rows] = merge(self.score, score)
        self.length[rows] = merge(self.length, length)
        self.eos[rows] = merge(self.eos, eos)
        self.tokens[rows] = merge(self.tokens, F.pad(tokens, (0, T - tokens.shape[2])))
        if attention is not None:
            if self.attention is None:
                l, h, s = attention.shape[2], attention.shape[3], attention.shape[5]
                self.attention = attention.new_zeros(self.penalised.shape[0], n, l, h, T, s)
            self.attention[rows] = merge(self.attention, F.pad(attention, (0, 0, 0, T - attention.shape[4])))

    def hypotheses(self) -> list[list[Hypothesis]]:
        penalised, score = self.penalised.tolist(), self.score.tolist()
        length, eos, tokens = self.length.tolist(), self.eos.tolist(), self.tokens.tolist()
        out = []
        for i in range(len(penalised)):
            hyps = []
            for j, p in enumerate(penalised[i]):
                if p == NEG_INF:
                    break  # fewer than n hypotheses exist (a beam wider than the tree of outputs)
                att = None
                if self.attention is not None:
                    att = self.attention[i, j, :, :, : length[i][j] + eos[i][j]].clone()  # (l, h, rows, s)
                hyps.append(Hypothesis(tokens[i][j][: length[i][j]], score[i][j], att, p))
            out.append(hyps)
        return out


def _check(beam_size: int, n_best: int, vocab_size: int) -> None:
    check_count("beam_size", beam_size, least=1)
    if isinstance(n_best, bool) or not isinstance(n_best, int) or not 1 <= n_best <= beam_size:
        raise ValueError(f"n_best must be an integer from 1 to beam_size ({beam_size}), got {n_best!r}")
    if vocab_size < 2:
        raise ValueError(f"beam search needs a target vocabulary of at least 2 tokens, got {vocab_size}")


def _start(B: int, k: int, device: torch.device) -> _Alive:
    scores = torch.full((B, k), NEG_INF, dtype=torch.float64, device=device)
    scores[:, 0] = 0.0  # one live beam per sentence: the others would repeat it
    return _Alive(torch.arange(B, device=device), scores, torch.zeros(B * k, 0, dtype=torch.long, device=device), None)


def _expand(scores: Tensor, part: Tensor, token: Tensor) -> _Top:
    """Score the one-token extensions of the alive prefixes and keep the ``c = 2k`` best of each
    sentence: ``scores (b, k)`` + each row's best log-probs ``part (b·k, c')`` of tokens ``token (b·k, c')``.
    Within one row the order is the log-prob's, so a sentence's c best are among its rows' c best tokens:
    the float64 sums below are then (b, k·c'), not (b, k·V)."""
    b, k = scores.shape
    c = min(2 * k, k * part.shape[1])
    # float64 sums of the float32 log-probs, added in the order greedy decoding adds them.
    cand = (scores.unsqueeze(-1) + part.double().view(b, k, -1)).view(b, -1)  # (b, k·c')
    best, flat = cand.topk(c, dim=1)  # (b, c), best first
    return _Top(best, flat // part.shape[1], token.view(b, -1).gather(1, flat))


def _prune(top: _Top, k: int, eos_id: int) -> Tensor:
    """``(b, k)`` positions in ``top`` of the ``k`` best candidates not ending in EOS, best first."""
    ends = (top.token == eos_id).to(torch.uint8)  # (b, c)
    return ends.sort(dim=1, stable=True).indices[:, :k]  # non-EOS first, each group in rank order


def _grow(alive: _Alive, attention: list[Tensor] | None) -> Tensor | None:
    """``(b·k, l, h, t + 1, s)``: every alive row's attention history with this step's appended."""
    if attention is None:
        return None
    step = torch.stack([a[:, :, 0] for a in attention], 1).unsqueeze(3)  # (b·k, l, h, 1, s)
    return step if alive.attention is None else torch.cat([alive.attention, step], 3)


def _finish(done: _Finished, alive: _Alive, top: _Top, keep: Tensor, last: Tensor, history: Tensor | None,
            lp: Tensor, eos_id: int, pad_id: int) -> None:
    """Move the candidates that finish at this step into ``done``: EOS among the ``k`` best, and at a
    sentence's ``last`` step ``(b,)`` the kept ones (``keep (b, k)``) too."""
    b, c = top.token.shape
    k, t = alive.scores.shape[1], alive.tokens.shape[1]
    ends = top.token == eos_id  # (b, c)
    kept = torch.zeros_like(ends).scatter_(1, keep, True)
    rank_ok = torch.arange(c, device=ends.device) < k
    flags = torch.isfinite(top.scores) & ((ends & rank_ok) | (kept & last[:, None]))  # (b, c)
    if not bool(flags.any()):
        return
    sub = flags.any(1).nonzero().flatten()  # (r,) only the sentences with something finishing
    rows = sub[:, None] * k + top.parent[sub]  # (r, c) rows of the decoder state they extend
    ends, flags = ends[sub], flags[sub]
    tokens = torch.cat([alive.tokens[rows], top.token[sub].masked_fill(ends, pad_id)[..., None]], 2)  # (r, c, t+1)
    score = top.scores[sub]
    penalised = torch.where(flags, score / lp[t + 1], torch.full_like(score, NEG_INF))
    done.add(alive.sentence[sub], penalised, score, t + (~ends).long(), ends, tokens,
             None if history is None else history[rows])


def _stopped(done: _Finished, scores: Tensor, sentence: Tensor, steps: int, limits: Tensor, lp: Tensor,
             early_stop: bool) -> Tensor:
    """``(b,)`` which sentences are finished after ``steps`` steps (the rule in the module docstring);
    ``scores (b, k)`` are the new alive prefixes'."""
    limit = limits[sentence]  # (b,)
    best = scores.max(1).values  # M: (b,)
    stop = (limit <= steps) | (best == NEG_INF)
    if early_stop:
        lengths = torch.arange(len(lp), device=lp.device)
        future = (lengths > steps) & (lengths <= limit[:, None])  # (b, T + 1) lengths still possible
        lp_max = torch.where(future, lp, torch.zeros_like(lp)).amax(1)  # lp > 0; 0 where none (stopped anyway)
        bound = torch.where(lp_max > 0, best / lp_max.clamp_min(1e-300), torch.full_like(best, NEG_INF))
        stop |= done.penalised[sentence, -1] >= bound
    return stop


@torch.inference_mode()
def beam_search(
    model: Seq2SeqModel,
    src: Tensor,
    src_mask: Tensor | None = None,
    *,
    beam_size: int = 4,
    n_best: int = 1,
    length_penalty: float = 0.6,
    max_len_ratio: float = 2.0,
    max_len_offset: int = 10,
    max_len: int | None = None,
    min_len: int = 0,
    need_attention: bool = False,
    early_stop: bool = True,
) -> list[list[Hypothesis]]:
    """Translate ``src (B, s)``: for every sentence its ``n_best`` hypotheses (fewer only if fewer
    outputs exist), best first by ``penalised = score / lp`` with ``lp = ((5 + |Y|) / 6) ** length_penalty``
    and ``|Y|`` the scored tokens, EOS included (``length_penalty=0``: rank by log-prob). Each sentence
    may take ``max_len`` steps, or else ``int(max_len_ratio × source length + max_len_offset)``; a sentence
    allowed no step (``max_len=0``, or a negative ``max_len_offset``) has one output, the empty one:
    ``Hypothesis([], 0.0, None, 0.0)`` (nothing scored; the empty output :func:`greedy_decode` gives it).
    ``need_attention`` records each hypothesis's cross-attention ``(layers, heads, len + 1, s)``, as
    :func:`greedy_decode` does. EOS cannot end a hypothesis before ``min_len`` tokens (its log-prob is
    -inf, as in :func:`greedy_decode`). ``early_stop=False`` decodes every sentence to its length limit (the
    result is the same; see the stopping rule in the module docstring)."""
    cfg = model.config
    check_min_len(min_len)
    need_attention = need_attention and model.has_cross_attention  # nothing to record without attention
    limits = max_lengths(src, src_mask, cfg.pad_id, max_len=max_len, max_len_ratio=max_len_ratio,
                         max_len_offset=max_len_offset, model_steps=model.max_output_steps)
    _check(beam_size, n_best, model.tgt_vocab_size)
    # Sentences allowed no step are left out of the search (they would otherwise take its first step), so
    # the others are searched as they would be without them.
    out = [[Hypothesis([], 0.0, None, 0.0)] for _ in range(src.shape[0])]
    run = (limits >= 1).nonzero().flatten()  # (B',)
    if len(run) < len(limits):
        rows = run.to(src.device)
        src, src_mask, limits = src[rows], None if src_mask is None else src_mask[rows], limits[run]
    if len(run):
        found = _search(model, src, src_mask, limits, beam_size, n_best, length_penalty, min_len, need_attention,
                        early_stop)
        for n, hyps in zip(run.tolist(), found):
            out[n] = hyps
    return out


def _search(model: Seq2SeqModel, src: Tensor, src_mask: Tensor | None, limits: Tensor, k: int, n_best: int,
            length_penalty: float, min_len: int, need_attention: bool, early_stop: bool) -> list[list[Hypothesis]]:
    """The search of :func:`beam_search` for ``src (B, s)`` with ``limits (B,)``, each at least 1."""
    cfg = model.config
    B, device = src.shape[0], src.device
    limits = limits.to(device)
    T = int(limits.max())
    lp = gnmt_length_penalty(torch.arange(T + 1, device=device), length_penalty)  # (T + 1,) by length
    # The first step has one live prefix (BOS) per sentence: it runs on B rows, and the k rows per
    # sentence are made when the state is reordered after it.
    state = model.encode(src, src_mask)
    reserve_steps(state, T)  # the caches allocated once for the longest output
    alive, done = _start(B, k, device), _Finished.empty(B, n_best, T, device)
    for t in range(T):
        prev = alive.tokens[:, -1] if t else torch.full((B,), cfg.bos_id, device=device)
        block_eos = t < min_len  # EOS gets -inf after normalising (the others are not renormalised, as in transformers)
        part, token, state, attention = step_top(model, state, prev, min(2 * k, model.tgt_vocab_size - block_eos),
                                                 cfg.eos_id if block_eos else None,
                                                 need_attention=need_attention)  # (rows, c') best first
        if t == 0:  # rows of the k slots of a sentence, as the later steps have them (only slot 0 is live)
            part, token = part.repeat_interleave(k, 0), token.repeat_interleave(k, 0)
            attention = None if attention is None else [a.repeat_interleave(k, 0) for a in attention]
        top = _expand(alive.scores, part, token)
        keep = _prune(top, k, cfg.eos_id)  # (b, k)
        history = _grow(alive, attention)
        _finish(done, alive, top, keep, limits[alive.sentence] <= t + 1, history, lp, cfg.eos_id, cfg.pad_id)
        scores = top.scores.gather(1, keep)  # (b, k)
        stop = _stopped(done, scores, alive.sentence, t + 1, limits, lp, early_stop)
        if bool(stop.all()):
            break
        go = (~stop).nonzero().flatten()  # (b',) sentences that continue
        rows = (go[:, None] * k + top.parent.gather(1, keep)[go]).flatten()  # (b'·k) one index: beams and shrink
        state = state.reorder(rows // k if t == 0 else rows)  # after the first step: one state row per sentence
        alive = _Alive(
            alive.sentence[go],
            scores[go],
            torch.cat([alive.tokens[rows], top.token.gather(1, keep)[go].reshape(-1, 1)], 1),  # (b'·k, t + 1)
            None if history is None else history[rows],
        )
    return done.hypotheses()
