"""Learning-rate schedules as pure functions of the step (so resuming needs only the step number)."""

from __future__ import annotations

import math

__all__ = ["learning_rate", "SCHEDULES"]

SCHEDULES = ("inverse_sqrt", "noam", "constant")


def learning_rate(step: int, *, schedule: str, lr: float, warmup: int, d_model: int = 512) -> float:
    """The learning rate for optimizer step ``step`` (1-based).

    - ``inverse_sqrt``: linear warm-up to ``lr`` over ``warmup`` steps, then ``lr · sqrt(warmup / step)``
      (Vaswani et al. 2017's shape with a peak you choose; fairseq's ``inverse_sqrt``).
    - ``noam``: ``lr · d_model^-0.5 · min(step^-0.5, step · warmup^-1.5)`` (Vaswani et al. 2017, eq. 3;
      ``lr`` is a factor, 1.0 in the paper).
    - ``constant``: linear warm-up, then ``lr``.
    """
    step = max(1, step)
    warmup = max(1, warmup)
    if schedule == "inverse_sqrt":
        return lr * step / warmup if step < warmup else lr * math.sqrt(warmup / step)
    if schedule == "noam":
        return lr * d_model**-0.5 * min(step**-0.5, step * warmup**-1.5)
    if schedule == "constant":
        return lr * min(1.0, step / warmup)
    raise ValueError(f"schedule must be one of {list(SCHEDULES)}, got {schedule!r}")
