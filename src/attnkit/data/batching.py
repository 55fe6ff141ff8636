"""Token-budget batches, bucketed by length, deterministic given a seed and resumable from a position.

Axes: ``b`` sentences in the batch, ``s`` source positions, ``t`` target positions.

A batch holds, for token ids ``x`` (source) and ``y`` (target) of each pair, padded with PAD::

    src     (b, s)  x + [EOS]          src_lengths (b,)  len(x) + 1
    tgt_in  (b, t)  [BOS] + y          tgt_lengths (b,)  len(y) + 1   (teacher-forcing input)
    tgt_out (b, t)  y + [EOS]                                          (what the decoder must predict)

**Budget.** ``max_tokens`` bounds the padded size of each tensor: ``b * s <= max_tokens`` and
``b * t <= max_tokens`` (fairseq's rule). Counting padding is what keeps memory bounded, and sorting by
length keeps padding small.

**Order.** For epoch ``e`` a generator seeded with ``(seed, e)`` shuffles the examples, cuts them
into chunks of ``bucket_size``, sorts each chunk by length, packs each chunk greedily into batches
under the budget, and shuffles the batches. Chunking trades padding (bigger chunks, tighter batches)
against variety (the same neighbours every epoch if everything were sorted at once). Without
shuffling (evaluation) everything is one chunk in length order.

**Resuming.** The batches of an epoch depend only on the lengths, the settings, the seed and the
epoch number, so a :class:`DataPosition` ``(epoch, batch)`` is a complete description of where the
stream is. Each :class:`Batch` carries its ``next_position``: a trainer saves it in its checkpoint and
``iter_from(that position)`` after ``--resume`` yields exactly the batches that would have come next.
The position also carries a fingerprint of the lengths and settings, so resuming on different data
or settings is refused instead of silently continuing somewhere else.
"""

from __future__ import annotations

import hashlib
import random
import struct
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Iterator, Sequence

import torch
from torch import Tensor

from attnkit.data.corpus import Issue, Pair, format_skipped
from attnkit.text.base import BOS_ID, EOS_ID, PAD_ID, Tokenizer

__all__ = [
    "DataPosition",
    "Batch",
    "EncodedPairs",
    "encode_pairs",
    "collate",
    "TokenBatchSampler",
    "BatchLoader",
]

Example = tuple[Sequence[int], Sequence[int]]


@dataclass(frozen=True)
class DataPosition:
    """Where a batch stream stands: the next batch is number ``batch`` of epoch ``epoch``.

    ``fingerprint`` identifies the data and batching settings ("" skips the check).
    """

    epoch: int = 0
    batch: int = 0
    fingerprint: str = ""

    def __post_init__(self) -> None:
        if self.epoch < 0 or self.batch < 0:
            raise ValueError(f"a data position has epoch >= 0 and batch >= 0, got ({self.epoch}, {self.batch})")

    def to_dict(self) -> dict[str, Any]:
        """Plain data for a checkpoint."""
        return {"epoch": self.epoch, "batch": self.batch, "fingerprint": self.fingerprint}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "DataPosition":
        try:
            return cls(int(data["epoch"]), int(data["batch"]), str(data.get("fingerprint", "")))
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"not a data position: {data!r} ({err})") from None


@dataclass
class Batch:
    """Padded LongTensors for teacher forcing, the dataset ``indices`` of the rows, and positions."""

    src: Tensor  # (b, s)
    src_lengths: Tensor  # (b,)
    tgt_in: Tensor  # (b, t)
    tgt_out: Tensor  # (b, t)
    tgt_lengths: Tensor  # (b,)
    indices: Tensor  # (b,) index of each row's example in the dataset
    position: DataPosition | None = None  # where this batch is in the stream
    next_position: DataPosition | None = None  # save this to continue after this batch

    @property
    def size(self) -> int:
        return self.src.shape[0]

    @property
    def num_target_tokens(self) -> int:
        """Real (non-PAD) target tokens: what a per-token loss is averaged over."""
        return int(self.tgt_lengths.sum())

    def to(self, device: torch.device | str) -> "Batch":
        """The same batch with its tensors on ``device``."""
        move = {name: getattr(self, name).to(device) for name in
                ("src", "src_lengths", "tgt_in", "tgt_out", "tgt_lengths", "indices")}
        return replace(self, **move)


