"""Readers for parallel text: manythings/Tatoeba TSV, general TSV with a column choice, Moses file pairs.

Every reader reads bytes and decodes line by line, so invalid UTF-8 is reported with its line number
instead of aborting the whole file with a ``UnicodeDecodeError``. Lines are split on ``\\n`` only (not
on the Unicode line separators ``str.splitlines`` honours), a trailing ``\\r`` is dropped (Windows
files), and a UTF-8 byte-order mark on line 1 is ignored.

A line is bad when it is not UTF-8, contains a NUL byte or a carriage return that does not end it (a
file with classic Mac OS line ends, CR alone, is one such line), is blank, has the wrong number of columns,
has an empty side, or has a side longer than ``max_chars`` characters. With ``strict=True`` the first
bad line raises :class:`~attnkit.data.corpus.DataError`; otherwise it is skipped and recorded in the
returned :class:`~attnkit.data.corpus.ReadReport` (and, with ``warn=True``, one
:class:`~attnkit.data.corpus.DataWarning` summarises the skips). A file that is empty or yields no
usable pair always raises, and so does a file that is not text at all (gzip and other compressed files,
UTF-16), with a message saying what it is instead of one ``invalid UTF-8`` per line.
"""

from __future__ import annotations

import os
import warnings
from collections import Counter

from attnkit.data.corpus import DataError, DataWarning, Issue, Origin, Pair, ReadReport, check_direction

__all__ = ["DEFAULT_MAX_CHARS", "read_manythings", "read_tsv", "read_moses", "not_text", "line_problem"]

#: A side longer than this many characters is "absurdly long" for sentence-level translation: the
#: longest Tatoeba sentence is 163 characters, and one such line would dominate a token-budget batch.
DEFAULT_MAX_CHARS = 1000

_BOM = b"\xef\xbb\xbf"

# The first bytes of files that are not UTF-8 text, and what to do about them.
_NOT_TEXT = (
    (b"\x1f\x8b", "is gzip-compressed: decompress it first, e.g. with gunzip -k"),
    (b"BZh", "is bzip2-compressed: decompress it first, e.g. with bunzip2 -k"),
    (b"\xfd7zXZ\x00", "is xz-compressed: decompress it first, e.g. with unxz -k"),
    (b"\x28\xb5\x2f\xfd", "is zstd-compressed: decompress it first, e.g. with unzstd"),
    (b"PK\x03\x04", "is a zip archive: extract the text file from it first"),
    (b"\xff\xfe", "is UTF-16 text (it starts with the byte-order mark FF FE): save it as UTF-8"),
    (b"\xfe\xff", "is UTF-16 text (it starts with the byte-order mark FE FF): save it as UTF-8"),
)


def not_text(data: bytes) -> str | None:
    """Why a file starting with ``data`` is not UTF-8 text (``"is gzip-compressed: ..."``), or ``None``.

    Only formats whose first bytes cannot begin valid UTF-8 text are named (bzip2's ``BZh`` is followed by a
    block-size digit and the bytes of pi, which no text starts with)."""
    for magic, what in _NOT_TEXT:
        if data.startswith(magic) and (magic != b"BZh" or data[4:10] == b"1AY&SY"):
            return what
    return None


class _Collector:
    """Collects pairs and skipped lines; in strict mode the first skip raises instead."""

    def __init__(self, source: str, strict: bool):
        self.strict = strict
        self.report = ReadReport(source=source, pairs=[])

    def skip(self, file: str, line: int, reason: str, count: int = 1) -> None:
        if self.strict:
            raise DataError(f"{file}:{line}: {reason} (strict mode refuses bad lines)")
        self.report.issues.append(Issue(file, line, reason))
        self.report.skipped += count

    def finish(self, warn: bool, stacklevel: int) -> ReadReport:
        """The report; ``stacklevel`` makes the warning point at the caller's own code."""
        report = self.report
        if not report.pairs:
            raise DataError(f"{report.source}: no usable pairs ({report.summary()})")
        if warn and report.skipped:
            warnings.warn(report.summary(), DataWarning, stacklevel=stacklevel)
        return report


