"""A BERT encoder (Devlin et al. 2019) built only from attnkit layers, and its weights read from a
model folder's own files (``config.json`` + ``model.safetensors``, Hugging Face's layout).

BERT is a stack of post-norm Transformer encoder blocks (Vaswani et al. 2017) over the sum of word,
learned position and segment (token type) embeddings, followed by a LayerNorm.

Axes: ``b`` batch, ``n`` token positions, ``d`` hidden size, ``h`` heads.
"""

from __future__ import annotations

import json
from dataclasses import MISSING, dataclass, fields
from pathlib import Path

import torch
from torch import Tensor, nn

from attnkit.layers import ACTIVATIONS, BlockConfig, EncoderBlock, LearnedPositionalEncoding
from attnkit.layers.checks import check_count

__all__ = ["ModelFolderError", "BertConfig", "BertEncoder", "BertOutput", "load_bert_weights"]

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


class ModelFolderError(ValueError):
    """A model folder that is missing a file, or whose files do not describe the model expected."""


@dataclass(frozen=True)
class BertConfig:
    """The fields of a BERT ``config.json`` this encoder uses (others are ignored)."""

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int
    type_vocab_size: int = 2
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-12
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    pad_token_id: int = 0

    @classmethod
    def from_dict(cls, data: dict, source: str = "config") -> BertConfig:
        model_type = data.get("model_type")
        if model_type != "bert":
            raise ModelFolderError(f"{source}: model_type is {model_type!r}, but only 'bert' models are supported")
        position = data.get("position_embedding_type", "absolute")
        if position != "absolute":
            raise ModelFolderError(f"{source}: position_embedding_type {position!r} is not supported (only 'absolute')")
        known = {f.name for f in fields(cls)}
        required = {f.name for f in fields(cls) if f.default is MISSING}
        missing = sorted(required - data.keys())
        if missing:
            raise ModelFolderError(f"{source}: missing {', '.join(missing)}")
        config = cls(**{k: v for k, v in data.items() if k in known})
        config.validate(source)
        return config

    @classmethod
    def from_file(cls, path: str | Path) -> BertConfig:
        path = Path(path)
        if not path.is_file():
            raise ModelFolderError(f"{path.parent}: no {path.name} (not a model folder?)")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ModelFolderError(f"{path}: not valid JSON ({err})") from None
        if not isinstance(data, dict):
            raise ModelFolderError(f"{path}: expected a JSON object")
        return cls.from_dict(data, str(path))

    def validate(self, source: str = "config") -> None:
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                     "max_position_embeddings", "type_vocab_size"):
            check_count(f"{source}: {name}", getattr(self, name), least=1, error=ModelFolderError)
        if self.hidden_size % self.num_attention_heads:
            raise ModelFolderError(
                f"{source}: num_attention_heads={self.num_attention_heads} does not divide hidden_size={self.hidden_size}"
            )
        if isinstance(self.layer_norm_eps, bool) or not isinstance(self.layer_norm_eps, (int, float)) or self.layer_norm_eps <= 0:
            raise ModelFolderError(f"{source}: layer_norm_eps must be a number > 0, got {self.layer_norm_eps!r}")
        if self.hidden_act not in ACTIVATIONS:
            raise ModelFolderError(f"{source}: hidden_act {self.hidden_act!r} is not one of {sorted(ACTIVATIONS)}")

    def block_config(self) -> BlockConfig:
        # BERT's blocks are post-norm; "gelu" in its configs is the exact (erf) GELU.
        return BlockConfig(
            d_model=self.hidden_size,
            num_heads=self.num_attention_heads,
            d_ff=self.intermediate_size,
            dropout=self.hidden_dropout_prob,
            attention_dropout=self.attention_probs_dropout_prob,
            activation=self.hidden_act,
            norm="post",
            layer_norm_eps=self.layer_norm_eps,
        )


@dataclass(frozen=True)
class BertOutput:
    """``hidden (b, n, d)`` the last layer's token states; ``pooled (b, d)`` BERT's pooler
    (tanh(W h_[CLS] + b)); ``attentions``, when asked, one ``(b, h, n, n)`` tensor per layer."""

    hidden: Tensor
    pooled: Tensor
    attentions: tuple[Tensor, ...] | None = None


