"""attnkit.native's compiled kernels against the PyTorch operations they replace (the definitions), and
the decoders with and without them."""

from __future__ import annotations

import copy
import dataclasses
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from models_helpers import copy_torch_block
from torch import nn

from attnkit import native
from attnkit.attention import AttentionCall, attend, causal_mask, choose_backend
from attnkit.layers import BlockConfig, DecoderBlock, DecoderCache, KVCache, StaticKVCache, pack_for_inference
from attnkit.layers import transformer as transformer_layers
from attnkit.train import clip_grad_norm

pytestmark = pytest.mark.skipif(
    not native.available(),
    reason="the compiled kernels could not be built here (a C++ compiler and ninja are needed; see the warning)",
)


def reference_attention(q, k, v, key_mask, scale):
    """softmax(scale · q kᵀ) v in PyTorch operations; a query with no allowed key gets 0."""
    s = (q * scale) @ k.transpose(-2, -1)  # (n, h, i, t)
    if key_mask is not None:
        s = s.masked_fill(~key_mask[:, None, None, :], float("-inf"))
    return torch.softmax(s, -1).nan_to_num(0.0) @ v


@pytest.mark.parametrize("d", [64, 32, 128, 48, 8])  # compiled-in head sizes and the general loop
@pytest.mark.parametrize("t", [1, 15, 16, 21, 40])
@pytest.mark.parametrize("queries", [1, 4])
def test_decode_attention_equals_softmax_attention(d, t, queries):
    g = torch.Generator().manual_seed(d * 100 + t)
    n, h, room = 6, 3, 48
    k_buf, v_buf = torch.randn(n, h, room, d, generator=g), torch.randn(n, h, room, d, generator=g)
    k, v = k_buf[:, :, :t], v_buf[:, :, :t]  # views of cache buffers, as a decoding step has them
    q = torch.randn(n, queries, h, d, generator=g).transpose(1, 2)  # (n, h, i, d), head-split view
    mask = torch.rand(n, t, generator=g) > 0.3
    mask[0] = False  # a row with no allowed key
    mask[1] = True
    with torch.inference_mode():
        for key_mask in (None, mask):
            out = native.decode_attention(q, k, v, key_mask, d**-0.5)
            ref = reference_attention(q, k, v, key_mask, d**-0.5)
            torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    assert torch.equal(native.decode_attention(q, k, v, mask, 0.125)[0], torch.zeros(h, queries, d))


def test_decode_attention_rejects_what_it_cannot_do():
    q, k = torch.randn(2, 4, 1, 8), torch.randn(2, 4, 5, 8)
    with pytest.raises(RuntimeError, match="float32"):
        native.decode_attention(q.double(), k.double(), k.double(), None, 1.0)
    with pytest.raises(RuntimeError, match="does not fit"):
        native.decode_attention(q, torch.randn(2, 4, 5, 7), k, None, 1.0)
    with pytest.raises(RuntimeError, match="key_mask"):
        native.decode_attention(q, k, k, torch.ones(2, 4, dtype=torch.bool), 1.0)


@pytest.mark.parametrize("width", [8000, 8003, 37])
@pytest.mark.parametrize("k", [1, 2, 8])
def test_log_softmax_topk_equals_log_softmax_then_topk(width, k):
    g = torch.Generator().manual_seed(width + k)
    x = torch.randn(33, width, generator=g) * 4
    for blocked in (None, 2):
        values, index = native.log_softmax_topk(x, k, -1 if blocked is None else blocked)
        logp = torch.log_softmax(x, -1)
        if blocked is not None:
            logp[:, blocked] = float("-inf")
        ref_values, ref_index = logp.topk(k, dim=1)
        assert torch.equal(index, ref_index)
        torch.testing.assert_close(values, ref_values, rtol=0, atol=2e-6)


def test_log_softmax_topk_ties_take_the_lower_index():
    x = torch.zeros(3, 100)
    x[0, [7, 3, 50]] = 2.0
    x[1] = 1.0  # a constant row
    x[2, 99] = 5.0
    values, index = native.log_softmax_topk(x, 3, -1)
    assert index[0].tolist() == [3, 7, 50]
    assert index[1].tolist() == [0, 1, 2]
    assert index[2].tolist() == [99, 0, 1]
    torch.testing.assert_close(values[1], torch.full((3,), -torch.log(torch.tensor(100.0)).item()))
    with pytest.raises(RuntimeError, match="k must be"):
        native.log_softmax_topk(x, 100, 5)  # only 99 tokens are left once one is blocked


@pytest.mark.parametrize("rows", [1, 64, 1344])
@pytest.mark.parametrize("width", [256, 40])
def test_add_layer_norm_equals_layer_norm_of_the_sum(rows, width):
    g = torch.Generator().manual_seed(rows + width)
    norm = torch.nn.LayerNorm(width, eps=1e-5)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(width, generator=g))
        norm.bias.copy_(torch.randn(width, generator=g))
    x, y = torch.randn(rows, 2, width, generator=g) * 3, torch.randn(rows, 2, width, generator=g)
    with torch.inference_mode():
        out = native.add_layer_norm(x, y.transpose(0, 1).contiguous().transpose(0, 1), norm.weight, norm.bias, 1e-5)
        torch.testing.assert_close(out, norm(x + y), rtol=1e-5, atol=1e-5)


def test_auto_backend_takes_the_kernels_for_decoding_steps_and_short_attention_over_many_blocks():
    q, k = torch.randn(8, 4, 1, 64), torch.randn(8, 4, 20, 64)
    call = AttentionCall("scaled_dot", "softmax")
    padded = torch.ones(8, 1, 1, 20, dtype=torch.bool)
    with torch.inference_mode():
        assert choose_backend(call, q, k, k) == "native"  # a decoding step
        assert choose_backend(AttentionCall("scaled_dot", "softmax", mask=padded), q, k, k) == "native"
        assert choose_backend(AttentionCall("scaled_dot", "softmax", need_weights=True), q, k, k) == "eager"
        assert choose_backend(call, q[:2], k[:2], k[:2]) == "native"  # one query: the decoding kernel
        fast = attend(q, k, k, mask=padded, backend="native").context
        torch.testing.assert_close(fast, attend(q, k, k, mask=padded, backend="eager").context, rtol=1e-5, atol=1e-6)
    seq = torch.randn(8, 4, 20, 64)
    assert choose_backend(call, seq, k, k) == "native"  # training: 32 blocks of 20 keys
    assert choose_backend(call, seq[:2], k[:2], k[:2]) != "native"  # 8 blocks: the fused PyTorch kernel
    assert choose_backend(call, seq, torch.randn(8, 4, 200, 64), torch.randn(8, 4, 200, 64)) != "native"  # long
    assert choose_backend(AttentionCall("scaled_dot", "sparsemax"), seq, k, k) == "eager"
    with pytest.raises(ValueError, match="float32"):
        attend(q.double(), k.double(), k.double(), backend="native")


def _decode(env_native: str) -> str:
    code = (
        "import torch, json\n"
        "from attnkit.models import TransformerConfig, build_model\n"
        "from attnkit.layers import pack_for_inference\n"
        "from attnkit.decode import greedy_decode, beam_search\n"
        "from attnkit import native\n"
        "torch.manual_seed(0)\n"
        "m = build_model(TransformerConfig(d_model=64, heads=4, encoder_layers=2, decoder_layers=2, ffn_dim=128,"
        " norm_first=False), 300, 300).eval()\n"
        "src = torch.randint(4, 300, (12, 9)); src[3, 6:] = 0\n"
        "out = {'native': native.available()}\n"
        "for name, model in (('plain', m), ('packed', pack_for_inference(m))):\n"
        "    out[name + '_greedy'] = [h.tokens for h in greedy_decode(model, src, max_len=12)]\n"
        "    out[name + '_beam'] = [[h.tokens for h in hs] for hs in beam_search(model, src, beam_size=3, n_best=2,"
        " max_len=12)]\n"
        "print(json.dumps(out))\n"
    )
    env = {**os.environ, "ATTNKIT_NATIVE": env_native}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_decoders_give_the_same_outputs_with_and_without_the_kernels():
    import json

    fast, slow = json.loads(_decode("1")), json.loads(_decode("0"))
    assert fast.pop("native") is True and slow.pop("native") is False
    assert fast == slow
    assert fast["plain_beam"] == fast["packed_beam"] and fast["plain_greedy"] == fast["packed_greedy"]


