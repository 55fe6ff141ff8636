"""Heatmaps: Chinese rendered with a CJK font actually selected, one panel per head, PNG and SVG."""

import pytest
import torch

from attnkit.viz import cjk_font, plot_attention, select_heads


def _font_covers(path: str, text: str) -> bool:
    from matplotlib.ft2font import FT2Font

    font = FT2Font(path)
    return all(font.get_char_index(ord(ch)) != 0 for ch in text)


def test_chinese_heatmap_uses_a_cjk_font(tmp_path):
    family, path = cjk_font()
    assert _font_covers(path, "机器翻译注意力")  # the font matplotlib resolved has these glyphs
    from matplotlib import font_manager

    assert font_manager.findfont(font_manager.FontProperties(family=family), fallback_to_default=False) == path
    w = torch.softmax(torch.randn(3, 5), -1)
    out = plot_attention(w, ["机", "器", "翻", "译", "</s>"], ["machine", "translation", "</s>"], tmp_path / "a.png")
    from matplotlib.image import imread

    image = imread(out)
    assert image.shape[0] > 100 and image.shape[1] > 100
    assert image[..., :3].std() > 0.05  # not a blank picture


def test_svg_holds_the_labels_and_one_panel_per_head(tmp_path):
    w = torch.softmax(torch.randn(2, 4, 3, 2), -1)  # (layers, heads, i, j)
    grid = select_heads(w, layer=1, head="all")
    assert torch.equal(grid, w[1])
    assert torch.allclose(select_heads(w, layer=0, head="mean"), w[0].mean(0))
    out = plot_attention(grid, ["注", "意"], ["at", "ten", "tion"], tmp_path / "g.svg",
                         head_titles=[f"head {h}" for h in range(4)])
    svg = out.read_text(encoding="utf-8")
    assert svg.count("head ") >= 4
    with pytest.raises(ValueError, match="do not match"):
        plot_attention(grid, ["注"], ["at"], tmp_path / "bad.png")
    with pytest.raises(ValueError, match="head must be"):
        select_heads(w, head=7)
