"""attnkit.attention checked against PyTorch's own attention, float64 gradcheck and hand-computed values."""

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from attnkit.attention import (
    NORMALIZERS,
    SCORES,
    attend,
    causal_mask,
    combine_masks,
    padding_mask,
)
from attnkit.attention.normalize import DIFFERENTIABLE, gumbel, relu
from attnkit.attention.scores import scaled_dot

D = 6


def _qkv(b=2, h=3, i=5, j=7, d=D, dv=4, dtype=torch.float64, grad=True):
    g = torch.Generator().manual_seed(1234)
    make = lambda *s: torch.randn(*s, generator=g, dtype=dtype).requires_grad_(grad)  # noqa: E731
    return make(b, h, i, d), make(b, h, j, d), make(b, h, j, dv)


def _score_params(score, dtype=torch.float64, d=D, a=5):
    g = torch.Generator().manual_seed(99)
    make = lambda *s: torch.randn(*s, generator=g, dtype=dtype).requires_grad_(True)  # noqa: E731
    if score == "general":
        return {"weight": make(d, d)}
    if score == "additive":
        return {"w_q": make(a, d), "w_k": make(a, d), "v": make(a)}
    if score == "cosine":
        return {"temperature": 0.5}
    return {}


def _mask(b=2, i=5, j=7):
    # key padding (second sequence has 4 keys) combined with a causal mask; plus one fully masked row
    m = combine_masks(padding_mask([j, 4], max_len=j), causal_mask(i, j)).expand(b, 3, i, j).clone()
    m[1, 2, 0, :] = False
    return m


# -------------------------------------------------------------------------------- gradcheck, float64