@pytest.mark.parametrize("m,k,n", [(64, 256, 768), (13, 40, 70), (1, 7, 32), (25, 1024, 33), (0, 16, 5)])
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_panels_equals_linear(m, k, n, relu, bias):
    g = torch.Generator().manual_seed(m + k + n)
    x, w = torch.randn(m, k, generator=g), torch.randn(n, k, generator=g)
    b = torch.randn(n, generator=g) if bias else None
    panels = native.pack_panels(w)
    assert panels.shape == ((n + 31) // 32, k, 32)
    want = F.linear(x.double(), w.double(), None if b is None else b.double())
    want = (want.relu() if relu else want).float()
    torch.testing.assert_close(native.linear_panels(x, panels, b, n, relu), want, atol=1e-5 * k**0.5, rtol=1e-5)


def test_linear_panels_keeps_nan_and_checks_its_arguments():
    w = torch.randn(40, 8)
    x = torch.randn(3, 8)
    x[1, 2] = float("nan")
    y = native.linear_panels(x, native.pack_panels(w), None, 40, True)
    assert y[1].isnan().all() and not y[[0, 2]].isnan().any()  # as torch.relu(F.linear(...))
    with pytest.raises(RuntimeError, match="do not hold a"):
        native.linear_panels(x, native.pack_panels(w), None, 80, False)
    with pytest.raises(RuntimeError, match="bias must be"):
        native.linear_panels(x, native.pack_panels(w), torch.zeros(39), 40, False)


@pytest.mark.parametrize("m,d,n", [(5, 16, 100), (64, 32, 512), (50, 8, 20000)])  # a tail panel; many chunks of rows
@pytest.mark.parametrize("k", [1, 8])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_log_softmax_topk_equals_log_softmax_of_the_product(m, d, n, k, bias):
    g = torch.Generator().manual_seed(m + d + n + k)
    x, w = torch.randn(m, d, generator=g, dtype=torch.float64), torch.randn(n, d, generator=g, dtype=torch.float64)
    b = torch.randn(n, generator=g, dtype=torch.float64) if bias else None
    x32, panels, b32 = x.float(), native.pack_panels(w.float()), None if b is None else b.float()
    for blocked in (None, 3, n - 1):
        values, index = native.linear_log_softmax_topk(x32, panels, b32, n, k, blocked)
        logp = torch.log_softmax(F.linear(x, w, b), -1)  # float64: the definition
        if blocked is not None:
            logp[:, blocked] = float("-inf")
        want = logp.topk(k, -1)
        assert torch.equal(index, want.indices)  # random values: no ties
        torch.testing.assert_close(values.double(), want.values, atol=2e-5, rtol=0)
        two = native.log_softmax_topk(native.linear_panels(x32, panels, b32, n), k, -1 if blocked is None else blocked)
        assert torch.equal(index, two[1])
        torch.testing.assert_close(values, two[0], atol=1e-5, rtol=0)  # the two calls, up to the sum's order


def test_linear_log_softmax_topk_ties_nan_inf_and_arguments():
    w = torch.zeros(100, 4)
    w[:, 0] = 1.0
    x = torch.tensor([[1.0, 0, 0, 0], [float("nan"), 0, 0, 0], [1.0, 0, 0, 0]])
    bias = torch.zeros(100)
    bias[[70, 20, 90]] = 2.0  # ties across the threads' halves of the columns: the lower index first
    values, index = native.linear_log_softmax_topk(x[:1], native.pack_panels(w), bias, 100, 3)
    assert index[0].tolist() == [20, 70, 90]
    bias[:64] = float("-inf")  # every column of the first part -inf: it adds nothing to the sum
    values, index = native.linear_log_softmax_topk(x, native.pack_panels(w), bias, 100, 2)
    want = torch.log_softmax(x @ w.T + bias, -1)
    assert index[0].tolist() == [70, 90] and torch.isnan(values[1]).all()
    torch.testing.assert_close(values[0], want[0, [70, 90]], atol=1e-6, rtol=0)
    with pytest.raises(RuntimeError, match=r"k must be in \[1, 99\]"):
        native.linear_log_softmax_topk(x, native.pack_panels(w), None, 100, 100, 5)
    with pytest.raises(RuntimeError, match="do not hold a"):
        native.linear_log_softmax_topk(x, native.pack_panels(w), None, 90, 1)


def _decoder_block(norm: str, bias: bool = True, activation: str = "relu", d: int = 64, heads: int = 4, ff: int = 96):
    """A decoder block with the weights of a torch.nn.TransformerDecoderLayer (the reference), and its packed
    copy. Without bias the reference's product biases are zero (torch's bias=False drops LayerNorm's too)."""
    torch.manual_seed(7)
    ref = nn.TransformerDecoderLayer(d, heads, ff, batch_first=True, norm_first=norm == "pre", activation=activation)
    with_bias = DecoderBlock(BlockConfig(d_model=d, num_heads=heads, d_ff=ff, norm=norm, activation=activation))
    if not bias:
        with torch.no_grad():
            for name, p in ref.named_parameters():
                if name.endswith("bias") and "norm" not in name:
                    p.zero_()
    copy_torch_block(with_bias, ref, cross=True)
    block = DecoderBlock(BlockConfig(d_model=d, num_heads=heads, d_ff=ff, norm=norm, bias=bias, activation=activation))
    missing, _ = block.load_state_dict(with_bias.state_dict(), strict=False)  # without bias: leaves those out
    assert not missing
    return ref.eval(), block.eval(), pack_for_inference(block)


@pytest.mark.parametrize("norm", ["pre", "post"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("d,heads,ff", [(64, 4, 96), (128, 2, 100)])  # head dims 16 and 64; 100 = 3 panels + 4
@pytest.mark.parametrize("batch", [3, 21])  # one block of rows, its products' panels shared out; 8 + 8 + 5 rows split
def test_fused_decoder_step_equals_torch_decoder_layer_and_the_block_step(norm, bias, d, heads, ff, batch):
    ref, _, fast = _decoder_block(norm, bias, d=d, heads=heads, ff=ff)
    steps = 20  # past the cache's first 16 positions: its buffers grow
    y, memory = torch.randn(batch, steps, d), torch.randn(batch, 7, d)
    keep = torch.ones(batch, 1, 7, dtype=torch.bool)
    keep[1, 0, 4:] = False  # a padded source
    want = ref(y, memory, tgt_mask=~causal_mask(steps), memory_key_padding_mask=~keep[:, 0])
    with torch.inference_mode():
        fused_cache, step_cache = fast.new_cache(memory), fast.new_cache(memory)
        fused = [fast.fused_step(y[:, t : t + 1], fused_cache, keep) for t in range(steps)]
        stepped = [fast(y[:, t : t + 1], memory_mask=keep, cache=step_cache).hidden for t in range(steps)]
    assert all(f is not None for f in fused)
    got = torch.cat(fused, 1)
    torch.testing.assert_close(got, want, atol=3e-5, rtol=0)  # torch's own layer, over the whole sequence
    torch.testing.assert_close(got, torch.cat(stepped, 1), atol=1e-5, rtol=0)  # the block's step by step
    assert len(fused_cache) == steps
    torch.testing.assert_close(fused_cache.self_attn.keys, step_cache.self_attn.keys, atol=1e-5, rtol=0)
    torch.testing.assert_close(fused_cache.self_attn.values, step_cache.self_attn.values, atol=1e-5, rtol=0)


@pytest.mark.parametrize("norm", ["pre", "post"])
@pytest.mark.parametrize("extra", [0, 8])  # 6 rows, or 22 (their blocks split among the threads)
def test_fused_decoder_step_follows_beam_search_reorders_and_shared_memory_rows(norm, extra):
    """Beam search's layout: two rows per sentence read one memory row; between steps rows are reordered
    (within their sentence, and a sentence leaves) as TransformerState.reorder does. The fused step gives
    what the block's own forward gives on the same caches."""
    _, _, fast = _decoder_block(norm, d=128, heads=2)
    n = 3 + extra  # sentences
    memory = torch.randn(n, 5, 128)
    keep = torch.ones(n, 1, 5, dtype=torch.bool)
    keep[2, 0, 3:] = False
    rows = torch.arange(n).repeat_interleave(2)  # (2n,) sentence-major
    tail = torch.arange(6, 2 * n)  # the extra sentences' rows stay in place
    orders = {t: torch.cat([index, tail + shift]) for t, index, shift in
              [(3, torch.tensor([1, 1, 2, 3, 4, 5]), 0), (6, torch.tensor([2, 2, 3, 3]), 0),
               (9, torch.tensor([1, 0, 3, 2]), -2)]}  # after t = 6 the tail's rows start at 4
    g = torch.Generator().manual_seed(3)
    with torch.inference_mode():
        base = fast.new_cache(memory).memory
        caches = [DecoderCache(base.reorder(rows)) for _ in range(2)]  # fused, forward
        assert caches[0].memory.group == 2
        mask = keep[rows]  # (rows, 1, s)
        for t in range(12):
            if t in orders:
                index = orders[t]
                for c in caches:
                    c.self_attn.reorder(index)
                caches = [DecoderCache(c.memory.reorder(index), c.self_attn) for c in caches]
                mask = mask[index]
            x = torch.randn(mask.shape[0], 1, 128, generator=g)
            a = fast.fused_step(x, caches[0], mask)
            b = fast(x, memory_mask=mask, cache=caches[1]).hidden
            assert a is not None
            torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
        torch.testing.assert_close(caches[0].self_attn.keys, caches[1].self_attn.keys, atol=1e-5, rtol=0)


def test_fused_decoder_step_applies_only_where_it_computes_the_same():
    _, plain, fast = _decoder_block("post")
    _, _, gelu = _decoder_block("post", activation="gelu")
    memory, x = torch.randn(2, 5, 64), torch.randn(2, 1, 64)
    with torch.inference_mode():
        assert fast.fused_step(x, fast.new_cache(memory)) is not None
        assert plain.fused_step(x, plain.new_cache(memory)) is None  # not packed
        assert gelu.fused_step(x, gelu.new_cache(memory)) is None  # the activation is not in the product
        assert fast.fused_step(x.double(), fast.new_cache(memory)) is None
        assert fast.fused_step(torch.randn(2, 2, 64), fast.new_cache(memory)) is None  # two positions at once
        assert fast.fused_step(torch.randn(2, 1, 48), fast.new_cache(memory)) is None  # forward says what is wrong
        assert fast.fused_step(x[:0], fast.new_cache(memory[:0])) is None  # no rows
        assert fast.fused_step(x, fast.new_cache(memory), torch.ones(2, 1, 4, dtype=torch.bool)) is None
        assert fast.fused_step(x, fast.new_cache(memory), torch.ones(2, 5, dtype=torch.bool)) is None  # (i, j)
        fast.ffn.dropout.train()  # dropout on: the block's own forward applies it
        assert fast.fused_step(x, fast.new_cache(memory)) is None
        fast.ffn.dropout.eval()
        calls = []
        handle = fast.ffn.register_forward_hook(lambda *args: calls.append(1))  # hooks must run
        assert fast.fused_step(x, fast.new_cache(memory)) is None
        handle.remove()

        class Other(DecoderBlock):  # a subclass may compute something else
            pass

        other = Other(fast.config)
        other.load_state_dict(plain.state_dict())
        assert pack_for_inference(other).fused_step(x, other.new_cache(memory)) is None
    with torch.no_grad():  # outside inference mode the block's path runs (LayerNorm(x + y) unfused)
        assert fast.fused_step(x, fast.new_cache(memory)) is None


def test_fused_decoder_step_uses_parameters_replaced_after_a_first_call():
    _, _, fast = _decoder_block("post")
    memory, x = torch.randn(2, 5, 64), torch.randn(2, 1, 64)
    with torch.inference_mode():
        assert fast.fused_step(x, fast.new_cache(memory)) is not None
    fast.ffn_norm.weight = nn.Parameter((torch.rand(128) + 0.5)[::2], requires_grad=False)  # not contiguous
    fast.ffn.linear2.bias = nn.Parameter(torch.randn(64), requires_grad=False)
    fast.cross_attn_norm.eps = 0.5
    fast.self_attn_norm.eps = fast.ffn_norm.eps = 0.5
    with torch.inference_mode():
        got = fast.fused_step(x, fast.new_cache(memory))
        want = fast(x, cache=fast.new_cache(memory)).hidden
    assert got is not None
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def _small_transformer(norm_first: bool, seed: int, tgt_vocab: int, sentences: int):
    """A small Transformer (source vocabulary 50), its packed copy, and ``sentences`` sources of 8 tokens, the
    second one padded after 5."""
    from attnkit.models import TransformerConfig, build_model

    torch.manual_seed(seed)
    model = build_model(TransformerConfig(d_model=64, heads=4, encoder_layers=2, decoder_layers=2, ffn_dim=96,
                                          norm_first=norm_first), 50, tgt_vocab).eval()
    src = torch.randint(4, 50, (sentences, 8))
    src[1, 5:] = 0  # padding
    return model, pack_for_inference(model), src


@pytest.mark.parametrize("norm_first", [True, False])
def test_model_decode_step_with_and_without_the_fused_step(norm_first, monkeypatch):
    """A whole packed model: its blocks' step is one compiled call for the stack, and the logits are those of
    each block's own fused step and of the blocks' own forward."""
    from attnkit.models.transformer import TransformerSeq2Seq

    _, fast, src = _small_transformer(norm_first, seed=1, tgt_vocab=60, sentences=5)
    prev = torch.randint(4, 60, (6, 5))
    stacks, blocks = [], []
    original_stack, original_step = native.decoder_stack_step, DecoderBlock.fused_step
    monkeypatch.setattr(native, "decoder_stack_step", lambda *a: stacks.append(1) or original_stack(*a))

    def spy(self, *args, **kwargs):
        out = original_step(self, *args, **kwargs)
        blocks.append(out is not None)
        return out

    monkeypatch.setattr(DecoderBlock, "fused_step", spy)

    def run():
        with torch.inference_mode():
            state = fast.encode(src)
            return [fast.decode_step(state, p)[0] for p in prev]

    stacked = run()
    assert len(stacks) == len(prev) and not blocks  # one call per step, no block stepped on its own
    monkeypatch.setattr(TransformerSeq2Seq, "_fused_stack", lambda *a: None)
    each = run()
    assert len(blocks) == 2 * len(prev) and all(blocks)
    monkeypatch.setattr(DecoderBlock, "fused_step", lambda self, *args, **kwargs: None)
    plain = run()
    for a, b, c in zip(stacked, each, plain):
        assert torch.equal(a, b)  # the same kernels on the same rows
        torch.testing.assert_close(a, c, atol=1e-5, rtol=0)


def test_the_stack_call_steps_aside_where_a_block_cannot_take_it(monkeypatch):
    """A hook on one block: the stack call is not taken, the hook runs, the other block still takes its own
    fused step, and the logits are those of the stack call on the same model without the hook."""
    _, fast, src = _small_transformer(False, seed=4, tgt_vocab=60, sentences=5)
    prev = torch.randint(4, 60, (4, 5))
    stacks, hooked = [], []
    original_stack = native.decoder_stack_step
    monkeypatch.setattr(native, "decoder_stack_step", lambda *a: stacks.append(1) or original_stack(*a))

    def run():
        with torch.inference_mode():
            state = fast.encode(src)
            return [fast.decode_step(state, p)[0] for p in prev]

    want = run()
    assert len(stacks) == len(prev)
    taken = []
    original_step = DecoderBlock.fused_step
    monkeypatch.setattr(DecoderBlock, "fused_step",
                        lambda self, *a, **k: taken.append((self, original_step(self, *a, **k))) or taken[-1][1])
    handle = fast.decoder[1].register_forward_hook(lambda *args: hooked.append(1))
    got = run()
    handle.remove()
    assert len(stacks) == len(prev) and len(hooked) == len(prev)
    assert [(block is fast.decoder[0], out is not None) for block, out in taken] == [(True, True), (False, False)] * len(prev)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


@pytest.mark.parametrize("change", ["eps", "norm"])
def test_blocks_that_differ_in_what_the_stack_call_shares_each_take_their_own_step(change, monkeypatch):
    """One block with another LayerNorm eps, or pre-norm in a post-norm model: the stack call (one eps, one
    placement) is not taken, each block takes its own fused step, and the logits are those of the blocks' own
    forward."""
    import dataclasses

    _, fast, src = _small_transformer(False, seed=6, tgt_vocab=60, sentences=5)
    block = fast.decoder[1]
    if change == "eps":
        for norm in (block.self_attn_norm, block.cross_attn_norm, block.ffn_norm):
            norm.eps = 0.5
    else:
        block.config = dataclasses.replace(block.config, norm="pre")
        block._residual = transformer_layers._RESIDUAL["pre"]
    prev = torch.randint(4, 60, (4, 5))
    stacks, steps = [], []
    original_stack, original_step = native.decoder_stack_step, DecoderBlock.fused_step
    monkeypatch.setattr(native, "decoder_stack_step", lambda *a: stacks.append(1) or original_stack(*a))
    monkeypatch.setattr(DecoderBlock, "fused_step",
                        lambda self, *a, **k: steps.append(1) or original_step(self, *a, **k))

    def run():
        with torch.inference_mode():
            state = fast.encode(src)
            return [fast.decode_step(state, p)[0] for p in prev]

    got = run()
    assert not stacks and len(steps) == 2 * len(prev)
    monkeypatch.setattr(DecoderBlock, "fused_step", lambda self, *args, **kwargs: None)
    for a, b in zip(got, run()):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def _eos_prone(norm_first: bool, positions: str):
    """A small Transformer (output not tied) whose EOS row is the row × 1.05 of the token it chooses most after
    its first two, so that its sentences end at different steps; its packed copy, and 12 sources of 8 tokens,
    the second padded after 5."""
    from attnkit.decode import greedy_decode
    from attnkit.models import TransformerConfig, build_model

    torch.manual_seed(11)
    model = build_model(TransformerConfig(d_model=64, heads=4, encoder_layers=2, decoder_layers=2, ffn_dim=96,
                                          norm_first=norm_first, positions=positions, tie_output=False), 50, 60).eval()
    src = torch.randint(4, 50, (12, 8))
    src[1, 5:] = 0
    with torch.no_grad():
        nn.init.normal_(model.output.weight, std=0.5)
        counts = torch.bincount(torch.tensor([t for h in greedy_decode(pack_for_inference(model), src, max_len=20)
                                              for t in h.tokens[2:]]), minlength=60)
        counts[:4] = 0
        model.output.weight[model.config.eos_id] = model.output.weight[int(counts.argmax())] * 1.05
    return pack_for_inference(model), src


@pytest.mark.parametrize("positions", ["sinusoidal", "learned"])
@pytest.mark.parametrize("norm_first", [True, False])
def test_greedy_decoding_runs_its_steps_in_one_call_and_gives_what_stepping_gives(norm_first, positions, monkeypatch):
    """Greedy decoding's steps run in compiled calls of several steps each, each up to the next sentence to end
    (by EOS, and min_len blocking it, or by its length limit); the tokens and scores are exactly those of the
    same decoding one step at a time."""
    from attnkit.decode import greedy_decode
    from attnkit.models.transformer import TransformerSeq2Seq

    fast, src = _eos_prone(norm_first, positions)
    taken = []
    original = native.greedy_steps
    monkeypatch.setattr(native, "greedy_steps", lambda *a: taken.append(a[-1]) or original(*a))
    for options in (dict(max_len=20), dict(max_len=20, min_len=3), dict(max_len_ratio=1.5, max_len_offset=1)):
        taken.clear()
        got = greedy_decode(fast, src, **options)
        with monkeypatch.context() as m:
            m.setattr(TransformerSeq2Seq, "decode_greedy_steps", lambda *a, **k: None)
            want = greedy_decode(fast, src, **options)
        assert [h.tokens for h in got] == [h.tokens for h in want]
        assert [h.score for h in got] == [h.score for h in want]
        lengths = [len(h.tokens) for h in got]
        assert len(set(lengths)) > 1 and taken and max(taken) > 1  # sentences end apart; calls of several steps
        assert all(n >= 3 for n in lengths) or options.get("min_len") != 3


def test_greedy_steps_one_at_a_time_where_the_one_call_does_not_apply(monkeypatch):
    """A hook on the target embedding, or attention maps asked for: every step goes through the modules (the
    hook runs at each one) and the tokens are those of the one-call path."""
    from attnkit.decode import greedy_decode

    fast, src = _eos_prone(True, "sinusoidal")
    want = greedy_decode(fast, src, max_len=20)
    calls = []
    monkeypatch.setattr(native, "greedy_steps", lambda *a: calls.append(1) or None)
    handle = fast.tgt_embed.register_forward_hook(lambda *args: calls.append(0))
    hooked = greedy_decode(fast, src, max_len=20)
    handle.remove()
    assert 1 not in calls and len(calls) >= max(len(h.tokens) for h in want)
    assert [h.tokens for h in hooked] == [h.tokens for h in want]
    calls.clear()
    with_maps = greedy_decode(fast, src, max_len=20, need_attention=True)
    assert not calls and [h.tokens for h in with_maps] == [h.tokens for h in want]


def test_greedy_steps_names_what_is_wrong():
    embedding = torch.randn(10, 8)
    with pytest.raises(RuntimeError, match="greedy_steps: prev must be an int64"):
        native.greedy_steps(torch.zeros(2), embedding, 1.0, torch.zeros(1, 8), [], [], [], [], [], 0, [], [], None, 1.0,
                            1e-5, False, None, None, 0.0, torch.zeros(1, 8, 32), None, 10, 2, 0, 1)
    with pytest.raises(RuntimeError, match=r"greedy_steps: positions must be \(steps, d_model\) = \(3, 8\)"):
        native.greedy_steps(torch.zeros(2, dtype=torch.long), embedding, 1.0, torch.zeros(1, 8), [], [], [], [], [], 0,
                            [], [], None, 1.0, 1e-5, False, None, None, 0.0, torch.zeros(1, 8, 32), None, 10, 2, 0, 3)
    with pytest.raises(RuntimeError, match=r"greedy_steps: embedding must be \(vocabulary, d_model\)"):
        native.greedy_steps(torch.zeros(2, dtype=torch.long), embedding[0], 1.0, torch.zeros(1, 8), [], [], [], [], [], 0,
                            [], [], None, 1.0, 1e-5, False, None, None, 0.0, torch.zeros(1, 8, 32), None, 10, 2, 0, 1)


def _stepped(monkeypatch, model, src, **options):
    """greedy_decode of ``model`` one step at a time (no decode_greedy_steps)."""
    from attnkit.decode import greedy_decode
    from attnkit.models.transformer import TransformerSeq2Seq

    with monkeypatch.context() as m:
        m.setattr(TransformerSeq2Seq, "decode_greedy_steps", lambda *a, **k: None)
        return greedy_decode(model, src, **options)


@pytest.mark.parametrize("threads", [1, 2])
def test_greedy_steps_give_what_stepping_gives_for_one_row_and_beyond_the_fused_rows(threads, monkeypatch):
    """One sentence, and more sentences than the one-call output layer takes (the steps run one at a time until
    enough have ended), on one thread and on two; learned positions of a table shorter than the config's, whose
    last position ends the runs (and then stepping says what is wrong)."""
    from attnkit.decode import greedy_decode
    from attnkit.layers import LearnedPositionalEncoding

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        fast, src = _eos_prone(True, "learned")
        taken = []
        original = native.greedy_steps
        monkeypatch.setattr(native, "greedy_steps", lambda *a: taken.append(a[-1]) or original(*a))
        for batch in (src[:1], src.repeat(11, 1)):  # 1 and 132 rows
            for options in (dict(max_len=20), dict(max_len=20, min_len=4)):
                taken.clear()
                got = greedy_decode(fast, batch, **options)
                want = _stepped(monkeypatch, fast, batch, **options)
                assert taken
                assert [h.tokens for h in got] == [h.tokens for h in want]
                assert [h.score for h in got] == [h.score for h in want]
        short = LearnedPositionalEncoding(6, 64)
        short.embedding.weight.data.copy_(fast.tgt_pos.embedding.weight[:6])
        fast.tgt_pos = short.eval()
        with pytest.raises(ValueError, match="exceed the 6 learned positions"):
            greedy_decode(fast, src[:1], max_len=20, min_len=10)
        with pytest.raises(ValueError, match="exceed the 6 learned positions"):
            _stepped(monkeypatch, fast, src[:1], max_len=20, min_len=10)
    finally:
        torch.set_num_threads(previous)


def test_greedy_steps_not_taken_where_stepping_runs_other_code(monkeypatch):
    """A subclass's own _decode_position, a wrapper of decode_step_top set on the instance, an EOS that is no
    target token: greedy decoding steps, and gives what stepping gives."""
    from attnkit.decode import greedy_decode
    from attnkit.models.transformer import TransformerSeq2Seq

    fast, src = _eos_prone(False, "sinusoidal")
    calls = []
    monkeypatch.setattr(native, "greedy_steps", lambda *a: calls.append(1) or None)

    class Shifted(TransformerSeq2Seq):
        def _decode_position(self, state, prev_tokens, need_attention):
            x, maps = super()._decode_position(state, prev_tokens, need_attention)
            return x + torch.sin(torch.arange(x.shape[-1], dtype=x.dtype)), maps

    shifted = copy.deepcopy(fast)
    shifted.__class__ = Shifted
    assert [h.tokens for h in greedy_decode(shifted, src, max_len=12)] == [
        h.tokens for h in _stepped(monkeypatch, shifted, src, max_len=12)]

    seen = []
    fast.decode_step_top = lambda *a: seen.append(1) or TransformerSeq2Seq.decode_step_top(fast, *a)
    greedy_decode(fast, src, max_len=12)
    del fast.decode_step_top
    assert seen and not calls

    eos_beyond = copy.deepcopy(fast)  # (build_model refuses such a config; a model built directly takes it)
    eos_beyond.config = dataclasses.replace(fast.config, eos_id=fast.tgt_vocab_size)
    assert [len(h.tokens) for h in greedy_decode(eos_beyond, src, max_len=5)] == [5] * len(src)
    assert not calls


@pytest.mark.parametrize("norm_first", [True, False])
def test_step_top_fuses_the_output_layer_and_gives_what_decode_step_and_top_log_probs_give(norm_first, monkeypatch):
    from attnkit.decode import beam_search, greedy_decode
    from attnkit.decode.select import step_top, top_log_probs
    from attnkit.models import transformer as transformer_module

    model, fast, src = _small_transformer(norm_first, seed=2, tgt_vocab=70, sentences=6)
    calls = []
    original = native.linear_log_softmax_topk
    monkeypatch.setattr(native, "linear_log_softmax_topk", lambda *a: calls.append(1) or original(*a))
    with torch.inference_mode():
        fused_state, plain_state = fast.encode(src), fast.encode(src)
        prev = torch.full((6,), model.config.bos_id)
        for step, blocked in enumerate([model.config.eos_id, None, 7]):
            values, tokens, fused_state, att = step_top(fast, fused_state, prev, 5, blocked)
            logits, plain_state, _ = fast.decode_step(plain_state, prev)
            want = top_log_probs(logits, 5, blocked)
            assert att is None and len(calls) == step + 1
            assert torch.equal(tokens, want[1])
            torch.testing.assert_close(values, want[0], atol=1e-5, rtol=0)
            prev = tokens[:, 0]
        position = fused_state.position
        with pytest.raises(ValueError, match=r"n must be in \[1, 69\]"):
            step_top(fast, fused_state, prev, 70, 3)
        with pytest.raises(ValueError, match="blocked must be a token id"):
            step_top(fast, fused_state, prev, 1, 70)
        assert fused_state.position == position  # bad arguments are refused before the step
        # with the maps asked for, and on the unpacked model, the logits are computed: no fused call
        count = len(calls)
        step_top(fast, fast.encode(src), prev, 2, need_attention=True)
        step_top(model, model.encode(src), prev, 2)
        assert model.decode_step_top(model.encode(src), prev, 2) is None
        assert len(calls) == count
    # the searches give the same with and without the fused call
    greedy = [h.tokens for h in greedy_decode(fast, src, max_len=9)]
    beams = [[h.tokens for h in hs] for hs in beam_search(fast, src, beam_size=3, n_best=2, max_len=9)]
    assert len(calls) > count
    monkeypatch.setattr(transformer_module, "_FUSED_OUTPUT_ROWS", 0)
    assert greedy == [h.tokens for h in greedy_decode(fast, src, max_len=9)]
    assert beams == [[h.tokens for h in hs] for hs in beam_search(fast, src, beam_size=3, n_best=2, max_len=9)]


def test_a_subclass_decode_step_is_not_bypassed_by_the_fused_output():
    """A subclass that changes the logits in decode_step gets them used, packed or not."""
    from attnkit.decode import greedy_decode
    from attnkit.models import TransformerConfig
    from attnkit.models.transformer import TransformerSeq2Seq

    class Banning(TransformerSeq2Seq):
        def decode_step(self, state, prev_tokens, *, need_attention=False):
            logits, state, maps = super().decode_step(state, prev_tokens, need_attention=need_attention)
            logits = logits.clone()
            logits[:, 10] += 100.0  # token 10 always wins
            return logits, state, maps

    torch.manual_seed(3)
    model = Banning(TransformerConfig(d_model=32, heads=2, encoder_layers=1, decoder_layers=1, ffn_dim=48), 30, 40).eval()
    src = torch.randint(4, 30, (3, 5))
    for m in (model, pack_for_inference(model)):
        assert [h.tokens for h in greedy_decode(m, src, max_len=4)] == [[10] * 4] * 3


def _stack(norm: str, layers: int, n: int, sentences: int, seed: int):
    """``layers`` packed decoder blocks with different weights, each with a cache over its own memory of
    ``sentences`` rows (``n / sentences`` query rows per memory row, as beam search shares them)."""
    torch.manual_seed(seed)
    blocks = [pack_for_inference(DecoderBlock(BlockConfig(d_model=64, num_heads=4, d_ff=100, norm=norm)).eval())
              for _ in range(layers)]
    rows = torch.arange(sentences).repeat_interleave(n // sentences)
    with torch.inference_mode():
        caches = [DecoderCache(b.new_cache(torch.randn(sentences, 6, 64)).memory.reorder(rows)) for b in blocks]
    return blocks, caches


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.mark.usefixtures("two_threads")
@pytest.mark.parametrize("norm", ["pre", "post"])
@pytest.mark.parametrize("n,sentences", [(3, 3), (22, 11)])  # under 8 rows a thread: shared out; 11 + 11 rows split
def test_decoder_stack_step_is_the_layer_steps_in_turn(norm, n, sentences):
    """One call for three layers gives, bit for bit, what three decoder_layer_step calls give, the caches
    included, over a padded memory shared by pairs of rows, past the caches' first 16 positions (two threads:
    with 22 rows each takes its 11 through every layer)."""
    blocks, caches = _stack(norm, 3, n, sentences, seed=11)
    _, twins = _stack(norm, 3, n, sentences, seed=11)
    mask = torch.ones(n, 6, dtype=torch.bool)
    mask[1, 4:] = False
    g = torch.Generator().manual_seed(5)
    with torch.inference_mode():
        parts = [b._fused_parts() for b in blocks]
        eps = parts[0][3]
        for t in range(20):
            x = torch.randn(n, 64, generator=g)
            rooms = [c.self_attn.room_for(1, x.new_empty((n, 4, 0, 16))) for c in caches]
            got = native.decoder_stack_step(x, [p for q in parts for p in q[0]], [p for q in parts for p in q[1]],
                                            [p for q in parts for p in q[2]], [r[0] for r in rooms],
                                            [r[1] for r in rooms], t, [c.memory.keys for c in caches],
                                            [c.memory.values for c in caches], mask, 0.25, eps, norm == "pre")
            want = x
            for p, c in zip(parts, twins):
                kc, vc, pos = c.self_attn.room_for(1, x.new_empty((n, 4, 0, 16)))
                assert pos == t
                want = native.decoder_layer_step(want, p[0], p[1], p[2], kc, vc, pos, c.memory.keys, c.memory.values,
                                                 mask, 0.25, eps, norm == "pre")
                c.self_attn.advance(1)
            for c in caches:
                c.self_attn.advance(1)
            assert torch.equal(got, want)
        for a, b in zip(caches, twins):
            assert torch.equal(a.self_attn.keys, b.self_attn.keys) and torch.equal(a.self_attn.values, b.self_attn.values)


def test_decoder_stack_step_rejects_what_it_cannot_do():
    blocks, caches = _stack("post", 2, 2, 2, seed=12)
    x = torch.randn(2, 64)
    with torch.inference_mode():
        parts = [b._fused_parts() for b in blocks]
        panels, biases, norms = ([p for q in parts for p in q[i]] for i in range(3))
        eps = parts[0][3]
        rooms = [c.self_attn.room_for(1, x.new_empty((2, 4, 0, 16))) for c in caches]
        kcs, vcs = [r[0] for r in rooms], [r[1] for r in rooms]
        keys, values = [c.memory.keys for c in caches], [c.memory.values for c in caches]
        with pytest.raises(RuntimeError, match="for L layers, 6·L weights"):
            native.decoder_stack_step(x, panels[:6], biases, norms, kcs, vcs, 0, keys, values, None, 0.25, eps, False)
        with pytest.raises(RuntimeError, match="for L layers"):
            native.decoder_stack_step(x, panels, biases, norms, kcs, vcs[:1], 0, keys, values, None, 0.25, eps, False)
        with pytest.raises(RuntimeError, match="for L layers"):
            native.decoder_stack_step(x, [], [], [], [], [], 0, [], [], None, 0.25, eps, False)
        with pytest.raises(RuntimeError, match="decoder_stack_step: layer 1: memory keys and values must both be"):
            native.decoder_stack_step(x, panels, biases, norms, kcs, vcs, 0, keys, [values[0], values[1][:, :2]], None,
                                      0.25, eps, False)
        with pytest.raises(RuntimeError, match="decoder_stack_step: layer 1: weight 0 must be the panels of a"):
            native.decoder_stack_step(x, [*panels[:6], panels[1], *panels[7:]], biases, norms, kcs, vcs, 0, keys, values,
                                      None, 0.25, eps, False)
        wide = pack_for_inference(DecoderBlock(BlockConfig(d_model=64, num_heads=4, d_ff=128)).eval())._fused_parts()
        with pytest.raises(RuntimeError, match="layer 1: every layer's feed-forward must have 100 units, got 128"):
            native.decoder_stack_step(x, [*panels[:6], *wide[0]], [*biases[:6], *wide[1]], norms, kcs, vcs, 0, keys,
                                      values, None, 0.25, eps, False)
        eight = pack_for_inference(DecoderBlock(BlockConfig(d_model=64, num_heads=8, d_ff=100)).eval())
        wide_heads = DecoderCache(eight.new_cache(torch.randn(2, 6, 64)).memory)
        k8, v8, _ = wide_heads.self_attn.room_for(1, x.new_empty((2, 8, 0, 8)))
        with pytest.raises(RuntimeError, match="layer 1: every layer's heads must have 16 dimensions .* got 8"):
            native.decoder_stack_step(x, [*panels[:6], *eight._fused_parts()[0]], biases, norms, [kcs[0], k8],
                                      [vcs[0], v8], 0, [keys[0], wide_heads.memory.keys],
                                      [values[0], wide_heads.memory.values], None, 0.25, eps, False)
        with pytest.raises(RuntimeError, match="decoder_stack_step: layer 1: value cache must be a float32 CPU"):
            native.decoder_stack_step(x, panels, biases, norms, kcs, [vcs[0], vcs[1].double()], 0, keys, values, None,
                                      0.25, eps, False)
        with pytest.raises(RuntimeError, match="decoder_stack_step: layer 0: memory keys must be a float32 CPU"):
            native.decoder_stack_step(x, panels, biases, norms, kcs, vcs, 0, [keys[0].double(), keys[1]], values, None,
                                      0.25, eps, False)
        with pytest.raises(RuntimeError, match="decoder_stack_step: layer 1: norm 3 must be a float32 CPU"):
            native.decoder_stack_step(x, panels, biases, [*norms[:9], norms[9].double(), *norms[10:]], kcs, vcs, 0,
                                      keys, values, None, 0.25, eps, False)
        with pytest.raises(RuntimeError, match="decoder_stack_step: layer 1: weight 4 must be a float32 CPU"):
            native.decoder_stack_step(x, [*panels[:10], panels[10].double(), panels[11]], biases, norms, kcs, vcs, 0,
                                      keys, values, None, 0.25, eps, False)
        with pytest.raises(RuntimeError, match="decoder_stack_step: layer 0: bias 5 must be a float32 CPU"):
            native.decoder_stack_step(x, panels, [*biases[:5], biases[5].double(), *biases[6:]], norms, kcs, vcs, 0,
                                      keys, values, None, 0.25, eps, False)
        with pytest.raises(RuntimeError, match="decoder_stack_step: x must be a contiguous"):
            native.decoder_stack_step(x.t(), panels, biases, norms, kcs, vcs, 0, keys, values, None, 0.25, eps, False)
        assert all(len(c) == 0 for c in caches)  # nothing was written


def test_decoder_layer_step_rejects_what_it_cannot_do():
    _, _, fast = _decoder_block("post")
    memory, x = torch.randn(2, 5, 64), torch.randn(2, 64)
    with torch.inference_mode():
        panels, biases, norms, eps = fast._fused_parts()
        mem = fast.new_cache(memory).memory
        kc, vc = torch.zeros(2, 4, 3, 16), torch.zeros(2, 4, 3, 16)
        args = (panels, biases, norms, kc, vc)
        with pytest.raises(RuntimeError, match="outside the caches"):
            native.decoder_layer_step(x, *args, 3, mem.keys, mem.values, None, 0.25, eps, False)
        with pytest.raises(RuntimeError, match="with m dividing 3"):
            native.decoder_layer_step(torch.randn(3, 64), panels, biases, norms, torch.zeros(3, 4, 3, 16),
                                      torch.zeros(3, 4, 3, 16), 0, mem.keys, mem.values, None, 0.25, eps, False)
        with pytest.raises(RuntimeError, match="memory_mask must be a bool"):
            native.decoder_layer_step(x, *args, 0, mem.keys, mem.values, torch.ones(2, 4, dtype=torch.bool), 0.25,
                                      eps, False)
        with pytest.raises(RuntimeError, match="keys and values must both be"):  # another number of memory rows
            native.decoder_layer_step(x, *args, 0, mem.keys, mem.values[:1], None, 0.25, eps, False)
        with pytest.raises(RuntimeError, match="6 weights"):
            native.decoder_layer_step(x, panels[:5], biases, norms, kc, vc, 0, mem.keys, mem.values, None, 0.25, eps,
                                      False)
        with pytest.raises(RuntimeError, match="weight 1 must be the panels of a"):
            native.decoder_layer_step(x, [panels[0], panels[0], *panels[2:]], biases, norms, kc, vc, 0, mem.keys,
                                      mem.values, None, 0.25, eps, False)


def test_a_failed_build_warns_and_decoding_goes_on():
    code = (
        "import warnings, pathlib, torch\n"
        "from attnkit import native\n"
        "native.SOURCE = pathlib.Path('/nonexistent/kernels.cpp')\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always')\n"
        "    assert native.available() is False\n"
        "print(w[0].message)\n"
        "from attnkit.decode.select import top_log_probs\n"
        "with torch.inference_mode():\n"
        "    v, i = top_log_probs(torch.tensor([[0.0, 3.0, 1.0]]), 1)\n"
        "print(i.item())\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    message, token = done.stdout.strip().splitlines()
    assert "without the compiled CPU kernels" in message and "kernels.cpp" in message and token == "1"


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_fused_loss_equals_cross_entropy_with_label_smoothing(smoothing):
    from attnkit.models import label_smoothed_nll
    from attnkit.models.loss import _SmoothedNLL

    g = torch.Generator().manual_seed(7)
    logits = (torch.randn(6, 9, 500, generator=g) * 3).requires_grad_(True)
    target = torch.randint(1, 500, (6, 9), generator=g)
    target[0, 5:] = 0  # padding, ignored
    loss = label_smoothed_nll(logits, target, smoothing=smoothing, ignore_index=0)  # the compiled kernels
    loss.backward()
    ref_logits = logits.detach().clone().requires_grad_(True)
    ref = F.cross_entropy(ref_logits.view(-1, 500), target.view(-1), ignore_index=0, label_smoothing=smoothing,
                          reduction="sum")
    ref.backward()
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(logits.grad, ref_logits.grad, rtol=1e-4, atol=1e-6)
    assert torch.equal(logits.grad[0, 5:], torch.zeros(4, 500))
    keep = target != 0
    plain = _SmoothedNLL.apply(logits.detach(), target, keep, smoothing)  # the PyTorch-operations path
    torch.testing.assert_close(label_smoothed_nll(logits.detach(), target, smoothing=smoothing, reduction="none"),
                               plain, rtol=1e-5, atol=1e-5)
    with pytest.raises(RuntimeError, match="target ids"):
        native.smoothed_nll_forward(logits.detach().view(-1, 500), torch.full((54,), 500), 0.1)


def test_fused_dropout_draws_from_the_seed_alone_and_its_gradient_uses_the_same_mask():
    from attnkit.layers import dropout

    x = torch.rand(301, 77) + 0.5
    a, b = native.dropout_apply(x, 0.25, 42), native.dropout_apply(x, 0.25, 42)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        c = native.dropout_apply(x, 0.25, 42)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(a, b) and torch.equal(a, c)  # a function of (seed, position), not of the threads
    assert torch.equal(native.dropout_mask(x, 0.25, 42) * x, a)
    assert not torch.equal(native.dropout_apply(x, 0.25, 43), a)
    xg = x.clone().requires_grad_(True)
    torch.manual_seed(3)
    y = dropout(xg, 0.25)
    g = torch.randn_like(y)
    y.backward(g)
    kept = y != 0
    torch.testing.assert_close(xg.grad, g * kept / 0.75)  # the mask of the forward pass, drawn again
    drop_rate = 1 - native.dropout_mask(torch.empty(1000, 1000), 0.1, 1).count_nonzero().item() / 1e6
    assert abs(drop_rate - 6554 / 65536) < 2.5e-3
    values = torch.unique(dropout(torch.ones(200, 200, dtype=torch.float64), 0.3))  # float64: PyTorch's path
    assert values.tolist() == [0.0, torch.tensor(1.0 / 0.7, dtype=torch.float32).item()]  # its mask is float32


@pytest.mark.parametrize("shape", [(301, 77), (64, 24, 1024), (5,)])
def test_relu_and_residual_dropout_are_the_separate_operations_bit_for_bit(shape):
    """The fused passes against the operations they replace, on the same seed: the same output bits (NaN, ±0
    and negative inputs included) and the same gradient bits."""
    from attnkit.layers import dropout, relu_dropout, residual_dropout

    g = torch.Generator().manual_seed(sum(shape))
    x = torch.randn(shape, generator=g) * 3
    flat = x.view(-1)
    flat[:: 7] = -0.0
    flat[3 % flat.numel()] = float("nan")
    y, r = torch.randn(shape, generator=g), torch.randn(shape, generator=g) * 1e-3  # r small: the sum rounds y·s
    grad = torch.randn(shape, generator=g)
    for p in (0.1, 0.5):
        seed = 1234567 + int(p * 10)
        fused = native.relu_dropout_apply(x, p, seed)
        separate = native.dropout_apply(torch.relu(x), p, seed)
        assert torch.equal(fused.view(torch.int32), separate.view(torch.int32))  # the bits, NaN and -0 alike
        summed = native.residual_dropout_apply(r, y, p, seed)
        assert torch.equal(summed.view(torch.int32), (r + native.dropout_apply(y, p, seed)).view(torch.int32))
        # through autograd, the same draws of torch's generator: forward and gradient bits of the two paths
        finite = torch.nan_to_num(x)
        outs = []
        for fuse in (True, False):
            xa, ra, ya = (t.clone().requires_grad_(True) for t in (finite, r, y))
            torch.manual_seed(5)
            h = relu_dropout(xa, p) if fuse else dropout(torch.relu(xa), p)
            s = residual_dropout(ra, ya, p) if fuse else ra + dropout(ya, p)
            torch.autograd.backward((h, s), (grad, grad))
            outs.append([h.detach(), s.detach(), xa.grad, ra.grad, ya.grad])
        for a, b in zip(outs[0][:2], outs[1][:2]):
            assert torch.equal(a.view(torch.int32), b.view(torch.int32))
        for a, b in zip(outs[0][2:], outs[1][2:]):  # the same values; where a positive x was dropped, the
            assert torch.equal(a, b)  # separate path's 0 · grad may be -0 (the fused one does not keep x)
    kept = native.relu_dropout_apply(finite, 0.3, 9) > 0  # kept and positive: the gradient flows there alone
    assert torch.equal(native.relu_dropout_backward(grad, native.relu_dropout_apply(finite, 0.3, 9), 0.3),
                       torch.where(kept, grad * torch.tensor(1 / 0.7, dtype=torch.float32), torch.zeros(())))
    assert relu_dropout(x, 0.3, training=False) is not x and torch.equal(relu_dropout(finite, 0.0), torch.relu(finite))
    assert torch.equal(residual_dropout(r, y, 0.3, training=False), r + y)
    # twice differentiable, as the separate operations are: the same second derivatives
    seconds = []
    for fuse in (True, False):
        xa, ya = finite.clone().requires_grad_(True), y.clone().requires_grad_(True)
        torch.manual_seed(11)
        h = relu_dropout(xa, 0.3) if fuse else dropout(torch.relu(xa), 0.3)
        s = residual_dropout(h, ya, 0.3) if fuse else h + dropout(ya, 0.3)
        (gx, gy) = torch.autograd.grad((s * s).sum(), (xa, ya), create_graph=True)
        (gx.sum() + (gy * gy).sum()).backward()
        seconds.append([gx.detach(), gy.detach(), xa.grad, ya.grad])
    for a, b in zip(*seconds):
        assert torch.equal(a, b)
    with pytest.raises(RuntimeError, match="one shape"):
        native.residual_dropout_apply(r, y.view(-1)[:-1], 0.1, 1)
    with pytest.raises(ValueError, match="dropout probability"):
        residual_dropout(r, y, 1.0)


@pytest.mark.filterwarnings("ignore:For backward hooks to be called")  # the global hook meets the blocks' outputs
def test_a_hooked_dropout_module_sees_its_call_in_the_blocks():
    """The blocks fuse dropout into the residual sum and the feed-forward's ReLU; a forward hook on a Dropout
    module turns that off, so the hook still runs and sees what it saw before."""
    from attnkit.layers import BlockConfig, EncoderBlock

    block = EncoderBlock(BlockConfig(d_model=32, num_heads=4, d_ff=64, dropout=0.2)).train()
    seen = []
    handles = [m.register_forward_hook(lambda m, i, o: seen.append(type(m).__name__))
               for m in (block.dropout, block.ffn.dropout)]
    x = torch.randn(2, 5, 32)
    torch.manual_seed(0)
    hooked = block(x).hidden
    for h in handles:
        h.remove()
    torch.manual_seed(0)
    assert torch.equal(block(x).hidden, hooked) and seen == ["Dropout"] * 3  # two residuals, one feed-forward
    # backward hooks too, the module's own and global ones
    fired = []
    handles = [m.register_full_backward_hook(lambda m, gi, go: fired.append("own"))
               for m in (block.dropout, block.ffn.dropout)]
    handles.append(nn.modules.module.register_module_full_backward_hook(
        lambda m, gi, go: fired.append("global") if type(m).__name__ == "Dropout" else None))
    block(x.clone().requires_grad_(True)).hidden.sum().backward()
    for h in handles:
        h.remove()
    assert fired.count("own") == 3 and fired.count("global") == 3
    # a module put in a Dropout's place is called, not bypassed
    block.dropout, block.ffn.dropout = nn.Identity(), nn.Dropout(0.5)
    torch.manual_seed(0)
    out = block(x).hidden
    torch.manual_seed(0)
    block.ffn.dropout = nn.Identity()
    assert not torch.equal(out, block(x).hidden)  # nn.Dropout(0.5) did drop something in the feed-forward
    block.eval()
    assert torch.equal(block(x).hidden, block(x).hidden)


def test_nan_propagates_as_in_pytorch():
    nan = float("nan")
    q, k = torch.randn(1, 1, 1, 8), torch.randn(1, 1, 5, 8)
    with torch.inference_mode():
        assert torch.isnan(native.decode_attention(q * nan, k, k, None, 1.0)).all()
    x = torch.randn(2, 100)
    x[0, 40] = nan
    values, index = native.log_softmax_topk(x, 2, -1)
    assert index[0, 0] == 40 and torch.isnan(values[0]).all()  # torch.topk ranks NaN first
    assert torch.equal(index[1], torch.log_softmax(x[1], -1).topk(2).indices)
    loss, _ = native.smoothed_nll_forward(x, torch.tensor([3, 3]), 0.0)
    assert torch.isnan(loss[0]) and torch.isfinite(loss[1])


def test_dropout_twice_differentiable_and_blocked_token_checked():
    from attnkit.decode.select import top_log_probs
    from attnkit.layers import dropout

    x = (torch.rand(40, 33) + 0.5).requires_grad_(True)
    torch.manual_seed(1)
    y = dropout(x, 0.3)
    (g,) = torch.autograd.grad((y * y).sum(), x, create_graph=True)  # 2 · mask² · x
    g.sum().backward()
    mask = y.detach() / x.detach()
    torch.testing.assert_close(x.grad, 2 * mask * mask)
    with pytest.raises(ValueError, match="blocked"):
        top_log_probs(torch.randn(2, 10), 1, -1)


def _heads(t: torch.Tensor, h: int) -> torch.Tensor:
    b, n, _ = t.shape
    return t.view(b, n, h, -1).transpose(1, 2)  # (b, h, n, d), the view a projection's heads are


# the compiled-in head size; the general loop with the keys transposed in 16 × 16 tiles (48) and one by one (24)
@pytest.mark.parametrize("d", [64, 48, 24])
@pytest.mark.parametrize("i, j", [(7, 9), (5, 37), (3, 70)])  # keys in 1, 3 and 4 + 1 blocks of 16
def test_training_attention_equals_eager_forward_and_backward(d, i, j):
    g = torch.Generator().manual_seed(d + j)
    b, h = 5, 3
    qx = torch.randn(b, i, h * d, generator=g, requires_grad=True)
    kx = torch.randn(b, j, h * d, generator=g, requires_grad=True)
    vx = torch.randn(b, j, h * d, generator=g, requires_grad=True)
    padding = torch.rand(b, 1, 1, j, generator=g) > 0.3
    padding[0] = False  # a row of queries with no key
    causal = torch.ones(i, j, dtype=torch.bool).tril()
    for mask in (None, padding, causal):
        outs, grads = [], []
        for backend in ("native", "eager"):
            out = attend(_heads(qx, h), _heads(kx, h), _heads(vx, h), mask=mask, backend=backend).context
            upstream = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
            outs.append(out)
            grads.append(torch.autograd.grad(out, (qx, kx, vx), upstream))
        torch.testing.assert_close(outs[0], outs[1], rtol=1e-5, atol=1e-5)
        for ours, ref in zip(*grads):
            torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-5)


def test_training_attention_dropout_gradient_matches_its_forward():
    """With dropout the mask comes from the seed: the gradient must be that of the very function the
    forward pass computed (a central difference along a random direction, same seed)."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(4, 2, 6, 64, generator=g, dtype=torch.float32) for _ in range(3))
    out, _ = native.attention_train_forward(q, k, v, None, 0.125, 0.3, 99)
    again, _ = native.attention_train_forward(q, k, v, None, 0.125, 0.3, 99)
    assert torch.equal(out, again)
    kept = native.attention_train_forward(q, k, v, None, 0.125, 0.0, 99)[0]
    assert not torch.allclose(out, kept)  # dropout changed something
    upstream = torch.randn(4, 2, 6, 64, generator=g)  # (b, h, i, e)
    _, probs = native.attention_train_forward(q, k, v, None, 0.125, 0.3, 99)
    dq, dk, dv = native.attention_train_backward(upstream, q, k, v, probs, 0.125, 0.3, 99)  # (b, n, h, d)
    for x, grad in ((q, dq), (k, dk), (v, dv)):
        direction = torch.randn(x.shape, generator=g)
        step = 1e-2
        args = {id(q): q, id(k): k, id(v): v}

        def f(shift):
            moved = {key: (t + shift * direction if t is x else t) for key, t in args.items()}
            o, _ = native.attention_train_forward(moved[id(q)], moved[id(k)], moved[id(v)], None, 0.125, 0.3, 99)
            return (o.transpose(1, 2) * upstream).sum().double()  # the context is (b, i, h, e)

        numeric = (f(step) - f(-step)) / (2 * step)
        analytic = (grad.transpose(1, 2).double() * direction.double()).sum()
        assert abs(numeric - analytic) <= 2e-2 * max(1.0, abs(analytic)), (numeric, analytic)


def test_training_attention_dropout_rate_scale_and_gradient_through_attend():
    """v = identity turns the context into the dropped-out weights themselves."""
    g = torch.Generator().manual_seed(5)
    b, h, i, j = 40, 4, 7, 11
    q, k = torch.randn(b, h, i, 24, generator=g), torch.randn(b, h, j, 24, generator=g)
    eye = torch.eye(j).expand(b, h, j, j).contiguous()
    mask = torch.rand(b, 1, i, j, generator=g) > 0.2
    weights, probs = native.attention_train_forward(q, k, eye, mask.expand(b, h, i, j), 24**-0.5, 0.3, 7)
    weights = weights.transpose(1, 2)  # (b, h, i, j)
    allowed = mask.expand(b, h, i, j) & (probs > 0)
    kept = weights[allowed] != 0
    assert abs(1 - kept.float().mean().item() - round(0.3 * 65536) / 65536) < 0.02
    torch.testing.assert_close(weights[allowed][kept], probs[allowed][kept] / 0.7)
    factors = native.attention_dropout_factors(b, h, i, j, 0.3, 7)
    torch.testing.assert_close(weights, probs * factors)
    # the same through attend (the seed drawn from torch's generator and carried to the backward pass)
    x = torch.randn(b, i, h * 24, generator=g, requires_grad=True)
    kx = torch.randn(b, j, h * 24, generator=g)
    direction = torch.randn(x.shape, generator=g)
    upstream = torch.randn(b, h, i, 24, generator=g)

    def f(t, seed=11):
        torch.manual_seed(seed)
        return (attend(_heads(t, h), _heads(kx, h), _heads(kx, h), mask=mask, dropout=0.3,
                       backend="native").context * upstream).sum()

    (grad,) = torch.autograd.grad(f(x), x)
    with torch.no_grad():
        numeric = (f(x + 1e-2 * direction) - f(x - 1e-2 * direction)) / 2e-2
    analytic = (grad * direction).sum()
    assert abs(numeric - analytic) <= 2e-2 * max(1.0, abs(analytic.item()))


def test_training_attention_output_can_change_in_place_and_has_second_derivatives():
    g = torch.Generator().manual_seed(6)
    x = torch.randn(8, 5, 4 * 16, generator=g, requires_grad=True)
    causal = torch.ones(5, 5, dtype=torch.bool).tril()
    assert choose_backend(AttentionCall("scaled_dot", "softmax", mask=causal), _heads(x, 4), _heads(x, 4),
                          _heads(x, 4)) == "native"
    out = attend(_heads(x, 4), _heads(x, 4), _heads(x, 4), mask=causal).context
    out.mul_(2).sum().backward()  # in place on the output, as eager allows
    penalties = []
    for backend in ("native", "eager"):
        out = attend(_heads(x, 4), _heads(x, 4), _heads(x, 4), mask=causal, backend=backend).context
        (grad,) = torch.autograd.grad(out.pow(2).sum(), x, create_graph=True)
        (second,) = torch.autograd.grad(grad.pow(2).sum(), x)
        penalties.append(second)
    torch.testing.assert_close(penalties[0], penalties[1], rtol=1e-4, atol=1e-4)
    empty = torch.randn(8, 4, 0, 16, requires_grad=True)
    assert choose_backend(AttentionCall("scaled_dot", "softmax"), empty, _heads(x, 4), _heads(x, 4)) != "native"


def _gradients(seed: int) -> list[nn.Parameter]:
    """Parameters with gradients of the shapes a Transformer has (and an empty one), ~2.4M elements."""
    g = torch.Generator().manual_seed(seed)
    params = [nn.Parameter(torch.zeros(shape)) for shape in [(8000, 256), (256,), (768, 256), (0,), (1024, 256), (5,),
                                                               (3, 7)]]
    for p in params:
        p.grad = torch.randn(p.shape, generator=g) * 0.3
    return params


def test_clipping_equals_pytorch_with_a_more_accurate_norm():
    ours, theirs = _gradients(0), _gradients(0)
    exact = torch.sqrt(sum((p.grad.double() ** 2).sum() for p in ours))  # the norm in float64, independently
    norm = clip_grad_norm(ours, 1.0)
    torch_norm = torch.nn.utils.clip_grad_norm_(theirs, 1.0)
    assert norm.dtype == torch.float32 and norm.dim() == 0
    assert abs(norm.double() - exact) <= 1e-6 * exact  # PyTorch's float32 per-tensor norms are off by ~3e-5 here
    torch.testing.assert_close(norm, torch_norm, rtol=1e-4, atol=0)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-9)
    total = torch.sqrt(sum((p.grad.double() ** 2).sum() for p in ours))
    assert abs(total - 1.0) < 1e-5  # clipped to the norm asked for
    # PyTorch's scaling formula from our norm, bit for bit
    factor = torch.clamp(1.0 / (norm + 1e-6), max=1.0)
    for a, b in zip(ours, _gradients(0)):
        assert torch.equal(a.grad, b.grad * factor)


def test_clipping_below_the_limit_leaves_gradients_alone_and_any_thread_count_agrees():
    params, before = _gradients(1), [p.grad.clone() for p in _gradients(1)]
    norm = clip_grad_norm(params, 1e4)
    assert norm < 1e4 and all(torch.equal(p.grad, b) for p, b in zip(params, before))
    threads = torch.get_num_threads()
    try:
        norms = []
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            grads = [p.grad.clone() for p in _gradients(2)]
            norms.append(native.clip_grad_norm_(grads, 0.5))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(norms[0], norms[1]) and torch.equal(norms[0], norms[2])


def test_clipping_non_finite_gradients_and_others_as_pytorch():
    for bad in (float("inf"), float("nan")):
        ours, theirs = _gradients(3), _gradients(3)
        ours[2].grad[5, 5] = theirs[2].grad[5, 5] = bad
        norm, torch_norm = clip_grad_norm(ours, 1.0), torch.nn.utils.clip_grad_norm_(theirs, 1.0)
        torch.testing.assert_close(norm, torch_norm, equal_nan=True)
        for a, b in zip(ours, theirs):
            torch.testing.assert_close(a.grad, b.grad, equal_nan=True)
    # float64 and non-contiguous gradients, and parameters without one: PyTorch's function
    params = [nn.Parameter(torch.zeros(4, 6, dtype=torch.float64)), nn.Parameter(torch.zeros(6, 4)),
              nn.Parameter(torch.zeros(3))]
    params[0].grad = torch.randn(4, 6, dtype=torch.float64)
    params[1].grad = torch.randn(4, 6).t()
    copies = [nn.Parameter(p.detach().clone()) for p in params[:2]]
    for c, p in zip(copies, params):
        c.grad = p.grad.clone()
    assert torch.equal(clip_grad_norm(params, 0.1), torch.nn.utils.clip_grad_norm_(copies, 0.1))
    assert all(torch.equal(c.grad, p.grad) for c, p in zip(copies, params))
    assert params[2].grad is None
    with pytest.raises(RuntimeError, match="clip_grad_norm_: gradient 1 must be a contiguous float32 CPU tensor"):
        native.clip_grad_norm_([torch.zeros(3), torch.zeros(4, 6).t()], 1.0)


def test_clipping_takes_what_pytorch_takes():
    # a single tensor, as torch.nn.utils.clip_grad_norm_ takes it
    one = nn.Parameter(torch.zeros(10))
    one.grad = torch.full((10,), 10.0)
    norm = clip_grad_norm(one, 1.0)
    torch.testing.assert_close(norm, torch.tensor(10 * 10**0.5))
    torch.testing.assert_close(one.grad.norm(), torch.tensor(1.0))
    # the gradients changed in place, as autograd sees it; the norm outside the graph
    params = _gradients(4)
    versions = [p.grad._version for p in params]
    with torch.enable_grad():
        norm = clip_grad_norm(params, 1.0)
    assert norm.grad_fn is None and not norm.requires_grad
    assert all(p.grad._version > v for p, v in zip(params, versions))
    # another norm, error_if_nonfinite and a gradient listed twice: PyTorch's function, with its results
    for kwargs in ({"norm_type": 1.0}, {"norm_type": 3.0}, {"error_if_nonfinite": True}):
        ours, theirs = _gradients(5), _gradients(5)
        assert torch.equal(clip_grad_norm(ours, 1.0, **kwargs), torch.nn.utils.clip_grad_norm_(theirs, 1.0, **kwargs))
        assert all(torch.equal(a.grad, b.grad) for a, b in zip(ours, theirs))
    ours, theirs = _gradients(6), _gradients(6)
    assert torch.equal(clip_grad_norm(ours + ours[:1], 1.0), torch.nn.utils.clip_grad_norm_(theirs + theirs[:1], 1.0))
    assert all(torch.equal(a.grad, b.grad) for a, b in zip(ours, theirs))
    bad = _gradients(7)
    bad[0].grad[0, 0] = float("nan")
    with pytest.raises(RuntimeError, match="non-finite"):
        clip_grad_norm(bad, 1.0, error_if_nonfinite=True)


def test_clipping_a_transformers_gradients_takes_the_compiled_call(monkeypatch):
    # autograd gives the q, k and v weights of an attention computed in one product gradients that are views of
    # one tensor: disjoint, so the compiled call takes them (a check on whole storages once sent every
    # Transformer to PyTorch's function)
    from attnkit.models import TransformerConfig, build_model

    torch.manual_seed(0)
    model = build_model(TransformerConfig(d_model=32, heads=4, encoder_layers=1, decoder_layers=1, ffn_dim=64,
                                          dropout=0.0), 50, 60)
    src, tgt = torch.randint(4, 50, (3, 5)), torch.randint(4, 60, (3, 6))
    model(src, tgt)[0].square().sum().backward()
    grads = [p.grad for p in model.parameters()]
    assert len({g.untyped_storage().data_ptr() for g in grads}) < len(grads)  # some do share a buffer
    theirs = [nn.Parameter(p.detach().clone()) for p in model.parameters()]
    for t, g in zip(theirs, grads):
        t.grad = g.clone()
    calls = []
    real = native.clip_grad_norm_
    monkeypatch.setattr(native, "clip_grad_norm_", lambda g, m: calls.append(len(g)) or real(g, m))
    norm = clip_grad_norm(model.parameters(), 0.5)
    assert calls == [len(grads)]
    torch.testing.assert_close(norm, torch.nn.utils.clip_grad_norm_(theirs, 0.5), rtol=1e-5, atol=0)
    for p, t in zip(model.parameters(), theirs):
        torch.testing.assert_close(p.grad, t.grad, rtol=1e-5, atol=1e-9)
    # views that overlap would be scaled twice: PyTorch's function, which clips what the views show once per view
    base, other = torch.randn(20), torch.randn(20)
    a, b = nn.Parameter(torch.zeros(10)), nn.Parameter(torch.zeros(10))
    a.grad, b.grad = base[:10], base[5:15]
    c, d = nn.Parameter(torch.zeros(10)), nn.Parameter(torch.zeros(10))
    c.grad, d.grad = other[:10], other[5:15]
    other.copy_(base)
    calls.clear()
    assert torch.equal(clip_grad_norm([a, b], 0.1), torch.nn.utils.clip_grad_norm_([c, d], 0.1))
    assert calls == [] and torch.equal(base, other)
