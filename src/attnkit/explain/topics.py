"""The topics of ``attnkit explain``: ``toy`` here, the others in their own modules; every number comes from
:mod:`attnkit.attention` or :mod:`attnkit.layers`."""

from __future__ import annotations

from typing import Callable

import torch

from attnkit.attention import attend, dot, softmax

from .lesson import Lesson
from .multi_head import multi_head
from .search import search
from .self_attention import self_attention
from .soft_hard import soft_vs_hard
from .stages import stages

# Word vectors for 早, 上, 好 (the notes' toy example), chosen so that softmax(X Xᵀ) puts 0.4, 0.4,
# 0.2 on 早, 上, 好 for the query 早: 早·早 = 早·上 = 1 and 早·好 = 0.31, and e^(0.31-1) ≈ 0.5.
TOY_WORDS = ("早", "上", "好")
TOY_VECTORS = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.31, 0.5]], dtype=torch.float64)


def toy(lang: str = "zh") -> Lesson:
    x = TOY_VECTORS
    words = TOY_WORDS
    lesson = Lesson("玩具例子：softmax(XXᵀ)X", "A toy example: softmax(XXᵀ)X")
    lesson.add(
        "每个字是一个向量，X 的每一行是一个字：",
        "Each character is a vector; each row of X is one character:",
        x, rows=words, cols=("x1", "x2"),
    )
    scores = lesson.add(
        "第一步 相似度：XXᵀ 的第 i 行第 j 列是第 i 个字与第 j 个字的点积。",
        "Stage 1, similarity: entry (i, j) of XXᵀ is the dot product of word i with word j.",
        dot(x, x), rows=words, cols=words,
    )
    weights = lesson.add(
        "第二步 归一化：对每一行做 softmax，得到注意力权重，每行之和为 1。'早' 这一行是 0.4, 0.4, 0.2。",
        "Stage 2, normalisation: softmax over each row gives the attention weights; every row sums to 1. "
        "The row of '早' is 0.4, 0.4, 0.2.",
        softmax(scores), rows=words, cols=words,
    )
    out = attend(x, x, x, score="dot", need_weights=True, backend="eager")
    lesson.add(
        "第三步 加权求和：softmax(XXᵀ)X，每个字的新向量是所有字向量按权重的加权和。"
        "'早' 的新向量 = 0.4·早 + 0.4·上 + 0.2·好。",
        "Stage 3, weighted sum: softmax(XXᵀ)X; each character's new vector is the weighted sum of all "
        "the vectors. New '早' = 0.4·早 + 0.4·上 + 0.2·好.",
        out.context, rows=words, cols=("x1", "x2"),
    )
    torch.testing.assert_close(out.weights, weights)  # the three stages are exactly what attend() does
    # A word whose row gives another word more weight than itself: the dot product favours long vectors.
    r = next(n for n in range(len(words)) if weights[n].max() > weights[n, n])
    best = int(weights[r].argmax())
    w_best, w_self = f"{weights[r, best]:.2f}", f"{weights[r, r]:.2f}"
    lesson.add(
        f"为什么要学习 W：这里相似度只由词向量本身决定。XXᵀ 是对称的（'早' 对 '上' 的分数就是 '上' 对 '早' 的分数），"
        f"点积又偏爱长的向量：'{words[r]}' 关注 '{words[best]}'（{w_best}）比关注自己（{w_self}）还多。"
        "模型无法选择关注什么。自注意力用可学习的 W_q、W_k、W_v 把 X 投影成查询、键和值，"
        "让训练决定谁该关注谁（见 attnkit explain self-attention）。",
        "Why a learned W helps: here similarity is fixed by the word vectors themselves. XXᵀ is symmetric ('早' "
        "scores '上' exactly as '上' scores '早'), and the dot product favours long vectors: "
        f"'{words[r]}' attends more to '{words[best]}' ({w_best}) than to itself ({w_self}). The model cannot "
        "choose what to attend to. Self-attention projects X with learned W_q, W_k, W_v into queries, keys and "
        "values, so training decides who attends to whom (see attnkit explain self-attention).",
    )
    return lesson


TOPICS: dict[str, Callable[[str], Lesson]] = {
    "toy": toy,
    "search": search,
    "stages": stages,
    "self-attention": self_attention,
    "multi-head": multi_head,
    "soft-vs-hard": soft_vs_hard,
}
