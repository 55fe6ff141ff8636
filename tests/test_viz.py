"""Heatmaps: Chinese rendered with a CJK font actually selected, one panel per head, PNG and SVG."""

import pytest
import torch

from attnkit.viz import cjk_font, plot_attention, select_heads
from attnkit.viz.heatmap import visible


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


def test_a_title_wider_than_the_grid_is_drawn_whole(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.image import imread

    title = "机器翻译 → machine translation (last layer, mean of heads)"
    out = plot_attention(torch.softmax(torch.randn(3, 4), -1), ["机", "器", "翻", "译"], ["a", "b", "</s>"],
                         tmp_path / "t.png", title=title)
    family, _ = cjk_font()
    with matplotlib.rc_context({"font.family": [family, "DejaVu Sans"]}):  # the title's width, by matplotlib alone
        fig = plt.figure(dpi=120)
        text = fig.suptitle(title)
        fig.canvas.draw()
        width = text.get_window_extent().width
        plt.close(fig)
    assert imread(out).shape[1] >= width  # at 120 dpi, as the heatmap is written


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


def test_characters_no_font_draws_are_labelled_by_their_escapes(tmp_path):
    """An undertrained model decodes byte pieces to control characters (\\x02), and text can hold format
    characters (a zero-width space): drawn as they are, they were blank labels, with a warning of a missing
    glyph. They are written as their escapes, the other characters as they are."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = plot_attention(torch.full((2, 2), 0.5), ["注", "a\x02"], ["\x02", "b"], tmp_path / "g.svg",
                             title="x\u200by → 注")
    assert not [w for w in caught if "missing from" in str(w.message)], [str(w.message) for w in caught]
    svg = out.read_text(encoding="utf-8")
    assert "a\\x02" in svg and "x\\u200by" in svg and "\x02" not in svg
    assert [visible(t) for t in ("注意", "a\x02", "\u200b", "\U000e0001", "é\t")] == \
        ["注意", "a\\x02", "\\u200b", "\\U000e0001", "é\\x09"]


def test_encoder_self_attention_heatmap(tmp_path, capsys):
    from attnkit.cli import main
    from attnkit.models import TransformerConfig, build_model, save_model
    from attnkit.text import CharTokenizer, save_tokenizers

    src_tok = CharTokenizer.train(["他很高兴。"])
    tgt_tok = CharTokenizer.train(["He is happy."])
    config = TransformerConfig(d_model=16, heads=2, encoder_layers=2, decoder_layers=1, ffn_dim=32, dropout=0.0)
    model = build_model(config, src_tok.vocab_size, tgt_tok.vocab_size).eval()
    save_model(model, tmp_path / "m")
    save_tokenizers(tmp_path / "m", src_tok, tgt_tok)
    src = torch.tensor([src_tok.encode("他很高兴。") + [src_tok.eos_id]])
    with torch.no_grad():
        weights = model.encoder_attention(src)
        # the first layer's weights, computed by calling the block itself on the embedded source
        x = model.src_pos(model.src_embed(src) * model.scale)
        first = model.encoder[0](x, mask=(src != 0).unsqueeze(1), need_weights=True).self_weights
    assert len(weights) == 2 and weights[0].shape == (1, 2, 6, 6)
    assert torch.allclose(weights[0], first)
    assert torch.allclose(weights[1].sum(-1), torch.ones(1, 2, 6), atol=1e-6)
    out = tmp_path / "enc.png"
    assert main(["plot", "--model", str(tmp_path / "m"), "他很高兴。", "--attention", "encoder", "--head", "all",
                 "--output", str(out)]) == 0
    assert out.stat().st_size > 1000 and "encoder self-attention" in capsys.readouterr().out


def test_decoder_self_attention_is_causal_and_plotted(tmp_path, capsys):
    from attnkit.cli import main
    from attnkit.models import TransformerConfig, build_model, save_model
    from attnkit.text import CharTokenizer, save_tokenizers

    src_tok = CharTokenizer.train(["他很高兴。"])
    tgt_tok = CharTokenizer.train(["He is happy."])
    config = TransformerConfig(d_model=16, heads=2, encoder_layers=1, decoder_layers=2, ffn_dim=32, dropout=0.0)
    model = build_model(config, src_tok.vocab_size, tgt_tok.vocab_size).eval()
    src = torch.tensor([src_tok.encode("他很高兴。") + [2]])
    tgt_in = torch.tensor([[1] + tgt_tok.encode("He is")])
    with torch.no_grad():
        weights = model.decoder_attention(src, tgt_in)
    t = tgt_in.shape[1]
    assert len(weights) == 2 and weights[0].shape == (1, 2, t, t)
    future = ~torch.ones(t, t, dtype=torch.bool).tril()
    for w in weights:
        assert (w[..., future] == 0).all()  # no position looks ahead
        assert torch.allclose(w.sum(-1), torch.ones(1, 2, t), atol=1e-6)
    save_model(model, tmp_path / "m")
    save_tokenizers(tmp_path / "m", src_tok, tgt_tok)
    out = tmp_path / "dec.svg"
    assert main(["plot", "--model", str(tmp_path / "m"), "他很高兴。", "--attention", "decoder", "--beam", "1",
                 "--output", str(out)]) == 0
    assert out.stat().st_size > 1000 and "decoder self-attention" in capsys.readouterr().out


def test_decoder_self_attention_is_over_the_pieces_the_model_produced():
    """The decoder's self-attention is that of the output the model decoded, piece for piece: encoding the
    output's text again can give other pieces ('ic' decodes to "ic", which encodes as '▁', 'ic')."""
    from attnkit.data.cedict import load_cedict
    from attnkit.decode import beam_search
    from attnkit.decode.translator import Translator
    from attnkit.models import TransformerConfig, build_model
    from attnkit.text import CharTokenizer, SentencePieceTokenizer

    pairs = load_cedict("train")[:2000]
    src_tok = CharTokenizer.train([p.src for p in pairs])
    tgt_tok = SentencePieceTokenizer.train([p.tgt for p in pairs], vocab_size=500)
    config = TransformerConfig(d_model=16, heads=2, encoder_layers=1, decoder_layers=2, ffn_dim=32, dropout=0.0)
    for seed in range(20):  # a random model whose output, encoded again, is other pieces
        torch.manual_seed(seed)
        model = build_model(config, src_tok.vocab_size, tgt_tok.vocab_size).eval()
        translator = Translator(model, src_tok, tgt_tok)
        result = translator.translate(["你好"], beam=2)[0]
        again = [tgt_tok.id_to_piece(i) for i in tgt_tok.encode(result.text)]
        if result.tgt_pieces and again != result.tgt_pieces:
            break
    else:
        pytest.skip("no random model among 20 seeds decodes to pieces that encode differently")
    pieces, weights = translator.decoder_attention("你好", beam=2)
    assert pieces == ["<s>"] + result.tgt_pieces
    src = torch.tensor([src_tok.encode("你好") + [src_tok.eos_id]])
    tokens = beam_search(model, src, beam_size=2)[0][0].tokens
    with torch.no_grad():
        expected = model.decoder_attention(src, torch.tensor([[model.config.bos_id, *tokens]]))
    assert torch.allclose(weights, torch.stack([w[0] for w in expected]))


def test_decoder_self_attention_of_an_output_that_fills_the_learned_positions(tmp_path, capsys):
    """An output as long as the decoder's learned positions allow (no EOS): the plot shows the inputs the
    decoder was fed, <s> and all pieces but the last, instead of failing with 'shorten the input'."""
    from attnkit.cli import main
    from attnkit.decode.translator import Translator
    from attnkit.models import TransformerConfig, build_model, save_model
    from attnkit.text import CharTokenizer, save_tokenizers

    src_tok, tgt_tok = CharTokenizer.train(["他很高兴。"]), CharTokenizer.train(["He is happy."])
    config = TransformerConfig(d_model=16, heads=2, encoder_layers=1, decoder_layers=2, ffn_dim=32, dropout=0.0,
                               norm_first=False, tie_output=False, positions="learned", max_len=6)
    torch.manual_seed(0)
    model = build_model(config, src_tok.vocab_size, tgt_tok.vocab_size).eval()
    with torch.no_grad():  # the last block's output is one constant vector b, and only "a" scores: never EOS
        b = torch.randn(16)
        model.decoder[-1].ffn_norm.weight.zero_()
        model.decoder[-1].ffn_norm.bias.copy_(b)
        model.output.weight.zero_()
        model.output.weight[tgt_tok.encode("a")[0]] = b
    translator = Translator(model, src_tok, tgt_tok)
    result = translator.translate(["他很高兴。"], beam=2)[0]
    assert result.tgt_pieces == ["a"] * 6  # the output fills the 6 positions
    pieces, weights = translator.decoder_attention("他很高兴。", beam=2)
    assert pieces == ["<s>"] + ["a"] * 5
    src = torch.tensor([src_tok.encode("他很高兴。") + [src_tok.eos_id]])
    with torch.no_grad():
        expected = model.decoder_attention(src, torch.tensor([[1] + tgt_tok.encode("aaaaa")]))
    assert torch.allclose(weights, torch.stack([w[0] for w in expected]))
    save_model(model, tmp_path / "m")
    save_tokenizers(tmp_path / "m", src_tok, tgt_tok)
    assert main(["plot", "--model", str(tmp_path / "m"), "他很高兴。", "--attention", "decoder",
                 "--output", str(tmp_path / "dec.svg")]) == 0
    assert "decoder self-attention" in capsys.readouterr().out


def _encoder_model(tmp_path, layers: int, heads: int):
    """A random Transformer with ``layers`` encoder layers of ``heads`` heads, saved as a model folder."""
    from attnkit.models import TransformerConfig, build_model, save_model
    from attnkit.text import CharTokenizer, save_tokenizers

    torch.manual_seed(0)
    src_tok, tgt_tok = CharTokenizer.train(["他很高兴。"]), CharTokenizer.train(["He is happy."])
    config = TransformerConfig(d_model=12, heads=heads, encoder_layers=layers, decoder_layers=1, ffn_dim=24,
                               dropout=0.0)
    model = build_model(config, src_tok.vocab_size, tgt_tok.vocab_size).eval()
    save_model(model, tmp_path / "m")
    save_tokenizers(tmp_path / "m", src_tok, tgt_tok)
    return model, src_tok


def _svg_texts(path) -> list[str]:
    """The texts of an SVG written by matplotlib, which draws each as glyph paths after a comment holding it."""
    import re

    return [t.strip() for t in re.findall(r"<!-- (.*?) -->", path.read_text(encoding="utf-8"))]


def test_plot_numbers_layers_and_heads_from_1_as_the_report_does(tmp_path, capsys, monkeypatch):
    """`plot --head all` titled its panels "layer -1, head 0" (the index as given, heads from 0) where the
    report's menus say "layer 3, head 1": both now count from 1, and --layer/--head take those numbers."""
    from attnkit.cli import main
    from attnkit.viz import heatmap

    model, src_tok = _encoder_model(tmp_path, layers=2, heads=3)
    out = tmp_path / "all.svg"
    assert main(["plot", "--model", str(tmp_path / "m"), "他很高兴。", "--attention", "encoder", "--head", "all",
                 "--output", str(out)]) == 0
    texts = _svg_texts(out)
    assert [t for t in texts if t.startswith("layer")] == ["layer 2, head 1", "layer 2, head 2", "layer 2, head 3"]
    assert "他很高兴。: encoder self-attention (layer 2, all heads)" in capsys.readouterr().out

    # --layer 1 --head 2: the first layer's second head, named so; weights from the model's own encoder
    src = torch.tensor([src_tok.encode("他很高兴。") + [src_tok.eos_id]])
    with torch.no_grad():
        expected = model.encoder_attention(src)[0][0, 1]  # layer 1, head 2, counted from 1
    drawn = {}
    real_plot = heatmap.plot_attention
    monkeypatch.setattr(heatmap, "plot_attention", lambda w, *a, **k: drawn.update(w=w, title=k["title"]) or real_plot(w, *a, **k))
    assert main(["plot", "--model", str(tmp_path / "m"), "他很高兴。", "--attention", "encoder", "--layer", "1",
                 "--head", "2", "--output", str(tmp_path / "one.png")]) == 0
    assert torch.allclose(drawn["w"], expected)
    assert drawn["title"] == "他很高兴。: encoder self-attention (layer 1, head 2)"
    assert main(["plot", "--model", str(tmp_path / "m"), "他很高兴。", "--attention", "encoder", "--layer", "-2",
                 "--head", "-1", "--output", str(tmp_path / "one.png")]) == 0
    assert drawn["title"] == "他很高兴。: encoder self-attention (layer 1, head 3)"
    capsys.readouterr()

    for flag, value, message in (("--layer", "0", "--layer counts from 1"), ("--head", "0", "--head counts from 1"),
                                 ("--layer", "3", "--layer 3: the model's encoder has 2 layers (1 to 2, or -1 to -2"),
                                 ("--head", "-4", "--head -4: its attention has 3 heads (1 to 3, or -1 to -3")):
        args = ["plot", "--model", str(tmp_path / "m"), "他很高兴。", "--attention", "encoder", flag, value,
                "--output", str(tmp_path / "bad.png")]
        assert main(args) == 2
        assert message in capsys.readouterr().err


def _pixels_like(image, colour, tolerance=3 / 255) -> int:
    """How many pixels of ``image`` (rows, cols, RGB) are ``colour`` (RGB in [0, 1])."""
    import numpy as np

    return int((np.abs(image[..., :3] - np.asarray(colour[:3])) <= tolerance).all(-1).sum())


def test_probabilities_are_shaded_on_0_to_1_in_every_panel(tmp_path):
    """Each panel was shaded to its own largest weight: a head whose weights are all 0.5 looked as dark as
    a one-hot head. Probabilities now share the 0-to-1 scale, colour by colour as matplotlib's Blues map
    gives it, so heatmaps compare."""
    from matplotlib import colormaps
    from matplotlib.image import imread

    blues = colormaps["Blues"]
    uniform = torch.full((2, 2), 0.5)  # softmax of equal scores over two keys
    one_hot = torch.eye(2)
    image = imread(plot_attention(torch.stack([uniform, one_hot]), ["注", "意"], ["a", "b"], tmp_path / "p.png",
                                  head_titles=["head 1", "head 2"]))
    half, full, empty = (_pixels_like(image, blues(x)) for x in (0.5, 1.0, 0.0))
    assert full > 1000  # the one-hot head's two cells of weight 1
    assert 1.6 < half / full < 2.4  # four cells of 0.5 at the middle of the scale, not at its end
    svg = _svg_texts(plot_attention(uniform, ["注", "意"], ["a", "b"], tmp_path / "p.svg"))
    assert "1.0" in svg and not any("exceed" in t for t in svg)  # the colour bar runs to 1, and says no more


def test_weights_above_1_get_a_scale_to_their_largest_and_the_colour_bar_says_so(tmp_path):
    """ReLU attention (w = max(s, 0)) is not bounded by 1: its weights are shaded up to the largest one
    instead of all showing at full darkness, and the colour bar shows that scale and says why."""
    from matplotlib import colormaps
    from matplotlib.image import imread

    from attnkit.attention import relu

    blues = colormaps["Blues"]
    weights = relu(torch.tensor([[2.5, 1.25], [-3.0, 1.25]]))  # 2.5, 1.25, 0, 1.25
    image = imread(plot_attention(weights, ["注", "意"], ["a", "b"], tmp_path / "r.png"))
    full, half = _pixels_like(image, blues(1.0)), _pixels_like(image, blues(0.5))
    assert full > 1000 and 1.6 < half / full < 2.4  # 1.25 is half of the largest, 2.5
    texts = _svg_texts(plot_attention(weights, ["注", "意"], ["a", "b"], tmp_path / "r.svg"))
    assert "2.5" in texts  # the colour bar's last tick: the largest weight
    assert any("2.5" in t and "exceed 1" in t for t in texts), texts  # its label


def test_the_colour_range_is_0_to_1_for_probabilities_else_the_weights():
    from attnkit.viz.scale import colour_range, range_note

    assert colour_range(0.0, 0.73) == (0.0, 1.0)
    assert colour_range(0.0, 1.0 + 1e-7) == (0.0, 1.0)  # float32 rounding of a mean of probabilities
    assert colour_range(0.0, 2.5) == (0.0, 2.5)
    assert colour_range(-0.5, 0.25) == (-0.5, 1.0)
    assert range_note(0.0, 1.0) is None
    assert "exceed 1" in range_note(0.0, 2.5) and "below 0" in range_note(-0.5, 1.0)
