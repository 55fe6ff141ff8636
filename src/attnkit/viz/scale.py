"""The colour scale of attention weights, one rule for the heatmaps and the report.

Weights that are probabilities (softmax, sparsemax, hard attention, and their means over heads or layers)
lie in [0, 1]: they are shaded on that fixed scale, so that two pictures can be compared cell by cell.
Weights that are not (the ``relu`` normaliser, ``w = max(s, 0)``, is unbounded; a custom normaliser may give
anything) would all show at full darkness above 1, and a legend that ends at 1 would say they are 1: their
scale runs instead to their largest weight (and down to their smallest, below 0), and the legend says so.
"""

from __future__ import annotations

__all__ = ["colour_range", "range_note"]

# float32 rounding can put a mean of probabilities a hair outside [0, 1]: no reason to leave the fixed scale.
TOLERANCE = 1e-6


def colour_range(smallest: float, largest: float) -> tuple[float, float]:
    """``(low, high)`` that the shading spans for weights from ``smallest`` to ``largest``: ``(0, 1)`` when
    they lie in [0, 1], else widened to take them in (``high = largest`` above 1, ``low = smallest`` below 0)."""
    low = 0.0 if smallest >= -TOLERANCE else float(smallest)
    high = 1.0 if largest <= 1 + TOLERANCE else float(largest)
    return low, high


def range_note(low: float, high: float) -> str | None:
    """Why the scale is not [0, 1] ("not 0 to 1: some weights exceed 1"), or None when it is."""
    beyond = [what for what, out in (("exceed 1", high > 1), ("are below 0", low < 0)) if out]
    return None if not beyond else f"not 0 to 1: some weights {' and some '.join(beyond)}"
