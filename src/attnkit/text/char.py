"""Character tokeniser: one id per Unicode code point seen often enough in training.

Natural for Chinese, where a character is already a unit of meaning and the Tatoeba training side has
only a few thousand distinct ones; it works for English too (spaces are characters like any other).
Decoding is the concatenation of the characters, so ``decode(encode(s)) == s`` exactly whenever every
character of ``s`` is in the vocabulary; an unknown character becomes UNK and decodes to ``"⁇"``.
No normalisation is applied: full-width ``，`` and ASCII ``,`` are different characters.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Sequence

from attnkit.text.base import SPECIAL_PIECES, UNK_ID, UNK_TEXT, Tokenizer, TokenizerError

__all__ = ["CharTokenizer"]

VOCAB_FILE = "chars.json"


class CharTokenizer(Tokenizer):
    """Ids ``0..3`` are the specials (PAD, BOS, EOS, UNK); ids ``4..`` the characters, most frequent first."""

    kind = "char"

    def __init__(self, chars: Sequence[str], *, min_freq: int = 1):
        chars = list(chars)
        bad = [c for c in chars if not isinstance(c, str) or len(c) != 1]
        if bad:
            raise TokenizerError(f"a character vocabulary holds single characters, got {bad[:5]!r}")
        if len(set(chars)) != len(chars):
            raise TokenizerError("the character vocabulary has duplicates")
        self._chars = chars
        self._ids = {c: i for i, c in enumerate(chars, start=len(SPECIAL_PIECES))}
        self.min_freq = min_freq

    @classmethod
    def train(cls, texts: Iterable[str], *, min_freq: int = 1, max_size: int | None = None) -> "CharTokenizer":
        """Build the vocabulary from ``texts``: characters seen at least ``min_freq`` times, at most
        ``max_size`` ids in all (specials included), most frequent first, ties broken by code point
        so the same texts always give the same ids."""
        if min_freq < 1:
            raise TokenizerError(f"min_freq must be >= 1, got {min_freq}")
        if max_size is not None and max_size <= len(SPECIAL_PIECES):
            raise TokenizerError(f"max_size must exceed the {len(SPECIAL_PIECES)} special ids, got {max_size}")
        counts: Counter[str] = Counter()
        for text in texts:
            counts.update(text)
        chars = sorted((c for c, n in counts.items() if n >= min_freq), key=lambda c: (-counts[c], c))
        if max_size is not None:
            chars = chars[: max_size - len(SPECIAL_PIECES)]
        if not chars:
            raise TokenizerError(f"no character occurs at least min_freq={min_freq} times in the training text")
        return cls(chars, min_freq=min_freq)

    @property
    def vocab_size(self) -> int:
        return len(SPECIAL_PIECES) + len(self._chars)

    @property
    def chars(self) -> list[str]:
        """The characters in id order (id ``4 + k`` is ``chars[k]``)."""
        return list(self._chars)

    def encode(self, text: str) -> list[int]:
        ids = self._ids
        return [ids.get(c, UNK_ID) for c in text]

    def decode(self, ids: Iterable[int]) -> str:
        ids = list(ids)
        self._check_ids(ids)
        n_special = len(SPECIAL_PIECES)
        return "".join(
            self._chars[i - n_special] if i >= n_special else UNK_TEXT if i == UNK_ID else "" for i in ids
        )

    def id_to_piece(self, token_id: int) -> str:
        self._check_ids([token_id])
        n_special = len(SPECIAL_PIECES)
        return SPECIAL_PIECES[token_id] if token_id < n_special else self._chars[token_id - n_special]

    def _settings(self) -> dict[str, Any]:
        return {"min_freq": self.min_freq, "vocab_size": self.vocab_size, "vocab_file": VOCAB_FILE}

    def _save_files(self, directory: Path) -> None:
        # JSON keeps every character exact (a newline or tab in a line-per-char file would not be)
        (directory / VOCAB_FILE).write_text(json.dumps(self._chars, ensure_ascii=False) + "\n", "utf-8")

    @classmethod
    def _load(cls, directory: Path, settings: dict[str, Any]) -> "CharTokenizer":
        path = directory / settings.get("vocab_file", VOCAB_FILE)
        try:
            chars = json.loads(path.read_text("utf-8"))
        except (OSError, ValueError) as err:  # JSON and UTF-8 errors are ValueErrors
            raise TokenizerError(f"cannot read the character vocabulary {path}: {err}") from None
        if not isinstance(chars, list):
            raise TokenizerError(f"{path} is not a character vocabulary (a JSON list of characters)")
        try:
            tokenizer = cls(chars, min_freq=settings.get("min_freq", 1))
        except TokenizerError as err:
            raise TokenizerError(f"{path}: {err}") from None
        if settings.get("vocab_size", tokenizer.vocab_size) != tokenizer.vocab_size:
            raise TokenizerError(f"{path} has {tokenizer.vocab_size} ids, its manifest says {settings['vocab_size']}")
        return tokenizer
