"""``attnkit demo``: from a fresh machine to translations and a heatmap, on the embedded CC-CEDICT.

Trains a small Transformer (zh characters → English SentencePiece) within a time budget, keeps it
in a cache folder so a second run only translates, then translates a few phrases and writes the
cross-attention heatmap of the first one.
"""
