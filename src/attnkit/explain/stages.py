"""``attnkit explain stages``: the three stages of attention — similarity, normalisation, weighted sum —
with the similarity computed three ways (dot product, cosine, a small MLP)."""

from __future__ import annotations

import torch

from attnkit.attention import additive, attend, cosine, dot, softmax

from .lesson import Lesson

DTYPE = torch.float64

# One query and three keys in 2-D: k₂ points the same way as q but is short, k₃ is long and points a little off,
# so the dot product and the cosine disagree about which key is most similar.
STAGES_QUERY = torch.tensor([[1.0, 2.0]], dtype=DTYPE)
STAGES_KEYS = torch.tensor([[2.0, 0.0], [0.5, 1.0], [0.0, 3.0]], dtype=DTYPE)
STAGES_VALUES = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=DTYPE)
# The additive (MLP) score vᵀ tanh(W_q q + W_k k), set by hand: each hidden unit compares one coordinate of q
# with the same coordinate of k, tanh(q_c - k_c). A trained model learns its own.
STAGES_MLP = {
    "w_q": torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=DTYPE),
    "w_k": torch.tensor([[-1.0, 0.0], [0.0, -1.0]], dtype=DTYPE),
    "v": torch.tensor([1.0, 1.0], dtype=DTYPE),
}
STAGES_TEMPERATURE = 0.1


