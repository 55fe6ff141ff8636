"""The three generations of RNN sequence-to-sequence translation, behind one interface.

- ``seq2seq-fixed`` (Sutskever et al. 2014): the encoder squeezes the source into one vector C, which
  only initialises the decoder: ``s_0 = tanh(W C)``, ``s_t = RNN(y_{t-1}, s_{t-1})``.
- ``seq2seq-context`` (Cho et al. 2014, eq. 3–4 of section 2.2): C also enters every step and the
  output: ``s_t = RNN([y_{t-1}; C], s_{t-1})``, ``p(y_t) = softmax(W_o [s_t; y_{t-1}; C])``.
- ``seq2seq-attention`` (Bahdanau et al. 2015, eq. 4–6): a fresh context per output word,
  ``C_t = Σ_j α_tj h_j`` with ``α_t = normalize(score(s_{t-1}, h_·))``, then
  ``s_t = RNN([y_{t-1}; C_t], s_{t-1})``, ``p(y_t) = softmax(W_o [s_t; y_{t-1}; C_t])``.

Axes: ``b`` batch, ``s`` source positions, ``t`` target positions, ``H`` hidden size,
``E`` embedding size, ``K = H × directions`` encoder output size, ``L`` layers.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from attnkit.attention import AttentionOutput, attend
from attnkit.layers import AdditiveAttention, Dropout, LuongAttention, PreparedMemory

from .base import Seq2SeqModel, check_same_batch, check_step_rows, check_tokens
from .config import AttentionConfig, RNNConfig

__all__ = ["RNNSeq2Seq", "RNNState"]


@dataclass(frozen=True)
class RNNState:
    """Decoder state: ``hidden (L, b, H)`` (and ``cell`` for LSTM), the source summary ``C (b, K)``,
    the encoder ``memory`` for attention and the source mask ``(b, s)``."""

    hidden: Tensor
    cell: Tensor | None
    summary: Tensor
    memory: PreparedMemory | Tensor | None
    src_mask: Tensor

    def reorder(self, index: Tensor) -> "RNNState":
        memory = self.memory
        if isinstance(memory, PreparedMemory):
            memory = PreparedMemory(memory.keys[index], memory.values[index], memory.prepared_by)
        elif memory is not None:
            memory = memory[index]
        return RNNState(
            self.hidden[:, index],
            None if self.cell is None else self.cell[:, index],
            self.summary[index],
            memory,
            self.src_mask[index],
        )


class ProjectedDotAttention(nn.Module):
    """A core score (``scaled_dot`` or ``cosine``) between ``W q`` and the keys: the decoder state is
    projected to the key size so that any dot-product score of :mod:`attnkit.attention` applies."""

    def __init__(self, query_dim: int, key_dim: int, score: str, temperature: float, normalize: str):
        super().__init__()
        self.proj = nn.Linear(query_dim, key_dim, bias=False)
        self.score, self.temperature, self.normalize = score, temperature, normalize

    def prepare(self, memory: Tensor) -> Tensor:
        return memory

    def forward(self, query, memory, *, mask=None, need_weights=False, normalize=None, normalize_params=None):
        params = {"temperature": self.temperature} if self.score == "cosine" else {}
        return attend(self.proj(query), memory, memory, score=self.score, score_params=params,
                      normalize=normalize or self.normalize, normalize_params=normalize_params,
                      mask=mask, need_weights=need_weights)


def build_rnn_attention(cfg: AttentionConfig, query_dim: int, key_dim: int) -> nn.Module:
    if cfg.kind == "bahdanau":
        return AdditiveAttention(query_dim, key_dim, cfg.hidden, normalize=cfg.normalize)
    if cfg.kind.startswith("luong-"):
        kind = cfg.kind.removeprefix("luong-")
        if kind == "dot" and query_dim != key_dim:
            raise ValueError(
                f"attention kind 'luong-dot' needs the decoder hidden size ({query_dim}) to equal the encoder "
                f"output size ({key_dim}); use bidirectional: false with equal sizes, or 'luong-general'"
            )
        hidden = cfg.hidden if kind == "concat" else None
        return LuongAttention(query_dim, key_dim, kind=kind, hidden_dim=hidden, normalize=cfg.normalize)
    return ProjectedDotAttention(query_dim, key_dim, cfg.kind, cfg.temperature, cfg.normalize)


class RNNSeq2Seq(Seq2SeqModel):
    def __init__(self, config: RNNConfig, src_vocab_size: int, tgt_vocab_size: int):
        super().__init__()
        c = config
        self.config, self.src_vocab_size, self.tgt_vocab_size = c, src_vocab_size, tgt_vocab_size
        rnn_cls = nn.GRU if c.cell == "gru" else nn.LSTM
        directions = 2 if c.bidirectional else 1
        key_dim = c.hidden * directions  # K
        inner_dropout = c.dropout if c.layers > 1 else 0.0
        self.src_embed = nn.Embedding(src_vocab_size, c.embed_dim, padding_idx=c.pad_id)
        self.tgt_embed = nn.Embedding(tgt_vocab_size, c.embed_dim, padding_idx=c.pad_id)
        self.encoder = rnn_cls(c.embed_dim, c.hidden, c.layers, batch_first=True, dropout=inner_dropout,
                               bidirectional=c.bidirectional)
        self.bridge = nn.Linear(key_dim, c.hidden)  # s_0 = tanh(W C)
        extra = 0 if c.kind == "seq2seq-fixed" else key_dim  # C or C_t beside y_{t-1}
        self.decoder = rnn_cls(c.embed_dim + extra, c.hidden, c.layers, batch_first=True, dropout=inner_dropout)
        self.attention = build_rnn_attention(c.attention, c.hidden, key_dim) if c.kind == "seq2seq-attention" else None
        readout = c.hidden + (0 if c.kind == "seq2seq-fixed" else c.embed_dim + key_dim)
        self.output = nn.Linear(readout, tgt_vocab_size)
        self.dropout = Dropout(c.dropout)  # attnkit's: cheaper draws (and the compiled kernel where it applies)

    @property
    def has_cross_attention(self) -> bool:
        return self.attention is not None

    # ------------------------------------------------------------------------------------- encoder

    def encode(self, src: Tensor, src_mask: Tensor | None = None) -> RNNState:
        src_mask = self._check_src(src, src_mask)
        if src.shape[1] == 0:
            raise ValueError(f"src {tuple(src.shape)} has no positions: the RNN encoder needs at least one token per sentence")
        b = src.shape[0]
        lengths = src_mask.sum(1).clamp_min(1).cpu()
        x = self.dropout(self.src_embed(src))  # (b, s, E)
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        out, final = self.encoder(packed)
        memory, _ = pad_packed_sequence(out, batch_first=True, total_length=src.shape[1])  # (b, s, K)
        h_n = final[0] if isinstance(final, tuple) else final  # (L * dirs, b, H)
        dirs = 2 if self.config.bidirectional else 1
        summary = h_n.view(self.config.layers, dirs, b, -1)[-1].transpose(0, 1).reshape(b, -1)  # C: (b, K)
        hidden = torch.tanh(self.bridge(summary)).unsqueeze(0).repeat(self.config.layers, 1, 1)  # (L, b, H)
        cell = torch.zeros_like(hidden) if self.config.cell == "lstm" else None
        if self.attention is not None:
            mem: PreparedMemory | Tensor | None = self.attention.prepare(memory)
        else:
            mem = None
        return RNNState(hidden, cell, summary, mem, src_mask)

    # ------------------------------------------------------------------------------------- decoder

    def _attend(self, state: RNNState, need_attention: bool) -> AttentionOutput:
        query = state.hidden[-1].unsqueeze(1)  # s_{t-1}: (b, 1, H)
        normalize = self.config.attention.normalize
        params = None
        if normalize == "gumbel":
            if self.training:
                params = {"tau": self.config.attention.temperature}
            else:
                normalize = "hard"  # sampling is for training; inference takes the most likely position
        return self.attention(query, state.memory, mask=state.src_mask.unsqueeze(1), need_weights=need_attention,
                              normalize=normalize, normalize_params=params)

    def decode_step(self, state: RNNState, prev_tokens: Tensor, *, need_attention: bool = False):
        check_tokens("prev_tokens", prev_tokens, self.tgt_vocab_size, 1)
        check_step_rows(prev_tokens, state.src_mask.shape[0])
        y = self.dropout(self.tgt_embed(prev_tokens)).unsqueeze(1)  # (b, 1, E)
        attention = None
        kind = self.config.kind
        if kind == "seq2seq-fixed":
            extra = None
        elif kind == "seq2seq-context":
            extra = state.summary.unsqueeze(1)  # C: (b, 1, K)
        else:
            att = self._attend(state, need_attention)
            extra = att.context  # C_t: (b, 1, K)
            if need_attention:
                attention = [att.weights.unsqueeze(1)]  # (b, 1 head, 1, s)
        x = y if extra is None else torch.cat([y, extra], -1)
        h0 = state.hidden if state.cell is None else (state.hidden, state.cell)
        out, final = self.decoder(x, h0)  # out: (b, 1, H)
        hidden, cell = (final, None) if state.cell is None else final
        logits = self._readout(out, y, extra)[:, 0]  # (b, V)
        return logits, replace(state, hidden=hidden, cell=cell), attention

    def _readout(self, out: Tensor, y: Tensor, extra: Tensor | None) -> Tensor:
        feats = out if extra is None else torch.cat([out, y, extra.expand(-1, out.shape[1], -1)], -1)
        return self.output(self.dropout(feats))

    def forward(self, src: Tensor, tgt_in: Tensor, *, src_mask: Tensor | None = None, need_attention: bool = False):
        """Teacher forcing: ``tgt_in (b, t)`` starts with BOS; returns ``logits (b, t, V)``."""
        check_tokens("tgt_in", tgt_in, self.tgt_vocab_size, 2)
        state = self.encode(src, src_mask)
        check_same_batch(src, tgt_in)
        if tgt_in.shape[1] == 0:  # an empty target: no step
            b, s = state.src_mask.shape
            maps = [state.hidden.new_zeros(b, 1, 0, s)] if need_attention and self.attention is not None else None
            return state.hidden.new_zeros(b, 0, self.tgt_vocab_size), maps
        if self.config.kind == "seq2seq-attention":
            return self._forward_attention(state, tgt_in, need_attention)
        # Without attention the decoder inputs are known in advance: one call over the whole sequence.
        y = self.dropout(self.tgt_embed(tgt_in))  # (b, t, E)
        extra = None
        if self.config.kind == "seq2seq-context":
            extra = state.summary.unsqueeze(1).expand(-1, tgt_in.shape[1], -1)  # (b, t, K)
        x = y if extra is None else torch.cat([y, extra], -1)
        h0 = state.hidden if state.cell is None else (state.hidden, state.cell)
        out, _ = self.decoder(x, h0)  # (b, t, H)
        return self._readout(out, y, extra), None

    def _forward_attention(self, state: RNNState, tgt_in: Tensor, need_attention: bool):
        steps, maps = [], []
        for t in range(tgt_in.shape[1]):
            logits, state, att = self.decode_step(state, tgt_in[:, t], need_attention=need_attention)
            steps.append(logits)
            if need_attention:
                maps.append(att[0])
        logits = torch.stack(steps, 1)  # (b, t, V)
        return logits, ([torch.cat(maps, 2)] if need_attention else None)  # [(b, 1, t, s)]
