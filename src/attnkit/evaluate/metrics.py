"""BLEU and chrF as the field reports them: sacreBLEU's implementation, with its signatures.

The tokenizer follows the target language: ``zh`` for Chinese targets, sacreBLEU's default ``13a``
otherwise. ``bleu_by_length`` splits a test set into buckets of source length and scores each, as
Bahdanau et al. 2015 (Figure 2) did to show where a fixed-length context vector breaks down.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

__all__ = ["Score", "corpus_scores", "bleu_by_length", "DEFAULT_BUCKETS"]

DEFAULT_BUCKETS = (0, 5, 10, 15, 20, 30, 10_000)


@dataclass(frozen=True)
class Score:
    name: str
    score: float
    signature: str

    def __str__(self) -> str:
        return f"{self.name} = {self.score:.2f}  ({self.signature})"


def _check(hyps: Sequence[str], refs: Sequence[str]) -> None:
    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} hypotheses but {len(refs)} references: they must be line-aligned")
    if not hyps:
        raise ValueError("no sentences to score")


def corpus_scores(hyps: Sequence[str], refs: Sequence[str], *, target_lang: str = "en") -> dict[str, Score]:
    """Corpus BLEU and chrF of ``hyps`` against one reference each."""
    from sacrebleu.metrics import BLEU, CHRF

    _check(hyps, refs)
    bleu = BLEU(tokenize="zh" if target_lang == "zh" else "13a")
    chrf = CHRF()
    b = bleu.corpus_score(list(hyps), [list(refs)])
    c = chrf.corpus_score(list(hyps), [list(refs)])
    return {
        "bleu": Score("BLEU", b.score, str(bleu.get_signature())),
        "chrf": Score("chrF2", c.score, str(chrf.get_signature())),
    }


def bleu_by_length(
    sources: Sequence[str],
    hyps: Sequence[str],
    refs: Sequence[str],
    *,
    source_length=len,
    buckets: Sequence[int] = DEFAULT_BUCKETS,
    target_lang: str = "en",
) -> list[dict]:
    """BLEU per bucket ``[lo, hi)`` of ``source_length(source)`` (default: characters, the natural
    length of Chinese). Empty buckets are left out."""
    from sacrebleu.metrics import BLEU

    _check(hyps, refs)
    if len(sources) != len(hyps):
        raise ValueError(f"{len(sources)} sources but {len(hyps)} hypotheses")
    bleu = BLEU(tokenize="zh" if target_lang == "zh" else "13a")
    rows = []
    for lo, hi in zip(buckets[:-1], buckets[1:]):
        idx = [n for n, s in enumerate(sources) if lo <= source_length(s) < hi]
        if not idx:
            continue
        score = bleu.corpus_score([hyps[n] for n in idx], [[refs[n] for n in idx]])
        rows.append({"bucket": f"{lo}-{hi - 1}" if hi < 10_000 else f"{lo}+", "sentences": len(idx), "bleu": score.score})
    return rows