@pytest.mark.parametrize("score,normalize", list(itertools.product(sorted(SCORES), DIFFERENTIABLE)))
@pytest.mark.parametrize("masked", [False, True], ids=["nomask", "mask"])
def test_gradcheck_every_differentiable_pair(score, normalize, masked):
    q, k, v = _qkv(b=1, h=2, i=3, j=4, dv=3)
    params = _score_params(score)
    mask = None
    if masked:
        mask = causal_mask(3, 4)
    tensors = (q, k, v, *[p for p in params.values() if isinstance(p, torch.Tensor)])
    names = [n for n, p in params.items() if isinstance(p, torch.Tensor)]

    def fn(q, k, v, *ps):
        sp = dict(params, **dict(zip(names, ps)))
        return attend(q, k, v, score=score, normalize=normalize, mask=mask, score_params=sp, backend="eager").context

    assert torch.autograd.gradcheck(fn, tensors, eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("score", ["scaled_dot", "general", "additive"])
def test_gradcheck_chunked_backward(score):
    q, k, v = _qkv(b=1, h=2, i=3, j=5, dv=3)
    params = _score_params(score)
    names = list(params)

    def fn(q, k, v, *ps):
        return attend(q, k, v, score=score, mask=causal_mask(3, 5), score_params=dict(zip(names, ps)), backend="chunked").context

    assert torch.autograd.gradcheck(fn, (q, k, v, *params.values()), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("normalize", ["hard", "gumbel"])
def test_straight_through_gradient_is_the_softmax_gradient(normalize):
    q, k, v = _qkv(b=1, h=1, i=3, j=4, dv=2)
    mask = causal_mask(3, 4)
    params = {"generator": torch.Generator().manual_seed(3), "tau": 1.0} if normalize == "gumbel" else {}
    out = attend(q, k, v, score="dot", normalize=normalize, normalize_params=params, mask=mask, need_weights=True)
    upstream = torch.randn_like(out.weights)
    (grad_st,) = torch.autograd.grad(out.weights, q, upstream)
    # Recompute the soft weights the estimator differentiates (same Gumbel noise for gumbel).
    scores = q @ k.transpose(-2, -1)
    if normalize == "gumbel":
        u = torch.rand(scores.shape, generator=torch.Generator().manual_seed(3), dtype=scores.dtype)
        scores = scores - torch.log(-torch.log(u))
    soft = torch.softmax(scores.masked_fill(~mask, -math.inf), -1)
    (grad_soft,) = torch.autograd.grad(soft, q, upstream)
    torch.testing.assert_close(grad_st, grad_soft)
    assert set(out.weights.detach().unique().tolist()) <= {0.0, 1.0}


# ------------------------------------------------------------------------------ backends and PyTorch


@pytest.mark.parametrize("backend", ["eager", "sdpa", "chunked"])
@pytest.mark.parametrize("masking", ["none", "padding", "causal", "both"])
def test_backends_match_torch_sdpa_forward_and_backward(backend, masking):
    q, k, v = _qkv(b=2, h=3, i=9, j=9, d=16, dv=8, dtype=torch.float32)
    mask = {
        "none": None,
        "padding": padding_mask([9, 5]),
        "causal": causal_mask(9, 9),
        "both": combine_masks(padding_mask([9, 5]), causal_mask(9, 9)),
    }[masking]
    ours = attend(q, k, v, mask=mask, backend=backend).context
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert (ours - ref).abs().max() <= 1e-5
    g = torch.randn_like(ref)
    grads_ours = torch.autograd.grad(ours, (q, k, v), g)
    grads_ref = torch.autograd.grad(ref, (q, k, v), g)
    for a, b in zip(grads_ours, grads_ref):
        assert (a - b).abs().max() <= 1e-5


@pytest.mark.parametrize(
    "score,backend",
    [(s, "sdpa") for s in ("dot", "scaled_dot", "general", "cosine")]
    + [(s, "chunked") for s in ("dot", "scaled_dot", "general", "cosine", "additive")],
)
def test_backend_parity_with_eager_for_each_score(score, backend):
    q, k, v = _qkv(b=2, h=3, i=6, j=7, dtype=torch.float32)
    params = _score_params(score, dtype=torch.float32)
    mask = _mask(i=6, j=7)
    ref = attend(q, k, v, score=score, score_params=params, mask=mask, backend="eager").context
    out = attend(q, k, v, score=score, score_params=params, mask=mask, backend=backend).context
    assert (out - ref).abs().max() <= 1e-5
    inputs = (q, k, v, *[p for p in params.values() if isinstance(p, torch.Tensor)])
    g = torch.randn_like(ref)
    for a, b in zip(torch.autograd.grad(out, inputs, g), torch.autograd.grad(ref, inputs, g)):
        assert (a - b).abs().max() <= 1e-5


def test_chunked_with_many_tiles_equals_eager(monkeypatch):
    import attnkit.attention.chunked as chunked

    monkeypatch.setattr(chunked, "TILE_ELEMENTS", 64)  # force tiny tiles: many query and key blocks
    q, k, v = _qkv(b=1, h=2, i=37, j=53, d=8, dv=5, dtype=torch.float32)
    mask = combine_masks(padding_mask([50], max_len=53), causal_mask(37, 53))
    for normalize in ("softmax", "relu"):
        ref = attend(q, k, v, mask=mask, normalize=normalize, backend="eager").context
        out = attend(q, k, v, mask=mask, normalize=normalize, backend="chunked").context
        assert (out - ref).abs().max() <= 1e-5
        g = torch.randn_like(ref)
        for a, b in zip(torch.autograd.grad(out, (q, k, v), g), torch.autograd.grad(ref, (q, k, v), g)):
            assert (a - b).abs().max() <= 1e-5


def test_relu_divide_by_length_chunked_equals_eager():
    q, k, v = _qkv(dtype=torch.float32)
    mask = _mask()
    params = {"divide_by_length": True}
    ref = attend(q, k, v, normalize="relu", normalize_params=params, mask=mask, backend="eager").context
    out = attend(q, k, v, normalize="relu", normalize_params=params, mask=mask, backend="chunked").context
    assert (out - ref).abs().max() <= 1e-5


def test_auto_choice_follows_the_documented_rule():
    from attnkit.attention import AttentionCall, choose_backend

    assert choose_backend(AttentionCall("scaled_dot", "softmax")) == "sdpa"
    assert choose_backend(AttentionCall("general", "softmax")) == "sdpa"
    assert choose_backend(AttentionCall("cosine", "softmax")) == "sdpa"
    assert choose_backend(AttentionCall("scaled_dot", "softmax", need_weights=True)) == "eager"
    assert choose_backend(AttentionCall("additive", "softmax")) == "eager"
    assert choose_backend(AttentionCall("scaled_dot", "sparsemax")) == "eager"


def test_auto_choice_takes_eager_for_short_attention_on_cpu_and_both_agree():
    from attnkit.attention import AttentionCall, choose_backend
    from attnkit.attention.backends import CPU_EAGER_MAX_KEYS, CPU_EAGER_MIN_BLOCKS

    call = AttentionCall("scaled_dot", "softmax")
    g = torch.Generator().manual_seed(3)
    blocks = CPU_EAGER_MIN_BLOCKS
    for b, j, expected in ((blocks, 24, "eager"), (blocks, CPU_EAGER_MAX_KEYS, "eager"),
                           (blocks, CPU_EAGER_MAX_KEYS + 1, "sdpa"), (blocks - 1, 24, "sdpa")):
        q, k, v = (torch.randn(b, 1, 5 if n == "q" else j, 8, generator=g) for n in "qkv")
        assert choose_backend(call, q, k) == expected
        auto = attend(q, k, v).context
        for name in ("eager", "sdpa"):
            assert (attend(q, k, v, backend=name).context - auto).abs().max() <= 1e-5
    # the rule never overrides what only eager can do
    assert choose_backend(AttentionCall("scaled_dot", "sparsemax"), q, k) == "eager"


def test_weights_match_torch_multihead_reference_formula():
    q, k, v = _qkv(dtype=torch.float32, grad=False)
    out = attend(q, k, v, need_weights=True)
    ref = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(D), -1)
    assert (out.weights - ref).abs().max() <= 1e-6
    assert (out.context - ref @ v).abs().max() <= 1e-5
    assert attend(q, k, v).weights is None


def test_fully_masked_row_gives_zero_context_and_weights_and_finite_grads():
    q, k, v = _qkv(dtype=torch.float32)
    mask = _mask()
    for normalize in sorted(NORMALIZERS):
        out = attend(q, k, v, normalize=normalize, mask=mask, need_weights=True,
                     normalize_params={"generator": torch.Generator().manual_seed(0)} if normalize == "gumbel" else None)
        assert torch.equal(out.weights[1, 2, 0], torch.zeros(7))
        assert torch.equal(out.context[1, 2, 0], torch.zeros(4))
        grads = torch.autograd.grad(out.context.sum(), (q, k, v))
        assert all(torch.isfinite(g).all() for g in grads)
    for backend in ("sdpa", "chunked"):
        ctx = attend(q, k, v, mask=mask, backend=backend).context
        assert torch.equal(ctx[1, 2, 0], torch.zeros(4))
        assert all(torch.isfinite(g).all() for g in torch.autograd.grad(ctx.sum(), (q, k, v)))


def test_inference_path_equals_training_path():
    # Under no_grad the eager softmax is computed in place; it must equal the autograd path.
    q, k, v = _qkv(dtype=torch.float32)
    mask = _mask()
    with_grad = attend(q, k, v, mask=mask, need_weights=True, backend="eager")
    with torch.no_grad():
        no_grad = attend(q, k, v, mask=mask, need_weights=True, backend="eager")
    torch.testing.assert_close(no_grad.weights, with_grad.weights.detach(), rtol=0, atol=1e-7)
    torch.testing.assert_close(no_grad.context, with_grad.context.detach(), rtol=0, atol=1e-6)


def test_custom_score_and_normalizer_callables():
    q, k, v = _qkv(dtype=torch.float32, grad=False)
    out = attend(q, k, v, score=lambda a, b: a @ b.transpose(-2, -1) * 0.25,
                 normalize=lambda s, m: torch.softmax(s, -1), need_weights=True)
    ref = torch.softmax(q @ k.transpose(-2, -1) * 0.25, -1)
    torch.testing.assert_close(out.weights, ref)


@pytest.mark.parametrize("backend", ["eager", "chunked"])
def test_a_custom_score_that_returns_the_wrong_scores_is_named(backend):
    # chunked ran the callable unchecked: a bmm RuntimeError for the wrong shape, integer scores taken silently
    q, k, v = _qkv(dtype=torch.float32, grad=False)  # scores (2, 3, 5, 7)
    dots = lambda a, b: a @ b.transpose(-2, -1)  # noqa: E731
    with pytest.raises(ValueError, match=r"the score callable returned scores of shape \(2, 3, 7, 5\); expected"):
        attend(q, k, v, score=lambda a, b: dots(a, b).transpose(-2, -1), backend=backend)
    for dtype in (torch.int64, torch.float64):
        with pytest.raises(TypeError, match=f"the score callable returned scores of dtype {dtype}; expected the queries' torch.float32"):
            attend(q, k, v, score=lambda a, b: dots(a, b).round().to(dtype), backend=backend)
    out = attend(q, k, v, score=lambda a, b: dots(a, b) * 0.25, backend=backend)
    torch.testing.assert_close(out.context, torch.softmax(q @ k.transpose(-2, -1) * 0.25, -1) @ v)


def test_a_custom_normalizer_that_returns_the_wrong_weights_is_named():
    q, k, v = _qkv(dtype=torch.float32, grad=False)
    with pytest.raises(ValueError, match=r"the normalize callable returned weights of shape \(2, 3, 5, 2\) and dtype "
                                         r"torch.float32; expected those of the scores, \(2, 3, 5, 7\)"):
        attend(q, k, v, normalize=lambda s, m: torch.softmax(s, -1)[..., :2])
    with pytest.raises(TypeError, match="the normalize callable must return a tensor of weights"):
        attend(q, k, v, normalize=lambda s, m: s.tolist())


# ------------------------------------------------------------------------------------ normalisers


def test_sparsemax_matches_hand_computed_projection():
    # z = (1.0, 0.8, 0.1): support {1, 2}, tau = (1.8 - 1) / 2 = 0.4 -> (0.6, 0.4, 0)
    z = torch.tensor([[1.0, 0.8, 0.1]])
    w = attend(torch.eye(3)[:1], torch.eye(3), torch.eye(3), score=lambda a, b: z, normalize="sparsemax",
               need_weights=True).weights
    torch.testing.assert_close(w, torch.tensor([[0.6, 0.4, 0.0]]))


def test_relu_is_unnormalised_max_with_zero():
    s = torch.tensor([[2.0, -1.0, 0.5]])
    w = attend(torch.eye(3)[:1], torch.eye(3), torch.eye(3), score=lambda a, b: s, normalize="relu", need_weights=True).weights
    torch.testing.assert_close(w, torch.tensor([[2.0, 0.0, 0.5]]))


def test_gumbel_is_seeded_and_samples_in_proportion_to_softmax():
    scores = torch.log(torch.tensor([0.5, 0.3, 0.2])).expand(20000, 3)
    from attnkit.attention import gumbel

    a = gumbel(scores, generator=torch.Generator().manual_seed(7))
    b = gumbel(scores, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    freq = a.mean(0)
    assert torch.allclose(freq, torch.tensor([0.5, 0.3, 0.2]), atol=0.015)  # 20k samples: sd ~ 0.0035


def test_the_notes_toy_example():
    from attnkit.explain.topics import TOY_VECTORS

    x = TOY_VECTORS
    out = attend(x, x, x, score="dot", need_weights=True)
    torch.testing.assert_close(out.weights[0], torch.tensor([0.4, 0.4, 0.2], dtype=x.dtype), atol=1e-3, rtol=0)
    torch.testing.assert_close(out.context, torch.softmax(x @ x.T, -1) @ x)


# ------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "kwargs,exc,words",
    [
        (dict(q=torch.randn(5)), ValueError, ["query", "(5,)"]),
        (dict(k=torch.randn(2, 3, 7, 6)), ValueError, ["leading", "key"]),
        (dict(k=torch.randn(2, 7, 6)), ValueError, ["rank"]),
        (dict(v=torch.randn(2, 4, 8, 4)), ValueError, ["positions", "value"]),
        (dict(q=torch.randint(0, 3, (2, 4, 5, 6))), TypeError, ["query", "int64"]),
        (dict(k=torch.randn(2, 4, 7, 5)), ValueError, ["feature", "key"]),
        (dict(mask=torch.ones(2, 7, dtype=torch.bool)), ValueError, ["mask", "(2, 7)", "broadcast"]),
        (dict(mask=torch.ones(2, 5, 7, dtype=torch.bool)), ValueError, ["mask", "(2, 5, 7)", "rank 4"]),
        (dict(mask=torch.ones(2, 4, 3, 7, dtype=torch.bool)), ValueError, ["mask", "broadcast"]),
        (dict(mask=torch.ones(2, 1, 1, 7)), TypeError, ["mask", "boolean"]),
        (dict(score="luong"), ValueError, ["score", "luong", "scaled_dot"]),
        (dict(normalize="softermax"), ValueError, ["normalize", "softermax", "sparsemax"]),
        (dict(dropout=1.5), ValueError, ["dropout"]),
        (dict(backend="flash"), ValueError, ["backend", "flash"]),
        (dict(backend="sdpa", need_weights=True), ValueError, ["sdpa", "weights"]),
        (dict(backend="sdpa", normalize="sparsemax"), ValueError, ["sdpa", "softmax"]),
        (dict(backend="chunked", normalize="hard"), ValueError, ["chunked", "row"]),
        (dict(backend="chunked", need_weights=True), ValueError, ["chunked", "weights"]),
    ],
)
def test_bad_input_raises_a_clear_error(kwargs, exc, words):
    args = dict(q=torch.randn(2, 4, 5, 6), k=torch.randn(2, 4, 7, 6), v=torch.randn(2, 4, 7, 4))
    for name in ("q", "k", "v"):
        if name in kwargs:
            args[name] = kwargs.pop(name)
    with pytest.raises(exc) as info:
        attend(args["q"], args["k"], args["v"], **kwargs)
    for word in words:
        assert word in str(info.value)


def test_score_parameter_shapes_are_checked():
    q, k, v = torch.randn(2, 5, 6), torch.randn(2, 7, 3), torch.randn(2, 7, 4)
    with pytest.raises(ValueError, match=r"weight must have shape \(d_q, d_k\) = \(6, 3\)"):
        attend(q, k, v, score="general", score_params={"weight": torch.randn(6, 6)})
    with pytest.raises(ValueError, match="w_k"):
        attend(q, k, v, score="additive", score_params={"w_q": torch.randn(4, 6), "w_k": torch.randn(4, 6), "v": torch.randn(4)})


def test_mask_helpers():
    assert padding_mask([2, 0, 3]).shape == (3, 1, 1, 3)
    assert padding_mask([2, 0, 3], ndim=3)[:, 0].tolist() == [[True, True, False], [False] * 3, [True] * 3]
    assert causal_mask(2, 4).tolist() == [[True, True, True, False], [True, True, True, True]]
    assert causal_mask(3).tolist() == [[True, False, False], [True, True, False], [True, True, True]]
    assert combine_masks(None, None) is None
    with pytest.raises(ValueError, match="max_len=2"):
        padding_mask([3], max_len=2)
    with pytest.raises(TypeError, match="boolean"):
        combine_masks(torch.ones(2, 2))
    with pytest.raises(ValueError, match=r"\(2, 1, 1, 5\).*\(3, 4\)"):
        combine_masks(padding_mask([5, 3]), causal_mask(3, 4))


def test_padding_mask_refuses_two_dimensions():
    """A (b, j) mask is read as the shared (i, j) one: with b == i it would mask the wrong keys silently."""
    for ndim in (2, 1, 3.0):
        with pytest.raises(ValueError, match="ndim must be an integer >= 3"):
            padding_mask([5, 4, 3, 2, 1], ndim=ndim)


def test_a_custom_score_is_never_written_over():
    q, k, v = torch.randn(2, 4, 8), torch.randn(2, 4, 8), torch.randn(2, 4, 8)
    bias = torch.randn(4, 4)
    before = bias.clone()
    out = attend(q, k, v, score=lambda a, b: bias.expand(2, 4, 4), need_weights=True)
    assert torch.equal(bias, before)
    torch.testing.assert_close(out.weights, torch.softmax(before, -1).expand(2, 4, 4))
    torch.testing.assert_close(out.context, torch.softmax(before, -1) @ v)
    scores = torch.randn(2, 4, 4)
    kept = scores.clone()
    attend(q, k, v, score=lambda a, b: scores, need_weights=True)
    assert torch.equal(scores, kept)
    with pytest.raises(ValueError, match=r"score callable returned scores of shape \(4, 6\).*\(2, 4, 4\)"):
        attend(q, k, v, score=lambda a, b: torch.randn(4, 6), need_weights=True)


@pytest.mark.parametrize("backend", ["auto", "eager", "sdpa", "chunked"])
def test_score_and_normalize_params_are_checked_on_every_backend(backend):
    q, k, v = torch.randn(2, 5, 8), torch.randn(2, 7, 8), torch.randn(2, 7, 4)
    cases = [
        (dict(score="dot", score_params={"scale": 0.01}), ValueError, "score 'dot' takes no parameters; unknown score_params ['scale']"),
        (dict(score="cosine", score_params={"temprature": 0.1}), ValueError, "unknown score_params ['temprature']"),
        (dict(score="general"), ValueError, "score 'general' needs score_params ['weight']"),
        (dict(score="general", score_params={"weight": torch.randn(8, 8, dtype=torch.float64)}), TypeError,
         "score_params['weight'] has dtype torch.float64"),
        (dict(score_params={"scale": float("nan")}), ValueError, "score_params['scale'] must be a finite number"),
        (dict(score_params={"scale": torch.tensor(float("inf"))}), ValueError, "NaN or infinite"),
        (dict(score="cosine", score_params={"temperature": float("nan")}), ValueError, "temperature"),
        (dict(score="cosine", score_params={"temperature": 0.0}), ValueError, "must be > 0"),
        (dict(normalize="softmax", normalize_params={"tau": 1.0}), ValueError, "normalize 'softmax' takes no parameters"),
        (dict(normalize="relu", normalize_params={"divide_by_length": "no"}), TypeError, "True or False"),
        (dict(normalize="gumbel", normalize_params={"tau": float("nan")}), ValueError, "tau"),
        (dict(normalize="gumbel", normalize_params={"tau": "1"}), ValueError, "normalize_params['tau'] must be a finite number, got '1'"),
    ]
    for kwargs, exc, words in cases:
        with pytest.raises(exc) as info:
            attend(q, k, v, backend=backend, **kwargs)
        assert words in str(info.value), (kwargs, str(info.value))


@pytest.mark.parametrize("backend", ["auto", "chunked"])
def test_a_tensor_scale_or_temperature_keeps_its_gradient(backend):
    g = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(2, 5, 8, generator=g, dtype=torch.float64) for _ in range(3))
    for score, name in (("scaled_dot", "scale"), ("cosine", "temperature")):
        grads = []
        for b in (backend, "eager"):
            t = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
            out = attend(q, k, v, score=score, score_params={name: t}, backend=b).context
            assert out.requires_grad, (score, b)
            (out * torch.arange(out.numel(), dtype=out.dtype).view(out.shape)).sum().backward()
            grads.append(t.grad)
        torch.testing.assert_close(grads[0], grads[1])
        assert grads[0] != 0