class BertEncoder(nn.Module):
    """BERT from attnkit layers: embeddings, ``num_hidden_layers`` post-norm :class:`EncoderBlock` s
    (each a :class:`~attnkit.layers.MultiHeadAttention` and a GELU feed-forward), and the pooler."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.config = config
        d = config.hidden_size
        self.word_embeddings = nn.Embedding(config.vocab_size, d, padding_idx=config.pad_token_id)
        self.position = LearnedPositionalEncoding(config.max_position_embeddings, d)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, d)
        self.embed_norm = nn.LayerNorm(d, eps=config.layer_norm_eps)
        self.embed_dropout = nn.Dropout(config.hidden_dropout_prob)
        self.layers = nn.ModuleList(EncoderBlock(config.block_config()) for _ in range(config.num_hidden_layers))
        self.pooler = nn.Linear(d, d)

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        *,
        need_weights: bool = False,
    ) -> BertOutput:
        """``input_ids (b, n)``; ``attention_mask (b, n)``, True/1 for real tokens and False/0 for padding;
        ``token_type_ids (b, n)`` segment ids (default 0). ``need_weights`` returns every layer's
        attention weights per head."""
        if not isinstance(input_ids, Tensor) or input_ids.dim() != 2 or input_ids.is_floating_point():
            raise ValueError(f"input_ids must be an integer tensor (b, n), got {getattr(input_ids, 'shape', input_ids)!r}")
        b, n = input_ids.shape
        if n > self.config.max_position_embeddings:
            raise ValueError(f"{n} tokens exceed the model's {self.config.max_position_embeddings} positions")
        token_type_ids = torch.zeros_like(input_ids) if token_type_ids is None else token_type_ids
        for name, t in (("attention_mask", attention_mask), ("token_type_ids", token_type_ids)):
            if t is not None and tuple(t.shape) != (b, n):
                raise ValueError(f"{name} must have the shape of input_ids {(b, n)}, got {tuple(t.shape)}")
        x = self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids)  # (b, n, d)
        x = self.embed_dropout(self.embed_norm(self.position(x)))  # (b, n, d)
        mask = None if attention_mask is None else attention_mask.bool().view(b, 1, 1, n)  # (b, 1, 1, j)
        attentions = []
        for block in self.layers:
            out = block(x, mask=mask, need_weights=need_weights)
            x = out.hidden
            attentions.append(out.self_weights)
        pooled = torch.tanh(self.pooler(x[:, 0]))  # (b, d)
        return BertOutput(x, pooled, tuple(attentions) if need_weights else None)


# ---------------------------------------------------------------------------------------- weights

# attnkit parameter name -> Hugging Face BertModel name ("{i}" is the layer index).
_EMBEDDINGS = {
    "word_embeddings.weight": "embeddings.word_embeddings.weight",
    "position.embedding.weight": "embeddings.position_embeddings.weight",
    "token_type_embeddings.weight": "embeddings.token_type_embeddings.weight",
    "embed_norm.weight": "embeddings.LayerNorm.weight",
    "embed_norm.bias": "embeddings.LayerNorm.bias",
    "pooler.weight": "pooler.dense.weight",
    "pooler.bias": "pooler.dense.bias",
}
_LAYER = {
    "self_attn.q_proj": "attention.self.query",
    "self_attn.k_proj": "attention.self.key",
    "self_attn.v_proj": "attention.self.value",
    "self_attn.out_proj": "attention.output.dense",
    "self_attn_norm": "attention.output.LayerNorm",
    "ffn.linear1": "intermediate.dense",
    "ffn.linear2": "output.dense",
    "ffn_norm": "output.LayerNorm",
}
# Buffers some exports include; they are checked rather than loaded.
_POSITION_IDS = "embeddings.position_ids"


def _file_name(ours: str) -> str:
    if ours in _EMBEDDINGS:
        return _EMBEDDINGS[ours]
    _, index, rest = ours.split(".", 2)  # "layers", "3", "self_attn.q_proj.weight"
    module, param = rest.rsplit(".", 1)
    return f"encoder.layer.{index}.{_LAYER[module]}.{param}"


def _strip_prefix(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    """Checkpoints of BERT with a task head name the encoder's tensors ``bert.…``."""
    if tensors and all(k.startswith("bert.") for k in tensors if not k.startswith("cls.")):
        return {k[len("bert."):] if k.startswith("bert.") else k: v for k, v in tensors.items()}
    return tensors


def load_bert_weights(encoder: BertEncoder, path: str | Path) -> None:
    """Copy the tensors of ``model.safetensors`` into ``encoder``, checking that every tensor the encoder
    needs is in the file with the right shape, and that every tensor of the file is used."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise ModelFolderError(f"{path.parent}: no {path.name} (not a model folder?)")
    try:
        tensors = _strip_prefix(load_file(str(path)))
    except (SafetensorError, OSError) as err:
        raise ModelFolderError(f"{path}: cannot read safetensors ({err})") from None
    unused = set(tensors)
    state = {}
    missing, wrong = [], []
    for ours, param in encoder.state_dict().items():
        name = _file_name(ours)
        if name not in tensors:
            missing.append(name)
            continue
        unused.discard(name)
        if tuple(tensors[name].shape) != tuple(param.shape):
            wrong.append(f"{name} is {tuple(tensors[name].shape)}, expected {tuple(param.shape)}")
        state[ours] = tensors[name].to(param.dtype)
    if _POSITION_IDS in tensors:
        unused.discard(_POSITION_IDS)
        ids = tensors[_POSITION_IDS]
        if not torch.equal(ids.flatten(), torch.arange(ids.numel(), dtype=ids.dtype)):
            raise ModelFolderError(f"{path}: {_POSITION_IDS} is not 0, 1, 2, …; such a model is not supported")
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} tensor(s): {', '.join(missing[:5])}{' …' if len(missing) > 5 else ''}")
    if wrong:
        problems.append("wrong shape: " + "; ".join(wrong[:5]))
    if unused:
        names = sorted(unused)
        problems.append(f"{len(names)} tensor(s) of the file not used: {', '.join(names[:5])}{' …' if len(names) > 5 else ''}")
    if problems:
        raise ModelFolderError(f"{path} does not match the BERT encoder of its config.json: " + "; ".join(problems))
    encoder.load_state_dict(state, strict=True)
