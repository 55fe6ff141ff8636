"""Batching: layout of a batch, every example once per epoch, the token budget, determinism, resuming."""

from __future__ import annotations

import random
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attnkit.data import (
    BatchLoader,
    DataPosition,
    DataWarning,
    Pair,
    Origin,
    TokenBatchSampler,
    collate,
    encode_pairs,
    read_manythings,
)
from attnkit.text import BOS_ID, EOS_ID, PAD_ID, CharTokenizer


def random_examples(n: int, seed: int = 0, longest: int = 40) -> list[tuple[list[int], list[int]]]:
    rng = random.Random(seed)
    return [
        ([rng.randrange(4, 50) for _ in range(rng.randint(1, longest))],
         [rng.randrange(4, 50) for _ in range(rng.randint(1, longest))])
        for _ in range(n)
    ]


def batch_ids(loader: BatchLoader, position=None, epochs=None) -> list[list[int]]:
    return [b.indices.tolist() for b in loader.iter_from(position, epochs=epochs)]


def test_collate_layout():
    batch = collate([([10, 11, 12], [20]), ([13], [21, 22, 23])], indices=[7, 3])
    assert batch.src.tolist() == [[10, 11, 12, EOS_ID], [13, EOS_ID, PAD_ID, PAD_ID]]
    assert batch.tgt_in.tolist() == [[BOS_ID, 20, PAD_ID, PAD_ID], [BOS_ID, 21, 22, 23]]
    assert batch.tgt_out.tolist() == [[20, EOS_ID, PAD_ID, PAD_ID], [21, 22, 23, EOS_ID]]
    assert batch.src_lengths.tolist() == [4, 2] and batch.tgt_lengths.tolist() == [2, 4]
    assert batch.indices.tolist() == [7, 3] and batch.size == 2 and batch.num_target_tokens == 6
    assert all(t.dtype == torch.long for t in (batch.src, batch.tgt_in, batch.tgt_out, batch.src_lengths))
    # lengths agree with the padding
    assert ((batch.src != PAD_ID).sum(1) == batch.src_lengths).all()
    assert ((batch.tgt_out != PAD_ID).sum(1) == batch.tgt_lengths).all()
    with pytest.raises(ValueError, match="empty batch"):
        collate([])


@settings(max_examples=60, deadline=None)
@given(
    lengths=st.lists(st.tuples(st.integers(1, 30), st.integers(1, 30)), min_size=1, max_size=120),
    max_tokens=st.integers(31, 200),
    bucket_size=st.integers(1, 64),
    seed=st.integers(0, 2**32),
    shuffle=st.booleans(),
)
def test_every_example_once_and_budget_respected(lengths, max_tokens, bucket_size, seed, shuffle):
    sampler = TokenBatchSampler([s for s, _ in lengths], [t for _, t in lengths], max_tokens=max_tokens,
                                seed=seed, shuffle=shuffle, bucket_size=bucket_size)
    for epoch in (0, 1):
        batches = sampler.epoch_batches(epoch)
        assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
        for b in batches:
            assert b, "no empty batches"
            assert len(b) * max(lengths[i][0] for i in b) <= max_tokens
            assert len(b) * max(lengths[i][1] for i in b) <= max_tokens


def test_padded_tensors_within_budget_and_decode_back():
    examples = random_examples(500)
    loader = BatchLoader(examples, max_tokens=300, seed=1)
    seen = []
    for batch in loader.epoch(0):
        assert batch.src.numel() <= 300 and batch.tgt_in.numel() <= 300 and batch.tgt_out.numel() <= 300
        for row, i in enumerate(batch.indices.tolist()):
            x, y = examples[i]
            assert batch.src[row, : len(x)].tolist() == x and batch.tgt_out[row, : len(y)].tolist() == y
        seen += batch.indices.tolist()
    assert sorted(seen) == list(range(500))


def test_same_seed_same_batches_other_seed_or_epoch_differs():
    examples = random_examples(400)
    a = batch_ids(BatchLoader(examples, max_tokens=256, seed=5), epochs=2)
    b = batch_ids(BatchLoader(examples, max_tokens=256, seed=5), epochs=2)
    c = batch_ids(BatchLoader(examples, max_tokens=256, seed=6), epochs=2)
    assert a == b and a != c
    sampler = TokenBatchSampler([len(x) + 1 for x, _ in examples], [len(y) + 1 for _, y in examples], max_tokens=256)
    assert sampler.epoch_batches(0) != sampler.epoch_batches(1)


