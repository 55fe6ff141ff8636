"""Typed tokeniser configuration, training both sides from parallel data, and saving them with a model.

The defaults suit the default direction, Chinese → English: characters for the Chinese source (the
CC-CEDICT headwords need over 9,000 sentencepiece pieces just for single characters at 99.95%
coverage) and an 8,000-piece unigram sentencepiece model for English. ``joint=True`` trains one
vocabulary on both sides and returns it as both tokenisers (the same object), which lets a model tie
its source and target embeddings.

YAML is read once at the edge; :meth:`TokenizerConfig.from_dict` validates it and refuses unknown keys::

    tokenizer:
      joint: false
      src: {kind: char, min_freq: 1}
      tgt: {kind: sentencepiece, vocab_size: 8000, model_type: unigram}
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable, Literal, Union

from attnkit.text.base import Tokenizer, TokenizerError, load_tokenizer
from attnkit.text.char import CharTokenizer
from attnkit.text.spm import MIN_VOCAB_SIZE, MODEL_TYPES, SentencePieceTokenizer

__all__ = [
    "SpecError",
    "CharSpec",
    "SentencePieceSpec",
    "TokenizerSpec",
    "TokenizerConfig",
    "build_tokenizers",
    "train_tokenizer",
    "save_tokenizers",
    "load_tokenizers",
]


class SpecError(ValueError):
    """A tokenizer spec value out of range: ``key`` is the field (``vocab_size``), ``detail`` what is wrong
    with it (``must be >= 260 …, got 5``); the message names the tokenizer kind, the field and the detail."""

    def __init__(self, kind: str, key: str, detail: str, message: str | None = None):
        super().__init__(message or f"{kind}: {key} {detail}")
        self.key, self.detail = key, detail
        self.side: str | None = None  # set by TokenizerConfig.from_dict: "src" or "tgt"

    def __reduce__(self):
        # pickle (multiprocessing, a copy) rebuilds an exception as cls(*args), and args holds only the
        # message: rebuild it from the message, the key and the detail, then restore side
        return type(self), ("", self.key, self.detail, str(self)), self.__dict__


@dataclass(frozen=True)
class CharSpec:
    """A :class:`~attnkit.text.char.CharTokenizer`: characters seen ``min_freq`` times, at most
    ``max_size`` ids (specials included; ``None`` for no limit)."""

    min_freq: int = 1
    max_size: int | None = None
    kind: Literal["char"] = field(default="char", init=False)

    def __post_init__(self) -> None:
        if self.min_freq < 1:
            raise SpecError("char tokenizer", "min_freq", f"must be >= 1, got {self.min_freq}")
        if self.max_size is not None and self.max_size < 5:
            raise SpecError("char tokenizer", "max_size", f"must be >= 5 or None, got {self.max_size}")


@dataclass(frozen=True)
class SentencePieceSpec:
    """A :class:`~attnkit.text.spm.SentencePieceTokenizer`; see its ``train`` for the fields."""

    vocab_size: int = 8000
    model_type: Literal["unigram", "bpe"] = "unigram"
    character_coverage: float = 0.9995
    kind: Literal["sentencepiece"] = field(default="sentencepiece", init=False)

    def __post_init__(self) -> None:
        if self.model_type not in MODEL_TYPES:
            raise SpecError("sentencepiece", "model_type", f"must be one of {', '.join(MODEL_TYPES)}, got {self.model_type!r}")
        if self.vocab_size < MIN_VOCAB_SIZE:
            raise SpecError("sentencepiece", "vocab_size",
                            f"must be >= {MIN_VOCAB_SIZE} (256 bytes + 4 specials), got {self.vocab_size}")
        if not 0 < self.character_coverage <= 1:
            raise SpecError("sentencepiece", "character_coverage", f"must be in (0, 1], got {self.character_coverage}")


TokenizerSpec = Union[CharSpec, SentencePieceSpec]
_SPECS: dict[str, type] = {"char": CharSpec, "sentencepiece": SentencePieceSpec}


@dataclass(frozen=True)
class TokenizerConfig:
    """Which tokeniser each side gets, and whether they share one vocabulary."""

    src: TokenizerSpec = field(default_factory=CharSpec)
    tgt: TokenizerSpec = field(default_factory=SentencePieceSpec)
    joint: bool = False

    def __post_init__(self) -> None:
        for side in ("src", "tgt"):
            if not isinstance(getattr(self, side), (CharSpec, SentencePieceSpec)):
                raise TypeError(f"tokenizer {side} must be a CharSpec or SentencePieceSpec, got {getattr(self, side)!r}")
        if self.joint and self.src != self.tgt:
            detail = f"needs the same spec on both sides, got src={self.src} and tgt={self.tgt}"
            raise SpecError("tokenizer", "joint", detail, f"a joint vocabulary {detail}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TokenizerConfig":
        """Build from plain data (e.g. YAML); with ``joint: true`` a missing ``tgt`` copies ``src``."""
        data = dict(data)
        unknown = set(data) - {"src", "tgt", "joint"}
        if unknown:
            raise ValueError(f"tokenizer config: unknown keys {sorted(unknown)} (known: joint, src, tgt)")
        joint = bool(data.get("joint", False))
        defaults = cls()
        src = _spec_from_dict(data["src"], "src") if "src" in data else defaults.src
        if "tgt" in data:
            tgt = _spec_from_dict(data["tgt"], "tgt")
        else:
            tgt = src if joint else defaults.tgt
        return cls(src=src, tgt=tgt, joint=joint)

    def to_dict(self) -> dict[str, Any]:
        """Plain data that :meth:`from_dict` reads back (saved beside a model)."""
        return {"joint": self.joint, "src": asdict(self.src), "tgt": asdict(self.tgt)}


def _spec_from_dict(data: dict[str, Any], side: str) -> TokenizerSpec:
    if not isinstance(data, dict) or "kind" not in data:
        raise ValueError(f"tokenizer {side}: expected a mapping with a 'kind' ({' or '.join(_SPECS)}), got {data!r}")
    data = dict(data)
    kind = data.pop("kind")
    try:
        if kind not in _SPECS:
            raise SpecError("tokenizer", "kind", f"must be one of {', '.join(_SPECS)}, got {kind!r}",
                            f"tokenizer {side}: unknown kind {kind!r} (known: {', '.join(_SPECS)})")
        spec_cls = _SPECS[kind]
        known = {f.name for f in fields(spec_cls) if f.init}
        unknown = sorted(set(data) - known)
        if unknown:
            raise SpecError("tokenizer", unknown[0], f"is not a key of a {kind} tokenizer (unknown keys {unknown}; "
                            f"known: {', '.join(sorted(known))})",
                            f"tokenizer {side} ({kind}): unknown keys {unknown} (known: {', '.join(sorted(known))})")
        return spec_cls(**data)
    except SpecError as err:
        err.side = side  # which side's spec (src or tgt)
        raise


def train_tokenizer(spec: TokenizerSpec, texts: Iterable[str]) -> Tokenizer:
    """Train one tokeniser of the kind ``spec`` describes on ``texts``."""
    if isinstance(spec, CharSpec):
        return CharTokenizer.train(texts, min_freq=spec.min_freq, max_size=spec.max_size)
    return SentencePieceTokenizer.train(
        texts, vocab_size=spec.vocab_size, model_type=spec.model_type, character_coverage=spec.character_coverage
    )


def _sides(pairs: Iterable[Any]) -> tuple[list[str], list[str]]:
    """Source and target texts of pairs given as objects with ``.src``/``.tgt`` or as 2-tuples."""
    src, tgt = [], []
    for pair in pairs:
        s, t = (pair.src, pair.tgt) if hasattr(pair, "src") else pair
        src.append(s)
        tgt.append(t)
    return src, tgt


def build_tokenizers(config: TokenizerConfig, pairs: Iterable[Any]) -> tuple[Tokenizer, Tokenizer]:
    """Train ``(src_tokenizer, tgt_tokenizer)`` on training pairs (``Pair`` objects or ``(src, tgt)``).

    With ``config.joint`` one tokeniser is trained on both sides and returned twice.
    """
    src_texts, tgt_texts = _sides(pairs)
    if not src_texts:
        raise TokenizerError("no training pairs to build tokenizers from")
    if config.joint:
        shared = train_tokenizer(config.src, src_texts + tgt_texts)
        return shared, shared
    return train_tokenizer(config.src, src_texts), train_tokenizer(config.tgt, tgt_texts)


_PAIR_MANIFEST = "tokenizers.json"


def tokenizer_size_mismatch(tokenizer_sizes: tuple[int, int], model_sizes: tuple[int, int],
                            folder: str | os.PathLike | None = None) -> str | None:
    """What is wrong when a tokenizer's number of ids (``tokenizer_sizes``: source, target) is not the
    model's (``model_sizes``: its ``src_vocab_size``, ``tgt_vocab_size``), naming the model ``folder`` whose
    files disagree when given; None when they match. Tokenizers of another model would feed ids the
    embeddings do not have (an index error) or decode the output ids as other pieces (a wrong translation,
    silently): callers raise their own error with this message."""
    for side, size, n in zip(("source", "target"), tokenizer_sizes, model_sizes):
        if size != n:
            if folder is None:
                return f"the {side} tokenizer has {size} ids but the model has {n}"
            return (f"{folder}: the {side} tokenizer ({_PAIR_MANIFEST}) has {size} ids but the model (config.json) "
                    f"has {n}: the tokenizers saved there are not this model's")
    return None


def save_tokenizers(directory: str | os.PathLike, src: Tokenizer, tgt: Tokenizer) -> Path:
    """Save a source/target pair into ``directory`` (e.g. a model folder).

    Layout: ``tokenizers.json`` (``{"joint": ...}``) and ``src_tokenizer/`` + ``tgt_tokenizer/``, or a
    single ``tokenizer/`` when both sides are the same object.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    joint = src is tgt
    if joint:
        src.save(directory / "tokenizer")
    else:
        src.save(directory / "src_tokenizer")
        tgt.save(directory / "tgt_tokenizer")
    (directory / _PAIR_MANIFEST).write_text(json.dumps({"joint": joint}) + "\n", "utf-8")
    return directory


def load_tokenizers(directory: str | os.PathLike) -> tuple[Tokenizer, Tokenizer]:
    """Load what :func:`save_tokenizers` wrote; a joint vocabulary comes back as one shared object."""
    directory = Path(directory)
    try:
        joint = json.loads((directory / _PAIR_MANIFEST).read_text("utf-8"))["joint"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise TokenizerError(f"no tokenizers saved in {directory}: cannot read {_PAIR_MANIFEST} ({err})") from None
    if joint:
        shared = load_tokenizer(directory / "tokenizer")
        return shared, shared
    return load_tokenizer(directory / "src_tokenizer"), load_tokenizer(directory / "tgt_tokenizer")
