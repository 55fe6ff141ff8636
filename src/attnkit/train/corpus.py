"""The pairs a recipe names, read with the data layer's honest bad-line reports."""

from __future__ import annotations

import warnings
from pathlib import Path

from attnkit.data import DataError, Pair, load_cedict, read_manythings, read_moses, read_tsv

from .config import DataSettings

__all__ = ["read_split", "CorpusError"]


class CorpusError(ValueError):
    """The data a recipe names cannot be read: the message names the file."""


def _existing(path, split: str) -> Path:
    p = Path(path)
    if p.is_dir():
        raise CorpusError(f"data.{split}: {p} is a folder, not a data file")
    if not p.is_file():
        raise CorpusError(f"data.{split}: {p} does not exist (relative paths are taken from {Path.cwd()})")
    return p


def read_split(data: DataSettings, split: str, *, log=print) -> list[Pair]:
    """Pairs of ``split`` (train/dev/test); skipped lines are reported through ``log`` in one line."""
    if data.format == "cedict":
        try:
            pairs = load_cedict(split, direction=data.direction, focus=data.focus)
        except ValueError as err:
            raise CorpusError(f"data.focus: {err}") from None
        if not pairs and split == "train":  # only a focus can leave none (dev and test may be empty then)
            raise CorpusError(f"data.focus: no CC-CEDICT entry shares a Chinese character with {data.focus!r}: "
                              f"nothing to train on; choose a text with other characters")
        return pairs
    spec = getattr(data, split)
    if spec is None:
        return []
    kwargs = dict(strict=data.strict, max_chars=data.max_chars, warn=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            if data.format == "manythings":
                report = read_manythings(_existing(spec, split), direction=data.direction, **kwargs)
            elif data.format == "tsv":
                report = read_tsv(_existing(spec, split), src_col=data.src_col, tgt_col=data.tgt_col, **kwargs)
            else:
                if not isinstance(spec, (list, tuple)) or len(spec) != 2:
                    raise CorpusError(f"data.{split} for the moses format must be [source_file, target_file], got {spec!r}")
                report = read_moses(_existing(spec[0], split), _existing(spec[1], split), **kwargs)
        except DataError as err:
            raise CorpusError(str(err)) from None
    if report.skipped:
        log(f"{split}: {report.summary()}")
    if not report.pairs:
        raise CorpusError(f"data.{split}: no usable pairs in {spec}")
    return report.pairs
