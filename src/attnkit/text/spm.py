"""SentencePiece tokeniser (Kudo & Richardson 2018), trained in memory and decoded exactly.

Training reads sentences from a Python iterator and writes the model into memory
(``sentence_iterator=`` / ``model_writer=`` of sentencepiece's Python API), so no temporary files are
left behind. The settings are chosen so that ``decode(encode(s)) == s``:

* ``normalization_rule_name="identity"``: sentencepiece's default NFKC normalisation rewrites text
  (full-width ``，`` → ``,``, ``！`` → ``!``, ``ﬁ`` → ``fi``), so a model trained with it could never
  produce the full-width punctuation of a Chinese reference, and decoding would not give back what
  was encoded. Identity keeps every character as written.
* ``remove_extra_whitespaces=False``: otherwise runs of spaces collapse and edge spaces vanish.
* ``byte_fallback=True``: a character outside the vocabulary becomes its UTF-8 bytes (``<0xE4>`` …)
  instead of UNK, so even unseen characters round-trip.

One character cannot round-trip: U+2581 ``▁``, sentencepiece's own whitespace marker, decodes as a
space. It does not occur in the project's corpora.
"""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any, Iterable, Literal

from attnkit.text.base import BOS_ID, EOS_ID, PAD_ID, SPECIAL_PIECES, UNK_ID, Tokenizer, TokenizerError

__all__ = ["SentencePieceTokenizer", "MODEL_TYPES", "MIN_VOCAB_SIZE"]

MODEL_FILE = "sentencepiece.model"
MODEL_TYPES: tuple[str, ...] = ("unigram", "bpe")
# 256 byte pieces for byte_fallback, plus the four specials: the least any vocabulary can hold.
MIN_VOCAB_SIZE = 256 + len(SPECIAL_PIECES)
_REQUIRED_CHARS = re.compile(r"required_chars\. (\d+) vs (\d+)")


def _spm():
    import sentencepiece

    return sentencepiece


