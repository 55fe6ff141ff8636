"""Tests of attnkit.layers against independent implementations and invariants."""

from __future__ import annotations

import pytest
import torch

from attnkit.attention import padding_mask, sparsemax
from attnkit.layers import AdditiveAttention, LuongAttention, PreparedMemory

# ------------------------------------------------------------------------------ RNN attention helpers


def _softmax_masked(scores: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, dim=-1)


def _bahdanau_by_loops(s, h, w_q, w_k, v):
    """e_ij = vᵀ tanh(W_q s_i + W_k h_j), one (i, j) pair at a time, from the paper's formula."""
    b, i, _ = s.shape
    j = h.shape[1]
    e = torch.empty(b, i, j, dtype=s.dtype)
    for bb in range(b):
        for ii in range(i):
            for jj in range(j):
                e[bb, ii, jj] = v @ torch.tanh(w_q @ s[bb, ii] + w_k @ h[bb, jj])
    return e


def _luong_by_loops(kind, s, h, mod):
    b, i, _ = s.shape
    j = h.shape[1]
    e = torch.empty(b, i, j, dtype=s.dtype)
    for bb in range(b):
        for ii in range(i):
            for jj in range(j):
                if kind == "dot":
                    e[bb, ii, jj] = s[bb, ii] @ h[bb, jj]
                elif kind == "general":
                    e[bb, ii, jj] = s[bb, ii] @ mod.weight @ h[bb, jj]
                else:  # concat: v_aᵀ tanh(W_a [h_t; h̄_s])
                    e[bb, ii, jj] = mod.v @ torch.tanh(mod.weight @ torch.cat([s[bb, ii], h[bb, jj]]))
    return e


@pytest.fixture
def source():
    torch.manual_seed(1)
    b, j, dq, dk = 3, 6, 5, 7
    query = torch.randn(b, 2, dq, dtype=torch.float64)
    memory = torch.randn(b, j, dk, dtype=torch.float64)
    mask = padding_mask([6, 3, 1], ndim=3)  # (b, 1, j)
    return query, memory, mask


# ------------------------------------------------------------------------------ AdditiveAttention


def test_additive_matches_the_paper_formula(source):
    query, memory, mask = source
    attn = AdditiveAttention(5, 7, hidden_dim=4).double()
    out = attn(query, memory, mask=mask, need_weights=True)
    expected_w = _softmax_masked(_bahdanau_by_loops(query, memory, attn.w_q, attn.w_k, attn.v), mask)
    torch.testing.assert_close(out.weights, expected_w)
    torch.testing.assert_close(out.context, expected_w @ memory)
    assert out.context.shape == (3, 2, 7) and out.weights.shape == (3, 2, 6)
    # masked keys get exactly zero weight; rows sum to one
    assert (out.weights[1, :, 3:] == 0).all() and (out.weights[2, :, 1:] == 0).all()
    torch.testing.assert_close(out.weights.sum(-1), torch.ones(3, 2, dtype=torch.float64))


def test_additive_prepared_memory_equals_raw_memory_one_step_at_a_time(source):
    query, memory, mask = source
    attn = AdditiveAttention(5, 7).double()
    full = attn(query, memory, mask=mask, need_weights=True)
    prepared = attn.prepare(memory)
    assert isinstance(prepared, PreparedMemory) and prepared.keys.shape == (3, 6, 5)
    for t in range(query.shape[1]):  # decoding: one query (i = 1) at a time
        step = attn(query[:, t : t + 1], prepared, mask=mask, need_weights=True)
        torch.testing.assert_close(step.weights, full.weights[:, t : t + 1])
        torch.testing.assert_close(step.context, full.context[:, t : t + 1])