@pytest.mark.parametrize("backend", ["eager", "chunked", "sdpa", "auto"])
def test_empty_queries_or_keys_in_four_dimensions(backend):
    for i, j in ((5, 0), (0, 7), (0, 0)):
        q, k, v = torch.randn(2, 3, i, 8), torch.randn(2, 3, j, 8), torch.randn(2, 3, j, 4)
        out = attend(q, k, v, backend=backend, need_weights=backend == "eager")
        assert out.context.shape == (2, 3, i, 4)
        assert torch.equal(out.context, torch.zeros(2, 3, i, 4))  # no key: a zero context, as a fully masked row
        if backend == "eager":
            assert out.weights.shape == (2, 3, i, j)
    for normalize in NORMALIZERS:
        w = NORMALIZERS[normalize](torch.randn(2, 5, 0))
        assert w.shape == (2, 5, 0), normalize


@pytest.mark.parametrize("backend", ["eager", "chunked", "sdpa", "auto"])
def test_queries_and_keys_without_features(backend):
    # d = 0: 1/sqrt(d) is undefined, and was a bare ZeroDivisionError on every backend
    q, k, v = torch.randn(2, 3, 0), torch.randn(2, 5, 0), torch.randn(2, 5, 4)
    with pytest.raises(ValueError, match=r"score 'scaled_dot' divides by sqrt\(d\), but query \(2, 3, 0\) has d = 0"):
        attend(q, k, v, backend=backend)
    # Every score of empty vectors is 0 (an empty sum), so softmax is uniform: each context is the mean value.
    for score, params in (("dot", {}), ("scaled_dot", {"scale": 0.5})):
        out = attend(q, k, v, score=score, score_params=params, backend=backend)
        torch.testing.assert_close(out.context, v.mean(1, keepdim=True).expand(2, 3, 4))
    with pytest.raises(ValueError, match=r"has d = 0 features"):
        scaled_dot(q, k)