class SentencePieceTokenizer(Tokenizer):
    """A trained sentencepiece model with attnkit's special ids (PAD 0, BOS 1, EOS 2, UNK 3)."""

    kind = "sentencepiece"

    def __init__(self, model_proto: bytes, *, settings: dict[str, Any] | None = None):
        try:
            self._sp = _spm().SentencePieceProcessor(model_proto=model_proto)
        except RuntimeError as err:
            raise TokenizerError(f"not a sentencepiece model: {err}") from None
        ids = (self._sp.pad_id(), self._sp.unk_id(), self._sp.bos_id(), self._sp.eos_id())
        if ids != (PAD_ID, UNK_ID, BOS_ID, EOS_ID):
            raise TokenizerError(f"sentencepiece model has special ids (pad, unk, bos, eos) = {ids}, "
                                 f"attnkit needs {(PAD_ID, UNK_ID, BOS_ID, EOS_ID)}")
        self._proto = bytes(model_proto)
        self.settings = dict(settings or {})

    @classmethod
    def train(
        cls,
        sentences: Iterable[str],
        *,
        vocab_size: int = 8000,
        model_type: Literal["unigram", "bpe"] = "unigram",
        character_coverage: float = 0.9995,
    ) -> "SentencePieceTokenizer":
        """Train on ``sentences`` (empty ones are ignored).

        ``vocab_size`` is an upper bound: on little text sentencepiece stops earlier rather than
        fail (``hard_vocab_limit=False``). ``character_coverage`` is the share of character
        occurrences given their own piece (0.9995 is sentencepiece's advice for Chinese); rarer
        characters fall back to bytes. Training uses one thread, which makes it deterministic.
        """
        if model_type not in MODEL_TYPES:
            raise TokenizerError(f"model_type must be one of {', '.join(MODEL_TYPES)}, got {model_type!r}")
        if vocab_size < MIN_VOCAB_SIZE:
            raise TokenizerError(f"vocab_size must be >= {MIN_VOCAB_SIZE} (256 byte pieces + 4 specials), got {vocab_size}")
        if not 0 < character_coverage <= 1:
            raise TokenizerError(f"character_coverage must be in (0, 1], got {character_coverage}")
        texts = [s for s in sentences if s]
        if not texts:
            raise TokenizerError("no sentences to train a sentencepiece model on")
        model = io.BytesIO()
        try:
            _spm().SentencePieceTrainer.train(
                sentence_iterator=iter(texts),
                model_writer=model,
                vocab_size=vocab_size,
                model_type=model_type,
                character_coverage=character_coverage,
                normalization_rule_name="identity",
                remove_extra_whitespaces=False,
                add_dummy_prefix=True,
                byte_fallback=True,
                hard_vocab_limit=False,
                pad_id=PAD_ID, unk_id=UNK_ID, bos_id=BOS_ID, eos_id=EOS_ID,
                pad_piece=SPECIAL_PIECES[PAD_ID], unk_piece=SPECIAL_PIECES[UNK_ID],
                bos_piece=SPECIAL_PIECES[BOS_ID], eos_piece=SPECIAL_PIECES[EOS_ID],
                num_threads=1,
                minloglevel=2,  # sentencepiece logs every training step to stderr otherwise
            )
        except RuntimeError as err:
            raise TokenizerError(_explain_training_error(err, vocab_size, character_coverage)) from None
        settings = {"vocab_size_requested": vocab_size, "model_type": model_type,
                    "character_coverage": character_coverage, "normalization": "identity"}
        return cls(model.getvalue(), settings=settings)

    @property
    def vocab_size(self) -> int:
        return self._sp.get_piece_size()

    @property
    def model_proto(self) -> bytes:
        """The serialised sentencepiece model (what :meth:`save` writes)."""
        return self._proto

    def encode(self, text: str) -> list[int]:
        return self._sp.encode(text)

    def decode(self, ids: Iterable[int]) -> str:
        ids = list(ids)
        self._check_ids(ids)
        # sentencepiece already drops bos/eos/pad when decoding; filtering here keeps that explicit
        return self._sp.decode([i for i in ids if i not in (PAD_ID, BOS_ID, EOS_ID)])

    def id_to_piece(self, token_id: int) -> str:
        self._check_ids([token_id])
        return self._sp.id_to_piece(token_id)

    def pieces(self, text: str) -> list[str]:
        return self._sp.encode(text, out_type=str)

    def _settings(self) -> dict[str, Any]:
        return {**self.settings, "vocab_size": self.vocab_size, "model_file": MODEL_FILE}

    def _save_files(self, directory: Path) -> None:
        (directory / MODEL_FILE).write_bytes(self._proto)

    @classmethod
    def _load(cls, directory: Path, settings: dict[str, Any]) -> "SentencePieceTokenizer":
        path = directory / settings.get("model_file", MODEL_FILE)
        try:
            proto = path.read_bytes()
        except OSError as err:
            raise TokenizerError(f"cannot read the sentencepiece model {path}: {err.strerror}") from None
        kept = {k: v for k, v in settings.items() if k not in ("vocab_size", "model_file")}
        try:
            tokenizer = cls(proto, settings=kept)
        except TokenizerError as err:
            raise TokenizerError(f"{path}: {err}") from None
        if settings.get("vocab_size", tokenizer.vocab_size) != tokenizer.vocab_size:
            raise TokenizerError(f"{path} has {tokenizer.vocab_size} pieces, its manifest says {settings['vocab_size']}")
        return tokenizer


def _explain_training_error(err: RuntimeError, vocab_size: int, coverage: float) -> str:
    """Turn sentencepiece's internal assertion into advice a user can act on."""
    found = _REQUIRED_CHARS.search(str(err))
    if found:
        needed = int(found.group(2))
        return (f"vocab_size={vocab_size} is too small: covering {coverage:.2%} of the training characters "
                f"needs {needed} pieces before any multi-character piece; raise vocab_size to at least {needed} "
                f"or lower character_coverage (rarer characters then fall back to bytes), or use a "
                f"character tokenizer")
    return f"sentencepiece training failed: {err}"
