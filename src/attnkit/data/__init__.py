"""Parallel data: corpus readers with honest bad-line reports, the CC-CEDICT default corpus, batching.

Readers return a :class:`ReadReport` of :class:`Pair` s (oriented ``src``/``tgt``, with provenance);
:func:`encode_pairs` turns pairs into token ids and :class:`BatchLoader` serves padded, resumable,
token-budget batches.

>>> from attnkit.data import read_manythings, load_cedict
>>> report = read_manythings("../shared/data/cmn-eng/train.tsv")   # doctest: +SKIP
>>> report.pairs[0].src, report.pairs[0].tgt                          # doctest: +SKIP
('嗨。', 'Hi.')
>>> print(report.summary())                                           # doctest: +SKIP
skipped 2 of 25250 lines: ...train.tsv:40: found 2 tab-separated columns where most lines have 3; ...
"""

from attnkit.data.batching import (
    Batch,
    BatchLoader,
    DataPosition,
    EncodedPairs,
    TokenBatchSampler,
    collate,
    encode_pairs,
)
from attnkit.data.cedict import DEMO_PHRASES, cedict_counts, cedict_entries, cedict_split, clean_gloss, load_cedict
from attnkit.data.corpus import (
    DataError,
    DataWarning,
    Direction,
    Issue,
    Origin,
    Pair,
    ReadReport,
    format_skipped,
)
from attnkit.data.readers import DEFAULT_MAX_CHARS, read_manythings, read_moses, read_tsv

__all__ = [
    "DataError",
    "DataWarning",
    "Direction",
    "Issue",
    "Origin",
    "Pair",
    "ReadReport",
    "format_skipped",
    "DEFAULT_MAX_CHARS",
    "read_manythings",
    "read_tsv",
    "read_moses",
    "DEMO_PHRASES",
    "clean_gloss",
    "cedict_split",
    "cedict_entries",
    "cedict_counts",
    "load_cedict",
    "DataPosition",
    "Batch",
    "EncodedPairs",
    "encode_pairs",
    "collate",
    "TokenBatchSampler",
    "BatchLoader",
]
