"""The corpus types every reader returns: pairs with provenance, and a report of what was skipped.

User data is never trusted to be clean. A reader either refuses (``strict=True``: the first bad line
raises :class:`DataError` naming file and line) or skips the line and records an :class:`Issue`
(file, line, reason) in the :class:`ReadReport`, so a command can print one honest summary such as::

    skipped 2 of 25250 lines: train.tsv:40: found 2 tab-separated columns where most lines have 3; ...
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Literal

__all__ = [
    "DataError",
    "DataWarning",
    "Direction",
    "Origin",
    "Pair",
    "Issue",
    "ReadReport",
    "check_direction",
    "format_skipped",
]

Direction = Literal["zh-en", "en-zh"]
DIRECTIONS: tuple[str, ...] = ("zh-en", "en-zh")


class DataError(ValueError):
    """User data that cannot be used: names the file and, where there is one, the line."""


class DataWarning(UserWarning):
    """Lines of user data were skipped (the message is :meth:`ReadReport.summary`)."""


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a pair came from: a file (or a named built-in corpus) and a 1-based line number."""

    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True, slots=True)
class Pair:
    """One translation example, already oriented: ``src`` is what the model reads, ``tgt`` what it writes.

    ``origin`` is provenance for messages only; two pairs with the same text compare equal.
    """

    src: str
    tgt: str
    origin: Origin | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class Issue:
    """A skipped line and why."""

    file: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.reason}"


@dataclass
class ReadReport:
    """What a reader produced: the usable ``pairs``, how many lines it ``skipped`` and why.

    ``skipped`` counts lines, which can exceed ``len(issues)`` when one issue stands for many lines
    (e.g. the surplus lines of the longer file of a Moses pair).
    """

    source: str
    pairs: list[Pair]
    lines: int = 0
    skipped: int = 0
    issues: list[Issue] = field(default_factory=list)

    def summary(self, limit: int = 3) -> str:
        """One line for a command to print, e.g. ``skipped 2 of 100 lines: a.tsv:3: empty side; ...``."""
        return format_skipped(self.skipped, self.issues, total=self.lines, limit=limit)

    def __len__(self) -> int:
        return len(self.pairs)


def format_skipped(
    skipped: int, issues: Iterable[Issue], *, total: int | None = None, limit: int = 3, unit: str = "lines"
) -> str:
    """Format a skip summary naming the first ``limit`` reasons as ``file:line: reason``.

    Returns ``"skipped 0 lines"`` when nothing was skipped, so callers can print it unconditionally.
    ``unit`` is the plural noun counted (``"lines"``, ``"pairs"``).
    """
    issues = list(issues)
    of = f" of {total}" if total is not None else ""
    head = f"skipped {skipped}{of} {unit}"
    if not issues:
        return head
    shown = "; ".join(str(issue) for issue in issues[:limit])
    more = len(issues) - limit
    tail = f"; and {more} more" if more > 0 else ""
    return f"{head}: {shown}{tail}"


def check_direction(direction: str) -> str:
    """Validate a translation direction (``"zh-en"`` or ``"en-zh"``) and return it."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {', '.join(DIRECTIONS)}, got {direction!r}")
    return direction