def stages(lang: str = "zh") -> Lesson:
    q, k, v = STAGES_QUERY, STAGES_KEYS, STAGES_VALUES
    keys = ("k₁", "k₂", "k₃")
    lesson = Lesson("注意力的三个步骤：相似度、归一化、加权求和", "The three stages of attention: similarity, normalisation, weighted sum")
    lesson.add(
        "注意力总是三步：① 相似度 sᵢ = score(q, kᵢ)；② 归一化 αᵢ = softmax(s)ᵢ；③ 加权求和 Σᵢ αᵢ vᵢ。"
        "不同的注意力主要区别在第一步的 score。",
        "Attention is always three stages: (1) similarity sᵢ = score(q, kᵢ); (2) normalisation "
        "αᵢ = softmax(s)ᵢ; (3) weighted sum Σᵢ αᵢ vᵢ. Kinds of attention differ mostly in the score of stage 1.",
    )
    lesson.add(
        "一个查询 q 和三个键：k₂ 与 q 方向相同但较短，k₃ 很长，方向与 q 略有偏差。",
        "One query q and three keys: k₂ points the same way as q but is short; k₃ is long and points a little off.",
        torch.cat([q, k]), rows=("q",) + keys, cols=("x1", "x2"), name="inputs",
    )
    lesson.add(
        "每个键对应一个值 vᵢ：",
        "Each key has a value vᵢ:",
        v, rows=("v₁", "v₂", "v₃"), cols=("x1", "x2"), name="values",
    )
    s_dot = lesson.add(
        "相似度 ① 点积 q·kᵢ = |q||kᵢ|cosθ：既看方向也看长度，所以很长的 k₃ 得分最高。",
        "Similarity (a), dot product q·kᵢ = |q||kᵢ|cosθ: it measures direction and length, so the long k₃ "
        "scores highest.",
        dot(q, k), cols=keys, name="dot",
    )
    s_cos = lesson.add(
        "相似度 ② 余弦 cosθ = q·kᵢ/(|q||kᵢ|)：只看方向，k₂ 与 q 同向，得满分 1；所有分数都在 [-1, 1] 之间。",
        "Similarity (b), cosine cosθ = q·kᵢ/(|q||kᵢ|): direction only, so k₂, pointing the same way as q, "
        "gets the full 1. Every score lies in [-1, 1].",
        cosine(q, k), cols=keys, name="cosine",
    )
    s_cos_t = cosine(q, k, temperature=STAGES_TEMPERATURE)
    p = STAGES_MLP
    # The hidden layer tanh(W_q q + W_k kᵢ), unit by unit: the additive score with v = a unit vector.
    units = torch.eye(p["v"].shape[0], dtype=DTYPE)
    hidden = torch.cat([additive(q, k, p["w_q"], p["w_k"], unit) for unit in units]).T  # (j, a)
    lesson.add(
        "相似度 ③ MLP（加性注意力，Bahdanau 2015）：把 q 和 kᵢ 送进一个小网络，sᵢ = vᵀ tanh(W_q q + W_k kᵢ)。"
        "这里 W_q = I、W_k = −I、v = (1, 1) 是手设的，每个隐藏单元是 tanh(q_c − k_c)；下表是各键的隐藏层：",
        "Similarity (c), an MLP (additive attention, Bahdanau 2015): q and kᵢ go through a small network, "
        "sᵢ = vᵀ tanh(W_q q + W_k kᵢ). Here W_q = I, W_k = −I, v = (1, 1) are set by hand, so each hidden unit "
        "is tanh(q_c − k_c); the table is the hidden layer for each key:",
        hidden, rows=keys, cols=("h1", "h2"), name="hidden",
    )
    s_mlp = lesson.add(
        "MLP 的分数 sᵢ = v·hidden：这组手设参数偏爱 k₂。训练时 W_q、W_k、v 都是学出来的，"
        "所以 MLP 能学到点积和余弦表达不了的“相似”。",
        "The MLP's scores sᵢ = v·hidden: these hand-set parameters favour k₂. In training W_q, W_k and v are "
        "learned, so an MLP can learn notions of similarity that neither the dot product nor the cosine can express.",
        additive(q, k, **p), cols=keys, name="mlp",
    )
    torch.testing.assert_close(s_mlp, (hidden @ p["v"])[None, :])
    scores = {"dot": s_dot, "cosine": s_cos, f"cosine/{STAGES_TEMPERATURE:g}": s_cos_t, "MLP": s_mlp}
    outputs = {
        "dot": attend(q, k, v, score="dot", need_weights=True, backend="eager"),
        "cosine": attend(q, k, v, score="cosine", need_weights=True, backend="eager"),
        f"cosine/{STAGES_TEMPERATURE:g}": attend(
            q, k, v, score="cosine", score_params={"temperature": STAGES_TEMPERATURE}, need_weights=True, backend="eager"
        ),
        "MLP": attend(q, k, v, score="additive", score_params=p, need_weights=True, backend="eager"),
    }
    for name, out in outputs.items():  # attend() is exactly softmax of the scores shown here
        torch.testing.assert_close(out.weights, softmax(scores[name]))
    rows = tuple(outputs)
    lesson.add(
        "② 归一化：每种分数各做一次 softmax。点积的分数相差大，权重几乎全给 k₃；余弦分数只在 [-1, 1] 内，"
        f"softmax 之后很平，所以常除以一个温度（这里 {STAGES_TEMPERATURE:g}）把差距放大，k₂ 就突出了。"
        "分数的尺度和分数的大小顺序一样重要。",
        "(2) Normalisation: softmax of each kind of score. The dot products are far apart, so nearly all the "
        "weight goes to k₃. Cosine scores stay within [-1, 1] and give a flat softmax, so they are usually divided "
        f"by a temperature (here {STAGES_TEMPERATURE:g}) to spread them, and then k₂ stands out. The scale of the "
        "scores matters as much as their order.",
        torch.cat([out.weights for out in outputs.values()]), rows=rows, cols=keys, name="weights",
    )
    lesson.add(
        "③ 加权求和：输出 = Σᵢ αᵢ vᵢ。同样的键和值，只换了相似度，输出就不同。",
        "(3) Weighted sum: output = Σᵢ αᵢ vᵢ. Same keys and values; only the similarity changed, and so did the "
        "output.",
        torch.cat([out.context for out in outputs.values()]), rows=rows, cols=("x1", "x2"), name="outputs",
    )
    lesson.add(
        "这三步就是库里的 attend(q, k, v, score=..., normalize=...)：score 可选 dot、scaled_dot、cosine、"
        "general、additive，normalize 可选 softmax、relu、sparsemax、hard、gumbel。"
        "上面的权重和输出就是 attend 算出来的，并已核对等于前面分步的结果。",
        "These three stages are the library's attend(q, k, v, score=..., normalize=...): score is one of dot, "
        "scaled_dot, cosine, general, additive; normalize one of softmax, relu, sparsemax, hard, gumbel. The "
        "weights and outputs above are attend()'s, checked equal to the step-by-step results.",
    )
    return lesson
