"""Shared by the model tests: 64 short real pairs from the embedded CC-CEDICT corpus, as token ids."""

from __future__ import annotations

import torch

from attnkit.data.cedict import load_cedict

PAD, BOS, EOS = 0, 1, 2


def tiny_corpus(n: int = 64):
    """The first ``n`` train pairs with a 2–4 character headword and a 1–3 word gloss: Chinese split
    into characters, English into words."""
    pairs = [p for p in load_cedict("train") if 2 <= len(p.src) <= 4 and 1 <= len(p.tgt.split()) <= 3][:n]
    src_vocab = {c: i + 3 for i, c in enumerate(sorted({c for p in pairs for c in p.src}))}
    tgt_vocab = {w: i + 3 for i, w in enumerate(sorted({w for p in pairs for w in p.tgt.split()}))}
    src = [[src_vocab[c] for c in p.src] for p in pairs]
    tgt = [[tgt_vocab[w] for w in p.tgt.split()] for p in pairs]
    return src, tgt, len(src_vocab) + 3, len(tgt_vocab) + 3


def pad(rows: list[list[int]], prefix: list[int] = (), suffix: list[int] = ()) -> torch.Tensor:
    rows = [list(prefix) + r + list(suffix) for r in rows]
    width = max(len(r) for r in rows)
    return torch.tensor([r + [PAD] * (width - len(r)) for r in rows])
