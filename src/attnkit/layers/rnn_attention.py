"""Attention modules for RNN decoders: Bahdanau (additive) and Luong (dot, general, concat).

Each module owns its parameters and calls :func:`attnkit.attention.attend`; the scores themselves live
once, in :mod:`attnkit.attention.scores`.

    attn = AdditiveAttention(query_dim=512, key_dim=1024)
    memory = attn.prepare(encoder_states)          # once per source: projects the keys
    out = attn(decoder_state, memory, mask=src_mask, need_weights=True)
    out.context   # (b, i, d_v)
    out.weights   # (b, i, j)

Axes: ``b`` batch, ``i`` decoder (query) positions — often 1 in step-by-step decoding — ``j`` encoder
(key) positions, ``a`` the additive score's hidden size.

Masks follow the package convention: boolean, True = may attend; ``(b, 1, j)`` for source padding,
or ``(b, i, j)`` / ``(i, j)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Literal

import torch
from torch import Tensor, nn

from attnkit.attention import AttentionOutput, attend
from attnkit.attention.call import check_dropout

from .checks import check_count, check_features

__all__ = ["AdditiveAttention", "LuongAttention", "PreparedMemory", "LUONG_KINDS"]

LUONG_KINDS = ("dot", "general", "concat")


@dataclass(frozen=True)
class PreparedMemory:
    """Encoder memory with its keys already projected by one attention module (see ``prepare``).

    ``keys (b, j, ·)`` are in the form that module's score consumes; ``values (b, j, d_v)`` are what the
    weights average. ``prepared_by`` names the module and score, so that memory prepared for one module
    is not silently used by another kind.
    """

    keys: Tensor
    values: Tensor
    prepared_by: str


class _RNNAttention(nn.Module):
    """Shared plumbing: memory preparation, input checks and the call to ``attend``.

    Subclasses set ``self.query_dim``, ``self.key_dim``, ``self._score`` (a score name) and implement
    ``_project_keys(memory) -> keys`` and ``_score_params(prepared) -> dict``.
    """

    query_dim: int
    key_dim: int
    _score: str

    def __init__(self, normalize: str | Callable[..., Tensor], dropout: float) -> None:
        super().__init__()
        self.normalize = normalize
        self.dropout = check_dropout("dropout", dropout)

    # -- to be provided by subclasses
    def _project_keys(self, memory: Tensor) -> Tensor:
        raise NotImplementedError

    def _score_params(self, prepared: bool) -> dict[str, Tensor]:
        raise NotImplementedError

    def _name(self) -> str:
        return type(self).__name__

    # -- public API
    def prepare(self, memory: Tensor, value: Tensor | None = None) -> PreparedMemory:
        """Project the encoder memory ``(b, j, key_dim)`` once per source, for step-by-step decoding.

        Pass the result to ``forward`` instead of the raw memory: the projection of every key is then
        not recomputed at each decoder step. ``value`` (default: the memory itself) is what the weights
        average.
        """
        check_features("memory", memory, self.key_dim, "key_dim")
        values = memory if value is None else value
        self._check_value(memory, values)
        return PreparedMemory(self._project_keys(memory), values, self._name())

    def forward(
        self,
        query: Tensor,
        memory: Tensor | PreparedMemory,
        *,
        mask: Tensor | None = None,
        value: Tensor | None = None,
        need_weights: bool = False,
        normalize: str | Callable[..., Tensor] | None = None,
        normalize_params: dict[str, Any] | None = None,
    ) -> AttentionOutput:
        """Attend from decoder states ``query (b, i, query_dim)`` over ``memory (b, j, key_dim)``.

        ``memory`` is either the raw encoder states or what :meth:`prepare` returned for them.
        ``value`` (only with raw memory; default: the memory) is averaged by the weights.
        ``normalize`` overrides the module's normaliser for this call (any of the core's:
        ``"softmax"``, ``"sparsemax"``, ``"hard"``, ``"gumbel"``, ``"relu"`` or a callable), with
        ``normalize_params`` for its options. Returns ``AttentionOutput(context (b, i, d_v),
        weights (b, i, j) or None)``.
        """
        check_features("query", query, self.query_dim, "query_dim")
        if isinstance(memory, PreparedMemory):
            if value is not None:
                raise ValueError("pass value to prepare(), not together with an already prepared memory")
            if memory.prepared_by != self._name():
                raise ValueError(
                    f"this memory was prepared by {memory.prepared_by}, not by {self._name()}; "
                    "call prepare() on the module that attends over it"
                )
            keys, values, prepared = memory.keys, memory.values, True
        else:
            check_features("memory", memory, self.key_dim, "key_dim")
            values = memory if value is None else value
            self._check_value(memory, values)
            keys, values, prepared = memory, values, False
        if keys.shape[0] != query.shape[0]:
            raise ValueError(
                f"query and memory must have the same batch size, got query {tuple(query.shape)} "
                f"and memory keys {tuple(keys.shape)}"
            )
        return attend(
            query,
            keys,
            values,
            score=self._score_for(prepared),
            score_params=self._score_params(prepared),
            normalize=self.normalize if normalize is None else normalize,
            normalize_params=normalize_params,
            mask=mask,
            dropout=self.dropout if self.training else 0.0,
            need_weights=need_weights,
        )

    def _score_for(self, prepared: bool) -> str:
        return self._score

    @staticmethod
    def _check_value(memory: Tensor, values: Tensor) -> None:
        if values.dim() != 3 or values.shape[:2] != memory.shape[:2]:
            raise ValueError(
                f"value must have shape (b, j, d_v) with the memory's (b, j) = {tuple(memory.shape[:2])}, "
                f"got {tuple(values.shape)}"
            )


class AdditiveAttention(_RNNAttention):
    """Bahdanau et al. 2015 (eq. 6, appendix A.1.2): ``e_ij = vᵀ tanh(W_q s_i + W_k h_j)``.

    - ``query_dim``: decoder state size (``s``); ``key_dim``: encoder annotation size (``h``, e.g.
      2 × hidden for a bidirectional encoder); ``hidden_dim``: ``a``, the size of the tanh layer
      (default ``query_dim``).
    - ``normalize``: default normaliser (``"softmax"`` in the paper); ``dropout`` on the weights.

    Parameters: ``w_q (a, query_dim)``, ``w_k (a, key_dim)``, ``v (a,)``, no biases, as in the paper.
    """

    def __init__(
        self,
        query_dim: int,
        key_dim: int,
        hidden_dim: int | None = None,
        *,
        normalize: str | Callable[..., Tensor] = "softmax",
        dropout: float = 0.0,
    ) -> None:
        super().__init__(normalize, dropout)
        hidden_dim = query_dim if hidden_dim is None else hidden_dim
        for name, n in (("query_dim", query_dim), ("key_dim", key_dim), ("hidden_dim", hidden_dim)):
            check_count(name, n, least=1)
        self.query_dim, self.key_dim, self.hidden_dim = query_dim, key_dim, hidden_dim
        self._score = "additive"
        self.w_q = nn.Parameter(torch.empty(hidden_dim, query_dim))
        self.w_k = nn.Parameter(torch.empty(hidden_dim, key_dim))
        self.v = nn.Parameter(torch.empty(hidden_dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # nn.Linear's default: uniform(±1/sqrt(fan_in)).
        for p, fan_in in ((self.w_q, self.query_dim), (self.w_k, self.key_dim), (self.v, self.hidden_dim)):
            bound = 1.0 / math.sqrt(fan_in)
            nn.init.uniform_(p, -bound, bound)

    def _project_keys(self, memory: Tensor) -> Tensor:
        return memory @ self.w_k.T  # (b, j, a)

    def _score_params(self, prepared: bool) -> dict[str, Tensor]:
        # Prepared keys already hold W_k h_j: the score skips its own key projection.
        return {"w_q": self.w_q, "w_k": None if prepared else self.w_k, "v": self.v}

    def extra_repr(self) -> str:
        return f"query_dim={self.query_dim}, key_dim={self.key_dim}, hidden_dim={self.hidden_dim}"


class LuongAttention(_RNNAttention):
    """Luong et al. 2015 (eq. 8), global attention with one of three scores:

    - ``"dot"``: ``h_tᵀ h̄_s`` (needs ``query_dim == key_dim``; no parameters);
    - ``"general"``: ``h_tᵀ W_a h̄_s`` with ``W_a (query_dim, key_dim)``;
    - ``"concat"``: ``v_aᵀ tanh(W_a [h_t; h̄_s])`` with ``W_a (a, query_dim + key_dim)`` — the same form
      as Bahdanau's additive score, computed by it with ``W_a`` split into its query and key columns.

    The context is returned; combining it with the decoder state (``tanh(W_c [c_t; h_t])``, eq. 5)
    belongs to the decoder.
    """

    def __init__(
        self,
        query_dim: int,
        key_dim: int | None = None,
        *,
        kind: Literal["dot", "general", "concat"] = "general",
        hidden_dim: int | None = None,
        normalize: str | Callable[..., Tensor] = "softmax",
        dropout: float = 0.0,
    ) -> None:
        super().__init__(normalize, dropout)
        key_dim = query_dim if key_dim is None else key_dim
        for name, n in (("query_dim", query_dim), ("key_dim", key_dim)):
            check_count(name, n, least=1)
        if kind not in LUONG_KINDS:
            raise ValueError(f"unknown Luong score kind {kind!r}; choose one of {list(LUONG_KINDS)}")
        if kind == "dot" and query_dim != key_dim:
            raise ValueError(
                f"the 'dot' score needs query_dim == key_dim, got {query_dim} and {key_dim}; use kind='general'"
            )
        if hidden_dim is not None and kind != "concat":
            raise ValueError(f"hidden_dim is the size of the 'concat' score's tanh layer; kind={kind!r} has none")
        self.query_dim, self.key_dim, self.kind = query_dim, key_dim, kind
        if kind == "dot":
            self._score = "dot"
        elif kind == "general":
            self._score = "general"
            self.weight = nn.Parameter(torch.empty(query_dim, key_dim))  # W_a
        else:
            self._score = "additive"
            self.hidden_dim = query_dim if hidden_dim is None else check_count("hidden_dim", hidden_dim, least=1)
            self.weight = nn.Parameter(torch.empty(self.hidden_dim, query_dim + key_dim))  # W_a on [h_t; h̄_s]
            self.v = nn.Parameter(torch.empty(self.hidden_dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.kind == "dot":
            return
        bound = 1.0 / math.sqrt(self.weight.shape[1] if self.kind == "concat" else self.key_dim)
        nn.init.uniform_(self.weight, -bound, bound)
        if self.kind == "concat":
            bound = 1.0 / math.sqrt(self.hidden_dim)
            nn.init.uniform_(self.v, -bound, bound)

    def _name(self) -> str:
        return f"LuongAttention(kind={self.kind!r})"

    def _project_keys(self, memory: Tensor) -> Tensor:
        if self.kind == "dot":
            return memory  # (b, j, d)
        if self.kind == "general":
            return memory @ self.weight.T  # (b, j, query_dim): q W kᵀ = q (k Wᵀ)ᵀ
        return memory @ self.weight[:, self.query_dim :].T  # (b, j, a)

    def _score_for(self, prepared: bool) -> str:
        # A prepared 'general' memory holds k Wᵀ, which makes the score a plain dot product
        # (and lets the fused kernel compute it when no weights are asked for).
        return "dot" if prepared and self.kind == "general" else self._score

    def _score_params(self, prepared: bool) -> dict[str, Tensor]:
        if self.kind == "dot" or (self.kind == "general" and prepared):
            return {}
        if self.kind == "general":
            return {"weight": self.weight}
        w_q = self.weight[:, : self.query_dim]  # (a, query_dim)
        w_k = None if prepared else self.weight[:, self.query_dim :]  # (a, key_dim); None: keys projected
        return {"w_q": w_q, "w_k": w_k, "v": self.v}

    def extra_repr(self) -> str:
        return f"query_dim={self.query_dim}, key_dim={self.key_dim}, kind={self.kind!r}"