@pytest.mark.parametrize("tau", [0.1, 0.5, 1.0, 3.0])
@pytest.mark.parametrize("hard", [True, False])
def test_gumbel_fully_masked_row_is_zero_for_every_tau(tau, hard):
    q, k, v = _qkv(dtype=torch.float32)
    mask = _mask()
    params = {"generator": torch.Generator().manual_seed(0), "tau": tau, "hard": hard}
    out = attend(q, k, v, normalize="gumbel", mask=mask, need_weights=True, normalize_params=params)
    assert torch.equal(out.weights[1, 2, 0], torch.zeros(7))
    assert torch.equal(out.context[1, 2, 0], torch.zeros(4))
    assert torch.isfinite(out.weights).all()
    # the other rows are y = softmax((s + g) / tau) over the unmasked keys, or its one-hot (same noise)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    u = torch.rand(scores.shape, generator=torch.Generator().manual_seed(0), dtype=scores.dtype)
    y = torch.softmax(((scores - torch.log(-torch.log(u))) / tau).masked_fill(~mask, -math.inf), -1)
    y = torch.nan_to_num(y.detach(), nan=0.0)
    if hard:
        y = torch.zeros_like(y).scatter_(-1, y.argmax(-1, keepdim=True), 1.0) * mask.any(-1, keepdim=True)
    torch.testing.assert_close(out.weights.detach(), y)
    grads = torch.autograd.grad(out.context.sum(), (q, k, v))
    assert all(torch.isfinite(g).all() for g in grads)


