"""``attnkit explain multi-head``: two heads, each with its own q^{i,h}, k^{i,h}, v^{i,h} and its own attention, the
heads' outputs b^{i,1}, b^{i,2} concatenated and multiplied by W^O — computed by hand-set
:class:`~attnkit.layers.MultiHeadAttention` and checked against it."""

from __future__ import annotations

import torch

from attnkit.attention import attend
from attnkit.layers import MultiHeadAttention

from .lesson import Lesson

DTYPE = torch.float64

# Three 4-D inputs, two heads of dimension 2. Rows 1–2 of each projection belong to head 1, rows 3–4 to head 2:
# head 1 compares the inputs' first two features, head 2 looks at the last two, so the heads attend differently.
MH_INPUTS = torch.tensor([[1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 1.0], [0.5, 1.0, 0.5, 1.0]], dtype=DTYPE)
MH_WQ = torch.tensor([[2.0, 0.0, 0.0, 0.0], [0.0, 2.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, -1.0]], dtype=DTYPE)
MH_WK = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, -1.0, 1.0], [0.0, 0.0, 0.0, 1.0]], dtype=DTYPE)
MH_WV = torch.eye(4, dtype=DTYPE)  # values = inputs, so you can recognise them in the heads' outputs
MH_WO = torch.tensor([[1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 1.0], [1.0, 0.0, -1.0, 0.0], [0.0, 1.0, 0.0, -1.0]], dtype=DTYPE)
MH_HEADS = 2

SUP = "¹²³⁴"


def multi_head_layer() -> MultiHeadAttention:
    """MultiHeadAttention(d_model=4, num_heads=2) with the hand-set weights above and no biases."""
    layer = MultiHeadAttention(4, MH_HEADS, bias=False, backend="eager").to(DTYPE)
    with torch.no_grad():
        for proj, w in ((layer.q_proj, MH_WQ), (layer.k_proj, MH_WK), (layer.v_proj, MH_WV), (layer.out_proj, MH_WO)):
            proj.weight.copy_(w)  # nn.Linear computes x Wᵀ: each row aⁱ becomes (W aⁱ)ᵀ
    return layer.eval()


