"""Text in, text out: a model folder (weights, config, tokenizers) as a translator.

Sources are encoded as the training batches encode them (tokens + EOS), translated in batches of
similar length, and returned in the input order, each with its pieces and, when asked, its
cross-attention alignment ``(layers, heads, output pieces + EOS, source pieces + EOS)``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor

from attnkit.layers.packed import pack_for_inference
from attnkit.models import Seq2SeqModel, load_model
from attnkit.models.io import resolve_model_dir
from attnkit.text import Tokenizer, TokenizerError, load_tokenizer, load_tokenizers, tokenizer_size_mismatch

from .greedy import Hypothesis, greedy_decode
from .lengths import max_lengths
from .memory import decoding_bytes

__all__ = ["Translation", "Translator", "resolve_model_dir"]


@dataclass(frozen=True)
class Translation:
    source: str
    text: str
    src_pieces: list[str]  # source pieces, then "</s>"
    tgt_pieces: list[str]  # output pieces (the attention rows add the EOS step)
    score: float
    # (layers, heads, output rows, len(src_pieces)): a row per output piece plus the EOS step (no EOS
    # row when decoding stopped at the length limit); None for models without cross-attention.
    attention: Tensor | None = None
    # the source had more pieces than the model's positions and was cut to max_source_tokens()
    truncated: bool = False

    @property
    def attention_rows(self) -> list[str]:
        """Labels of the attention rows: the output pieces, then ``</s>`` when decoding produced it
        (decoding that stopped at the length limit has no EOS step)."""
        steps = self.attention.shape[-2] if self.attention is not None else len(self.tgt_pieces) + 1
        return list(self.tgt_pieces) + (["</s>"] if steps == len(self.tgt_pieces) + 1 else [])


def load_folder_tokenizers(folder: Path) -> tuple[Tokenizer, Tokenizer]:
    """:func:`attnkit.text.load_tokenizers` on a model folder, whose errors always name the file or
    folder at fault (a damaged ``sentencepiece.model`` is otherwise reported without its path)."""
    folder = Path(folder)
    try:
        return load_tokenizers(folder)
    except TokenizerError as err:
        if str(folder) in str(err):
            raise
        for side in ("tokenizer", "src_tokenizer", "tgt_tokenizer"):
            if not (folder / side).is_dir():
                continue
            try:
                load_tokenizer(folder / side)
            except TokenizerError as side_err:
                raise TokenizerError(f"{_tokenizer_file(folder / side)}: {side_err}") from None
        raise TokenizerError(f"{folder}: {err}") from None


def _tokenizer_file(directory: Path) -> Path:
    """The file a saved tokenizer keeps its model in (its manifest's ``model_file``), else its folder."""
    try:
        name = json.loads((directory / "tokenizer.json").read_text("utf-8")).get("model_file")
    except (OSError, ValueError, AttributeError):
        return directory
    return directory / name if isinstance(name, str) and name else directory


class Translator:
    def __init__(self, model: Seq2SeqModel, src_tokenizer: Tokenizer, tgt_tokenizer: Tokenizer):
        self.model, self.src_tok, self.tgt_tok = model.eval(), src_tokenizer, tgt_tokenizer
        self._packed: Seq2SeqModel | None = None  # the decoding copy, made at the first translate()

    def decoding_model(self) -> Seq2SeqModel:
        """The model decoding runs on: a copy of ``model`` with prepacked linear layers
        (:func:`attnkit.layers.pack_for_inference`), made once. Weights changed after the first
        ``translate`` are not seen by it: make a new Translator."""
        if self._packed is None:
            self._packed = pack_for_inference(self.model)
        return self._packed

    @classmethod
    def load(cls, path: str | Path) -> "Translator":
        folder = resolve_model_dir(path)
        model, _ = load_model(folder)
        src_tok, tgt_tok = load_folder_tokenizers(folder)
        mismatch = tokenizer_size_mismatch((src_tok.vocab_size, tgt_tok.vocab_size),
                                           (model.src_vocab_size, model.tgt_vocab_size), folder)
        if mismatch:
            raise TokenizerError(mismatch)
        return cls(model, src_tok, tgt_tok)

    def _encode(self, text: str) -> list[int]:
        return self.src_tok.encode(text)[: self.max_source_tokens()] + [self.src_tok.eos_id]

    def _encode_checked(self, text: str) -> tuple[list[int], bool]:
        """The source ids (+ EOS) and whether the text was cut to :meth:`max_source_tokens`."""
        ids, limit = self.src_tok.encode(text), self.max_source_tokens()
        return ids[:limit] + [self.src_tok.eos_id], len(ids) > limit

    def truncates(self, text: str) -> bool:
        """Whether ``text`` has more pieces than :meth:`max_source_tokens` (decoding and the attention
        methods then see only the first ones)."""
        return self._encode_checked(text)[1]

    def max_source_tokens(self) -> int:
        cfg = self.model.config
        limit = getattr(cfg, "max_len", None) if getattr(cfg, "positions", "") == "learned" else None
        return (limit - 1) if limit else 1024

    @torch.inference_mode()
    def translate(
        self,
        sentences: Sequence[str],
        *,
        beam: int = 1,
        length_penalty: float = 0.6,
        batch_size: int = 64,
        max_len_ratio: float = 2.0,
        need_attention: bool = False,
    ) -> list[Translation]:
        """Translate ``sentences``; ``beam == 1`` is greedy decoding."""
        if beam < 1:
            raise ValueError(f"beam must be >= 1, got {beam}")
        checked = [self._encode_checked(s) for s in sentences]
        encoded = [ids for ids, _ in checked]
        results: list[Translation | None] = [None] * len(sentences)
        pad = self.model.config.pad_id
        for rows in _batches([len(ids) for ids in encoded], batch_size):
            width = max(len(encoded[n]) for n in rows)
            src = torch.full((len(rows), width), pad, dtype=torch.long)
            for r, n in enumerate(rows):
                src[r, : len(encoded[n])] = torch.tensor(encoded[n])
            hyps = self._decode(src, beam, length_penalty, max_len_ratio, need_attention)
            for r, n in enumerate(rows):
                results[n] = self._result(sentences[n], encoded[n], hyps[r], need_attention, checked[n][1])
        return results  # type: ignore[return-value]

    def decoding_bytes(self, sentences: Sequence[str], *, beam: int = 1, batch_size: int = 64,
                       max_len_ratio: float = 2.0, need_attention: bool = False) -> int:
        """The memory :meth:`translate` holds at once for the decoding of its largest batch, as
        :func:`attnkit.decode.memory.decoding_bytes` counts it (a floor: weights and bookkeeping aside)."""
        lengths = [len(self._encode_checked(s)[0]) for s in sentences]
        need = 0
        for rows in _batches(lengths, batch_size):
            s = max(lengths[n] for n in rows)
            steps = int(max_lengths(torch.zeros(1, s, dtype=torch.long), torch.ones(1, s, dtype=torch.bool),
                                    self.model.config.pad_id, max_len=None, max_len_ratio=max_len_ratio,
                                    max_len_offset=10, model_steps=self.model.max_output_steps)[0])
            need = max(need, decoding_bytes(self.model, len(rows), beam, s, steps, need_attention))
        return need

    @torch.inference_mode()
    def encoder_attention(self, sentence: str) -> tuple[list[str], Tensor]:
        """The source pieces (+ ``</s>``) and the encoder's self-attention ``(layers, heads, s, s)``."""
        if not hasattr(self.model, "encoder_attention"):
            raise ValueError(f"a {self.model.config.kind} model has no self-attention (only the Transformer does)")
        ids = self._encode(sentence)
        weights = self.model.encoder_attention(torch.tensor([ids]))
        pieces = [self.src_tok.id_to_piece(i) for i in ids[:-1]] + ["</s>"]
        return pieces, torch.stack([w[0] for w in weights])

    @torch.inference_mode()
    def decoder_attention(self, sentence: str, beam: int = 4) -> tuple[list[str], Tensor]:
        """Translate ``sentence``; return ``["<s>", output pieces…]`` and the decoder's causal
        self-attention over them ``(layers, heads, t, t)`` (without the last piece of an output that filled the
        learned positions: it was never fed back)."""
        if not hasattr(self.model, "decoder_attention"):
            raise ValueError(f"a {self.model.config.kind} model has no self-attention (only the Transformer does)")
        if beam < 1:
            raise ValueError(f"beam must be >= 1, got {beam}")
        ids = self._encode(sentence)
        # The decoded ids themselves: encoding the output text again can split it into other pieces
        # ("day" decoded as the piece "day" encodes as "▁day"), which the model never produced.
        tokens = self._decode(torch.tensor([ids]), beam, 0.6, 2.0, False)[0].tokens
        steps = self.model.max_output_steps
        if steps is not None:  # an output that reached the learned positions' end: its last piece was never fed back
            tokens = tokens[: steps - 1]
        tgt_in = torch.tensor([[self.model.config.bos_id, *tokens]])
        weights = self.model.decoder_attention(torch.tensor([ids]), tgt_in)
        pieces = ["<s>"] + [self.tgt_tok.id_to_piece(i) for i in tokens]
        return pieces, torch.stack([w[0] for w in weights])

    def _decode(self, src, beam, length_penalty, max_len_ratio, need_attention) -> list[Hypothesis]:
        model = self.decoding_model()
        if beam == 1:
            return greedy_decode(model, src, max_len_ratio=max_len_ratio, need_attention=need_attention)
        from .beam import beam_search

        nbest = beam_search(model, src, beam_size=beam, length_penalty=length_penalty,
                            max_len_ratio=max_len_ratio, need_attention=need_attention)
        return [options[0] for options in nbest]

    def _result(self, source: str, ids: list[int], hyp: Hypothesis, need_attention: bool,
                truncated: bool = False) -> Translation:
        src_pieces = [self.src_tok.id_to_piece(i) for i in ids[:-1]] + ["</s>"]
        tgt_pieces = [self.tgt_tok.id_to_piece(i) for i in hyp.tokens]
        attention = hyp.attention
        if attention is not None:
            attention = attention[..., : len(ids)]  # drop the columns of the batch's padding (all zero)
        return Translation(source, self.tgt_tok.decode(hyp.tokens), src_pieces, tgt_pieces, hyp.score,
                           attention if need_attention else None, truncated)


def _batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    """The sentences (by index) :meth:`Translator.translate` decodes together: of similar lengths."""
    order = sorted(range(len(lengths)), key=lambda n: lengths[n])
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
