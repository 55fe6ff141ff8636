"""A lesson is a list of steps; each step is a sentence (zh and en) and, optionally, a tensor."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

LANGS = ("zh", "en")


@dataclass(frozen=True)
class Step:
    zh: str
    en: str
    value: Tensor | None = None
    rows: tuple[str, ...] = ()  # labels of the rows of ``value``
    cols: tuple[str, ...] = ()  # labels of the columns of ``value``
    name: str = ""  # a short handle, so tests can find a step without counting

    def text(self, lang: str) -> str:
        return self.zh if lang == "zh" else self.en


@dataclass
class Lesson:
    title_zh: str
    title_en: str
    steps: list[Step] = field(default_factory=list)

    def add(self, zh: str, en: str, value: Tensor | None = None, rows=(), cols=(), name: str = "") -> Tensor | None:
        self.steps.append(Step(zh, en, None if value is None else value.detach(), tuple(rows), tuple(cols), name))
        return value

    def index(self, name: str) -> int:
        """The position (from 0) of the step called ``name``."""
        for n, step in enumerate(self.steps):
            if step.name == name:
                return n
        raise KeyError(f"no step named {name!r} in {self.title_en!r}")


def format_tensor(value: Tensor, rows=(), cols=(), digits: int = 4) -> str:
    """A tensor as an aligned table with optional row and column labels (0-D and 1-D included)."""
    v = value.detach().to(torch.float64)
    if v.dim() == 0:
        return f"{v.item():.{digits}f}"
    if v.dim() == 1:
        v = v[None, :]
    cells = [[f"{x:.{digits}f}" for x in row] for row in v.tolist()]
    # Each column as wide as its widest number or its label.
    widths = [max(len(c) for c in column) for column in zip(*cells)]
    if cols:
        widths = [max(w, _display_width(c)) for w, c in zip(widths, cols)]
    label_w = max((_display_width(r) for r in rows), default=0)
    lines = []
    if cols:
        head = " " * (label_w + 2 if rows else 0) + " ".join(_pad(c, w) for c, w in zip(cols, widths))
        lines.append(head.rstrip())
    for n, row in enumerate(cells):
        label = _pad(rows[n], label_w) + "  " if rows else ""
        lines.append(label + " ".join(c.rjust(w) for c, w in zip(row, widths)))
    return "\n".join(lines)


def _display_width(s: str) -> int:
    # CJK characters take two columns in a terminal.
    return sum(2 if ord(ch) > 0x2E7F else 1 for ch in s)


def _pad(s: str, width: int) -> str:
    return " " * (width - _display_width(s)) + s


def render(lesson: Lesson, lang: str = "zh", digits: int = 4) -> str:
    """The lesson as text in ``lang`` ("zh" or "en")."""
    if lang not in LANGS:
        raise ValueError(f"lang must be one of {LANGS}, got {lang!r}")
    title = lesson.title_zh if lang == "zh" else lesson.title_en
    out = [title, "=" * _display_width(title), ""]
    for n, step in enumerate(lesson.steps, 1):
        out.append(f"{n}. {step.text(lang)}")
        if step.value is not None:
            table = format_tensor(step.value, step.rows, step.cols, digits)
            out.extend("   " + line for line in table.splitlines())
        out.append("")
    return "\n".join(out).rstrip() + "\n"
