"""The models: every kind memorises 64 real pairs, step-by-step decoding equals teacher forcing,
attention weights are distributions over the real source positions, and configs round-trip."""

import json

import pytest
import torch
import yaml

from attnkit.decode import greedy_decode
from attnkit.models import (
    AttentionConfig,
    ConfigError,
    RNNConfig,
    TransformerConfig,
    build_model,
    config_from_dict,
    label_smoothed_nll,
    load_model,
    save_model,
)
from models_helpers import BOS, EOS, pad, tiny_corpus

SMALL_RNN = dict(embed_dim=64, hidden=128, dropout=0.0)
SMALL_TRANSFORMER = dict(d_model=64, heads=4, encoder_layers=2, decoder_layers=2, ffn_dim=128, dropout=0.0)

MEMORISE = {
    "seq2seq-fixed": RNNConfig(kind="seq2seq-fixed", **SMALL_RNN),
    "seq2seq-context": RNNConfig(kind="seq2seq-context", **SMALL_RNN),
    "attention-bahdanau": RNNConfig(kind="seq2seq-attention", attention=AttentionConfig("bahdanau"), **SMALL_RNN),
    "attention-luong-general": RNNConfig(kind="seq2seq-attention", attention=AttentionConfig("luong-general"), **SMALL_RNN),
    "attention-hard": RNNConfig(kind="seq2seq-attention", attention=AttentionConfig("bahdanau", normalize="hard"), **SMALL_RNN),
    "transformer": TransformerConfig(**SMALL_TRANSFORMER),
}

# Every kind and a spread of options, for the interface invariants.
VARIANTS = {
    **MEMORISE,
    "fixed-lstm-2layers": RNNConfig(kind="seq2seq-fixed", cell="lstm", layers=2, embed_dim=16, hidden=24, dropout=0.0),
    "context-unidirectional": RNNConfig(kind="seq2seq-context", bidirectional=False, embed_dim=16, hidden=24, dropout=0.0),
    "attention-luong-dot": RNNConfig(kind="seq2seq-attention", bidirectional=False, attention=AttentionConfig("luong-dot"), embed_dim=16, hidden=24, dropout=0.0),
    "attention-luong-concat": RNNConfig(kind="seq2seq-attention", attention=AttentionConfig("luong-concat"), embed_dim=16, hidden=24, dropout=0.0),
    "attention-cosine-sparsemax": RNNConfig(kind="seq2seq-attention", attention=AttentionConfig("cosine", normalize="sparsemax"), embed_dim=16, hidden=24, dropout=0.0),
    "attention-gumbel": RNNConfig(kind="seq2seq-attention", cell="lstm", attention=AttentionConfig("bahdanau", normalize="gumbel"), embed_dim=16, hidden=24, dropout=0.0),
    "transformer-post-norm-learned": TransformerConfig(norm_first=False, positions="learned", tie_output=False, **SMALL_TRANSFORMER),
    "transformer-shared": TransformerConfig(share_embeddings=True, **SMALL_TRANSFORMER),
}


@pytest.fixture(scope="module")
def corpus():
    src, tgt, src_vocab, tgt_vocab = tiny_corpus(64)
    assert len(src) == 64
    return src, tgt, src_vocab, tgt_vocab


@pytest.mark.parametrize("name", list(MEMORISE))
def test_every_model_kind_memorises_64_real_pairs(name, corpus):
    src, tgt, src_vocab, tgt_vocab = corpus
    torch.manual_seed(0)
    model = build_model(MEMORISE[name], src_vocab, tgt_vocab)
    s, t_in, t_out = pad(src), pad(tgt, prefix=[BOS]), pad(tgt, suffix=[EOS])
    lr = 1e-3 if name == "transformer" else 3e-3
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    exact = 0
    for step in range(1, 801):
        model.train()
        logits, _ = model(s, t_in)
        loss = label_smoothed_nll(logits, t_out, smoothing=0.0, reduction="mean")
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 25 == 0:
            model.eval()
            exact = sum(h.tokens == ref for h, ref in zip(greedy_decode(model, s), tgt))
            if exact == len(tgt):
                break
    assert exact == 64, f"{name}: {exact}/64 targets reproduced after {step} steps"


