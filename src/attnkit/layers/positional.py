"""Positional encodings: attention itself is blind to order, so position is added to the inputs.

Axes: ``b`` batch, ``n`` positions, ``d`` model width. Both encodings take ``x (b, n, d)`` and an
``offset`` — the position of ``x[:, 0]``, e.g. the length of a decoder's cache when one new step is fed
in — and return ``x + P[offset : offset + n]``.
"""

from __future__ import annotations


import torch
from torch import Tensor, nn

from .checks import check_count
from .dropout import Dropout

__all__ = ["SinusoidalPositionalEncoding", "LearnedPositionalEncoding", "sinusoidal_table"]


def sinusoidal_table(positions: Tensor, d_model: int, base: float = 10000.0) -> Tensor:
    """``P[pos, 2k] = sin(pos / base^(2k/d))``, ``P[pos, 2k+1] = cos(pos / base^(2k/d))``
    (Vaswani et al. 2017, section 3.5). ``positions (n,)`` → ``(n, d_model)``; an odd ``d_model`` drops
    the last cosine column."""
    half = torch.arange(0, d_model, 2, dtype=torch.float64, device=positions.device)  # (ceil(d/2),) = 2k
    angles = positions.to(torch.float64)[:, None] / base ** (half / d_model)  # (n, ceil(d/2))
    table = torch.empty(positions.shape[0], d_model, dtype=torch.float64, device=positions.device)
    table[:, 0::2] = torch.sin(angles)
    table[:, 1::2] = torch.cos(angles[:, : d_model // 2])
    return table


def _check_x(x: Tensor, d_model: int, offset: int) -> None:
    if not isinstance(x, Tensor) or x.dim() != 3:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"positional encoding expects x of shape (b, n, d_model={d_model}), got {shape}")
    if x.shape[-1] != d_model:
        raise ValueError(f"x has {x.shape[-1]} features but the encoding was built with d_model={d_model}")
    if not x.is_floating_point():
        raise TypeError(f"positional encoding expects floating-point features x, got dtype {x.dtype} "
                        "(token ids go through an embedding first)")
    check_count("offset", offset)


class SinusoidalPositionalEncoding(nn.Module):
    """Fixed sinusoids added to the input, then dropout (Vaswani et al. 2017, section 3.5 and 5.4).

    No parameters and no length limit: the table is computed for the positions asked for (in float64,
    then cast to ``x``'s dtype, so far positions stay accurate).
    """

    def __init__(self, d_model: int, *, dropout: float = 0.0, base: float = 10000.0) -> None:
        super().__init__()
        if d_model <= 0:
            raise ValueError(f"d_model must be positive, got {d_model}")
        self.d_model, self.base = d_model, float(base)
        self.dropout = Dropout(dropout)
        self._tables: dict[tuple[torch.device, torch.dtype], Tensor] = {}  # rows computed so far, not state

    CACHED_POSITIONS = 4096

    def encoding(self, n: int, offset: int = 0, *, device=None, dtype=torch.float32) -> Tensor:
        """The table rows for positions ``offset … offset + n - 1``: ``(n, d_model)``.

        Rows up to :attr:`CACHED_POSITIONS` come from a table kept per device and dtype (a decoding step
        asks for one row at a time); each row is what :func:`sinusoidal_table` gives for its position."""
        stop = offset + n
        if stop > self.CACHED_POSITIONS:
            positions = torch.arange(offset, stop, device=device)
            return sinusoidal_table(positions, self.d_model, self.base).to(dtype)
        key = (torch.device("cpu") if device is None else torch.device(device), dtype)
        table = self._tables.get(key)
        if table is None or table.shape[0] < stop:
            size = min(max(stop, 64, 2 * (0 if table is None else table.shape[0])), self.CACHED_POSITIONS)
            table = sinusoidal_table(torch.arange(size, device=device), self.d_model, self.base).to(dtype)
            self._tables[key] = table
        return table[offset:stop]

    def forward(self, x: Tensor, offset: int = 0) -> Tensor:
        _check_x(x, self.d_model, offset)
        return self.dropout(x + self.encoding(x.shape[1], offset, device=x.device, dtype=x.dtype))  # (b, n, d)

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, base={self.base:g}"


class LearnedPositionalEncoding(nn.Module):
    """One learned vector per position, up to ``max_len`` positions (as in BERT, Devlin et al. 2019),
    added to the input, then dropout."""

    def __init__(self, max_len: int, d_model: int, *, dropout: float = 0.0) -> None:
        super().__init__()
        if max_len <= 0 or d_model <= 0:
            raise ValueError(f"max_len and d_model must be positive, got {max_len} and {d_model}")
        self.max_len, self.d_model = max_len, d_model
        self.embedding = nn.Embedding(max_len, d_model)
        self.dropout = Dropout(dropout)

    def encoding(self, n: int, offset: int = 0, *, device=None) -> Tensor:
        if offset + n > self.max_len:
            raise ValueError(
                f"positions {offset}…{offset + n - 1} exceed the {self.max_len} learned positions "
                f"(max_len={self.max_len}); shorten the input"
            )
        return self.embedding(torch.arange(offset, offset + n, device=device))  # (n, d)

    def forward(self, x: Tensor, offset: int = 0) -> Tensor:
        _check_x(x, self.d_model, offset)
        return self.dropout(x + self.encoding(x.shape[1], offset, device=x.device))  # (b, n, d)

    def extra_repr(self) -> str:
        return f"max_len={self.max_len}, d_model={self.d_model}"
