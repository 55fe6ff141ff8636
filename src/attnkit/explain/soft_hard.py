"""``attnkit explain soft-vs-hard``: the query 笔记本 of ``search`` under soft attention (softmax), hard attention
(argmax) and sampled hard attention (one key drawn with probability softmax(s), by the Gumbel-max trick)."""

from __future__ import annotations

import torch

from attnkit.attention import attend

from .lesson import Lesson
from .search import SEARCH_KEYS, SEARCH_QUERY, SEARCH_VALUES, catalogue

SHOWN_SAMPLES = 5
MANY_SAMPLES = 10000
SEED = 0


def _attend(query, normalize: str, **normalize_params):
    return attend(
        query, SEARCH_KEYS.expand(*query.shape[:-2], -1, -1), SEARCH_VALUES.expand(*query.shape[:-2], -1, -1),
        score="dot", normalize=normalize, normalize_params=normalize_params, need_weights=True, backend="eager",
    )


def soft_vs_hard(lang: str = "zh") -> Lesson:
    items, _, value_names = catalogue(lang)
    query = SEARCH_QUERY[None, :]  # (1, d)
    lesson = Lesson("软注意力与硬注意力", "Soft versus hard attention")
    soft = _attend(query, "softmax")
    lesson.add(
        "还是 attnkit explain search 里的查询“笔记本”和同一个商品目录。软注意力：softmax 给每件商品一个权重，"
        "每件都参与加权求和。",
        "The query 笔记本 and the shop catalogue of attnkit explain search again. Soft attention: softmax gives every "
        "item a weight and every item takes part in the weighted sum.",
        soft.weights, cols=items, name="soft",
    )
    hard = _attend(query, "hard")
    lesson.add(
        "硬注意力（argmax）：全部权重给分数最高的一件，其余为 0。结果只读一个 value，但永远是同一件，"
        "第二好的纸质笔记本再接近也看不到。",
        "Hard attention (argmax): all the weight goes to the best-scoring item, the rest get 0. Only one value is "
        "read, but it is always the same one: the paper notebook, a close second, is never seen.",
        hard.weights, cols=items, name="hard",
    )
    g = torch.Generator().manual_seed(SEED)
    shown = _attend(query.expand(SHOWN_SAMPLES, 1, -1), "gumbel", generator=g)
    lesson.add(
        "采样的硬注意力：每次按 softmax 的概率随机抽一件（Gumbel-max 技巧：argmax(s + g)，g 服从 Gumbel 分布）。"
        f"用固定种子抽 {SHOWN_SAMPLES} 次，每行是一次抽样：",
        "Sampled hard attention: each time one item is drawn with the softmax probabilities (the Gumbel-max trick: "
        f"argmax(s + g) with Gumbel noise g). {SHOWN_SAMPLES} draws with a fixed seed, one per row:",
        shown.weights[:, 0], rows=tuple(f"#{n + 1}" for n in range(SHOWN_SAMPLES)), cols=items, name="samples",
    )
    many = _attend(query.expand(MANY_SAMPLES, 1, -1), "gumbel", generator=g)
    frequency = many.weights[:, 0].mean(0, keepdim=True)  # (1, j): how often each item was drawn
    freq_zh, freq_en = f"{MANY_SAMPLES} 次中的频率", f"share of {MANY_SAMPLES} draws"
    lesson.add(
        f"抽 {MANY_SAMPLES} 次，每件商品被抽中的频率几乎就是 softmax 权重：采样的硬注意力“平均起来”就是软注意力。",
        f"Over {MANY_SAMPLES} draws, the share of draws each item gets is almost exactly its softmax weight: sampled "
        "hard attention is soft attention on average.",
        torch.cat([frequency, soft.weights]), rows=(freq_zh if lang == "zh" else freq_en, "softmax"), cols=items,
        name="frequency",
    )
    outputs = torch.cat([soft.context, hard.context, shown.context[:, 0], many.context[:, 0].mean(0, keepdim=True)])
    sample_labels = tuple(f"#{n + 1}" for n in range(SHOWN_SAMPLES))
    labels_zh = ("软", "硬 argmax") + tuple(f"采样 {s}" for s in sample_labels) + (f"{MANY_SAMPLES} 次采样的平均",)
    labels_en = ("soft", "hard argmax") + tuple(f"sample {s}" for s in sample_labels) + (f"mean of {MANY_SAMPLES} samples",)
    lesson.add(
        "输出 Σᵢ αᵢ vᵢ：软注意力是各商品的混合；硬注意力和每一次采样都恰好是某一件商品的 value；"
        "大量采样的平均又回到软注意力的输出（期望相同，但单次结果的方差大）。",
        "The outputs Σᵢ αᵢ vᵢ: soft attention gives a blend of the items; hard attention and each single sample give "
        "exactly one item's value; the mean of many samples comes back to the soft output (the same expectation, "
        "but a single sample varies a lot).",
        outputs, rows=labels_zh if lang == "zh" else labels_en, cols=value_names, name="outputs",
    )
    grads = []
    for normalize in ("softmax", "hard"):
        q = query.clone().requires_grad_(True)
        (price,) = torch.autograd.grad(_attend(q, normalize).context[0, 0], q)
        grads.append(price)
    _, features, _ = catalogue(lang)
    lesson.add(
        "训练要梯度。softmax 处处可导；argmax 的输出是阶梯形的，梯度几乎处处为 0。库里的 hard 和 gumbel 用“直通估计”"
        "（straight-through）：前向是 one-hot，反向借用 softmax 的梯度。下表是输出价格对查询 q 的梯度，两行相同"
        "（比如查询里“纸质”越多，价格越低）：",
        "Training needs gradients. Softmax is differentiable everywhere; argmax is a step function whose gradient is "
        "0 almost everywhere. The library's hard and gumbel use the straight-through estimator: one-hot in the "
        "forward pass, the softmax's gradient in the backward pass. The table is the gradient of the output price "
        "with respect to the query q; the two rows are equal (more 'paper' in the query, for instance, lowers the "
        "price):",
        torch.cat(grads), rows=("softmax", "hard"), cols=features, name="gradients",
    )
    torch.testing.assert_close(grads[0], grads[1])
    lesson.add(
        "怎么选：软注意力可导、稳定，但要读遍所有 value；硬注意力只读一个 value，结果更好解释，"
        "却要靠直通估计或采样（如 REINFORCE，Xu et al. 2015 的 hard attention）来训练，梯度有偏或方差大。"
        "Transformer 用的都是软注意力。",
        "Which to use: soft attention is differentiable and stable but reads every value; hard attention reads one "
        "value and is easier to interpret, but has to be trained through a straight-through estimate or by "
        "sampling (REINFORCE, as in the hard attention of Xu et al. 2015), with biased or noisy gradients. "
        "Transformers use soft attention throughout.",
    )
    return lesson