def _batch(src_vocab=30, tgt_vocab=40):
    g = torch.Generator().manual_seed(5)
    src = torch.randint(3, src_vocab, (3, 7), generator=g)
    src[1, 4:] = 0  # padding
    src[2, 6:] = 0
    tgt_in = torch.randint(3, tgt_vocab, (3, 6), generator=g)
    tgt_in[:, 0] = BOS
    return src, tgt_in


@pytest.mark.parametrize("name", list(VARIANTS))
def test_decode_step_equals_teacher_forcing_and_attention_is_a_distribution(name):
    torch.manual_seed(0)
    src, tgt_in = _batch()
    vocab = 40 if name == "transformer-shared" else 30
    model = build_model(VARIANTS[name], vocab, 40).eval()
    with torch.no_grad():
        logits, attention = model(src, tgt_in, need_attention=True)
        state = model.encode(src)
        steps, maps = [], []
        for t in range(tgt_in.shape[1]):
            step_logits, state, att = model.decode_step(state, tgt_in[:, t], need_attention=True)
            steps.append(step_logits)
            maps.append(att)
    assert (torch.stack(steps, 1) - logits).abs().max() <= 1e-5
    if VARIANTS[name].kind in ("seq2seq-fixed", "seq2seq-context"):
        assert attention is None and maps[0] is None  # no attention in these generations
        return
    pad_positions = (src == 0)[:, None, None, :]  # (b, 1, 1, s)
    for layer, weights in enumerate(attention):
        b, h, t, s = weights.shape
        assert (b, t, s) == (3, 6, 7)
        assert (weights >= 0).all()
        assert torch.allclose(weights.sum(-1), torch.ones(b, h, t), atol=1e-5)
        assert (weights.masked_select(pad_positions.expand_as(weights)) == 0).all()
        step_weights = torch.cat([m[layer] for m in maps], 2)
        assert (step_weights - weights).abs().max() <= 1e-5


def test_label_smoothing_matches_torch_cross_entropy():
    logits = torch.randn(4, 5, 11)
    target = torch.randint(1, 11, (4, 5))
    target[0, 3:] = 0
    ours = label_smoothed_nll(logits, target, smoothing=0.1, ignore_index=0, reduction="mean")
    ref = torch.nn.functional.cross_entropy(logits.view(-1, 11), target.view(-1), ignore_index=0, label_smoothing=0.1)
    assert abs(float(ours) - float(ref)) <= 1e-5
    # the fused gradient: against torch's autograd through cross_entropy, and gradcheck in float64
    x = logits.clone().requires_grad_()
    y = logits.clone().requires_grad_()
    label_smoothed_nll(x, target, smoothing=0.1, reduction="sum").backward()
    torch.nn.functional.cross_entropy(y.view(-1, 11), target.view(-1), ignore_index=0, label_smoothing=0.1,
                                      reduction="sum").backward()
    torch.testing.assert_close(x.grad, y.grad, atol=1e-6, rtol=0)
    assert bool((x.grad[0, 3:] == 0).all())  # ignored positions get no gradient
    z = logits.double().requires_grad_()
    for smoothing in (0.0, 0.1):
        for reduction in ("none", "sum", "mean"):
            assert torch.autograd.gradcheck(
                lambda t: label_smoothed_nll(t, target, smoothing=smoothing, reduction=reduction), (z,))


@pytest.mark.parametrize("name", ["attention-luong-concat", "transformer-shared"])
def test_model_round_trips_through_a_folder(name, tmp_path):
    src, tgt_in = _batch()
    model = build_model(VARIANTS[name], 40, 40).eval()
    save_model(model, tmp_path / "m", extra={"note": "test"})
    saved = json.loads((tmp_path / "m" / "config.json").read_text())
    assert saved["model"]["kind"] == VARIANTS[name].kind and saved["note"] == "test"
    loaded, meta = load_model(tmp_path / "m")
    assert loaded.config == model.config
    with torch.no_grad():
        assert torch.equal(loaded(src, tgt_in)[0], model(src, tgt_in)[0])
    if name == "transformer-shared":
        assert loaded.output.weight is loaded.src_embed.weight  # ties survive the round trip


