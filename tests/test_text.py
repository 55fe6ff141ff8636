"""Tokenisers: exact round trips, stable special ids, save/load, joint and separate vocabularies."""

from __future__ import annotations

import functools
import warnings

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attnkit.data import DataWarning, read_manythings
from attnkit.text import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    UNK_ID,
    UNK_TEXT,
    CharSpec,
    CharTokenizer,
    SentencePieceSpec,
    SentencePieceTokenizer,
    Tokenizer,
    TokenizerConfig,
    TokenizerError,
    build_tokenizers,
    load_tokenizer,
    load_tokenizers,
    save_tokenizers,
    tokenizer_size_mismatch,
)

# A small real corpus with the traits that matter: full-width punctuation, mixed scripts, digits.
PAIRS = [
    ("机器翻译很难。", "Machine translation is hard."),
    ("注意力就是你所需要的一切！", "Attention is all you need!"),
    ("你好，世界。", "Hello, world."),
    ("我有3本书。", "I have 3 books."),
    ("他今天不在家吗？", "Isn't he at home today?"),
    ("早上好。", "Good morning."),
]


@functools.lru_cache(maxsize=None)
def _tatoeba(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        pairs = read_manythings(path / "train.tsv").pairs[:3000]
    texts = [p.src for p in pairs] + [p.tgt for p in pairs]
    return pairs, SentencePieceTokenizer.train(texts, vocab_size=2000), texts


@pytest.fixture
def tatoeba_pairs(cmn_eng):
    """The first 3,000 Tatoeba training pairs (enough to train sentencepiece in well under a second)."""
    return _tatoeba(cmn_eng)[0]


@pytest.fixture
def spm_zh_en(cmn_eng):
    """A joint zh+en sentencepiece model on those pairs, trained once per session, and its texts."""
    _, tok, texts = _tatoeba(cmn_eng)
    return tok, texts


# the fixtures above are immutable and cached, so sharing them between hypothesis examples is safe
SHARED_FIXTURE = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


# --- character tokeniser -----------------------------------------------------------------------


def test_char_tokenizer_ids_and_unknowns():
    tok = CharTokenizer.train(["aab", "ba", "c"], min_freq=2)
    # a and b (3 times each) kept, most frequent first with ties by code point; c (once) is not
    assert tok.chars == ["a", "b"] and tok.vocab_size == 6
    assert (tok.pad_id, tok.bos_id, tok.eos_id, tok.unk_id) == (PAD_ID, BOS_ID, EOS_ID, UNK_ID) == (0, 1, 2, 3)
    assert tok.encode("abc") == [4, 5, UNK_ID]
    assert tok.decode(tok.encode("abc")) == "ab" + UNK_TEXT
    assert tok.pieces("abc") == ["a", "b", "<unk>"]
    assert tok.decode([BOS_ID, 4, PAD_ID, 5, EOS_ID, PAD_ID]) == "ab"  # specials vanish
    with pytest.raises(ValueError, match="id 6 is out of range for a vocabulary of 6"):
        tok.decode([6])
    with pytest.raises(TokenizerError, match="min_freq"):
        CharTokenizer.train(["a"], min_freq=0)
    with pytest.raises(TokenizerError, match="no character occurs"):
        CharTokenizer.train(["a"], min_freq=2)


def test_char_tokenizer_max_size_keeps_most_frequent():
    tok = CharTokenizer.train(["的的的是是了"], max_size=6)
    assert tok.chars == ["的", "是"] and tok.encode("了") == [UNK_ID]


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_char_round_trip_on_training_vocabulary(data):
    texts = [zh for zh, _ in PAIRS] + [en for _, en in PAIRS]
    tok = CharTokenizer.train(texts)
    alphabet = sorted(set("".join(texts)))
    text = data.draw(st.text(alphabet=alphabet, max_size=40))
    ids = tok.encode(text)
    assert len(ids) == len(text) and UNK_ID not in ids
    assert tok.decode(ids) == text
    assert "".join(tok.pieces(text)) == text


# --- sentencepiece -----------------------------------------------------------------------------


def test_sentencepiece_keeps_full_width_punctuation(spm_zh_en):
    tok, _ = spm_zh_en
    assert (tok.pad_id, tok.bos_id, tok.eos_id, tok.unk_id) == (0, 1, 2, 3)
    assert [tok.id_to_piece(i) for i in range(4)] == ["<pad>", "<s>", "</s>", "<unk>"]
    # NFKC (sentencepiece's default) would turn these into ASCII: identity normalisation keeps them
    for text in ["你好，世界！", "他在吗？", "１２３", "  two  spaces ", "ﬁne"]:
        assert tok.decode(tok.encode(text)) == text
    assert "，" in "".join(tok.pieces("你好，世界！"))


def test_sentencepiece_byte_fallback_for_unseen_characters(spm_zh_en):
    tok, _ = spm_zh_en
    text = "𠀀鱻 ☃"  # not in the training text: spelled as UTF-8 bytes, never UNK
    ids = tok.encode(text)
    assert UNK_ID not in ids
    assert "<0xF0>" in tok.pieces(text)
    assert tok.decode(ids) == text
    assert tok.decode([BOS_ID] + ids + [EOS_ID, PAD_ID, PAD_ID]) == text


@SHARED_FIXTURE
@given(st.data())
def test_sentencepiece_round_trip_on_training_vocabulary(spm_zh_en, data):
    tok, texts = spm_zh_en
    alphabet = sorted(set("".join(texts)))
    # whole training sentences, and random strings over the training characters (incl. spaces)
    text = data.draw(st.one_of(st.sampled_from(texts), st.text(alphabet=alphabet, max_size=60)))
    assert tok.decode(tok.encode(text)) == text


@pytest.mark.parametrize("model_type", ["unigram", "bpe"])
def test_sentencepiece_train_is_deterministic(model_type):
    texts = [t for pair in PAIRS for t in pair] * 20
    a = SentencePieceTokenizer.train(texts, vocab_size=400, model_type=model_type)
    b = SentencePieceTokenizer.train(texts, vocab_size=400, model_type=model_type)
    assert a.model_proto == b.model_proto
    assert a.settings["model_type"] == model_type
    # hard_vocab_limit=False: little text gives a smaller vocabulary instead of an error
    assert 260 < a.vocab_size <= 400
    sentence = "Attention is all you need!"
    assert a.decode(a.encode(sentence)) == sentence and len(a.encode(sentence)) < len(sentence)


def test_sentencepiece_refusals_say_why():
    with pytest.raises(TokenizerError, match="needs 2[67][0-9] pieces .* raise vocab_size to at least"):
        SentencePieceTokenizer.train(["机器翻译", "注意力", "你好"], vocab_size=260)
    with pytest.raises(TokenizerError, match="no sentences"):
        SentencePieceTokenizer.train(["", ""])
    with pytest.raises(TokenizerError, match="model_type"):
        SentencePieceTokenizer.train(["a"], model_type="word")
    with pytest.raises(TokenizerError, match="vocab_size must be >= 260"):
        SentencePieceTokenizer.train(["a"], vocab_size=100)


# --- saving, loading, configuration ------------------------------------------------------------


def test_save_load_each_kind(tmp_path, spm_zh_en):
    spm_tok, texts = spm_zh_en
    char_tok = CharTokenizer.train(texts[:100])
    for name, tok in (("spm", spm_tok), ("char", char_tok)):
        loaded = load_tokenizer(tok.save(tmp_path / name))
        assert type(loaded) is type(tok) and loaded.vocab_size == tok.vocab_size
        for text in texts[:50]:
            assert loaded.encode(text) == tok.encode(text)
    assert isinstance(SentencePieceTokenizer.load(tmp_path / "spm"), SentencePieceTokenizer)
    with pytest.raises(TokenizerError, match="holds a 'char' tokenizer, not 'sentencepiece'"):
        SentencePieceTokenizer.load(tmp_path / "char")
    with pytest.raises(TokenizerError, match="no tokenizer in"):
        Tokenizer.load(tmp_path / "nothing")
    (tmp_path / "spm" / "sentencepiece.model").write_bytes(b"garbage")
    with pytest.raises(TokenizerError, match="not a sentencepiece model"):
        load_tokenizer(tmp_path / "spm")


@pytest.mark.parametrize("file, content, says", [
    ("tokenizer.json", b"[]", "is not an attnkit tokenizer"),
    ("tokenizer.json", '{"format": "attnkit"}'.encode("utf-16"), "is not valid JSON"),
    ("chars.json", b"[1, 2]", ": a character vocabulary holds single characters, got [1, 2]"),
    ("chars.json", b'{"a": 1}', "is not a character vocabulary"),
    ("chars.json", '["a"]'.encode("utf-16"), "cannot read the character vocabulary"),
])
def test_a_damaged_char_tokenizer_file_is_named(tmp_path, file, content, says):
    folder = CharTokenizer.train(["abc"]).save(tmp_path / "c")
    (folder / file).write_bytes(content)
    with pytest.raises(TokenizerError) as caught:
        load_tokenizer(folder)
    assert str(folder / file) in str(caught.value) and says in str(caught.value)


def test_a_damaged_sentencepiece_model_is_named(tmp_path, spm_zh_en):
    folder = spm_zh_en[0].save(tmp_path / "s")
    model = folder / "sentencepiece.model"
    model.write_bytes(model.read_bytes()[:100])  # a copy cut short
    with pytest.raises(TokenizerError, match=f"^{model}: not a sentencepiece model"):
        load_tokenizer(folder)


def test_char_vocabulary_with_whitespace_survives_saving(tmp_path):
    tok = CharTokenizer.train(["a\tb\nc d\u3000e"])
    loaded = load_tokenizer(tok.save(tmp_path / "c"))
    assert loaded.chars == tok.chars and loaded.decode(loaded.encode("a\tb\nc d\u3000e")) == "a\tb\nc d\u3000e"


def test_build_separate_and_joint(tmp_path, tatoeba_pairs):
    pairs = tatoeba_pairs[:2000]
    src, tgt = build_tokenizers(TokenizerConfig(), pairs)  # default: chars for zh, sentencepiece for en
    assert isinstance(src, CharTokenizer) and isinstance(tgt, SentencePieceTokenizer)
    assert "机" in src.chars and all(not ("a" <= c <= "z") for c in src.chars[:50])
    save_tokenizers(tmp_path / "sep", src, tgt)
    src2, tgt2 = load_tokenizers(tmp_path / "sep")
    assert src2 is not tgt2 and src2.chars == src.chars and tgt2.model_proto == tgt.model_proto

    spec = SentencePieceSpec(vocab_size=3000, model_type="bpe")
    shared, same = build_tokenizers(TokenizerConfig(src=spec, tgt=spec, joint=True), [(p.src, p.tgt) for p in pairs])
    assert shared is same
    for pair in pairs[:100]:  # one vocabulary covers both languages
        assert shared.decode(shared.encode(pair.src)) == pair.src and shared.decode(shared.encode(pair.tgt)) == pair.tgt
    save_tokenizers(tmp_path / "joint", shared, same)
    a, b = load_tokenizers(tmp_path / "joint")
    assert a is b and a.model_proto == shared.model_proto
    assert sorted(p.name for p in (tmp_path / "joint").iterdir()) == ["tokenizer", "tokenizers.json"]


def test_config_from_dict_validates():
    config = TokenizerConfig.from_dict({"joint": True, "src": {"kind": "sentencepiece", "vocab_size": 4000}})
    assert config.tgt == config.src == SentencePieceSpec(vocab_size=4000)
    assert TokenizerConfig.from_dict(config.to_dict()) == config
    assert TokenizerConfig.from_dict({}) == TokenizerConfig() == TokenizerConfig(CharSpec(), SentencePieceSpec())
    with pytest.raises(ValueError, match="unknown keys \\['vocab'\\]"):
        TokenizerConfig.from_dict({"src": {"kind": "char", "vocab": 3}})
    with pytest.raises(ValueError, match="unknown kind 'wordpiece'"):
        TokenizerConfig.from_dict({"tgt": {"kind": "wordpiece"}})
    with pytest.raises(ValueError, match="joint vocabulary needs the same spec"):
        TokenizerConfig(joint=True)
    with pytest.raises(ValueError, match="model_type"):
        SentencePieceSpec(model_type="word")
    with pytest.raises(Exception):  # frozen
        config.joint = False  # type: ignore[misc]


def test_tokenizer_size_mismatch_names_the_side_the_sizes_and_the_folder(tmp_path):
    # the one check of Translator.load and of the exports (each raises its own error with this message)
    assert tokenizer_size_mismatch((10, 12), (10, 12), tmp_path) is None
    assert tokenizer_size_mismatch((11, 12), (10, 12)) == "the source tokenizer has 11 ids but the model has 10"
    assert tokenizer_size_mismatch((10, 9), (10, 12), tmp_path) == (
        f"{tmp_path}: the target tokenizer (tokenizers.json) has 9 ids but the model (config.json) has 12: the "
        "tokenizers saved there are not this model's")
