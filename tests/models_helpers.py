"""Shared by the tests: 64 short real pairs from the embedded CC-CEDICT corpus, as token ids, and a copy of
torch's Transformer layers' weights into attnkit's blocks."""

from __future__ import annotations

import torch

from attnkit.data.cedict import load_cedict
from attnkit.layers import MultiHeadAttention

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


def copy_torch_block(ours, ref, *, cross: bool) -> None:
    """Copy a torch.nn.Transformer{Encoder,Decoder}Layer's weights into our block."""
    with torch.no_grad():
        ours.self_attn.load_state_dict(MultiHeadAttention.from_torch(ref.self_attn).state_dict())
        ours.self_attn_norm.load_state_dict(ref.norm1.state_dict())
        if cross:
            ours.cross_attn.load_state_dict(MultiHeadAttention.from_torch(ref.multihead_attn).state_dict())
            ours.cross_attn_norm.load_state_dict(ref.norm2.state_dict())
        ours.ffn.linear1.load_state_dict(ref.linear1.state_dict())
        ours.ffn.linear2.load_state_dict(ref.linear2.state_dict())
        ours.ffn_norm.load_state_dict((ref.norm3 if cross else ref.norm2).state_dict())