def _sparsemax_reference(z: list[float]) -> list[float]:
    """Martins & Astudillo 2016, Algorithm 1, on one row, in exact rational arithmetic."""
    from fractions import Fraction

    z = [Fraction(x) for x in z]
    s = sorted(z, reverse=True)
    k = max(n for n in range(1, len(s) + 1) if 1 + n * s[n - 1] > sum(s[:n]))
    tau = (sum(s[:k]) - 1) / k
    return [float(max(x - tau, 0)) for x in z]


@pytest.mark.parametrize("dtype,magnitude", [(torch.float32, 1e8), (torch.float32, 3e30), (torch.bfloat16, 300.0),
                                             (torch.float16, 3000.0), (torch.float64, 1e17)])
def test_sparsemax_of_large_scores_matches_the_algorithm_in_exact_arithmetic(dtype, magnitude):
    # 1 + z rounds to z for large z: the support test of the top key must still hold
    g = torch.Generator().manual_seed(5)
    scores = (torch.randn(6, 5, generator=g, dtype=torch.float64) * magnitude).to(dtype)
    scores[0, 1] = scores[0, 0] = scores[0].max()  # a tie at the top
    mask = torch.rand(6, 5, generator=g) > 0.3
    mask[:, 2] = True
    q = torch.zeros(1, 6, 2, dtype=dtype)
    kv = torch.zeros(1, 5, 2, dtype=dtype)
    for m in (None, mask):
        w = attend(q, kv, kv, score=lambda a, b: scores[None], normalize="sparsemax", mask=None if m is None else m[None],
                   need_weights=True).weights[0]
        for row in range(6):
            keep = [c for c in range(5) if m is None or m[row, c]]
            want = _sparsemax_reference([float(scores[row, c]) for c in keep])
            got = w[row].double()
            assert torch.allclose(got[keep], torch.tensor(want, dtype=torch.float64), atol=1e-2 if dtype != torch.float64 else 1e-9)
            assert float(got.sum()) == pytest.approx(1.0, abs=1e-2)
            if m is not None:
                assert not bool(got[~m[row]].any())  # masked keys get exactly 0


