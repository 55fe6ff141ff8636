"""Decoding strategies over the models' one interface (``encode`` + ``decode_step``)."""

from .greedy import Hypothesis, greedy_decode

__all__ = ["Hypothesis", "greedy_decode"]
