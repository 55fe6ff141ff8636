"""Key/value caches for incremental decoding with :class:`~attnkit.layers.MultiHeadAttention`.

- :class:`KVCache` grows by one (or a few) steps at a time: self-attention in a decoder. At step ``t``
  the layer projects only the new position's key and value, appends them, and attends over all of them.
- :class:`StaticKVCache` holds the keys and values of a fixed memory (the encoder output), projected
  once per source and reused at every step of cross-attention.

Both store per-head tensors ``(b, h, t, d)``: ``b`` batch, ``h`` heads, ``t`` cached positions,
``d`` head dim. A new entry whose batch size, head count, head dim, dtype or device differs from what
is cached raises ``ValueError`` saying which.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["KVCache", "StaticKVCache"]


def _check_pair(k: Tensor, v: Tensor, what: str) -> None:
    for name, t in (("keys", k), ("values", v)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{what} {name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 4:
            raise ValueError(f"{what} {name} must have shape (b, h, t, d), got {tuple(t.shape)}")
    if k.shape[:3] != v.shape[:3]:
        raise ValueError(
            f"{what} keys and values must agree on (b, h, t), got keys {tuple(k.shape)} and values {tuple(v.shape)}"
        )


def _describe(t: Tensor) -> str:
    b, h, n, d = t.shape
    return f"(b={b}, h={h}, t={n}, d={d})"


@dataclass
class KVCache:
    """The keys and values seen so far by one self-attention layer, ``(b, h, t, d)`` each.

    Create it empty (``KVCache()``) and hand it to the layer at every step; the first ``append`` fixes
    its batch size, head count and head dims.
    """

    keys: Tensor | None = None
    values: Tensor | None = None

    def __post_init__(self) -> None:
        if (self.keys is None) != (self.values is None):
            raise ValueError("KVCache needs both keys and values, or neither")
        if self.keys is not None:
            _check_pair(self.keys, self.values, "cached")

    def __len__(self) -> int:
        """Number of cached positions ``t``."""
        return 0 if self.keys is None else self.keys.shape[2]

    @property
    def batch_size(self) -> int | None:
        return None if self.keys is None else self.keys.shape[0]

    def check(self, keys: Tensor, values: Tensor) -> None:
        """Raise ``ValueError`` unless ``keys``/``values`` ``(b, h, n, d)`` can be appended."""
        _check_pair(keys, values, "new")
        if self.keys is None:
            return
        for name, old, new in (("keys", self.keys, keys), ("values", self.values, values)):
            if old.shape[:2] != new.shape[:2] or old.shape[3] != new.shape[3]:
                raise ValueError(
                    f"cache mismatch: the cache holds {name} {_describe(old)} but the new {name} are "
                    f"{_describe(new)}; batch size, head count and head dim must match "
                    "(was this cache made for another layer or batch?)"
                )
            if old.dtype != new.dtype or old.device != new.device:
                raise ValueError(
                    f"cache mismatch: cached {name} are {old.dtype} on {old.device}, new ones {new.dtype} on {new.device}"
                )

    def append(self, keys: Tensor, values: Tensor) -> tuple[Tensor, Tensor]:
        """Append ``n`` new positions ``(b, h, n, d)`` and return all keys and values ``(b, h, t + n, d)``."""
        self.check(keys, values)
        if self.keys is None:
            self.keys, self.values = keys, values
        else:
            self.keys = torch.cat([self.keys, keys], dim=2)  # (b, h, t + n, d)
            self.values = torch.cat([self.values, values], dim=2)  # (b, h, t + n, dv)
        return self.keys, self.values

    def reorder(self, index: Tensor) -> None:
        """Keep batch rows ``index`` (e.g. the surviving hypotheses of a beam search), in that order."""
        if self.keys is not None:
            self.keys = self.keys.index_select(0, index)  # (len(index), h, t, d)
            self.values = self.values.index_select(0, index)


@dataclass(frozen=True)
class StaticKVCache:
    """Keys and values of a fixed memory ``(n, h, j, d)``, projected once (see
    :meth:`MultiHeadAttention.static_cache`) and reused by cross-attention at every decoding step.

    ``group``: how many consecutive query rows share one memory row. Beam search decodes ``k`` rows per
    sentence over the same source: with ``group = k`` the memory is stored once per sentence (``n = b / k``)
    and the ``k`` rows' queries attend to it together, instead of ``k`` copies being gathered at every
    step. :meth:`reorder` finds the grouping by itself."""

    keys: Tensor
    values: Tensor
    group: int = 1

    def __post_init__(self) -> None:
        _check_pair(self.keys, self.values, "static")
        if isinstance(self.group, bool) or not isinstance(self.group, int) or self.group < 1:
            raise ValueError(f"group must be a positive integer, got {self.group!r}")

    def __len__(self) -> int:
        return self.keys.shape[2]

    @property
    def batch_size(self) -> int:
        """Query rows served: memory rows × ``group``."""
        return self.keys.shape[0] * self.group

    def reorder(self, index: Tensor) -> StaticKVCache:
        """A cache for the query rows ``index`` (frozen: returns a new one). When ``index`` is made of
        equal-length runs of rows that share a memory row — as beam search's sentence-major rows are —
        the memory is kept once per run (``group`` = run length); otherwise one memory row per query row."""
        memory = index // self.group  # (len(index),) the memory row each new query row reads
        m = memory.numel()
        if m:
            starts = torch.ones(m, dtype=torch.bool, device=memory.device)
            starts[1:] = memory[1:] != memory[:-1]
            runs = int(starts.sum())
            if m % runs == 0 and m // runs > 1:
                g = m // runs
                grouped = memory.view(runs, g)
                if bool((grouped == grouped[:, :1]).all()):
                    rows = grouped[:, 0]
                    if runs == self.keys.shape[0] and bool((rows == torch.arange(runs, device=rows.device)).all()):
                        return StaticKVCache(self.keys, self.values, g)  # same memory rows: no copy
                    return StaticKVCache(self.keys.index_select(0, rows), self.values.index_select(0, rows), g)
        return StaticKVCache(self.keys.index_select(0, memory), self.values.index_select(0, memory))

    def ungrouped(self) -> StaticKVCache:
        """The same cache with one memory row per query row (``group = 1``)."""
        if self.group == 1:
            return self
        return StaticKVCache(self.keys.repeat_interleave(self.group, 0), self.values.repeat_interleave(self.group, 0))