@pytest.mark.parametrize("backend", ["auto", "eager", "sdpa", "chunked"])
def test_cosine_eps_and_the_shape_of_a_tensor_scale_are_checked(backend):
    q, k, v = torch.randn(2, 3, 5, 8), torch.randn(2, 3, 7, 8), torch.randn(2, 3, 7, 4)
    q[0, 0, 0] = 0.0  # a zero vector: eps <= 0 would divide it by 0
    for eps in (0.0, -1.0):
        with pytest.raises(ValueError, match=r"score_params\['eps'\] must be > 0"):
            attend(q, k, v, score="cosine", score_params={"eps": eps}, backend=backend)
    with pytest.raises(ValueError, match=r"score_params\['eps'\] must be a finite number"):
        attend(q, k, v, score="cosine", score_params={"eps": "tiny"}, backend=backend)
    # a (d,) tensor would weight each feature of q, not scale the scores
    for shape in ((8,), (3,), (2, 2)):
        with pytest.raises(ValueError, match=r"score_params\['scale'\] of shape .* broadcasts to \(\.\.\., i, 1\)"):
            attend(q, k, v, score_params={"scale": torch.ones(shape)}, backend=backend)
        with pytest.raises(ValueError, match=r"score_params\['temperature'\] of shape"):
            attend(q, k, v, score="cosine", score_params={"temperature": torch.ones(shape)}, backend=backend)


