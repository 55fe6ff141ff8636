"""The tokeniser interface shared by every attnkit tokeniser, and saving/loading by kind.

Every tokeniser uses the same special ids, so batching and models never have to ask which one they
got: ``PAD_ID = 0``, ``BOS_ID = 1``, ``EOS_ID = 2`` (the defaults of ``attnkit.models`` configs) and
``UNK_ID = 3``. ``encode`` never adds BOS/EOS (the
batcher does, where it knows whether the sequence is a source or a target); ``decode`` drops PAD,
BOS and EOS ids, so a model's output can be decoded as it comes once it is cut at the first EOS.

A saved tokeniser is a directory holding ``tokenizer.json`` (its kind and settings) plus any files of
its own kind; :func:`load_tokenizer` reads it back whatever the kind.
"""

from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar, Iterable

__all__ = [
    "PAD_ID",
    "UNK_ID",
    "BOS_ID",
    "EOS_ID",
    "SPECIAL_PIECES",
    "UNK_TEXT",
    "Tokenizer",
    "TokenizerError",
    "load_tokenizer",
]

PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3
#: The pieces of the special ids, indexed by id.
SPECIAL_PIECES: tuple[str, ...] = ("<pad>", "<s>", "</s>", "<unk>")
#: What an unknown token decodes to (sentencepiece's choice, so both kinds agree).
UNK_TEXT = "\u2047"

MANIFEST = "tokenizer.json"
FORMAT = "attnkit-tokenizer"
FORMAT_VERSION = 1

_KINDS: dict[str, type["Tokenizer"]] = {}


class TokenizerError(ValueError):
    """A tokeniser cannot be trained or loaded as asked; the message says why."""


class Tokenizer(ABC):
    """Text ⇄ ids. Subclasses set ``kind`` and implement the abstract methods."""

    kind: ClassVar[str]
    pad_id: ClassVar[int] = PAD_ID
    unk_id: ClassVar[int] = UNK_ID
    bos_id: ClassVar[int] = BOS_ID
    eos_id: ClassVar[int] = EOS_ID

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "kind" in cls.__dict__:
            _KINDS[cls.kind] = cls

    @property
    @abstractmethod
    def vocab_size(self) -> int:
        """Number of ids, specials included: every id is in ``range(vocab_size)``."""

    @abstractmethod
    def encode(self, text: str) -> list[int]:
        """Ids of ``text``, without BOS/EOS."""

    @abstractmethod
    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids``; PAD/BOS/EOS are dropped, UNK becomes ``UNK_TEXT``."""

    @abstractmethod
    def id_to_piece(self, token_id: int) -> str:
        """The piece an id stands for (``"<pad>"`` etc. for specials)."""

    def pieces(self, text: str) -> list[str]:
        """The pieces of ``text``, for display (attention heatmap axes, explanations)."""
        return [self.id_to_piece(i) for i in self.encode(text)]

    # --- saving --------------------------------------------------------------------------------

    @abstractmethod
    def _settings(self) -> dict[str, Any]:
        """JSON-able settings written into ``tokenizer.json`` (besides kind and format)."""

    @abstractmethod
    def _save_files(self, directory: Path) -> None:
        """Write the kind's own files (if any) into ``directory``."""

    @classmethod
    @abstractmethod
    def _load(cls, directory: Path, settings: dict[str, Any]) -> "Tokenizer":
        """Rebuild from ``directory`` and the settings read from ``tokenizer.json``."""

    def save(self, directory: str | os.PathLike) -> Path:
        """Save into ``directory`` (created if needed); returns its path."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self._save_files(directory)
        manifest = {"format": FORMAT, "version": FORMAT_VERSION, "kind": self.kind, **self._settings()}
        (directory / MANIFEST).write_text(json.dumps(manifest, ensure_ascii=False, indent=1) + "\n", "utf-8")
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "Tokenizer":
        """Load a saved tokeniser; on a subclass, refuse one of another kind."""
        tokenizer = load_tokenizer(directory)
        if cls is not Tokenizer and not isinstance(tokenizer, cls):
            raise TokenizerError(f"{directory} holds a {tokenizer.kind!r} tokenizer, not {cls.kind!r}")
        return tokenizer

    def _check_ids(self, ids: list[int]) -> None:
        size = self.vocab_size
        for i in ids:
            if not 0 <= i < size:
                raise ValueError(f"id {i} is out of range for a vocabulary of {size}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(vocab_size={self.vocab_size})"


def load_tokenizer(directory: str | os.PathLike) -> Tokenizer:
    """Load a tokeniser saved by :meth:`Tokenizer.save`, whatever its kind."""
    directory = Path(directory)
    try:
        manifest = json.loads((directory / MANIFEST).read_text("utf-8"))
    except OSError as err:
        raise TokenizerError(f"no tokenizer in {directory}: cannot read {MANIFEST} ({err.strerror})") from None
    except ValueError as err:  # JSON and UTF-8 errors
        raise TokenizerError(f"{directory / MANIFEST} is not valid JSON: {err}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise TokenizerError(f"{directory / MANIFEST} is not an attnkit tokenizer")
    if manifest.get("version") != FORMAT_VERSION:
        raise TokenizerError(f"{directory / MANIFEST} has format version {manifest.get('version')}, "
                             f"this attnkit reads version {FORMAT_VERSION}")
    kind = manifest.get("kind")
    if kind not in _KINDS:
        raise TokenizerError(f"{directory / MANIFEST}: unknown tokenizer kind {kind!r} (known: {sorted(_KINDS)})")
    settings = {k: v for k, v in manifest.items() if k not in ("format", "version", "kind")}
    return _KINDS[kind]._load(directory, settings)