def collate(
    examples: Sequence[Example],
    indices: Sequence[int] | None = None,
    *,
    pad_id: int = PAD_ID,
    bos_id: int = BOS_ID,
    eos_id: int = EOS_ID,
) -> Batch:
    """Pad ``(src_ids, tgt_ids)`` examples into a :class:`Batch` (see the module docstring for layout)."""
    if not examples:
        raise ValueError("cannot collate an empty batch")
    b = len(examples)
    s = max(len(x) for x, _ in examples) + 1
    t = max(len(y) for _, y in examples) + 1
    # padded rows as Python lists, then one tensor each: far faster than filling row by row
    src = [[*x, eos_id] + [pad_id] * (s - 1 - len(x)) for x, _ in examples]
    tgt_in = [[bos_id, *y] + [pad_id] * (t - 1 - len(y)) for _, y in examples]
    tgt_out = [[*y, eos_id] + [pad_id] * (t - 1 - len(y)) for _, y in examples]
    return Batch(
        src=torch.tensor(src, dtype=torch.long),
        src_lengths=torch.tensor([len(x) + 1 for x, _ in examples], dtype=torch.long),
        tgt_in=torch.tensor(tgt_in, dtype=torch.long),
        tgt_out=torch.tensor(tgt_out, dtype=torch.long),
        tgt_lengths=torch.tensor([len(y) + 1 for _, y in examples], dtype=torch.long),
        indices=torch.tensor(list(range(b)) if indices is None else list(indices), dtype=torch.long),
    )


@dataclass
class EncodedPairs:
    """Token ids of the pairs kept, the kept ``pairs`` themselves (same order), and the dropped ones."""

    examples: list[tuple[list[int], list[int]]]
    pairs: list[Pair]
    skipped: int = 0
    issues: list[Issue] = field(default_factory=list)

    def summary(self, limit: int = 3) -> str:
        return format_skipped(self.skipped, self.issues, total=len(self.pairs) + self.skipped, limit=limit, unit="pairs")

    def __len__(self) -> int:
        return len(self.examples)


def encode_pairs(
    pairs: Iterable[Pair], src_tokenizer: Tokenizer, tgt_tokenizer: Tokenizer, *, max_len: int | None = None
) -> EncodedPairs:
    """Encode pairs; with ``max_len``, drop pairs with a side longer than ``max_len`` tokens (specials
    not counted), naming each by its origin, so one long sentence cannot exceed a batch budget."""
    out = EncodedPairs(examples=[], pairs=[])
    for number, pair in enumerate(pairs, start=1):
        x, y = src_tokenizer.encode(pair.src), tgt_tokenizer.encode(pair.tgt)
        longest = max(len(x), len(y))
        if max_len is not None and longest > max_len:
            side = "source" if len(x) >= len(y) else "target"
            file, line = (pair.origin.file, pair.origin.line) if pair.origin else ("pairs", number)
            out.issues.append(Issue(file, line, f"{side} is {longest} tokens long (max_len={max_len})"))
            out.skipped += 1
            continue
        out.examples.append((x, y))
        out.pairs.append(pair)
    return out


