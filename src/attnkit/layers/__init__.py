"""Layers: ``nn.Module``s that own parameters and call :mod:`attnkit.attention`.

- :class:`AdditiveAttention` (Bahdanau et al. 2015) and :class:`LuongAttention` (Luong et al. 2015:
  ``dot``, ``general``, ``concat``) for RNN decoders.
"""

from .rnn_attention import LUONG_KINDS, AdditiveAttention, LuongAttention, PreparedMemory

__all__ = ["AdditiveAttention", "LuongAttention", "PreparedMemory", "LUONG_KINDS"]
