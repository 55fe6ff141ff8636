"""``attnkit explain search``: attention as a soft lookup in a shop catalogue (the notes' 淘宝 analogy).

A database lookup compares the query with every key and returns the value of the one that matches. Attention
compares the query with every key too, but returns a blend of *all* the values, weighted by how well each key
matched. The catalogue below is hand-made so the dot products can be checked by hand.
"""

from __future__ import annotations

import torch

from attnkit.attention import attend, dot

from .lesson import Lesson

DTYPE = torch.float64

# Items on sale; each key describes an item by four features, each value is what the item "is" in numbers.
SEARCH_ITEMS_ZH = ("笔记本电脑", "台式电脑", "纸质笔记本", "手机")
SEARCH_ITEMS_EN = ("laptop", "desktop", "paper notebook", "phone")
SEARCH_FEATURES_ZH = ("电子", "便携", "纸质", "键盘")
SEARCH_FEATURES_EN = ("electronic", "portable", "paper", "keyboard")
SEARCH_KEYS = torch.tensor(
    [
        [1.0, 1.0, 0.0, 1.0],  # laptop: electronic, portable, has a keyboard
        [1.0, 0.0, 0.0, 1.0],  # desktop: electronic, keyboard, not portable
        [0.0, 1.0, 1.0, 0.0],  # paper notebook: portable paper
        [1.0, 1.0, 0.0, 0.0],  # phone: electronic, portable, no keyboard
    ],
    dtype=DTYPE,
)
SEARCH_VALUE_NAMES_ZH = ("价格(千元)", "重量(kg)")
SEARCH_VALUE_NAMES_EN = ("price (k¥)", "weight (kg)")
SEARCH_VALUES = torch.tensor([[6.0, 1.5], [5.0, 8.0], [0.02, 0.3], [4.0, 0.2]], dtype=DTYPE)

# 笔记本 is ambiguous in Chinese: a notebook computer or a paper notebook. The query says "portable" for sure,
# "paper" fairly strongly and "electronic, with a keyboard" half-way.
SEARCH_QUERY = torch.tensor([0.5, 1.0, 0.8, 0.5], dtype=DTYPE)
# Two sharper queries for comparison: 笔记本电脑 (notebook computer) and 纸质笔记本 (paper notebook).
SEARCH_OTHER_QUERIES = torch.tensor([[1.0, 1.0, 0.0, 1.0], [0.0, 1.0, 1.0, 0.0]], dtype=DTYPE)


def catalogue(lang: str) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """Item names, feature names and value names in ``lang``."""
    if lang == "zh":
        return SEARCH_ITEMS_ZH, SEARCH_FEATURES_ZH, SEARCH_VALUE_NAMES_ZH
    return SEARCH_ITEMS_EN, SEARCH_FEATURES_EN, SEARCH_VALUE_NAMES_EN


