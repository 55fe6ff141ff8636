"""Typed, validated configurations of the models, read from plain dicts (YAML/JSON) once, at the edge."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal, Union

from attnkit.attention import NORMALIZERS
from attnkit.layers.checks import check_count

__all__ = [
    "RNN_KINDS", "ATTENTION_KINDS", "AttentionConfig", "RNNConfig", "TransformerConfig", "ModelConfig",
    "config_from_dict", "config_to_dict", "ConfigError", "dataclass_from_dict",
]

RNN_KINDS = ("seq2seq-fixed", "seq2seq-context", "seq2seq-attention")
MODEL_KINDS = (*RNN_KINDS, "transformer")
# Attention for the RNN decoder: Bahdanau's additive score, Luong's three, or a core score on a
# learned projection of the decoder state.
ATTENTION_KINDS = ("bahdanau", "luong-dot", "luong-general", "luong-concat", "scaled_dot", "cosine")


class ConfigError(ValueError):
    """A configuration value that is missing, unknown or out of range; the message names the key, and
    ``key`` is that key (``d_model``, ``attention.hidden``), or the keys whose values clash together
    (``("heads", "d_model")``), or None."""

    def __init__(self, message: str, key: str | tuple[str, ...] | None = None):
        super().__init__(message)
        self.key = key


def _positive(name: str, value: Any) -> None:
    check_count(name, value, least=1, error=lambda message: ConfigError(message, name))


def _boolean(name: str, value: Any) -> None:
    # a YAML "no" in quotes, or any other text, is truthy: it would silently turn the option on
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be true or false, got {value!r}", name)


def _probability(name: str, value: Any) -> None:
    if not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ConfigError(f"{name} must be a number in [0, 1), got {value!r}", name)


@dataclass(frozen=True)
class AttentionConfig:
    """How an attention decoder computes its context C_i: ``kind`` picks the score (and its module),
    ``normalize`` any of the core's normalisers (``hard`` and ``gumbel`` train by straight-through)."""

    kind: Literal["bahdanau", "luong-dot", "luong-general", "luong-concat", "scaled_dot", "cosine"] = "bahdanau"
    normalize: str = "softmax"
    hidden: int | None = None  # size of the tanh layer of additive scores (default: decoder hidden)
    temperature: float = 1.0  # cosine only; gumbel's tau for normalize="gumbel"

    def __post_init__(self):
        if self.kind not in ATTENTION_KINDS:
            raise ConfigError(f"attention.kind must be one of {list(ATTENTION_KINDS)}, got {self.kind!r}", "attention.kind")
        if self.normalize not in NORMALIZERS:
            raise ConfigError(f"attention.normalize must be one of {sorted(NORMALIZERS)}, got {self.normalize!r}",
                              "attention.normalize")
        if self.hidden is not None:
            _positive("attention.hidden", self.hidden)
        if isinstance(self.temperature, bool) or not isinstance(self.temperature, (int, float)) or not self.temperature > 0:
            raise ConfigError(f"attention.temperature must be a number > 0, got {self.temperature!r}", "attention.temperature")


@dataclass(frozen=True)
class RNNConfig:
    """The three RNN generations (``kind``):

    - ``seq2seq-fixed``: the encoder's final state C only initialises the decoder (Sutskever et al. 2014);
    - ``seq2seq-context``: C also enters every decoder step and the output layer (Cho et al. 2014);
    - ``seq2seq-attention``: a fresh context C_i per output word (Bahdanau et al. 2015).
    """

    kind: Literal["seq2seq-fixed", "seq2seq-context", "seq2seq-attention"] = "seq2seq-attention"
    cell: Literal["gru", "lstm"] = "gru"
    embed_dim: int = 256
    hidden: int = 256
    layers: int = 1
    bidirectional: bool = True
    dropout: float = 0.1
    attention: AttentionConfig = field(default_factory=AttentionConfig)
    pad_id: int = 0
    bos_id: int = 1
    eos_id: int = 2

    def __post_init__(self):
        if self.kind not in RNN_KINDS:
            raise ConfigError(f"kind must be one of {list(MODEL_KINDS)}, got {self.kind!r}", "kind")
        if self.cell not in ("gru", "lstm"):
            raise ConfigError(f"cell must be 'gru' or 'lstm', got {self.cell!r}", "cell")
        for name in ("embed_dim", "hidden", "layers"):
            _positive(name, getattr(self, name))
        _boolean("bidirectional", self.bidirectional)
        _probability("dropout", self.dropout)
        if not isinstance(self.attention, AttentionConfig):
            raise ConfigError("attention must be an AttentionConfig")
        _special_ids(self)


