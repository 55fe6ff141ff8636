"""Evaluation: sacreBLEU BLEU and chrF with signatures, and BLEU by source-length bucket."""

from .metrics import DEFAULT_BUCKETS, Score, bleu_by_length, corpus_scores

__all__ = ["Score", "corpus_scores", "bleu_by_length", "DEFAULT_BUCKETS"]