def test_additive_gradients_reach_every_parameter_through_prepared_memory(source):
    query, memory, mask = source
    attn = AdditiveAttention(5, 7).double()
    attn(query, attn.prepare(memory), mask=mask).context.sum().backward()
    for name, p in attn.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_additive_separate_values_and_no_weights_unless_asked(source):
    query, memory, mask = source
    attn = AdditiveAttention(5, 7).double()
    values = torch.randn(3, 6, 2, dtype=torch.float64)
    with_w = attn(query, memory, mask=mask, value=values, need_weights=True)
    without = attn(query, memory, mask=mask, value=values)
    assert without.weights is None
    torch.testing.assert_close(without.context, with_w.weights @ values)


def test_normalize_override_uses_the_core_normaliser(source):
    query, memory, mask = source
    attn = AdditiveAttention(5, 7).double()
    out = attn(query, memory, mask=mask, need_weights=True, normalize="sparsemax")
    scores = _bahdanau_by_loops(query, memory, attn.w_q, attn.w_k, attn.v)
    torch.testing.assert_close(out.weights, sparsemax(scores, mask))
    hard = attn(query, memory, mask=mask, need_weights=True, normalize="hard").weights
    assert ((hard == 0) | (hard == 1)).all()
    torch.testing.assert_close(hard.sum(-1), torch.ones(3, 2, dtype=torch.float64))
    gen = torch.Generator().manual_seed(0)
    g = attn(query, memory, mask=mask, need_weights=True, normalize="gumbel", normalize_params={"generator": gen})
    assert (g.weights[2, :, 1:] == 0).all()  # a sample never lands on a padded key


# ------------------------------------------------------------------------------ LuongAttention


@pytest.mark.parametrize("kind", ["dot", "general", "concat"])
def test_luong_matches_the_paper_formula_and_prepared_memory(kind, source):
    query, memory, mask = source
    if kind == "dot":
        query = torch.randn(3, 2, 7, dtype=torch.float64)
    attn = LuongAttention(query.shape[-1], 7, kind=kind).double()
    out = attn(query, memory, mask=mask, need_weights=True)
    expected_w = _softmax_masked(_luong_by_loops(kind, query, memory, attn), mask)
    torch.testing.assert_close(out.weights, expected_w)
    torch.testing.assert_close(out.context, expected_w @ memory)
    prepared = attn.prepare(memory)
    step = attn(query[:, 1:], prepared, mask=mask, need_weights=True)
    torch.testing.assert_close(step.weights, expected_w[:, 1:])
    # without weights the prepared 'general'/'dot' path may run on the fused kernel: same context
    torch.testing.assert_close(attn(query[:, 1:], prepared, mask=mask).context, expected_w[:, 1:] @ memory)


def test_luong_concat_owns_one_matrix_on_the_concatenation():
    attn = LuongAttention(4, 6, kind="concat", hidden_dim=3)
    assert dict((n, tuple(p.shape)) for n, p in attn.named_parameters()) == {"weight": (3, 10), "v": (3,)}
    assert [n for n, _ in LuongAttention(4, kind="dot").named_parameters()] == []


# ------------------------------------------------------------------------------ RNN attention errors


def test_rnn_attention_errors_are_clear(source):
    query, memory, mask = source
    attn = AdditiveAttention(5, 7).double()
    with pytest.raises(ValueError, match="query_dim=5"):
        attn(torch.randn(3, 1, 4, dtype=torch.float64), memory)
    with pytest.raises(ValueError, match="key_dim=7"):
        attn(query, torch.randn(3, 6, 8, dtype=torch.float64))
    with pytest.raises(ValueError, match="batch size"):
        attn(query[:2], attn.prepare(memory))
    with pytest.raises(ValueError, match="shape"):
        attn(query[0], memory)
    with pytest.raises(ValueError, match="cannot broadcast"):
        attn(query, memory, mask=torch.ones(3, 1, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="prepared by AdditiveAttention"):
        LuongAttention(5, 7).double()(query, attn.prepare(memory))
    with pytest.raises(ValueError, match="query_dim == key_dim"):
        LuongAttention(5, 7, kind="dot")
    with pytest.raises(ValueError, match="unknown Luong score kind"):
        LuongAttention(5, 7, kind="bilinear")
    with pytest.raises(ValueError, match="dropout"):
        AdditiveAttention(5, 7, dropout=1.5)
