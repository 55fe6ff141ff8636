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

from dataclasses import dataclass, field

import torch
from torch import Tensor

from .checks import check_count

__all__ = ["KVCache", "StaticKVCache"]

# Positions a new cache has room for before its first doubling.
_MIN_CAPACITY = 16


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


def _tracked(*tensors: Tensor | None) -> bool:
    """Whether autograd records operations on any of ``tensors``."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def _describe(t: Tensor) -> str:
    b, h, n, d = t.shape
    return f"(b={b}, h={h}, t={n}, d={d})"


@dataclass
class KVCache:
    """The keys and values seen so far by one self-attention layer, ``(b, h, t, d)`` each.

    Create it empty (``KVCache()``) and hand it to the layer at every step; the first ``append`` fixes
    its batch size, head count and head dims.

    ``keys``/``values`` are views of the first ``t`` positions of buffers with room for more: an append
    writes only the new positions (the buffers double when full), instead of copying everything cached
    into a new tensor at every step.
    """

    keys: Tensor | None = None
    values: Tensor | None = None
    _buffers: tuple[Tensor, Tensor] | None = field(default=None, init=False, repr=False, compare=False)
    _room: int = field(default=0, init=False, repr=False, compare=False)  # positions to allocate at least

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

    @property
    def capacity(self) -> int:
        """Positions the buffers hold before the next one makes them grow."""
        return len(self) if not self._owns_views() else self._buffers[0].shape[2]

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

    def _owns_views(self) -> bool:
        """Whether ``keys``/``values`` are still the views of this cache's buffers (a caller may have
        assigned other tensors)."""
        if self._buffers is None or self.keys is None:
            return False
        kb, vb = self._buffers
        return (self.keys.data_ptr() == kb.data_ptr() and self.values.data_ptr() == vb.data_ptr()
                and self.keys.stride() == kb.stride() and self.values.stride() == vb.stride()
                and self.keys.shape[2] <= kb.shape[2])

    def reserve(self, positions: int) -> None:
        """Make room for ``positions`` cached positions in all, so that appending up to that many never
        grows the buffers (a decoder that knows its longest output calls this before the first step)."""
        check_count("positions", positions)
        self._room = max(self._room, positions)
        if self.keys is not None and not _tracked(self.keys, self.values) and self.capacity < positions:
            self._grow(positions, self.keys, self.values, exact=True)
            t = len(self)
            self.keys, self.values = self._buffers[0][:, :, :t], self._buffers[1][:, :, :t]

    def _grow(self, need: int, like_k: Tensor, like_v: Tensor, exact: bool = False) -> None:
        """Buffers with room for ``need`` positions (``exact``: just that many) holding the cached ones."""
        t = len(self)
        cap = need if exact else max(need, 2 * t, _MIN_CAPACITY, self._room)
        b, h, _, d = like_k.shape
        kb = like_k.new_empty((b, h, cap, d))
        vb = like_v.new_empty((b, h, cap, like_v.shape[3]))
        if t:
            kb[:, :, :t] = self.keys
            vb[:, :, :t] = self.values
        self._buffers = (kb, vb)

    def append(self, keys: Tensor, values: Tensor) -> tuple[Tensor, Tensor]:
        """Append ``n`` new positions ``(b, h, n, d)`` and return all keys and values ``(b, h, t + n, d)``."""
        self.check(keys, values)
        if _tracked(keys, values, self.keys, self.values):  # autograd: no in-place writes into saved tensors
            self._buffers = None
            if self.keys is None:
                self.keys, self.values = keys, values
            else:
                self.keys = torch.cat([self.keys, keys], dim=2)  # (b, h, t + n, d)
                self.values = torch.cat([self.values, values], dim=2)
            return self.keys, self.values
        n = keys.shape[2]
        t = self._make_room(n, keys, values)
        kb, vb = self._buffers
        kb[:, :, t : t + n] = keys
        vb[:, :, t : t + n] = values
        return self.advance(n)  # (b, h, t + n, d)

    def _make_room(self, n: int, like_k: Tensor, like_v: Tensor) -> int:
        """Grow the buffers (if they cannot take ``n`` more positions) keeping ``keys``/``values`` their views;
        return the position ``t`` the next one goes to."""
        t = len(self)
        if not self._owns_views() or self._buffers[0].shape[2] < t + n:
            self._grow(t + n, like_k, like_v)
            if t:
                self.keys, self.values = self._buffers[0][:, :, :t], self._buffers[1][:, :, :t]
        return t

    def room_for(self, n: int, like: Tensor) -> tuple[Tensor, Tensor, int]:
        """The buffers ``(b, h, capacity, d)``, contiguous, with room for ``n`` more positions, and the
        position ``t`` the next one goes to: for a kernel that writes the new keys and values into them
        itself, after which :meth:`advance` counts them. ``like (b, h, ·, d)`` gives the shape, dtype and
        device of a first entry. Not under autograd (the buffers are written in place)."""
        if _tracked(like, self.keys, self.values):
            raise RuntimeError("KVCache.room_for writes in place: not for tensors autograd records")
        self.check(like, like)
        t = self._make_room(n, like, like)
        return self._buffers[0], self._buffers[1], t

    def advance(self, n: int) -> tuple[Tensor, Tensor]:
        """Count ``n`` positions written into the buffers after :meth:`room_for`; return all keys and
        values ``(b, h, t + n, d)``."""
        t = len(self)
        if not self._owns_views() and not (self.keys is None and self._buffers is not None):
            raise RuntimeError("KVCache.advance: call room_for first")
        kb, vb = self._buffers
        if t + n > kb.shape[2]:
            raise ValueError(f"KVCache.advance: {t} + {n} positions do not fit the buffers' {kb.shape[2]}")
        self.keys, self.values = kb[:, :, : t + n], vb[:, :, : t + n]
        return self.keys, self.values

    def select(self, index: Tensor) -> KVCache:
        """A new cache of batch rows ``index`` (e.g. the surviving hypotheses of a beam search), in that
        order, with the same room to grow; this one is unchanged."""
        out = KVCache()
        out._room = self._room
        if self.keys is None:
            return out
        if _tracked(self.keys, self.values):
            out.keys, out.values = self.keys.index_select(0, index), self.values.index_select(0, index)
            return out
        t, m = len(self), index.numel()
        cap = self.capacity
        kb = self.keys.new_empty((m, self.keys.shape[1], cap, self.keys.shape[3]))
        vb = self.values.new_empty((m, self.values.shape[1], cap, self.values.shape[3]))
        torch.index_select(self.keys, 0, index, out=kb[:, :, :t])  # only the filled positions move
        torch.index_select(self.values, 0, index, out=vb[:, :, :t])
        out._buffers = (kb, vb)
        out.keys, out.values = kb[:, :, :t], vb[:, :, :t]
        return out

    def reorder(self, index: Tensor) -> None:
        """Keep batch rows ``index`` (e.g. the surviving hypotheses of a beam search), in that order.

        When the batch keeps its size and most rows stay where they are — in beam search most
        hypotheses extend the prefix already in their own row — only the rows that change are copied,
        in place."""
        if self.keys is None:
            return
        n = self.keys.shape[0]
        if index.numel() == n and self._owns_views() and not _tracked(self.keys, self.values):
            moved = (index != torch.arange(n, device=index.device)).nonzero().flatten()  # rows that change
            if moved.numel() == 0:
                return
            if 2 * moved.numel() < n:  # reading and writing the moved rows beats copying every row once
                t, source = len(self), index[moved]
                for buffer, view in zip(self._buffers, (self.keys, self.values)):
                    rows = view.index_select(0, source)  # (m, h, t, d), read before anything is written
                    buffer[:, :, :t].index_copy_(0, moved, rows)
                return
        picked = self.select(index)
        self.keys, self.values, self._buffers = picked.keys, picked.values, picked._buffers


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
        check_count("group", self.group, least=1)

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
