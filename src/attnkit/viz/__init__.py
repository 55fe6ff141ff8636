"""Seeing attention: heatmaps with Chinese rendered as Chinese."""

from .fonts import NoCJKFontError, cjk_font
from .heatmap import layer_head_name, plot_attention, select_heads

__all__ = ["plot_attention", "select_heads", "layer_head_name", "cjk_font", "NoCJKFontError"]
