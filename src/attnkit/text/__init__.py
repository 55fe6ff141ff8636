"""Tokenisers: SentencePiece and characters behind one small interface, saved with the model.

>>> from attnkit.text import CharTokenizer
>>> tok = CharTokenizer.train(["机器翻译", "注意力"])
>>> ids = tok.encode("注意")
>>> tok.decode(ids), tok.pieces("注意"), (tok.pad_id, tok.bos_id, tok.eos_id, tok.unk_id)
('注意', ['注', '意'], (0, 1, 2, 3))
"""

from attnkit.text.base import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    SPECIAL_PIECES,
    UNK_ID,
    UNK_TEXT,
    Tokenizer,
    TokenizerError,
    load_tokenizer,
)
from attnkit.text.char import CharTokenizer
from attnkit.text.spm import SentencePieceTokenizer
from attnkit.text.build import (
    CharSpec,
    SentencePieceSpec,
    TokenizerConfig,
    TokenizerSpec,
    build_tokenizers,
    load_tokenizers,
    save_tokenizers,
    tokenizer_size_mismatch,
    train_tokenizer,
)

__all__ = [
    "PAD_ID",
    "UNK_ID",
    "BOS_ID",
    "EOS_ID",
    "SPECIAL_PIECES",
    "UNK_TEXT",
    "Tokenizer",
    "TokenizerError",
    "load_tokenizer",
    "CharTokenizer",
    "SentencePieceTokenizer",
    "CharSpec",
    "SentencePieceSpec",
    "TokenizerSpec",
    "TokenizerConfig",
    "build_tokenizers",
    "train_tokenizer",
    "save_tokenizers",
    "load_tokenizers",
    "tokenizer_size_mismatch",
]