class TokenBatchSampler:
    """Lists of example indices forming token-budget batches, per epoch (see the module docstring).

    ``src_lengths``/``tgt_lengths`` are the padded lengths each example needs (specials included).
    ``max_sentences`` optionally caps the rows of a batch as well.
    """

    def __init__(
        self,
        src_lengths: Sequence[int],
        tgt_lengths: Sequence[int],
        *,
        max_tokens: int,
        seed: int = 0,
        shuffle: bool = True,
        bucket_size: int = 4096,
        max_sentences: int | None = None,
    ):
        if len(src_lengths) != len(tgt_lengths):
            raise ValueError(f"{len(src_lengths)} source lengths but {len(tgt_lengths)} target lengths")
        if not src_lengths:
            raise ValueError("no examples to batch")
        if max_tokens < 1 or bucket_size < 1 or (max_sentences is not None and max_sentences < 1):
            raise ValueError(f"max_tokens, bucket_size and max_sentences must be >= 1, got "
                             f"{max_tokens}, {bucket_size}, {max_sentences}")
        self.src_lengths = [int(n) for n in src_lengths]
        self.tgt_lengths = [int(n) for n in tgt_lengths]
        self.widths = [max(s, t) for s, t in zip(self.src_lengths, self.tgt_lengths)]
        widest = max(range(len(self.widths)), key=self.widths.__getitem__)
        if self.widths[widest] > max_tokens:
            raise ValueError(
                f"example {widest} needs {self.widths[widest]} tokens, more than max_tokens={max_tokens}; "
                f"raise max_tokens or drop long pairs (encode_pairs(..., max_len=...))"
            )
        self.max_tokens, self.seed, self.shuffle = max_tokens, seed, shuffle
        self.bucket_size, self.max_sentences = bucket_size, max_sentences
        self.fingerprint = self._fingerprint()
        self._cache: tuple[int, list[list[int]]] | None = None

    def __len__(self) -> int:
        """Number of examples (the number of batches may differ from epoch to epoch)."""
        return len(self.widths)

    def _fingerprint(self) -> str:
        digest = hashlib.sha256()
        digest.update(repr((self.max_tokens, self.seed, self.shuffle, self.bucket_size, self.max_sentences)).encode())
        digest.update(struct.pack(f"<{len(self.widths)}q", *self.src_lengths))
        digest.update(struct.pack(f"<{len(self.widths)}q", *self.tgt_lengths))
        return digest.hexdigest()[:16]

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """The batches of ``epoch``, in the order they are served; every example exactly once."""
        if self._cache is not None and self._cache[0] == epoch:
            return self._cache[1]
        order = list(range(len(self.widths)))
        if self.shuffle:
            # a str seed goes through SHA-512: the same sequence in every process and Python version
            rng = random.Random(f"attnkit-batches/{self.seed}/{epoch}")
            rng.shuffle(order)
            chunks = [order[i: i + self.bucket_size] for i in range(0, len(order), self.bucket_size)]
        else:
            chunks = [order]
        batches: list[list[int]] = []
        for chunk in chunks:
            # stable sort: ties keep the shuffled order, so equal-length examples still mix
            chunk.sort(key=lambda i: (self.widths[i], self.src_lengths[i], self.tgt_lengths[i]))
            batches.extend(self._pack(chunk))
        if self.shuffle:
            rng.shuffle(batches)
        self._cache = (epoch, batches)
        return batches

    def _pack(self, chunk: list[int]) -> Iterator[list[int]]:
        """Greedy packing of length-sorted indices: rows * widest row <= max_tokens."""
        batch: list[int] = []
        widest = 0
        for i in chunk:
            wider = max(widest, self.widths[i])
            full = self.max_sentences is not None and len(batch) >= self.max_sentences
            if batch and (full or (len(batch) + 1) * wider > self.max_tokens):
                yield batch
                batch, wider = [], self.widths[i]
            batch.append(i)
            widest = wider
        if batch:
            yield batch

    def start(self) -> DataPosition:
        """The position of the very first batch."""
        return DataPosition(0, 0, self.fingerprint)

    def iter_from(
        self, position: DataPosition | None = None, *, epochs: int | None = None
    ) -> Iterator[tuple[DataPosition, list[int]]]:
        """Yield ``(position, indices)`` from ``position`` on, through the end of epoch ``epochs - 1``
        (forever when ``epochs`` is None)."""
        position = position or self.start()
        if position.fingerprint and position.fingerprint != self.fingerprint:
            raise ValueError(
                f"the data position was saved for other data or batching settings (fingerprint "
                f"{position.fingerprint}, these give {self.fingerprint}); resuming here would not continue "
                f"the same stream"
            )
        epoch, start = position.epoch, position.batch
        while epochs is None or epoch < epochs:
            batches = self.epoch_batches(epoch)
            if start > len(batches):
                raise ValueError(f"epoch {epoch} has {len(batches)} batches; cannot start at batch {start}")
            for k in range(start, len(batches)):
                yield DataPosition(epoch, k, self.fingerprint), batches[k]
            epoch, start = epoch + 1, 0


class BatchLoader:
    """Encoded examples served as padded :class:`Batch` es by a :class:`TokenBatchSampler`.

    ``examples`` are ``(src_ids, tgt_ids)`` without specials (e.g. ``encode_pairs(...).examples``)::

        loader = BatchLoader(encoded.examples, max_tokens=4096, seed=1)
        for batch in loader.iter_from(resume_position):      # resume_position None to start afresh
            ...train on batch.src, batch.tgt_in, batch.tgt_out...
            checkpoint["data_position"] = batch.next_position.to_dict()
    """

    def __init__(
        self,
        examples: Sequence[Example],
        *,
        max_tokens: int = 4096,
        seed: int = 0,
        shuffle: bool = True,
        bucket_size: int = 4096,
        max_sentences: int | None = None,
        pad_id: int = PAD_ID,
        bos_id: int = BOS_ID,
        eos_id: int = EOS_ID,
    ):
        self.examples = examples
        self.sampler = TokenBatchSampler(
            [len(x) + 1 for x, _ in examples],  # + EOS
            [len(y) + 1 for _, y in examples],  # + BOS (tgt_in) or EOS (tgt_out)
            max_tokens=max_tokens, seed=seed, shuffle=shuffle, bucket_size=bucket_size, max_sentences=max_sentences,
        )
        self.special_ids = {"pad_id": pad_id, "bos_id": bos_id, "eos_id": eos_id}

    def __len__(self) -> int:
        return len(self.examples)

    def start(self) -> DataPosition:
        return self.sampler.start()

    def iter_from(self, position: DataPosition | None = None, *, epochs: int | None = None) -> Iterator[Batch]:
        """Batches from ``position`` on (see :meth:`TokenBatchSampler.iter_from`)."""
        for where, indices in self.sampler.iter_from(position, epochs=epochs):
            batch = collate([self.examples[i] for i in indices], indices, **self.special_ids)
            batch.position = where
            batch.next_position = replace(where, batch=where.batch + 1)
            yield batch

    def epoch(self, epoch: int = 0) -> Iterator[Batch]:
        """The batches of one epoch (for evaluation: ``shuffle=False`` and ``epoch(0)``)."""
        return self.iter_from(DataPosition(epoch, 0, self.sampler.fingerprint), epochs=epoch + 1)
