"""Attention heatmaps: output tokens down the side, source tokens along the top.

``weights`` are ``(i, j)`` for one head, ``(h, i, j)`` for a grid of heads, or
``(layers, h, i, j)`` from which a layer and head (or their average) is chosen.
"""

from __future__ import annotations

import math
import unicodedata
from pathlib import Path
from typing import Sequence


from torch import Tensor

from .fonts import cjk_font
from .scale import colour_range, range_note

__all__ = ["plot_attention", "select_heads", "layer_head_name", "visible"]


def visible(token: str) -> str:
    """``token`` as a label people can see: a character no font draws — a control or format character
    (``\\x02`` decoded from a byte piece of an undertrained model, a zero-width space) — is written as its
    escape (``\\x02``, ``\\u200b``); every other character is kept. Drawn as is, such a character was a
    blank label (and a warning of a missing glyph)."""
    return "".join(ch if unicodedata.category(ch)[0] != "C" else
                   f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}" if ord(ch) < 0x10000 else
                   f"\\U{ord(ch):08x}" for ch in token)


def select_heads(weights: Tensor, layer: int | None = -1, head: int | str | None = "mean") -> Tensor:
    """From ``(layers, h, i, j)``: one head ``(i, j)``, their ``"mean"`` ``(i, j)``, or ``"all"`` ``(h, i, j)``."""
    if weights.dim() != 4:
        raise ValueError(f"expected attention (layers, heads, i, j), got shape {tuple(weights.shape)}")
    layers, heads = weights.shape[:2]
    if layer is None or not -layers <= layer < layers:
        raise ValueError(f"layer must be in [0, {layers}) (or negative from the end), got {layer}")
    w = weights[layer]
    if head == "mean":
        return w.mean(0)
    if head == "all":
        return w
    if not isinstance(head, int) or not -heads <= head < heads:
        raise ValueError(f"head must be 'mean', 'all' or an index in [0, {heads}), got {head!r}")
    return w[head]


def layer_head_name(layer: int, head: int | str, layers: int, heads: int) -> str:
    """How a layer and a head (indices into ``(layers, heads, i, j)`` weights, counted from 0, negative
    from the end, as :func:`select_heads` takes them) are named to people — in the heatmaps' titles as in
    the report's menus: counting from 1, and a layer given from the end by its own number ("layer 3,
    head 2" for ``layer=-1, head=1`` of 3 layers; "layer 3, mean of heads"; "layer 3, all heads")."""
    name = f"layer {layer % layers + 1}"
    if head == "mean":
        return f"{name}, mean of heads"
    if head == "all":
        return f"{name}, all heads"
    return f"{name}, head {head % heads + 1}"


def plot_attention(
    weights: Tensor,
    src_tokens: Sequence[str],
    tgt_tokens: Sequence[str],
    path: str | Path,
    *,
    title: str | None = None,
    head_titles: Sequence[str] | None = None,
) -> Path:
    """Write a heatmap (PNG or SVG by the file suffix) of ``weights`` ``(i, j)`` or ``(h, i, j)``.

    Every panel is shaded on one scale, shown by a colour bar: 0 to 1 for weights in [0, 1], so that
    heatmaps of probabilities compare; widened to the weights' largest (smallest) when they exceed 1
    (fall below 0), which the colour bar's label says (see :mod:`attnkit.viz.scale`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    if path.suffix.lower() not in (".png", ".svg"):
        raise ValueError(f"{path}: the heatmap is written as .png or .svg")
    w = weights.detach().float().cpu()
    grid = w if w.dim() == 3 else w.unsqueeze(0)
    if grid.dim() != 3 or grid.shape[1:] != (len(tgt_tokens), len(src_tokens)):
        raise ValueError(f"weights {tuple(w.shape)} do not match {len(tgt_tokens)} output × {len(src_tokens)} source tokens")
    family, _ = cjk_font()
    low, high = colour_range(float(grid.min()), float(grid.max())) if grid.numel() else (0.0, 1.0)
    note = range_note(low, high)
    label = f"weight, {low:.3g} to {high:.3g}" + (f" ({note})" if note else "")
    n = grid.shape[0]
    cols = min(n, 4)
    rows = math.ceil(n / cols)
    cell = 0.45
    fig_w = max(3.0, cols * (len(src_tokens) * cell + 1.5))
    fig_h = max(2.5, rows * (len(tgt_tokens) * cell + 1.2) + 0.8)  # + the colour bar
    with matplotlib.rc_context({"font.family": [family, "DejaVu Sans"], "axes.unicode_minus": False}):
        fig, axes = plt.subplots(rows, cols, figsize=(fig_w, fig_h), squeeze=False, layout="constrained")
        for k, ax in enumerate(axes.flat):
            if k >= n:
                ax.axis("off")
                continue
            image = ax.imshow(grid[k].numpy(), cmap="Blues", vmin=low, vmax=high, aspect="auto")
            xs, ys = [visible(t) for t in src_tokens], [visible(t) for t in tgt_tokens]
            ax.set_xticks(range(len(xs)), labels=xs, rotation=90 if any(len(t) > 4 for t in xs) else 0)
            ax.set_yticks(range(len(ys)), labels=ys)
            ax.xaxis.tick_top()
            if head_titles:
                ax.set_title(head_titles[k], fontsize=9)
        bar = fig.colorbar(image, ax=axes, location="bottom", shrink=min(1.0, 3.0 / fig_w), aspect=30, pad=0.02)
        bar.set_label(label, fontsize=9)
        bar.ax.tick_params(labelsize=8)
        if title:
            fig.suptitle(visible(title))
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120, bbox_inches="tight")  # "tight": a title wider than the grid is not cut off
        plt.close(fig)
    return path