@pytest.mark.parametrize("backend", ["auto", "chunked"])
def test_a_per_head_tensor_scale_scales_each_heads_scores(backend):
    g = torch.Generator().manual_seed(4)
    q, k, v = (torch.randn(2, 3, 5, 8, generator=g, dtype=torch.float64) for _ in range(3))
    scale = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64).view(3, 1, 1)
    out = attend(q, k, v, score_params={"scale": scale}, backend=backend).context
    ref = torch.softmax(q @ k.transpose(-2, -1) * scale, -1) @ v
    torch.testing.assert_close(out, ref)


def test_additive_score_parameters_that_are_not_tensors_are_named():
    q, k, v = torch.randn(2, 5, 8), torch.randn(2, 7, 8), torch.randn(2, 7, 4)
    params = {"w_q": torch.randn(3, 8), "w_k": torch.randn(3, 8), "v": torch.randn(3)}
    for name in ("w_q", "w_k", "v"):
        bad = dict(params, **{name: [[1.0] * 8] * 3})
        for backend in ("eager", "chunked"):
            with pytest.raises(TypeError, match=f"additive score: {name} must be a tensor, got list"):
                attend(q, k, v, score="additive", score_params=bad, backend=backend)


@pytest.mark.parametrize("dropout", [None, "x", "0.1", b"0.1", True, [0.1], torch.tensor([0.1, 0.2])])
def test_a_dropout_that_is_not_a_number_is_named(dropout):
    # "0.1" was read by float() as 0.1, though the message says a number is needed; True was 1.0
    q = torch.randn(2, 5, 8)
    with pytest.raises(TypeError, match=r"dropout must be a number in \[0, 1\), got"):
        attend(q, q, q, dropout=dropout)


