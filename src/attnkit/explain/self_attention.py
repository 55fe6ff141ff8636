"""``attnkit explain self-attention``: qⁱ = W^q aⁱ, kⁱ = W^k aⁱ, vⁱ = W^v aⁱ, the scores α₁,ᵢ = q¹·kⁱ, the
1/√d_k scaling and why, softmax versus ReLU, and b¹ = Σᵢ α'₁,ᵢ vⁱ — in the notation of the notes, computed by
a one-head :class:`~attnkit.layers.MultiHeadAttention` with hand-set weights."""

from __future__ import annotations

import math
from functools import lru_cache

import torch

from attnkit.attention import attend, dot, relu, scaled_dot, softmax
from attnkit.layers import MultiHeadAttention

from .lesson import Lesson

DTYPE = torch.float64

# Four input vectors a¹..a⁴ and the three projections, small enough to multiply by hand. The weights stand in for
# learned ones; they are chosen so that some scores are negative (which ReLU cuts to 0) and a⁴'s query has no
# positive score at all.
SELF_INPUTS = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.5]], dtype=DTYPE)
SELF_WQ = torch.tensor([[1.0, 1.0], [0.0, 1.0]], dtype=DTYPE)
SELF_WK = torch.tensor([[1.0, 0.0], [1.0, -1.0]], dtype=DTYPE)
SELF_WV = torch.tensor([[1.0, 0.0], [0.5, 1.0]], dtype=DTYPE)

# The experiment behind the scaling: dot products of random vectors with independent unit-variance components.
VARIANCE_DIMS = (4, 64)
VARIANCE_PAIRS = 10000
SATURATION_QUERIES, SATURATION_KEYS = 1000, 4
SEED = 0

SUP = "¹²³⁴"


def self_attention_layer() -> MultiHeadAttention:
    """A one-head layer whose projections are W^q, W^k, W^v above and whose output projection is the identity,
    so its output is b itself."""
    layer = MultiHeadAttention(2, 1, bias=False, backend="eager").to(DTYPE)
    with torch.no_grad():
        layer.q_proj.weight.copy_(SELF_WQ)  # nn.Linear computes a Wᵀ, i.e. qⁱ = W^q aⁱ for each row aⁱ
        layer.k_proj.weight.copy_(SELF_WK)
        layer.v_proj.weight.copy_(SELF_WV)
        layer.out_proj.weight.copy_(torch.eye(2, dtype=DTYPE))
    return layer.eval()


@lru_cache(maxsize=1)
def _scaling_experiment() -> tuple[torch.Tensor, torch.Tensor]:
    """Variance of q·k before and after ÷√d_k, and the mean largest softmax weight before and after,
    for each d_k in VARIANCE_DIMS (seeded, so computed once per process)."""
    g = torch.Generator().manual_seed(SEED)
    variances, largest = [], []
    for d_k in VARIANCE_DIMS:
        q = torch.randn(VARIANCE_PAIRS, 1, d_k, generator=g, dtype=DTYPE)
        k = torch.randn(VARIANCE_PAIRS, 1, d_k, generator=g, dtype=DTYPE)
        variances.append(torch.stack([dot(q, k).var(), scaled_dot(q, k).var()]))
        q = torch.randn(SATURATION_QUERIES, 1, d_k, generator=g, dtype=DTYPE)
        k = torch.randn(SATURATION_QUERIES, SATURATION_KEYS, d_k, generator=g, dtype=DTYPE)
        largest.append(
            torch.stack([softmax(dot(q, k)).amax(-1).mean(), softmax(scaled_dot(q, k)).amax(-1).mean()])
        )
    return torch.stack(variances), torch.stack(largest)