def _read_raw_lines(path: str | os.PathLike) -> list[bytes]:
    """All lines of a file as bytes without their line ending; a missing or empty file is a DataError."""
    try:
        with open(path, "rb") as handle:
            lines = handle.read().split(b"\n")
    except OSError as err:
        raise DataError(f"cannot read {path}: {err.strerror or err}") from None
    what = not_text(lines[0][:16])
    if what is not None:
        raise DataError(f"{path} {what}")
    if lines and lines[-1] == b"":
        lines.pop()  # the file ends with a newline: no extra empty line after it
    if not lines:
        raise DataError(f"{path}: file is empty")
    if lines[0].startswith(_BOM):
        lines[0] = lines[0][len(_BOM):]
    return [line[:-1] if line.endswith(b"\r") else line for line in lines]


def _decode(raw: bytes) -> tuple[str | None, str | None]:
    """Decode one line: ``(text, None)`` or ``(None, reason)``."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        return None, f"invalid UTF-8 (byte {err.start + 1} of the line is {raw[err.start]:#04x})"
    problem = line_problem(text)
    return (text, None) if problem is None else (None, problem)


def line_problem(text: str) -> str | None:
    """Why a decoded line cannot be a line of text — it holds a NUL byte (binary data) or a carriage return
    that does not end it (:data:`CR_INSIDE`) — or None."""
    if "\x00" in text:
        return "contains a NUL byte (binary data?)"
    if "\r" in text:
        return CR_INSIDE
    return None


#: A ``\r`` left in a line (one before ``\n`` is a Windows line end and dropped) is a line break of another
#: convention, not text: kept, it joined a file of CR-only lines into one "pair" and trained on it silently.
CR_INSIDE = "contains a carriage return (CR) that does not end the line (lines must end in LF or CRLF, not CR alone)"


def _check_side(text: str, name: str, max_chars: int) -> tuple[str | None, str | None]:
    """Strip one side and check it is neither empty nor absurdly long."""
    text = text.strip()
    if not text:
        return None, f"empty {name} side"
    if len(text) > max_chars:
        return None, f"{name} side is {len(text)} characters long (max_chars={max_chars})"
    return text, None


def _check_max_chars(max_chars: int) -> None:
    if max_chars < 1:
        raise ValueError(f"max_chars must be >= 1, got {max_chars}")


def read_tsv(
    path: str | os.PathLike,
    *,
    src_col: int = 0,
    tgt_col: int = 1,
    src_name: str = "source",
    tgt_name: str = "target",
    strict: bool = False,
    max_chars: int = DEFAULT_MAX_CHARS,
    warn: bool = True,
) -> ReadReport:
    """Read pairs from a tab-separated file, taking ``src`` from column ``src_col`` and ``tgt`` from
    ``tgt_col`` (0-based).

    The expected number of columns is the most common one in the file; a line with another count is
    bad, because a stray or missing tab shifts the columns and would pair the wrong texts (Tatoeba
    has lines where English and Chinese are separated by a space instead of a tab).
    ``src_name``/``tgt_name`` only name the sides in messages.
    """
    return _read_tsv(path, src_col, tgt_col, src_name, tgt_name, strict, max_chars, warn)


def _read_tsv(path, src_col, tgt_col, src_name, tgt_name, strict, max_chars, warn) -> ReadReport:
    if src_col < 0 or tgt_col < 0 or src_col == tgt_col:
        raise ValueError(f"src_col and tgt_col must be distinct and >= 0, got {src_col} and {tgt_col}")
    _check_max_chars(max_chars)
    file = str(path)
    raw_lines = _read_raw_lines(path)
    out = _Collector(file, strict)
    out.report.lines = len(raw_lines)

    decoded: list[tuple[int, list[str] | None, str | None]] = []
    for number, raw in enumerate(raw_lines, start=1):
        text, reason = _decode(raw)
        if text is not None and not text.strip():
            text, reason = None, "blank line"
        decoded.append((number, None if text is None else text.split("\t"), reason))
    counts = Counter(len(cols) for _, cols, _ in decoded if cols is not None)
    expected = counts.most_common(1)[0][0] if counts else 0
    needed = max(src_col, tgt_col) + 1

    for number, cols, reason in decoded:
        if cols is not None and len(cols) < needed:
            reason = f"found {len(cols)} tab-separated columns, need at least {needed} (missing tab?)"
        elif cols is not None and len(cols) != expected:
            reason = f"found {len(cols)} tab-separated columns where most lines have {expected}"
            if len(cols) == expected + 1 and cols[-1] == "":
                reason += " (a tab at the end of the line?)"
        if reason is None:
            src, reason = _check_side(cols[src_col], src_name, max_chars)
        if reason is None:
            tgt, reason = _check_side(cols[tgt_col], tgt_name, max_chars)
        if reason is not None:
            out.skip(file, number, reason)
            continue
        out.report.pairs.append(Pair(src, tgt, Origin(file, number)))
    # user -> read_tsv/read_manythings -> _read_tsv -> finish -> warn
    return out.finish(warn, stacklevel=4)


def read_manythings(
    path: str | os.PathLike,
    *,
    direction: str = "zh-en",
    strict: bool = False,
    max_chars: int = DEFAULT_MAX_CHARS,
    warn: bool = True,
) -> ReadReport:
    """Read a manythings.org/Tatoeba file: ``English<TAB>Chinese<TAB>attribution`` per line.

    ``direction="zh-en"`` (the default) makes Chinese the source; ``"en-zh"`` the reverse. Files
    without the attribution column (older manythings releases) read the same way.
    """
    check_direction(direction)
    zh_to_en = direction == "zh-en"
    src_col, tgt_col = (1, 0) if zh_to_en else (0, 1)
    names = ("Chinese", "English") if zh_to_en else ("English", "Chinese")
    return _read_tsv(path, src_col, tgt_col, *names, strict, max_chars, warn)


def read_moses(
    src_path: str | os.PathLike,
    tgt_path: str | os.PathLike,
    *,
    strict: bool = False,
    max_chars: int = DEFAULT_MAX_CHARS,
    warn: bool = True,
) -> ReadReport:
    """Read Moses-style parallel files: line ``n`` of ``src_path`` translates to line ``n`` of ``tgt_path``.

    Files of different lengths are refused, strict or not: a line missing anywhere shifts every pair after
    it, and no skipping of lines can tell where (skipping the surplus lines of the longer file trained on
    pairs that were, from the missing line on, all wrong). Only blank lines at the end of the longer file
    are skipped, as blank lines, with one issue naming the first.
    """
    _check_max_chars(max_chars)
    src_file, tgt_file = str(src_path), str(tgt_path)
    src_lines, tgt_lines = _read_raw_lines(src_path), _read_raw_lines(tgt_path)
    out = _Collector(f"{src_file} + {tgt_file}", strict)
    out.report.lines = max(len(src_lines), len(tgt_lines))
    common = min(len(src_lines), len(tgt_lines))
    if len(src_lines) != len(tgt_lines):
        longer, surplus = (src_file, src_lines) if len(src_lines) > len(tgt_lines) else (tgt_file, tgt_lines)
        counts = f"{src_file} has {len(src_lines)} lines but {tgt_file} has {len(tgt_lines)}"
        if not all(text is not None and not text.strip() for text, _ in map(_decode, surplus[common:])):
            raise DataError(f"{longer}:{common + 1}: {counts}: the files must be line-aligned (line n of one "
                            f"translating line n of the other), and a line missing anywhere shifts every pair "
                            f"after it; make them the same length")
        out.skip(longer, common + 1, f"{counts}; lines {common + 1}-{out.report.lines} of {longer} are blank",
                 count=out.report.lines - common)

    for index in range(common):
        number = index + 1
        pair: list[str] = []
        for raw, file, name in ((src_lines[index], src_file, "source"), (tgt_lines[index], tgt_file, "target")):
            text, reason = _decode(raw)
            if reason is None:
                text, reason = _check_side(text, name, max_chars)
            if reason is not None:
                out.skip(file, number, reason)
                break
            pair.append(text)
        else:
            out.report.pairs.append(Pair(pair[0], pair[1], Origin(src_file, number)))
    return out.finish(warn, stacklevel=3)
