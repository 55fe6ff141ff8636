"""A one-line progress report on stderr: step, loss, tokens/s, learning rate and ETA.

On a terminal the line is redrawn in place; otherwise (a log file, CI) each report is its own line.
The ETA comes from the step budget or the time budget, whichever ends training first.
"""

from __future__ import annotations

import sys

__all__ = ["Progress"]


def _clock(seconds: float) -> str:
    seconds = max(0, int(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class Progress:
    def __init__(self, *, total_steps: int | None, max_minutes: float | None, start_step: int = 0,
                 start_elapsed: float = 0.0, enabled: bool = True, stream=None):
        self.total, self.max_minutes = total_steps, max_minutes
        self.enabled, self.stream = enabled, stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.start_step, self.start_elapsed = start_step, start_elapsed
        self._drawn = False
        self._width = 0  # the longest line drawn in place, which the next one must cover

    def eta(self, step: int, elapsed: float) -> float | None:
        candidates = []
        done = step - self.start_step
        if self.total and done > 0:
            candidates.append((self.total - step) * (elapsed - self.start_elapsed) / done)
        if self.max_minutes:
            candidates.append(60 * self.max_minutes - elapsed)
        return min(candidates) if candidates else None

    def update(self, step: int, event: dict, elapsed: float) -> None:
        if not self.enabled:
            return
        eta = self.eta(step, elapsed)
        of = f"/{self.total}" if self.total else ""
        fractions = []
        if self.total:
            fractions.append(step / self.total)
        if self.max_minutes:
            fractions.append(elapsed / (60 * self.max_minutes))
        bar = ""
        if fractions:  # whichever budget runs out first
            filled = int(20 * min(1.0, max(fractions)))
            bar = "[" + "#" * filled + "." * (20 - filled) + "] "
        mfu = f" (MFU {event['mfu']:.0%})" if event.get("mfu") is not None else ""
        line = (f"{bar}step {step}{of} | loss {event['loss']:.3f} | {event['tokens_per_s']:,} tok/s{mfu} | "
                f"lr {event['lr']:.2e} | {_clock(elapsed)} elapsed" + (f" | ETA {_clock(eta)}" if eta is not None else ""))
        if self.tty:
            self._width = max(self._width, len(line))
            self.stream.write("\r" + line.ljust(self._width))
            self._drawn = True
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def message(self, text: str) -> None:
        if not self.enabled:
            return
        if self._drawn:
            self.stream.write("\n")
            self._drawn = False
        self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self._drawn:
            self.stream.write("\n")
            self.stream.flush()
        self._drawn = False