def self_attention(lang: str = "zh") -> Lesson:
    a = SELF_INPUTS
    n = a.shape[0]
    layer = self_attention_layer()
    inputs = tuple(f"a{SUP[i]}" for i in range(n))
    lesson = Lesson("自注意力：q、k、v，缩放，softmax，加权求和", "Self-attention: q, k, v, scaling, softmax, weighted sum")
    lesson.add(
        "输入是一串向量 a¹…a⁴（比如四个字的词向量），每个都是 2 维。自注意力让每个位置看遍整串输入，输出 b¹…b⁴。",
        "The input is a sequence of vectors a¹…a⁴ (say, the vectors of four characters), each 2-D. Self-attention "
        "lets every position look at the whole sequence and outputs b¹…b⁴.",
        a, rows=inputs, cols=("x1", "x2"), name="inputs",
    )
    lesson.add(
        "三个矩阵 W^q、W^k、W^v 是训练学到的（这里手设）。每行乘以 aⁱ 得到 qⁱ、kⁱ、vⁱ 的一个分量。",
        "Three matrices W^q, W^k, W^v are learned in training (here set by hand). Each row times aⁱ gives one "
        "component of qⁱ, kⁱ, vⁱ.",
        torch.cat([layer.q_proj.weight, layer.k_proj.weight, layer.v_proj.weight]),
        rows=("W^q 1", "W^q 2", "W^k 1", "W^k 2", "W^v 1", "W^v 2"), cols=("x1", "x2"), name="w",
    )
    with torch.no_grad():
        q, k, v = layer.q_proj(a), layer.k_proj(a), layer.v_proj(a)  # (i, d) each
    lesson.add(
        "qⁱ = W^q aⁱ（查询：我要找什么），kⁱ = W^k aⁱ（键：我能被怎样找到），vⁱ = W^v aⁱ（值：我提供的内容）。"
        "同一个 aⁱ 扮演三种角色。",
        "qⁱ = W^q aⁱ (query: what I am looking for), kⁱ = W^k aⁱ (key: how I can be found), vⁱ = W^v aⁱ "
        "(value: what I hand over). The same aⁱ plays three roles.",
        torch.cat([q, k, v], dim=-1), rows=tuple(f"i={i + 1}" for i in range(n)),
        cols=("q_1", "q_2", "k_1", "k_2", "v_1", "v_2"), name="qkv",
    )
    queries, keys = tuple(f"q{SUP[i]}" for i in range(n)), tuple(f"k{SUP[i]}" for i in range(n))
    lesson.add(
        "注意力分数 α₁,ᵢ = q¹·kⁱ：第 1 行是 a¹ 的查询与每个键的点积。笔记里用列向量，把 qⁱ、kⁱ 排成矩阵 Q、K，"
        "一次算出 A = KᵀQ，A 的第 1 列就是 α₁,ᵢ；库里向量按行存放，算的是 QKᵀ = Aᵀ，所以这张表的第 i 行是 A 的第 i 列。",
        "Attention scores α₁,ᵢ = q¹·kⁱ: row 1 is the dot product of a¹'s query with every key. The notes use "
        "column vectors, stack the qⁱ and kⁱ into matrices Q and K and compute A = KᵀQ at once, whose column 1 holds "
        "α₁,ᵢ; the library stores vectors as rows and computes QKᵀ = Aᵀ, so row i of this table is column i of A.",
        dot(q, k), rows=queries, cols=keys, name="dot",
    )
    d_k = q.shape[-1]
    scores = lesson.add(
        f"缩放：除以 √d_k（这里 d_k = {d_k}，即乘以 {1 / math.sqrt(d_k):.4f}）。为什么？看下面两步。",
        f"Scaling: divide by √d_k (here d_k = {d_k}, i.e. multiply by {1 / math.sqrt(d_k):.4f}). Why? See the next "
        "two steps.",
        scaled_dot(q, k), rows=queries, cols=keys, name="scaled",
    )
    variances, largest = _scaling_experiment()
    dims = tuple(f"d_k={d}" for d in VARIANCE_DIMS)
    lesson.add(
        "为什么除以 √d_k：若 q 和 k 的各分量独立、均值 0、方差 1，q·k = Σ_c q_c k_c 是 d_k 个方差为 1 的项之和，"
        f"方差就是 d_k（标准差 √d_k）；除以 √d_k 后方差回到 1，与 d_k 无关。用固定种子的随机向量各算 {VARIANCE_PAIRS} 个点积验证：",
        "Why divide by √d_k: if the components of q and k are independent with mean 0 and variance 1, "
        "q·k = Σ_c q_c k_c is a sum of d_k terms of variance 1, so its variance is d_k (standard deviation √d_k); "
        f"divided by √d_k the variance is back to 1 whatever d_k. Checked on {VARIANCE_PAIRS} dot products of "
        "random vectors (fixed seed):",
        variances, rows=dims, cols=("var(q·k)", "var(q·k/√d_k)"), name="variance",
    )
    lesson.add(
        f"方差大有什么坏处：分数相差太大，softmax 会饱和成几乎 one-hot。下表是 {SATURATION_QUERIES} 个随机查询对 "
        f"{SATURATION_KEYS} 个键的最大权重的平均：d_k = 64 不缩放时接近 1，此时 softmax 的梯度 α(1−α) 几乎为 0，"
        "训练就学不动了；缩放后与 d_k = 4 时一样温和。",
        "Why large variance hurts: when scores are far apart, softmax saturates into an almost one-hot vector. "
        f"The table is the largest weight averaged over {SATURATION_QUERIES} random queries against "
        f"{SATURATION_KEYS} keys: with d_k = 64 and no scaling it is close to 1, where the softmax gradient "
        "α(1−α) is almost 0 and learning stalls; scaled, it is as moderate as with d_k = 4.",
        largest, rows=dims, cols=("unscaled", "scaled"), name="saturation",
    )
    weights = lesson.add(
        "softmax：对每一行做 softmax，得到 α'₁,ᵢ 等，每行之和为 1。",
        "Softmax over each row gives α'₁,ᵢ and the rest; every row sums to 1.",
        softmax(scores), rows=queries, cols=keys, name="softmax",
    )
    relu_weights = relu(scores)
    lesson.add(
        "笔记里说也可以不用 softmax，比如用 ReLU：负分数变成 0，正分数原样保留，行和不再是 1"
        f"（第 3 行之和是 {relu_weights[2].sum():.2f}）；q⁴ 没有一个分数大于 0，在 ReLU 下它什么都不看，b⁴ = 0。",
        "The notes say softmax is not the only choice; ReLU, for instance, turns negative scores into 0 and "
        f"keeps positive ones, so rows no longer sum to 1 (row 3 sums to {relu_weights[2].sum():.2f}); q⁴ has no "
        "positive score, so under ReLU it attends to nothing and b⁴ = 0.",
        relu_weights, rows=queries, cols=keys, name="relu",
    )
    out = attend(q, k, v, score="scaled_dot", normalize="softmax", need_weights=True, backend="eager")
    torch.testing.assert_close(out.weights, weights)
    with torch.no_grad():
        layer_out = layer(a[None], need_weights=True)
    torch.testing.assert_close(layer_out.context[0], out.context)  # the layer does what this lesson says
    torch.testing.assert_close(layer_out.weights[0, 0], weights)
    w1 = weights[0]
    terms = " + ".join(f"{w1[i]:.2f}·v{SUP[i]}" for i in range(n))
    lesson.add(
        f"加权求和：b¹ = Σᵢ α'₁,ᵢ vⁱ = {terms}。每一行 bⁱ 都这样算，而且互不依赖，可以并行。"
        "这正是 MultiHeadAttention(d_model=2, num_heads=1) 用上面的 W（W^O = I）算出的输出，已核对相等。",
        f"Weighted sum: b¹ = Σᵢ α'₁,ᵢ vⁱ = {terms}. Every bⁱ is computed the same way and independently of the "
        "others, so all in parallel. This is exactly the output of MultiHeadAttention(d_model=2, num_heads=1) with "
        "the W above (and W^O = I), checked equal.",
        out.context, rows=tuple(f"b{SUP[i]}" for i in range(n)), cols=("x1", "x2"), name="output",
    )
    return lesson