def search(lang: str = "zh") -> Lesson:
    items, features, value_names = catalogue(lang)
    keys, values, query = SEARCH_KEYS, SEARCH_VALUES, SEARCH_QUERY[None, :]  # (j, d), (j, dv), (1, d)
    lesson = Lesson("淘宝搜索：注意力是一次“软”查找", "Shop search: attention as a soft lookup")
    lesson.add(
        "在淘宝搜“笔记本”：系统把查询（query）和每件商品的描述（key）比较，再把商品本身（value）交给你。"
        "数据库只返回完全匹配的那一件；注意力则按匹配程度，把所有商品的 value 加权混合起来。",
        "Searching a shop for 笔记本 (notebook): the query is compared with each item's description (its key) and "
        "you get the items themselves (the values). A database returns only the item that matches; attention "
        "returns a blend of all the values, weighted by how well each key matches.",
    )
    lesson.add(
        "键 K：每件商品用四个特征描述（1 = 有，0 = 没有）。",
        "Keys K: each item described by four features (1 = yes, 0 = no).",
        keys, rows=items, cols=features, name="keys",
    )
    lesson.add(
        "值 V：每件商品本身，这里用价格和重量两个数表示。",
        "Values V: the items themselves, here two numbers each, price and weight.",
        values, rows=items, cols=value_names, name="values",
    )
    lesson.add(
        "查询 q = “笔记本”：这个词有歧义（笔记本电脑还是纸质笔记本？），"
        "所以它肯定要“便携”，比较想要“纸质”，对“电子”和“键盘”各要一半。",
        "The query q = 笔记本: the word is ambiguous in Chinese (a notebook computer or a paper notebook?), so it "
        "asks for 'portable' for sure, 'paper' fairly strongly, and half of 'electronic' and 'keyboard'.",
        query, cols=features, name="query",
    )
    scores = lesson.add(
        "第一步 相似度：q 与每个键的点积 q·kᵢ，特征对得上越多，分数越高。",
        "Stage 1, similarity: the dot product q·kᵢ with every key; the more features agree, the higher the score.",
        dot(query, keys), cols=items, name="scores",
    )
    out = attend(query, keys, values, score="dot", normalize="softmax", need_weights=True, backend="eager")
    w = out.weights[0]
    best = int(w.argmax())
    lesson.add(
        f"第二步 softmax：分数变成权重，和为 1。{items[best]}最多（{w[best]:.2f}），"
        f"但{items[2]}也有 {w[2]:.2f}——查询有歧义，注意力就把两种意思都留着；没有哪件商品的权重是 0。",
        f"Stage 2, softmax: the scores become weights that sum to 1. The {items[best]} gets the most "
        f"({w[best]:.2f}), but the {items[2]} still gets {w[2]:.2f}: the query is ambiguous and attention keeps "
        "both meanings. No item gets weight 0.",
        out.weights, cols=items, name="weights",
    )
    torch.testing.assert_close(out.weights, torch.softmax(scores, -1))  # attend() did exactly the two stages
    lesson.add(
        f"第三步 加权求和：结果 Σᵢ αᵢ vᵢ 不是某一件商品，而是所有商品的混合：价格 {out.context[0, 0]:.2f} 千元，"
        "既不是笔记本电脑的价格，也不是纸质笔记本的。在神经网络里，value 是特征向量，这个混合就是传给下一层的信息。",
        f"Stage 3, weighted sum: the result Σᵢ αᵢ vᵢ is not one item but a blend of all of them: a price of "
        f"{out.context[0, 0]:.2f} k¥, neither the laptop's nor the paper notebook's. In a network the values are "
        "feature vectors and this blend is the information passed on.",
        out.context, cols=value_names, name="output",
    )
    hard = attend(query, keys, values, score="dot", normalize="hard", need_weights=True, backend="eager")
    lesson.add(
        "对比“硬”查找（argmax，像数据库）：全部权重给分数最高的一件，结果就是它的 value，其余商品完全看不到。"
        "（更多见 attnkit explain soft-vs-hard）",
        "Compare a hard lookup (argmax, like a database): all the weight goes to the best-scoring item and the "
        "result is exactly its value; the other items are not seen at all (more in attnkit explain soft-vs-hard).",
        torch.cat([hard.weights, hard.context], dim=-1), cols=items + value_names, name="hard",
    )
    queries = torch.cat([query, SEARCH_OTHER_QUERIES])  # (3, d)
    several = attend(queries, keys, values, score="dot", need_weights=True, backend="eager")
    names = ("笔记本", "笔记本电脑", "纸质笔记本")
    lesson.add(
        "换个更明确的查询，权重就集中了：同一个目录，三个查询，每行是一个查询在各商品上的权重。",
        "A more specific query concentrates the weights: the same catalogue and three queries, 笔记本, "
        "笔记本电脑 (notebook computer) and 纸质笔记本 (paper notebook), each row one query's weights over the items.",
        several.weights, rows=names, cols=items, name="queries",
    )
    lesson.add(
        "在真正的模型里，查询、键和值都不是手写的特征，而是由输入乘以学到的矩阵得到的向量"
        "（见 attnkit explain self-attention）；比较、softmax、加权求和这三步不变（见 attnkit explain stages）。",
        "In a real model the queries, keys and values are not hand-written features but vectors made from the "
        "input by learned matrices (see attnkit explain self-attention); the three stages, compare, softmax and "
        "weighted sum, stay the same (see attnkit explain stages).",
    )
    return lesson
