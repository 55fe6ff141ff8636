"""Translation models behind one interface: three RNN generations and the Transformer.

See :mod:`attnkit.models.base` for the interface, :mod:`attnkit.models.config` for the options.
"""

from .base import Seq2SeqModel, source_mask
from .config import (
    ATTENTION_KINDS,
    RNN_KINDS,
    AttentionConfig,
    ConfigError,
    ModelConfig,
    RNNConfig,
    TransformerConfig,
    config_from_dict,
    config_to_dict,
)
from .io import build_model, load_model, save_model
from .loss import label_smoothed_nll

MODEL_KINDS = (*RNN_KINDS, "transformer")

__all__ = [
    "Seq2SeqModel", "source_mask", "ATTENTION_KINDS", "RNN_KINDS", "MODEL_KINDS", "AttentionConfig",
    "ConfigError", "ModelConfig", "RNNConfig", "TransformerConfig", "config_from_dict", "config_to_dict",
    "build_model", "load_model", "save_model", "label_smoothed_nll",
]