def test_sorting_by_length_cuts_padding():
    rng = random.Random(0)
    examples = []
    for _ in range(2000):  # target lengths follow source lengths, as in real translation data
        n = rng.randint(1, 60)
        examples.append(([7] * n, [8] * max(1, n + rng.randint(-3, 3))))
    loader = BatchLoader(examples, max_tokens=1024, seed=0, bucket_size=1000)
    batches = [b.indices.tolist() for b in loader.epoch(0)]

    def padding(groups):
        real = sum(len(examples[i][0]) + len(examples[i][1]) + 2 for g in groups for i in g)
        padded = sum(len(g) * (max(len(examples[i][0]) for i in g) + max(len(examples[i][1]) for i in g) + 2)
                     for g in groups)
        return (padded - real) / padded

    # the same batch sizes filled at random, for comparison
    order = list(range(len(examples)))
    rng.shuffle(order)
    cuts, start = [], 0
    for b in batches:
        cuts.append(order[start: start + len(b)])
        start += len(b)
    assert padding(batches) < 0.1 and padding(batches) < 0.25 * padding(cuts)


def test_no_shuffle_is_length_order():
    examples = random_examples(200)
    loader = BatchLoader(examples, max_tokens=256, shuffle=False)
    widths = [max(len(examples[i][0]), len(examples[i][1])) for ids in batch_ids(loader, epochs=1) for i in ids]
    assert widths == sorted(widths)
    assert batch_ids(loader, epochs=1) == [b.indices.tolist() for b in loader.epoch(3)]  # no seed, no epoch effect


def test_max_sentences_caps_rows():
    loader = BatchLoader([([5], [6])] * 50, max_tokens=1000, max_sentences=8)
    sizes = [b.size for b in loader.epoch(0)]
    assert max(sizes) == 8 and sum(sizes) == 50


def test_resume_continues_exactly_across_epochs():
    examples = random_examples(300)
    full = list(BatchLoader(examples, max_tokens=200, seed=9).iter_from(None, epochs=3))
    per_epoch = len([b for b in full if b.position.epoch == 0])
    for stop in (0, 1, per_epoch - 1, per_epoch, per_epoch + 3):
        saved = full[stop].next_position.to_dict()  # what a checkpoint holds
        fresh = BatchLoader(examples, max_tokens=200, seed=9)  # a new process
        rest = list(fresh.iter_from(DataPosition.from_dict(saved), epochs=3))
        assert [b.position for b in rest] == [b.position for b in full[stop + 1:]]
        for got, want in zip(rest, full[stop + 1:]):
            assert torch.equal(got.src, want.src) and torch.equal(got.tgt_in, want.tgt_in)
            assert torch.equal(got.tgt_out, want.tgt_out) and torch.equal(got.indices, want.indices)


def test_resume_refuses_other_data_or_settings():
    examples = random_examples(100)
    position = next(iter(BatchLoader(examples, max_tokens=200, seed=1).iter_from())).next_position
    for other in (BatchLoader(examples, max_tokens=200, seed=2), BatchLoader(examples[:-1], max_tokens=200, seed=1),
                  BatchLoader(examples, max_tokens=256, seed=1)):
        with pytest.raises(ValueError, match="saved for other data or batching settings"):
            next(other.iter_from(position))
    loader = BatchLoader(examples, max_tokens=200, seed=1)
    with pytest.raises(ValueError, match="cannot start at batch 999"):
        next(loader.iter_from(DataPosition(0, 999, loader.start().fingerprint)))
    with pytest.raises(ValueError, match="not a data position"):
        DataPosition.from_dict({"epoch": 1})


def test_too_long_example_is_refused_and_encode_pairs_drops_it():
    with pytest.raises(ValueError, match="example 1 needs 41 tokens, more than max_tokens=32"):
        BatchLoader([([5] * 3, [6] * 3), ([5] * 40, [6])], max_tokens=32)
    tok = CharTokenizer.train(["abcdefgh"])
    pairs = [Pair("abc", "de", Origin("a.tsv", 1)), Pair("a" * 20, "b", Origin("a.tsv", 2)), Pair("h", "gh")]
    encoded = encode_pairs(pairs, tok, tok, max_len=10)
    assert encoded.pairs == [pairs[0], pairs[2]] and encoded.examples == [([4, 5, 6], [7, 8]), ([11], [10, 11])]
    assert encoded.skipped == 1
    assert encoded.summary() == "skipped 1 of 3 pairs: a.tsv:2: source is 20 tokens long (max_len=10)"


def test_real_data_batches_decode_to_the_pairs(cmn_eng):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        pairs = read_manythings(cmn_eng / "dev.tsv").pairs
    src_tok = CharTokenizer.train(p.src for p in pairs)
    tgt_tok = CharTokenizer.train(p.tgt for p in pairs)
    encoded = encode_pairs(pairs, src_tok, tgt_tok)
    loader = BatchLoader(encoded.examples, max_tokens=1500, seed=0)
    count = 0
    for batch in loader.epoch(0):
        for row, i in enumerate(batch.indices.tolist()):
            s, t = int(batch.src_lengths[row]), int(batch.tgt_lengths[row])
            assert src_tok.decode(batch.src[row, : s - 1].tolist()) == encoded.pairs[i].src
            assert tgt_tok.decode(batch.tgt_in[row, 1:t].tolist()) == encoded.pairs[i].tgt
            count += 1
    assert count == len(pairs) == 879