def test_config_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match="unknown key.*'hiden'"):
        config_from_dict({"kind": "seq2seq-fixed", "hiden": 3})
    with pytest.raises(ConfigError, match="kind must be one of"):
        config_from_dict({"kind": "lstm"})
    with pytest.raises(ConfigError, match=r"heads \(3\) must divide d_model \(64\)"):
        config_from_dict({"kind": "transformer", "d_model": 64, "heads": 3})
    with pytest.raises(ConfigError, match="attention.normalize"):
        config_from_dict({"kind": "seq2seq-attention", "attention": {"normalize": "soft"}})
    with pytest.raises(ConfigError, match="share_embeddings"):
        build_model(TransformerConfig(share_embeddings=True, d_model=8, heads=2), 10, 12)
    with pytest.raises(FileNotFoundError, match="config.json is missing"):
        load_model(tmp_path)


def test_bad_tokens_are_refused_clearly():
    model = build_model(VARIANTS["attention-bahdanau"], 30, 40)
    src, tgt_in = _batch()
    with pytest.raises(ValueError, match=r"src holds ids outside the vocabulary \[0, 30\)"):
        model(src + 100, tgt_in)
    with pytest.raises(TypeError, match="integer"):
        model(src.float(), tgt_in)
    with pytest.raises(ValueError, match="at least one token"):
        model(torch.zeros(2, 3, dtype=torch.long), tgt_in[:2])