def test_a_dropout_given_as_a_number_of_any_kind_still_works():
    q = torch.randn(2, 5, 8)
    plain = attend(q, q, q).context
    for p in (0, 0.0, np.float32(0.0), np.int64(0), torch.tensor(0.0)):
        torch.testing.assert_close(attend(q, q, q, dropout=p).context, plain)
    torch.manual_seed(0)
    dropped = attend(q, q, q, dropout=np.float64(0.5), need_weights=True)
    assert not torch.allclose(dropped.context, plain)  # the weights were dropped before the sum, as asked
    torch.testing.assert_close(dropped.weights.sum(-1), torch.ones(2, 5))  # the returned ones are before dropout
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\), got nan"):
        attend(q, q, q, dropout=float("nan"))


@pytest.mark.parametrize("value", ["no", "False", "", None, 2, 0.5, torch.tensor([True, False])])
def test_need_weights_that_is_not_a_flag_is_named(value):
    # "no" was taken as true (bool("no")), None as false
    q = torch.randn(2, 5, 8)
    with pytest.raises(TypeError, match="need_weights must be True or False, got"):
        attend(q, q, q, need_weights=value)


def test_need_weights_given_as_a_flag_of_any_kind_still_works():
    q = torch.randn(2, 5, 8)
    for yes in (True, np.bool_(True), 1):
        torch.testing.assert_close(attend(q, q, q, need_weights=yes).weights.sum(-1), torch.ones(2, 5))
    for no in (False, np.bool_(False), 0):
        assert attend(q, q, q, need_weights=no).weights is None


def test_normalizer_flags_called_directly_must_be_flags():
    s = torch.randn(2, 3, 4)
    for call, name in ((lambda v: relu(s, divide_by_length=v), "relu divide_by_length"),
                       (lambda v: gumbel(s, hard=v), "gumbel hard")):
        for value in ("no", None):
            with pytest.raises(TypeError, match=f"{name} must be True or False"):
                call(value)
    torch.testing.assert_close(relu(s, divide_by_length=True), torch.relu(s) / 4)  # (4 keys, none masked)


def test_mask_builders_refuse_sizes_that_are_not_integers():
    # causal_mask(3.5) was a (4, 4) mask, offset=1.5 acted as 1; padding_mask's max_len=4.5 a bare view() error
    for args, kwargs, name in (((3.5,), {}, "i"), ((3, 4.0), {}, "j"), (("3",), {}, "i"), ((3,), {"offset": 1.5}, "offset"),
                               ((True,), {}, "i")):
        with pytest.raises(TypeError, match=f"causal_mask {name} must be an integer"):
            causal_mask(*args, **kwargs)
    for max_len in (4.5, "4", True):
        with pytest.raises(TypeError, match="max_len must be an integer or None"):
            padding_mask([3, 2], max_len=max_len)
    # integers of any kind still work, and give the convention's masks
    assert torch.equal(causal_mask(np.int64(2), 3), torch.tensor([[True, True, False], [True, True, True]]))
    assert torch.equal(padding_mask([3, 1], max_len=np.int64(4)).flatten(1),
                       torch.tensor([[True, True, True, False], [True, False, False, False]]))
