"""Decoding strategies over the models' one interface (``encode`` + ``decode_step``, and a model's
``decode_step_top`` where it offers one: see :func:`attnkit.decode.select.step_top`)."""

from .beam import beam_search
from .greedy import Hypothesis, greedy_decode
from .lengths import gnmt_length_penalty, max_lengths

__all__ = ["Hypothesis", "greedy_decode", "beam_search", "gnmt_length_penalty", "max_lengths"]