def test_info_reports_parameter_counts_by_hand_formula(capsys):
    from attnkit.cli import main

    assert main(["info", "--config", "configs/cmn-eng-transformer.yaml", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    d, f, v, layers = 256, 1024, 8000, 3
    mha, ffn, ln = 4 * (d * d + d), d * f + f + f * d + d, 2 * d
    encoder = layers * (mha + ffn + 2 * ln)
    decoder = layers * (2 * mha + ffn + 3 * ln)
    norm_first = yaml.safe_load(open("configs/cmn-eng-transformer.yaml", encoding="utf-8"))["model"]["norm_first"]
    final = 2 * ln if norm_first else 0  # pre-norm ends the encoder and the decoder with a LayerNorm each
    expected = 2 * v * d + encoder + decoder + final  # output projection tied to the target embedding
    assert report["parameters"] == expected
    assert report["by_module"]["encoder"] == encoder and report["by_module"]["decoder"] == decoder


def test_info_errors_name_the_file(tmp_path, capsys):
    from attnkit.cli import main

    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  kind: transformer\n  heads: 5\n")
    assert main(["info", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "heads (5) must divide d_model (256)" in err


@pytest.mark.parametrize("name", ["seq2seq-fixed", "attention-bahdanau", "transformer"])
def test_translator_alignment_is_cut_to_each_sentence(name, tmp_path):
    from attnkit.decode.translator import Translator
    from attnkit.text import CharTokenizer

    src_tok = CharTokenizer.train(["机器翻译很有用", "注意力"])
    tgt_tok = CharTokenizer.train(["machine translation", "attention"])
    model = build_model(VARIANTS[name], src_tok.vocab_size, tgt_tok.vocab_size).eval()
    out = Translator(model, src_tok, tgt_tok).translate(["机器翻译很有用", "注意"], beam=1, need_attention=True)
    for t in out:
        assert len(t.src_pieces) == len(t.source) + 1  # the characters and EOS
        if model.has_cross_attention:
            assert t.attention.shape[-1] == len(t.src_pieces)
            assert torch.allclose(t.attention.sum(-1), torch.ones(t.attention.shape[:-1]), atol=1e-5)
        else:
            assert t.attention is None


@pytest.mark.parametrize("kind", ["transformer", "seq2seq-attention", "seq2seq-context"])
def test_models_check_batches_and_empty_targets(kind):
    torch.manual_seed(0)
    model = build_model({"kind": kind} if kind != "transformer" else
                        {"kind": kind, "d_model": 16, "heads": 2, "encoder_layers": 1, "decoder_layers": 1, "ffn_dim": 32},
                        20, 20).eval()
    src = torch.randint(3, 20, (2, 4))
    with pytest.raises(ValueError, match="tgt_in has 1 sentences but src 2"):
        model(src, torch.tensor([[1, 2, 3]]))
    logits, attention = model(src, torch.zeros(2, 0, dtype=torch.long), need_attention=True)
    assert logits.shape == (2, 0, 20)
    if kind == "seq2seq-context":
        assert attention is None  # no attention in this generation
    else:
        assert attention and all(a.shape[0] == 2 and a.shape[2:] == (0, 4) for a in attention)
    state = model.encode(src)
    with pytest.raises(ValueError, match="prev_tokens has 3 rows but the state 2"):
        model.decode_step(state, torch.tensor([1, 1, 1]))
    if kind != "transformer":
        with pytest.raises(ValueError, match=r"src \(2, 0\) has no positions"):
            greedy_decode(model, torch.zeros(2, 0, dtype=torch.long))


def test_special_token_ids_must_differ():
    for kind in ("transformer", "seq2seq-attention"):
        with pytest.raises(ConfigError, match="pad_id, bos_id and eos_id must be three different tokens"):
            config_from_dict({"kind": kind, "bos_id": 2, "eos_id": 2})
        with pytest.raises(ConfigError, match="eos_id must be a non-negative integer"):
            config_from_dict({"kind": kind, "eos_id": -1})


@pytest.mark.parametrize("norm_first,tie", [(True, True), (False, False)])
def test_transformer_training_flops_are_what_pytorch_counts(monkeypatch, norm_first, tie):
    # PyTorch's FLOP counter over a real forward + backward step, on PyTorch's own products (the compiled
    # kernels off, so that the attention runs as matmuls the counter sees: 8 × 4 heads = 32 blocks of short
    # attention take the eager backend)
    from torch.utils.flop_counter import FlopCounterMode

    from attnkit import native

    monkeypatch.setattr(native, "available", lambda: False)
    torch.manual_seed(0)
    config = TransformerConfig(d_model=32, heads=4, encoder_layers=2, decoder_layers=1, ffn_dim=48, dropout=0.1,
                               norm_first=norm_first, tie_output=tie)
    model = build_model(config, 40, 50)
    model.train()
    src, tgt_in = torch.randint(3, 40, (8, 7)), torch.randint(3, 50, (8, 5))
    src[0, 5:] = 0  # padding is computed over like any position
    with FlopCounterMode(display=False) as counter:
        logits, _ = model(src, tgt_in)
        label_smoothed_nll(logits, torch.randint(3, 50, (8, 5)), smoothing=0.1, ignore_index=0).backward()
    assert counter.get_total_flops() > 0
    assert model.training_flops(8, 7, 5) == counter.get_total_flops()
    # the formula's parts by hand for one shape: 1 × 1 → 1 with d = 32, f = 48, 2 + 1 layers, 50 target words
    d, f = 32, 48
    encoder = 8 * d * d + 4 * d * f + 4 * d  # q, k, v, out; feed-forward; scores and weighted sums
    decoder = 16 * d * d + 4 * d * f + 8 * d  # self and cross q, k, v, out; feed-forward; both attentions
    by_hand = 3 * (2 * encoder + decoder + 2 * d * 50)
    assert model.training_flops(1, 1, 1) == by_hand
    for bad in ((-1, 7, 5), (8, 7.5, 5), (8, 7, True)):
        with pytest.raises(ValueError, match="training_flops: .* must be a non-negative integer"):
            model.training_flops(*bad)
