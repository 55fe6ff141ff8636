"""Seeing attention: heatmaps with Chinese rendered as Chinese."""

from .fonts import NoCJKFontError, cjk_font
from .heatmap import plot_attention, select_heads

__all__ = ["plot_attention", "select_heads", "cjk_font", "NoCJKFontError"]
