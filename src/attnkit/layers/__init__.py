"""Layers: ``nn.Module``s that own parameters and call :mod:`attnkit.attention`.

- :class:`MultiHeadAttention` (self- and cross-attention, per-head weights, :class:`KVCache` /
  :class:`StaticKVCache` for incremental decoding, ``from_torch``);
- :class:`AdditiveAttention` (Bahdanau et al. 2015) and :class:`LuongAttention` (Luong et al. 2015:
  ``dot``, ``general``, ``concat``) for RNN decoders;
- :class:`SinusoidalPositionalEncoding`, :class:`LearnedPositionalEncoding`, :class:`FeedForward`;
- :class:`EncoderBlock` and :class:`DecoderBlock`, pre-norm (default) or post-norm, configured by a
  :class:`BlockConfig`.
"""

from .cache import KVCache, StaticKVCache
from .dropout import Dropout, dropout, relu_dropout, residual_dropout
from .feedforward import ACTIVATIONS, FeedForward
from .multihead import MultiHeadAttention
from .packed import PackedLinear, can_pack, pack_for_inference
from .positional import LearnedPositionalEncoding, SinusoidalPositionalEncoding, sinusoidal_table
from .rnn_attention import LUONG_KINDS, AdditiveAttention, LuongAttention, PreparedMemory
from .transformer import BlockConfig, BlockOutput, DecoderBlock, DecoderCache, EncoderBlock

__all__ = [
    "MultiHeadAttention", "KVCache", "StaticKVCache",
    "AdditiveAttention", "LuongAttention", "PreparedMemory", "LUONG_KINDS",
    "SinusoidalPositionalEncoding", "LearnedPositionalEncoding", "sinusoidal_table",
    "FeedForward", "ACTIVATIONS", "Dropout", "dropout", "relu_dropout", "residual_dropout",
    "BlockConfig", "BlockOutput", "DecoderCache", "EncoderBlock", "DecoderBlock",
    "PackedLinear", "can_pack", "pack_for_inference",
]
