"""Worked examples of attention, computed by the library's own functions and printed step by step.

Each topic is a function ``topic(lang) -> Lesson``; a :class:`Lesson` holds the steps in order, each
with its text in Chinese and English and the tensor the library computed for it, so that tests can
check every printed number against the library.
"""

from .lesson import Lesson, Step, render
from .topics import TOPICS

__all__ = ["Lesson", "Step", "render", "TOPICS"]