@dataclass(frozen=True)
class TransformerConfig:
    """Encoder–decoder Transformer (Vaswani et al. 2017)."""

    kind: Literal["transformer"] = "transformer"
    d_model: int = 256
    heads: int = 4
    encoder_layers: int = 3
    decoder_layers: int = 3
    ffn_dim: int = 1024
    dropout: float = 0.1
    attention_dropout: float = 0.0
    norm_first: bool = True  # pre-norm; False is the paper's post-norm
    positions: Literal["sinusoidal", "learned"] = "sinusoidal"
    max_len: int = 512
    share_embeddings: bool = False  # one embedding for source and target (needs a joint vocabulary)
    tie_output: bool = True  # output projection shares the target embedding's weights
    pad_id: int = 0
    bos_id: int = 1
    eos_id: int = 2

    def __post_init__(self):
        for name in ("d_model", "heads", "encoder_layers", "decoder_layers", "ffn_dim", "max_len"):
            _positive(name, getattr(self, name))
        if self.d_model % self.heads:
            raise ConfigError(f"heads ({self.heads}) must divide d_model ({self.d_model})", ("heads", "d_model"))
        _probability("dropout", self.dropout)
        _probability("attention_dropout", self.attention_dropout)
        for name in ("norm_first", "share_embeddings", "tie_output"):
            _boolean(name, getattr(self, name))
        if self.positions not in ("sinusoidal", "learned"):
            raise ConfigError(f"positions must be 'sinusoidal' or 'learned', got {self.positions!r}", "positions")
        _special_ids(self)


def _special_ids(config) -> None:
    """pad, bos and eos: three different non-negative token ids."""
    ids = {"pad_id": config.pad_id, "bos_id": config.bos_id, "eos_id": config.eos_id}
    for name, value in ids.items():
        check_count(name, value, error=lambda message: ConfigError(message, name))
    if len(set(ids.values())) < 3:
        raise ConfigError(f"pad_id, bos_id and eos_id must be three different tokens, got {ids}", tuple(ids))


ModelConfig = Union[RNNConfig, TransformerConfig]


def config_from_dict(data: dict[str, Any]) -> ModelConfig:
    """Build a model config from a plain dict; unknown keys and bad values raise :class:`ConfigError`."""
    if not isinstance(data, dict):
        raise ConfigError(f"a model config must be a mapping, got {type(data).__name__}")
    kind = data.get("kind", "transformer")
    if kind not in MODEL_KINDS:
        raise ConfigError(f"kind must be one of {list(MODEL_KINDS)}, got {kind!r}", "kind")
    cls = TransformerConfig if kind == "transformer" else RNNConfig
    data = dict(data)
    if cls is RNNConfig and "attention" in data:
        data["attention"] = dataclass_from_dict(AttentionConfig, data["attention"], "attention.")
    return dataclass_from_dict(cls, data, "")


def dataclass_from_dict(cls, data: Any, prefix: str):
    """``cls(**data)`` for a frozen config dataclass; unknown keys and wrong types name the key."""
    if isinstance(data, cls):
        return data
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'} must be a mapping, got {data!r}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"unknown key(s) {[prefix + k for k in unknown]} for {cls.__name__}; known: {sorted(names)}",
                          tuple(prefix + k for k in unknown))
    try:
        return cls(**data)
    except TypeError as err:
        raise ConfigError(f"{prefix.rstrip('.') or cls.__name__}: {err}") from None


def config_to_dict(config: ModelConfig) -> dict[str, Any]:
    return dataclasses.asdict(config)
