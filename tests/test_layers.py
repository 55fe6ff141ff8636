"""Tests of attnkit.layers against independent implementations and invariants."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from attnkit.attention import causal_mask, padding_mask, sparsemax
from attnkit.layers import (
    AdditiveAttention,
    BlockConfig,
    DecoderBlock,
    EncoderBlock,
    FeedForward,
    KVCache,
    LearnedPositionalEncoding,
    LuongAttention,
    MultiHeadAttention,
    PreparedMemory,
    SinusoidalPositionalEncoding,
    StaticKVCache,
    sinusoidal_table,
)
from models_helpers import copy_torch_block

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


# ------------------------------------------------------------------------------ MultiHeadAttention

TOL = dict(atol=1e-5, rtol=0)


def _max_diff(a, b) -> float:
    return (a - b).abs().max().item()


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("bias", [True, False])
def test_mha_equals_torch_with_key_padding_and_causal_masks(batch_first, bias):
    torch.manual_seed(2)
    b, n, d, h = 3, 7, 32, 4
    ref = nn.MultiheadAttention(d, h, bias=bias, batch_first=batch_first).eval()
    ours = MultiHeadAttention.from_torch(ref).eval()
    x = torch.randn(b, n, d)
    lengths = [7, 5, 2]
    keep = padding_mask(lengths)  # (b, 1, 1, j), True = may attend
    causal = causal_mask(n)  # (i, j)
    x_ref = x if batch_first else x.transpose(0, 1)
    # PyTorch's masks mean the opposite: True = may NOT attend.
    want, want_w = ref(
        x_ref, x_ref, x_ref, key_padding_mask=~keep[:, 0, 0], attn_mask=~causal, average_attn_weights=False
    )
    want = want if batch_first else want.transpose(0, 1)
    got = ours(x, mask=keep, causal=True, need_weights=True)
    assert got.weights.shape == (b, h, n, n)
    assert _max_diff(got.context, want) <= 1e-5 and _max_diff(got.weights, want_w) <= 1e-5
    # without weights the fused kernel runs: same output
    assert _max_diff(ours(x, mask=keep & causal).context, want) <= 1e-5
    # averaged only when asked
    torch.testing.assert_close(ours(x, mask=keep, causal=True, need_weights=True, average_heads=True).weights,
                               want_w.mean(1), **TOL)


def test_mha_cross_attention_with_kdim_vdim_equals_torch():
    torch.manual_seed(3)
    ref = nn.MultiheadAttention(24, 6, kdim=10, vdim=14, batch_first=True).eval()
    ours = MultiHeadAttention.from_torch(ref)
    q, k, v = torch.randn(2, 4, 24), torch.randn(2, 9, 10), torch.randn(2, 9, 14)
    keep = padding_mask([9, 6])
    want, want_w = ref(q, k, v, key_padding_mask=~keep[:, 0, 0], average_attn_weights=False)
    got = ours(q, k, v, mask=keep[:, 0], need_weights=True)  # a (b, 1, j) mask gets its head axis
    assert _max_diff(got.context, want) <= 1e-5 and _max_diff(got.weights, want_w) <= 1e-5
    static = ours.static_cache(k, v)
    assert _max_diff(ours(q, mask=keep, cache=static).context, want) <= 1e-5


def test_mha_incremental_decoding_with_cache_equals_full_causal_attention():
    torch.manual_seed(4)
    mha = MultiHeadAttention(32, 4).eval()
    x = torch.randn(2, 9, 32)
    full = mha(x, causal=True, need_weights=True)
    cache = KVCache()
    steps, weights = [], []
    # a 3-position prompt at once (causal mask aligned to the end of the cache), then one step at a time
    out = mha(x[:, :3], causal=True, cache=cache, need_weights=True)
    steps.append(out.context)
    weights.append(out.weights)
    for t in range(3, 9):
        out = mha(x[:, t : t + 1], cache=cache, need_weights=True)  # one query sees every cached key
        steps.append(out.context)
        weights.append(out.weights)
    assert len(cache) == 9 and cache.keys.shape == (2, 4, 9, 8)
    assert _max_diff(torch.cat(steps, dim=1), full.context) <= 1e-5
    for t in range(3, 9):
        assert _max_diff(weights[t - 2][..., 0, :], full.weights[..., t, : t + 1]) <= 1e-5


def test_mha_self_attention_is_permutation_equivariant():
    mha = MultiHeadAttention(16, 2).eval()
    x = torch.randn(2, 6, 16)
    perm = torch.randperm(6)
    torch.testing.assert_close(mha(x[:, perm]).context, mha(x).context[:, perm], **TOL)


def test_mha_other_scores_and_normalisers_go_through_the_core():
    mha = MultiHeadAttention(16, 2, normalize="sparsemax").eval()
    out = mha(torch.randn(2, 5, 16), mask=padding_mask([5, 2]), need_weights=True)
    torch.testing.assert_close(out.weights.sum(-1), torch.ones(2, 2, 5))
    assert (out.weights[1, :, :, 2:] == 0).all()
    with pytest.raises(ValueError, match="AdditiveAttention or LuongAttention"):
        MultiHeadAttention(16, 2, score="additive")
    with pytest.raises(ValueError, match="cannot compute"):
        MultiHeadAttention(16, 2, backend="sdpa")(torch.randn(1, 3, 16), need_weights=True)


@pytest.mark.parametrize("build, says", [
    (lambda: MultiHeadAttention(True, 1), "d_model must be a positive integer, got True"),
    (lambda: AdditiveAttention(True, 7), "query_dim must be a positive integer, got True"),
    (lambda: AdditiveAttention(5, 7, hidden_dim=0), "hidden_dim must be a positive integer, got 0"),
    (lambda: LuongAttention(5, True), "key_dim must be a positive integer, got True"),
    (lambda: LuongAttention(5, kind="concat", hidden_dim=2.0), "hidden_dim must be a positive integer, got 2.0"),
    (lambda: BlockConfig(d_model=8, num_heads=2, d_ff=-1), "BlockConfig.d_ff must be a positive integer, got -1"),
    (lambda: KVCache().reserve(-1), "positions must be a non-negative integer, got -1"),
    (lambda: SinusoidalPositionalEncoding(8)(torch.randn(1, 2, 8), offset=False),
     "offset must be a non-negative integer, got False"),
])
def test_sizes_and_counts_must_be_whole_numbers_and_bools_are_not(build, says):
    # One check for all of them: a bool is an int to Python, but True where a size is meant is a mistake
    # (the Bahdanau and Luong layers used to take it as 1).
    with pytest.raises(ValueError) as caught:
        build()
    assert str(caught.value) == says


def test_mha_errors_are_clear():
    with pytest.raises(ValueError, match="does not divide d_model=10"):
        MultiHeadAttention(10, 3)
    with pytest.raises(ValueError, match="num_heads must be a positive integer"):
        MultiHeadAttention(10, 0)
    mha = MultiHeadAttention(16, 4)
    with pytest.raises(ValueError, match="d_model=16"):
        mha(torch.randn(2, 3, 12))
    with pytest.raises(ValueError, match="batch first"):
        mha(torch.randn(3, 16))
    with pytest.raises(ValueError, match="kdim=16"):
        mha(torch.randn(2, 3, 16), torch.randn(2, 4, 8))
    with pytest.raises(ValueError, match="same batch size"):
        mha(torch.randn(2, 3, 16), torch.randn(1, 4, 16))
    cache = KVCache()
    mha(torch.randn(2, 1, 16), cache=cache)
    with pytest.raises(ValueError, match="cache mismatch.*batch of 2"):
        mha(torch.randn(3, 1, 16), cache=cache)
    with pytest.raises(ValueError, match="cache mismatch.*4 heads of key dim 4.*2 heads of dim 8"):
        MultiHeadAttention(16, 2)(torch.randn(2, 1, 16), cache=cache)
    with pytest.raises(ValueError, match="cache mismatch"):
        cache.append(torch.randn(2, 4, 1, 5), torch.randn(2, 4, 1, 5))
    static = mha.static_cache(torch.randn(2, 5, 16))
    with pytest.raises(ValueError, match="pass key=None"):
        mha(torch.randn(2, 1, 16), torch.randn(2, 5, 16), cache=static)
    with pytest.raises(ValueError, match="cache mismatch.*batch"):
        mha(torch.randn(1, 1, 16), cache=static)
    with pytest.raises(ValueError, match=r"\(b, h, t, d\)"):
        StaticKVCache(torch.randn(2, 5, 16), torch.randn(2, 5, 16))


def test_from_torch_refuses_what_it_cannot_copy():
    with pytest.raises(ValueError, match="add_bias_kv"):
        MultiHeadAttention.from_torch(nn.MultiheadAttention(8, 2, add_bias_kv=True))
    with pytest.raises(TypeError, match="nn.MultiheadAttention"):
        MultiHeadAttention.from_torch(nn.Linear(8, 8))


def test_cache_reorder_keeps_the_chosen_rows():
    mha = MultiHeadAttention(16, 4).eval()
    x = torch.randn(3, 4, 16)
    cache = KVCache()
    mha(x[:, :3], causal=True, cache=cache)
    cache.reorder(torch.tensor([2, 0]))
    step = mha(x[[2, 0], 3:], cache=cache).context
    torch.testing.assert_close(step, mha(x[[2, 0]], causal=True).context[:, 3:], **TOL)


def test_cache_buffers_grow_and_reorder_like_concatenation_and_gather():
    """The buffered cache against the plain definition: cat for append, index_select for reorder."""
    g = torch.Generator().manual_seed(5)
    cache, ref_k, ref_v = KVCache(), None, None
    for step in range(40):  # past several doublings of the buffers
        k, v = torch.randn(6, 2, 1, 3, generator=g), torch.randn(6, 2, 1, 3, generator=g)
        keys, values = cache.append(k, v)
        ref_k = k if ref_k is None else torch.cat([ref_k, k], 2)
        ref_v = v if ref_v is None else torch.cat([ref_v, v], 2)
        assert torch.equal(keys, ref_k) and torch.equal(values, ref_v) and len(cache) == step + 1
        assert cache.capacity >= len(cache)
        if step % 3 == 1:  # a beam-like reorder: most rows stay, one row copies another
            index = torch.arange(6)
            index[step % 6] = (step + 2) % 6
        elif step % 3 == 2:  # a general permutation: every row moves
            index = torch.randperm(6, generator=g)
        else:
            continue
        cache.reorder(index)
        ref_k, ref_v = ref_k.index_select(0, index), ref_v.index_select(0, index)
        assert torch.equal(cache.keys, ref_k) and torch.equal(cache.values, ref_v)
    before = cache.keys.clone()
    picked = cache.select(torch.tensor([5, 5, 0]))  # a new cache; this one unchanged
    assert torch.equal(picked.keys, before[[5, 5, 0]]) and torch.equal(cache.keys, before)
    picked.append(torch.zeros(3, 2, 1, 3), torch.zeros(3, 2, 1, 3))
    assert torch.equal(cache.keys, before)


def test_cache_reserve_allocates_once_and_keeps_the_contents():
    g = torch.Generator().manual_seed(6)
    cache = KVCache()
    cache.reserve(50)
    k, v = torch.randn(3, 2, 4, 5, generator=g), torch.randn(3, 2, 4, 5, generator=g)
    cache.append(k, v)
    assert cache.capacity == 50
    buffer = cache._buffers[0].data_ptr()
    for _ in range(46):  # up to the reserved 50 positions: never a new buffer
        cache.append(torch.randn(3, 2, 1, 5, generator=g), torch.randn(3, 2, 1, 5, generator=g))
    assert len(cache) == 50 and cache._buffers[0].data_ptr() == buffer
    assert torch.equal(cache.keys[:, :, :4], k) and torch.equal(cache.values[:, :, :4], v)
    assert cache.select(torch.tensor([2, 0])).capacity == 50
    before = cache.keys.clone()
    cache.reserve(80)  # more room later: the cached positions move into the larger buffers
    assert cache.capacity == 80 and torch.equal(cache.keys, before)
    with pytest.raises(ValueError, match="positions"):
        cache.reserve(-1)


def test_cache_room_for_and_advance_count_positions_written_in_place():
    """A kernel writes the new position into the buffers itself: the cache then holds what append gives."""
    g = torch.Generator().manual_seed(8)
    written, appended = KVCache(), KVCache()
    for _ in range(20):  # past the first capacity (16): the buffers grow and keep what they held
        k, v = torch.randn(2, 3, 1, 4, generator=g), torch.randn(2, 3, 1, 4, generator=g)
        kb, vb, t = written.room_for(1, torch.empty(2, 3, 0, 4))
        assert t == len(written) and kb.is_contiguous() and kb.shape[2] > t
        kb[:, :, t : t + 1], vb[:, :, t : t + 1] = k, v
        keys, values = written.advance(1)
        appended.append(k, v)
        assert torch.equal(keys, appended.keys) and torch.equal(values, appended.values)
    with pytest.raises(ValueError, match="do not fit"):
        written.advance(written.capacity)
    with pytest.raises(ValueError, match="cache mismatch"):
        written.room_for(1, torch.empty(2, 5, 0, 4))  # another head count
    with pytest.raises(RuntimeError, match="room_for first"):
        KVCache().advance(1)
    with pytest.raises(RuntimeError, match="autograd"):
        KVCache().room_for(1, torch.empty(2, 3, 0, 4, requires_grad=True))


def test_cache_under_autograd_keeps_gradients_flowing():
    x = torch.randn(2, 2, 1, 3, requires_grad=True)
    cache = KVCache()
    cache.append(x, x)
    keys, _ = cache.append(x * 2, x * 2)
    cache.reorder(torch.tensor([1, 0]))
    cache.keys.sum().backward()
    assert torch.equal(x.grad, torch.full_like(x, 3.0))
    assert torch.equal(keys, torch.cat([x, x * 2], 2))


# ------------------------------------------------------------------------------ positions, feed-forward


def test_sinusoidal_encoding_is_the_papers_formula_at_any_offset():
    pe = SinusoidalPositionalEncoding(6)
    x = torch.zeros(1, 4, 6)
    table = pe(x, offset=3)[0]
    for p in range(4):
        pos = p + 3
        for k in range(3):
            assert table[p, 2 * k].item() == pytest.approx(math.sin(pos / 10000 ** (2 * k / 6)), abs=1e-6)
            assert table[p, 2 * k + 1].item() == pytest.approx(math.cos(pos / 10000 ** (2 * k / 6)), abs=1e-6)
    assert SinusoidalPositionalEncoding(5)(torch.zeros(1, 2, 5)).shape == (1, 2, 5)  # odd width
    # rows served from the kept table (growing step by step, as decoding asks) and beyond it are the
    # function's rows for those positions, exactly
    pe = SinusoidalPositionalEncoding(8)
    cap = pe.CACHED_POSITIONS
    for offset, n in ((0, 1), (1, 1), (70, 3), (0, 200), (cap - 2, 2), (cap - 1, 5), (cap + 10, 4)):
        expected = sinusoidal_table(torch.arange(offset, offset + n), 8).float()
        assert torch.equal(pe.encoding(n, offset), expected)
    assert max(t.shape[0] for t in pe._tables.values()) <= cap


def test_learned_encoding_adds_its_rows_and_refuses_positions_beyond_max_len():
    pe = LearnedPositionalEncoding(8, 4)
    x = torch.randn(2, 3, 4)
    torch.testing.assert_close(pe(x, offset=5), x + pe.embedding.weight[5:8])
    with pytest.raises(ValueError, match="exceed the 8 learned positions"):
        pe(x, offset=6)
    with pytest.raises(ValueError, match="d_model=4"):
        pe(torch.randn(2, 3, 5))


def test_feed_forward_is_w2_act_w1():
    ffn = FeedForward(4, 8, activation="gelu")
    x = torch.randn(2, 3, 4)
    want = torch.nn.functional.gelu(x @ ffn.linear1.weight.T + ffn.linear1.bias) @ ffn.linear2.weight.T + ffn.linear2.bias
    torch.testing.assert_close(ffn(x), want)
    with pytest.raises(ValueError, match="unknown activation"):
        FeedForward(4, 8, activation="swishy")


# ------------------------------------------------------------------------------ Transformer blocks


@pytest.mark.parametrize("norm", ["pre", "post"])
def test_encoder_block_equals_torch_transformer_encoder_layer(norm):
    torch.manual_seed(5)
    cfg = BlockConfig(d_model=32, num_heads=4, d_ff=64, activation="gelu", norm=norm)
    ref = nn.TransformerEncoderLayer(32, 4, 64, activation="gelu", batch_first=True, norm_first=norm == "pre").eval()
    ours = EncoderBlock(cfg).eval()
    copy_torch_block(ours, ref, cross=False)
    x = torch.randn(3, 6, 32)
    keep = padding_mask([6, 4, 1])
    want = ref(x, src_key_padding_mask=~keep[:, 0, 0])
    got = ours(x, mask=keep, need_weights=True)
    assert _max_diff(got.hidden, want) <= 1e-5
    assert got.self_weights.shape == (3, 4, 6, 6) and (got.self_weights[2, ..., 1:] == 0).all()


@pytest.mark.parametrize("norm", ["pre", "post"])
def test_decoder_block_equals_torch_and_its_cache_equals_full_decoding(norm):
    torch.manual_seed(6)
    cfg = BlockConfig(d_model=32, num_heads=4, d_ff=64, norm=norm)
    ref = nn.TransformerDecoderLayer(32, 4, 64, batch_first=True, norm_first=norm == "pre").eval()
    ours = DecoderBlock(cfg).eval()
    copy_torch_block(ours, ref, cross=True)
    y, memory = torch.randn(2, 5, 32), torch.randn(2, 7, 32)
    keep = padding_mask([7, 3])
    want = ref(y, memory, tgt_mask=~causal_mask(5), memory_key_padding_mask=~keep[:, 0, 0])
    full = ours(y, memory, memory_mask=keep)
    assert _max_diff(full.hidden, want) <= 1e-5
    cache = ours.new_cache(memory)
    steps = [ours(y[:, t : t + 1], memory_mask=keep, cache=cache).hidden for t in range(5)]
    assert len(cache) == 5
    assert _max_diff(torch.cat(steps, dim=1), full.hidden) <= 1e-5


def test_block_config_and_decoder_arguments_are_checked():
    with pytest.raises(ValueError, match="does not divide"):
        BlockConfig(d_model=30, num_heads=4, d_ff=8)
    with pytest.raises(ValueError, match="norm must be 'pre' or 'post'"):
        BlockConfig(d_model=32, num_heads=4, d_ff=8, norm="sandwich")
    block = DecoderBlock(BlockConfig(d_model=16, num_heads=2, d_ff=8))
    memory = torch.randn(1, 3, 16)
    with pytest.raises(ValueError, match="pass memory=None"):
        block(torch.randn(1, 1, 16), memory, cache=block.new_cache(memory))
    with pytest.raises(ValueError, match="needs the encoder memory"):
        block(torch.randn(1, 1, 16))


def test_grouped_static_cache_equals_one_memory_row_per_query_row():
    """Beam search's layout: k rows per sentence share one memory row. The grouped cache gives the
    same outputs and weights as the memory repeated k times, and reorder() finds the grouping."""
    torch.manual_seed(0)
    mha = MultiHeadAttention(16, 4).eval()
    n, k, j = 3, 4, 5
    memory = torch.randn(n, j, 16)
    mask = torch.ones(n, 1, j, dtype=torch.bool)
    mask[1, 0, 3:] = False  # sentence 1 has a padded source
    base = mha.static_cache(memory)
    rows = torch.arange(n).repeat_interleave(k)  # (n·k,) sentence-major
    grouped = base.reorder(rows)
    assert grouped.group == k and grouped.keys.shape[0] == n and grouped.keys.data_ptr() == base.keys.data_ptr()
    plain = StaticKVCache(base.keys[rows], base.values[rows])
    q = torch.randn(n * k, 1, 16)
    a = mha(q, mask=mask[rows], cache=grouped, need_weights=True)
    b = mha(q, mask=mask[rows], cache=plain, need_weights=True)
    torch.testing.assert_close(a.context, b.context, atol=1e-6, rtol=0)
    torch.testing.assert_close(a.weights, b.weights, atol=1e-6, rtol=0)
    assert bool((a.weights[k:2 * k, :, :, 3:] == 0).all())  # sentence 1's padding
    # beams move within their sentence and sentence 0 finishes: still grouped, memory rows 1 and 2
    index = torch.tensor([4, 4, 5, 7, 8, 9, 9, 9])
    moved = grouped.reorder(index)
    assert moved.group == k and torch.equal(moved.keys, base.keys[1:])
    torch.testing.assert_close(mha(q[:8], mask=mask[index // k], cache=moved).context,
                               mha(q[:8], mask=mask[index // k], cache=StaticKVCache(base.keys[index // k], base.values[index // k])).context,
                               atol=1e-6, rtol=0)
    # rows that do not form equal runs fall back to one memory row each
    odd = grouped.reorder(torch.tensor([0, 4, 5]))
    assert odd.group == 1 and torch.equal(odd.keys, base.keys[torch.tensor([0, 1, 1])])
    # a mask that differs inside a group: the layer expands the memory and gives the exact answer
    uneven = mask[rows].clone()
    uneven[0, 0, 0] = False
    torch.testing.assert_close(mha(q, mask=uneven, cache=grouped).context, mha(q, mask=uneven, cache=plain).context,
                               atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="batch of 12, the query a batch of 5"):
        mha(q[:5], cache=grouped)
    with pytest.raises(ValueError, match="group"):
        StaticKVCache(base.keys, base.values, 0)


def test_dropout_drops_p_of_the_elements_independently_and_scales_the_rest():
    from attnkit.layers import Dropout, dropout

    torch.manual_seed(0)
    x = torch.rand(1000, 1000) + 0.5  # no zeros of its own
    for p in (0.1, 0.3):
        y = dropout(x, p)
        kept = y != 0
        # 10^6 Bernoulli draws: the standard deviation of the fraction is <= 5e-4
        assert abs((1 - kept.float().mean().item()) - p) < 2.5e-3
        torch.testing.assert_close(y[kept], x[kept] / (1 - p))
        # neighbours (which share a 64-bit draw) are independent: P(both dropped) = p^2
        both = (~kept[:, :-1] & ~kept[:, 1:]).float().mean().item()
        assert abs(both - p * p) < 2.5e-3
    for p in (0.01, 0.1, 0.5, 0.9):  # the mask is exactly 0 or 1/(1 - p), as nn.Dropout's
        values = torch.unique(dropout(torch.ones(200, 200), p))
        assert values.tolist() == [0.0, torch.tensor(1.0 / (1.0 - p), dtype=torch.float32).item()]
    xg = x.clone().requires_grad_()
    y = dropout(xg, 0.2)
    y.backward(torch.ones_like(y))
    torch.testing.assert_close(xg.grad, (y != 0).float() / 0.8)
    torch.manual_seed(5)
    a = dropout(x, 0.1)
    torch.manual_seed(5)
    assert torch.equal(a, dropout(x, 0.1))  # torch's generator: seeded and resumable
    layer = Dropout(0.1).eval()
    assert layer(x) is x and dropout(x, 0.0) is x
    with pytest.raises(ValueError, match="dropout probability"):
        Dropout(1.0)


# ------------------------------------------------------------------------------ flags and dropout rates


NOT_FLAGS = ["no", "False", None, 2]


@pytest.mark.parametrize("value", NOT_FLAGS)
def test_a_layer_flag_that_is_not_true_or_false_is_named(value):
    # bias="no" built biases and bias=None none; causal="no" masked the future; average_heads="no" averaged
    x = torch.randn(2, 3, 8)
    builds = {
        "bias": [lambda: MultiHeadAttention(8, 2, bias=value), lambda: FeedForward(8, 16, bias=value)],
        "BlockConfig.bias": [lambda: BlockConfig(8, 2, 16, bias=value)],
        "causal": [lambda: MultiHeadAttention(8, 2)(x, causal=value)],
        "need_weights": [lambda: MultiHeadAttention(8, 2)(x, need_weights=value),
                         lambda: AdditiveAttention(8, 8)(x, x, need_weights=value),
                         lambda: EncoderBlock(BlockConfig(8, 2, 16))(x, need_weights=value)],
        "average_heads": [lambda: MultiHeadAttention(8, 2)(x, need_weights=True, average_heads=value)],
    }
    for name, calls in builds.items():
        for call in calls:
            with pytest.raises(TypeError, match=f"{name} must be True or False, got {value!r}"):
                call()


@pytest.mark.parametrize("value", ["0.1", True, None])
def test_a_layer_dropout_that_is_not_a_number_is_named(value):
    # "0.1" failed inside a comparison ("'<=' not supported between instances of 'float' and 'str'")
    builds = {
        "dropout": [lambda: MultiHeadAttention(8, 2, dropout=value), lambda: AdditiveAttention(8, 8, dropout=value),
                    lambda: LuongAttention(8, dropout=value)],
        "BlockConfig.dropout": [lambda: BlockConfig(8, 2, 16, dropout=value)],
        "BlockConfig.attention_dropout": [lambda: BlockConfig(8, 2, 16, attention_dropout=value)]
        if value is not None else [],  # None: attention_dropout follows dropout
    }
    for name, calls in builds.items():
        for call in calls:
            with pytest.raises(TypeError, match=rf"{name} must be a number in \[0, 1\), got {value!r}"):
                call()


def test_layer_flags_as_bools_do_what_they_say():
    x = torch.randn(2, 3, 8)
    assert MultiHeadAttention(8, 2, bias=False).q_proj.bias is None and FeedForward(8, 16, bias=False).linear1.bias is None
    mha = MultiHeadAttention(8, 2, dropout=0.25).eval()
    weights = mha(x, causal=True, need_weights=True).weights  # (b, h, i, j)
    assert (weights[..., ~torch.ones(3, 3, dtype=torch.bool).tril()] == 0).all()  # no position looks ahead
    assert mha(x, need_weights=True, average_heads=True).weights.shape == (2, 3, 3)
    assert mha(x, need_weights=False).weights is None


# ------------------------------------------------------------------------------ packed (oneDNN) linear

packed_only = pytest.mark.skipif(
    not __import__("attnkit.layers", fromlist=["can_pack"]).can_pack(), reason="this PyTorch has no oneDNN"
)


@packed_only
def test_packed_linear_matches_f_linear_for_any_row_count_and_falls_back_for_autograd():
    from attnkit.layers import PackedLinear

    g = torch.Generator().manual_seed(0)
    lin = nn.Linear(48, 80)
    packed = PackedLinear.from_linear(lin, rows=16)
    for shape in ((1, 48), (7, 48), (3, 5, 48), (200, 48)):
        x = torch.randn(*shape, generator=g)
        with torch.no_grad():
            ref = nn.functional.linear(x, lin.weight, lin.bias)
            assert (packed(x) - ref).abs().max() <= 1e-5 * ref.abs().max()
    x = torch.randn(4, 48, requires_grad=True)
    packed(x).sum().backward()  # autograd: the plain product, gradient to the input
    ref_x = x.detach().clone().requires_grad_(True)
    nn.functional.linear(ref_x, lin.weight.detach(), lin.bias.detach()).sum().backward()
    assert torch.allclose(x.grad, ref_x.grad)
    with pytest.raises(ValueError, match="48"):
        packed(torch.randn(2, 47))


@packed_only
def test_packed_linear_relu_must_be_a_flag():
    from attnkit.layers import PackedLinear

    with pytest.raises(TypeError, match="PackedLinear relu must be True or False, got 'no'"):
        PackedLinear(torch.randn(4, 3), relu="no")


@packed_only
def test_packed_linear_with_relu_equals_relu_of_the_product():
    from attnkit.layers import FeedForward, PackedLinear, pack_for_inference

    g = torch.Generator().manual_seed(3)
    lin = nn.Linear(32, 64)
    fused = PackedLinear.from_linear(lin, relu=True)
    x = torch.randn(5, 7, 32, generator=g)
    with torch.no_grad():
        ref = nn.functional.relu(nn.functional.linear(x, lin.weight, lin.bias))
        assert (fused(x) - ref).abs().max() <= 1e-5 * ref.abs().max() and bool((fused(x) >= 0).all())
    x.requires_grad_(True)
    assert torch.allclose(fused(x), ref)  # autograd: the plain product, then relu
    ffn = FeedForward(32, 64, activation="relu").eval()
    packed = pack_for_inference(ffn)
    assert packed.fused_activation and packed.linear1.relu and not ffn.fused_activation
    with torch.no_grad():
        torch.testing.assert_close(packed(x), ffn(x), rtol=1e-5, atol=1e-5)
    gelu = pack_for_inference(FeedForward(32, 64, activation="gelu"))
    assert not gelu.fused_activation  # only ReLU is fused (it is exact)


@packed_only
def test_pack_for_inference_leaves_the_model_alone_and_decodes_the_same():
    from attnkit.decode import greedy_decode
    from attnkit.layers import PackedLinear, pack_for_inference
    from attnkit.models import TransformerConfig, build_model

    torch.manual_seed(0)
    model = build_model(TransformerConfig(d_model=32, heads=4, encoder_layers=2, decoder_layers=2, ffn_dim=64,
                                          dropout=0.0, norm_first=False), 40, 40)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fast = pack_for_inference(model)
    assert not any(isinstance(m, PackedLinear) for m in model.modules())
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert model.training and all(p.requires_grad for p in model.parameters())
    assert sum(isinstance(m, PackedLinear) for m in fast.modules()) > 0
    assert all(m.qkv_proj is not None for m in fast.modules() if isinstance(m, MultiHeadAttention)
               and m.kdim == m.d_model)
    src = torch.randint(4, 40, (6, 9), generator=torch.Generator().manual_seed(1))
    model.eval()
    with torch.no_grad():
        tgt = torch.randint(4, 40, (6, 7), generator=torch.Generator().manual_seed(2))
        assert (fast(src, tgt)[0] - model(src, tgt)[0]).abs().max() <= 1e-4
    ours = greedy_decode(fast, src, max_len=12)
    ref = greedy_decode(model, src, max_len=12)
    assert [h.tokens for h in ours] == [h.tokens for h in ref]
    assert all(abs(a.score - b.score) <= 1e-4 for a, b in zip(ours, ref))


def test_layers_refuse_token_ids_and_another_dtype_naming_the_input():
    mha, ffn = MultiHeadAttention(16, 4), FeedForward(16, 32)
    ids = torch.ones(2, 5, 16, dtype=torch.long)
    with pytest.raises(TypeError, match="query must be a floating-point tensor of features, got dtype torch.int64"):
        mha(ids)
    with pytest.raises(TypeError, match=r"key has dtype torch.float64 but the layer's parameters are torch.float32"):
        mha(torch.randn(2, 5, 16), torch.randn(2, 3, 16, dtype=torch.float64))
    with pytest.raises(TypeError, match="FeedForward input must be a floating-point tensor"):
        ffn(ids)
    with pytest.raises(TypeError, match="positional encoding expects floating-point features"):
        SinusoidalPositionalEncoding(16)(ids)
    out = mha.double()(torch.randn(2, 5, 16, dtype=torch.float64)).context  # a float64 layer takes float64
    assert out.dtype == torch.float64


def test_multi_head_attention_over_no_positions():
    mha = MultiHeadAttention(32, 4)
    for b in (2, 16):  # 16 rows × 4 heads is where auto picks another backend
        out = mha(torch.randn(b, 0, 32), need_weights=True)
        assert out.context.shape == (b, 0, 32) and out.weights.shape == (b, 4, 0, 0)
        cross = mha(torch.randn(b, 3, 32), torch.randn(b, 0, 32), need_weights=True)
        assert torch.equal(cross.context, mha.out_proj(torch.zeros(b, 3, 32)))  # nothing to attend: a zero context


def test_unknown_names_and_a_nan_eps_are_refused_at_construction():
    for kwargs, words in ((dict(score="foo"), "unknown score 'foo'"), (dict(normalize="x"), "unknown normalize 'x'"),
                          (dict(backend="fast"), "unknown backend 'fast'; choose 'auto' or one of")):
        with pytest.raises(ValueError, match=words):
            MultiHeadAttention(16, 4, **kwargs)
    MultiHeadAttention(16, 4, score=lambda q, k: q @ k.transpose(-2, -1), backend="eager")  # a callable is fine
    for eps in (float("nan"), 0.0, "1e-5"):
        with pytest.raises(ValueError, match="layer_norm_eps must be a finite number > 0"):
            BlockConfig(d_model=16, num_heads=4, d_ff=32, layer_norm_eps=eps)


def test_layers_chain_under_autocast_and_take_numpy_numbers():
    import numpy as np

    from attnkit.attention import attend

    mha, ffn = MultiHeadAttention(32, 4), FeedForward(32, 64)
    x = torch.randn(2, 5, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast casts: a bfloat16 input is not a mistake there
        y = ffn(mha(mha(x).context).context)
    assert y.dtype == torch.bfloat16 and torch.isfinite(y.float()).all()
    q = torch.randn(2, 4, 8)
    for params in ({"scale": np.float32(0.3)}, {"scale": torch.tensor(0.3, dtype=torch.float64)}):
        torch.testing.assert_close(attend(q, q, q, score_params=params).context,
                                   attend(q, q, q, score_params={"scale": 0.3}).context)
    assert padding_mask([2, 1], ndim=np.int64(3)).shape == (2, 1, 2)
    torch.testing.assert_close(attend(q, q, q, normalize="relu", normalize_params={"divide_by_length": 1}).context,
                               attend(q, q, q, normalize="relu", normalize_params={"divide_by_length": True}).context)
