"""A pretrained BERT-style model folder, loaded into attnkit layers: encoder, WordPiece tokenizer and
(for sentence-transformers folders) the sentence-embedding pipeline, all read from the folder's files.

    from attnkit.interop import load_pretrained
    model = load_pretrained("path/to/all-MiniLM-L6-v2")
    model.embed(["A sentence.", "Another one."])        # (2, 384), as sentence-transformers computes
    tokens, attentions = model.attentions("A sentence.")  # per layer (h, n, n)

Files read: ``config.json``, ``model.safetensors``, ``tokenizer.json`` (required);
``sentence_bert_config.json`` (maximum length), ``modules.json`` and the pooling module's
``config.json`` (sentence embeddings). Nothing is downloaded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from .bert import CONFIG_FILE, WEIGHTS_FILE, BertConfig, BertEncoder, BertOutput, ModelFolderError, load_bert_weights

__all__ = ["PoolingConfig", "TokenBatch", "PretrainedBert", "load_pretrained", "POOLING_MODES"]

TOKENIZER_FILE = "tokenizer.json"
POOLING_MODES = ("mean", "cls", "max", "mean_sqrt_len_tokens")


def _read_json(path: Path) -> dict | list:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ModelFolderError(f"{path}: not valid JSON ({err})") from None


@dataclass(frozen=True)
class PoolingConfig:
    """How token states become one sentence vector (sentence-transformers' Pooling and Normalize
    modules): ``mode`` one of :data:`POOLING_MODES`, then L2 ``normalize`` or not."""

    mode: str = "mean"
    normalize: bool = False

    @classmethod
    def from_folder(cls, folder: Path) -> PoolingConfig | None:
        """Read ``modules.json`` (and the pooling folder's ``config.json``); ``None`` if the folder has no
        ``modules.json`` (a plain encoder, without a sentence-embedding head)."""
        modules_file = folder / "modules.json"
        if not modules_file.is_file():
            return None
        modules = _read_json(modules_file)
        if not isinstance(modules, list):
            raise ModelFolderError(f"{modules_file}: expected a list of modules")
        kinds = [str(m.get("type", "")).rsplit(".", 1)[-1] for m in sorted(modules, key=lambda m: m.get("idx", 0))]
        if not kinds or kinds[0] != "Transformer" or kinds.count("Pooling") != 1 or kinds[1] != "Pooling":
            raise ModelFolderError(f"{modules_file}: expected Transformer, Pooling[, Normalize], got {kinds}")
        unsupported = [k for k in kinds[2:] if k != "Normalize"]
        if unsupported:
            raise ModelFolderError(f"{modules_file}: modules {unsupported} are not supported (only Pooling and Normalize)")
        pooling = next(m for m in modules if str(m.get("type", "")).endswith("Pooling"))
        pooling_file = folder / pooling.get("path", "") / "config.json"
        if not pooling_file.is_file():
            raise ModelFolderError(f"{folder}: modules.json names a Pooling module but {pooling_file} is missing")
        settings = _read_json(pooling_file)
        # sentence-transformers' keys: pooling_mode_cls_token, pooling_mode_mean_tokens, …
        on = [k for k, v in settings.items() if k.startswith("pooling_mode_") and v is True]
        names = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls",
                 "pooling_mode_max_tokens": "max", "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens"}
        if len(on) != 1 or on[0] not in names:
            raise ModelFolderError(f"{pooling_file}: exactly one of {sorted(names)} must be true, got {on}")
        return cls(mode=names[on[0]], normalize="Normalize" in kinds)

    def pool(self, hidden: Tensor, attention_mask: Tensor) -> Tensor:
        """``hidden (b, n, d)``, ``attention_mask (b, n)`` 1 for tokens → ``(b, d)``."""
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (b, n, 1)
        if self.mode == "cls":
            out = hidden[:, 0]
        elif self.mode == "max":
            out = hidden.masked_fill(mask == 0, float("-inf")).amax(dim=1)
        else:
            total = (hidden * mask).sum(dim=1)  # (b, d)
            count = mask.sum(dim=1).clamp_min(1e-9)  # (b, 1)
            out = total / (count if self.mode == "mean" else count.sqrt())
        return F.normalize(out, p=2, dim=-1) if self.normalize else out


@dataclass(frozen=True)
class TokenBatch:
    """Tokenised sentences, padded on the right: ``input_ids``, ``attention_mask`` (1 = token),
    ``token_type_ids`` all ``(b, n)``; ``tokens`` the WordPiece strings of each sentence, unpadded;
    ``truncated`` whether each sentence was cut to the model's maximum length."""

    input_ids: Tensor
    attention_mask: Tensor
    token_type_ids: Tensor
    tokens: list[list[str]]
    truncated: list[bool]


class PretrainedBert:
    """An encoder of attnkit layers with the weights, tokenizer and pooling of one model folder."""

    def __init__(self, folder: Path, encoder: BertEncoder, tokenizer, max_length: int,
                 pooling: PoolingConfig | None) -> None:
        self.folder, self.encoder, self.tokenizer = folder, encoder, tokenizer
        self.max_length, self.pooling = max_length, pooling

    @property
    def config(self) -> BertConfig:
        return self.encoder.config

    def tokenize(self, sentences: list[str]) -> TokenBatch:
        """WordPiece tokens with ``[CLS]``/``[SEP]``, truncated to ``max_length``, padded to the longest."""
        if isinstance(sentences, str) or not all(isinstance(s, str) for s in sentences):
            raise TypeError("sentences must be a list of strings")
        if not sentences:
            raise ValueError("no sentences given")
        encodings = self.tokenizer.encode_batch(list(sentences))
        n = max(len(e.ids) for e in encodings)
        pad = self.config.pad_token_id
        ids = torch.full((len(encodings), n), pad, dtype=torch.long)
        mask = torch.zeros(len(encodings), n, dtype=torch.long)
        types = torch.zeros(len(encodings), n, dtype=torch.long)
        for row, e in enumerate(encodings):
            ids[row, : len(e.ids)] = torch.tensor(e.ids)
            mask[row, : len(e.ids)] = 1
            types[row, : len(e.ids)] = torch.tensor(e.type_ids)
        return TokenBatch(ids, mask, types, [list(e.tokens) for e in encodings], [bool(e.overflowing) for e in encodings])

    @torch.no_grad()
    def encode(self, sentences: list[str], *, need_weights: bool = False) -> tuple[TokenBatch, BertOutput]:
        batch = self.tokenize(sentences)
        out = self.encoder(batch.input_ids, batch.attention_mask, batch.token_type_ids, need_weights=need_weights)
        return batch, out

    def embed(self, sentences: list[str]) -> Tensor:
        """Sentence embeddings ``(b, d)`` by the folder's pooling (and normalisation)."""
        if self.pooling is None:
            raise ModelFolderError(f"{self.folder}: no modules.json, so no sentence-embedding pooling is defined")
        batch, out = self.encode(sentences)
        return self.pooling.pool(out.hidden, batch.attention_mask)

    def attentions(self, sentence: str) -> tuple[list[str], list[Tensor]]:
        """The tokens of one sentence and every layer's attention weights per head ``(h, n, n)``."""
        batch, out = self.encode([sentence], need_weights=True)
        return batch.tokens[0], [w[0] for w in out.attentions]


def _max_length(folder: Path, config: BertConfig) -> int:
    """sentence-transformers truncates to ``max_seq_length`` (sentence_bert_config.json); otherwise the
    tokenizer's ``model_max_length``; never beyond the model's positions."""
    limit = config.max_position_embeddings
    for name, key in (("sentence_bert_config.json", "max_seq_length"), ("tokenizer_config.json", "model_max_length")):
        path = folder / name
        if path.is_file():
            value = _read_json(path).get(key)
            if isinstance(value, int) and value > 0:
                return min(value, limit)
    return limit


def load_pretrained(folder: str | Path) -> PretrainedBert:
    """Load a BERT-style model folder (``config.json``, ``model.safetensors``, ``tokenizer.json``) into
    attnkit layers, in eval mode. Raises :class:`ModelFolderError` naming what is missing or wrong."""
    from tokenizers import Tokenizer

    folder = Path(folder)
    if not folder.is_dir():
        raise ModelFolderError(f"{folder}: " + ("is not a folder" if folder.exists() else "no such directory"))
    missing = [f for f in (CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_FILE) if not (folder / f).is_file()]
    if missing:
        raise ModelFolderError(
            f"{folder} is not a BERT model folder: missing {', '.join(missing)} "
            f"(such a folder holds {CONFIG_FILE}, {WEIGHTS_FILE} and {TOKENIZER_FILE})"
        )
    config = BertConfig.from_file(folder / CONFIG_FILE)
    encoder = BertEncoder(config)
    load_bert_weights(encoder, folder / WEIGHTS_FILE)
    try:
        tokenizer = Tokenizer.from_file(str(folder / TOKENIZER_FILE))
    except Exception as err:  # the tokenizers library raises a bare Exception on a bad file
        raise ModelFolderError(f"{folder / TOKENIZER_FILE}: cannot read the tokenizer ({err})") from None
    max_length = _max_length(folder, config)
    tokenizer.no_padding()  # the file may ask for fixed-length padding; we pad per batch
    tokenizer.enable_truncation(max_length)
    return PretrainedBert(folder, encoder.eval(), tokenizer, max_length, PoolingConfig.from_folder(folder))