def multi_head(lang: str = "zh") -> Lesson:
    a = MH_INPUTS
    n, d_model = a.shape
    h, d = MH_HEADS, d_model // MH_HEADS
    layer = multi_head_layer()
    positions = tuple(f"i={i + 1}" for i in range(n))
    features = tuple(f"x{c + 1}" for c in range(d_model))
    lesson = Lesson("多头注意力：多个头、拼接、W^O", "Multi-head attention: heads, concatenation, W^O")
    lesson.add(
        "“相关”不止一种：一个字可能关注意思相近的字，也可能关注语法上和它搭配的字。多头注意力让几组 q、k、v 各自做一次"
        "自注意力，每个头学一种相关。输入 a¹…a³，每个 4 维：",
        "There is more than one kind of relevance: a character may care about characters of similar meaning, or "
        "about the ones it goes with grammatically. Multi-head attention runs self-attention several times with "
        "separate q, k, v, each head learning one kind of relevance. The inputs a¹…a³, each 4-D:",
        a, rows=tuple(f"a{SUP[i]}" for i in range(n)), cols=features, name="inputs",
    )
    weights = torch.cat([layer.q_proj.weight, layer.k_proj.weight, layer.v_proj.weight])  # (3 · d_model, d_model)
    labels = tuple(f"W^{m} {r + 1} h{r // d + 1}" for m in "qkv" for r in range(d_model))
    lesson.add(
        "W^q、W^k、W^v（手设，代替学到的）：每个矩阵的第 1–2 行属于头 1（h1），第 3–4 行属于头 2（h2）。"
        "笔记里先算 qⁱ = W^q aⁱ，再用 W^{q,1}、W^{q,2} 乘出 q^{i,1}、q^{i,2}；把两次乘法合成一个矩阵，结果相同。"
        "这里 W^v = I，好让你在输出里认出输入。",
        "W^q, W^k, W^v (set by hand, standing in for learned ones): rows 1–2 of each matrix belong to head 1 (h1), "
        "rows 3–4 to head 2 (h2). The notes first compute qⁱ = W^q aⁱ and then q^{i,1}, q^{i,2} with W^{q,1}, W^{q,2}; "
        "folding the two products into one matrix gives the same result. W^v = I here so that you can recognise "
        "the inputs in the outputs.",
        weights, rows=labels, cols=features, name="w",
    )
    with torch.no_grad():
        # (n, d_model) -> (h, n, d): head h gets components h·d … h·d + d − 1 of every qⁱ, kⁱ, vⁱ
        q, k, v = (proj(a).view(n, h, d).transpose(0, 1) for proj in (layer.q_proj, layer.k_proj, layer.v_proj))
    cols = tuple(f"{m}_{c + 1}" for m in "qkv" for c in range(d))
    for head in range(h):
        lesson.add(
            f"头 {head + 1}：q^{{i,{head + 1}}}、k^{{i,{head + 1}}}、v^{{i,{head + 1}}}，每个 {d} 维。",
            f"Head {head + 1}: q^{{i,{head + 1}}}, k^{{i,{head + 1}}}, v^{{i,{head + 1}}}, each {d}-D.",
            torch.cat([q[head], k[head], v[head]], dim=-1), rows=positions, cols=cols, name=f"head{head + 1}",
        )
    out = attend(q, k, v, score="scaled_dot", normalize="softmax", need_weights=True, backend="eager")
    w = out.weights  # (h, i, j)
    first = [int(w[head, 0].argmax()) + 1 for head in range(h)]
    lesson.add(
        f"每个头各自做自注意力：α'^h = softmax(q^{{i,h}}·k^{{j,h}}/√{d})，q^{{i,1}} 只和 k^{{j,1}} 比，不和头 2 的键比。"
        f"两个头看的地方不同：a¹ 在头 1 最关注 a{SUP[first[0] - 1]}，在头 2 最关注 a{SUP[first[1] - 1]}。",
        f"Each head does its own self-attention: α'^h = softmax(q^{{i,h}}·k^{{j,h}}/√{d}); q^{{i,1}} is compared only with the "
        f"k^{{j,1}}, never with head 2's keys. The heads look at different places: a¹ attends most to "
        f"a{SUP[first[0] - 1]} in head 1 and to a{SUP[first[1] - 1]} in head 2.",
        w.reshape(h * n, n), rows=tuple(f"h{head + 1} q{SUP[i]}" for head in range(h) for i in range(n)),
        cols=tuple(f"k{SUP[j]}" for j in range(n)), name="weights",
    )
    concat = out.context.transpose(0, 1).reshape(n, d_model)  # (h, i, d) -> (i, h · d): [b^{i,1} b^{i,2}]
    head_cols = tuple(f"h{head + 1} x{c + 1}" for head in range(h) for c in range(d))
    lesson.add(
        "每个头输出 b^{i,h} = Σⱼ α'^h_{i,j} v^{j,h}；把同一位置的 b^{i,1}、b^{i,2} 接在一起，又回到 4 维。",
        "Each head outputs b^{i,h} = Σⱼ α'^h_{i,j} v^{j,h}; putting b^{i,1} and b^{i,2} of the same position side by side gives "
        "4 dimensions again.",
        concat, rows=positions, cols=head_cols, name="concat",
    )
    lesson.add(
        "W^O（也是学出来的）把拼接后的向量再混合一次，让每个输出分量都能同时用到两个头的结果：",
        "W^O (learned too) mixes the concatenated vector once more, so that every output component can use both "
        "heads' results:",
        layer.out_proj.weight, rows=tuple(f"W^O {r + 1}" for r in range(d_model)), cols=head_cols, name="wo",
    )
    with torch.no_grad():
        b = layer.out_proj(concat)  # bⁱ = W^O [b^{i,1}; b^{i,2}]
        full = layer(a[None], need_weights=True)
    torch.testing.assert_close(full.context[0], b)  # the layer is exactly the steps above
    torch.testing.assert_close(full.weights[0], w)
    lesson.add(
        "输出 bⁱ = W^O [b^{i,1}; b^{i,2}]。这就是 MultiHeadAttention(d_model=4, num_heads=2) 对 a¹…a³ 的输出，已核对相等。"
        "多头几乎不增加计算量：两个 2 维的头和一个 4 维的头乘法次数一样，只是把维度分给了不同的“关注方式”。",
        "The output bⁱ = W^O [b^{i,1}; b^{i,2}]. This is the output of MultiHeadAttention(d_model=4, num_heads=2) on "
        "a¹…a³, checked equal. More heads cost almost no extra computation: two 2-D heads do as many "
        "multiplications as one 4-D head; the dimensions are just shared out among different ways of attending.",
        b, rows=tuple(f"b{SUP[i]}" for i in range(n)), cols=features, name="output",
    )
    return lesson
