"""Export to Hugging Face MarianMT and CTranslate2, checked against the engines themselves: a post-norm
attnkit Transformer briefly trained on 64 real CC-CEDICT pairs, exported, loaded by ``transformers``'
``MarianMTModel`` (and converted by CTranslate2) gives the same logits, the same greedy and beam-4
outputs token for token, and ``MarianTokenizer`` the same ids as attnkit's own tokenisers."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from attnkit.cli import main
from attnkit.data.cedict import load_cedict
from attnkit.decode import beam_search, greedy_decode
from attnkit.interop.marian import ExportError, export_marian, residual_permutation
from attnkit.layers.positional import sinusoidal_table
from attnkit.models import TransformerConfig, RNNConfig, build_model, label_smoothed_nll, save_model
from attnkit.decode.translator import Translator
from attnkit.text import CharTokenizer, SentencePieceTokenizer, TokenizerError, save_tokenizers

transformers = pytest.importorskip("transformers")
from transformers import MarianMTModel, MarianTokenizer  # noqa: E402
from transformers.models.marian.modeling_marian import MarianSinusoidalPositionalEmbedding  # noqa: E402

EXPORTABLE = dict(d_model=32, heads=4, encoder_layers=2, decoder_layers=2, ffn_dim=64, dropout=0.0, norm_first=False)
KNOWN = "机器 翻译，注意力"  # in the source vocabulary: a space and a full-width comma among Chinese characters
MAX_LEN = 12  # decoding steps for every engine (transformers' max_new_tokens, CTranslate2's max_decoding_length)


pytestmark = pytest.mark.usefixtures("one_thread")


def _pad(rows: list[list[int]]) -> torch.Tensor:
    width = max(len(r) for r in rows)
    return torch.tensor([r + [0] * (width - len(r)) for r in rows])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A post-norm model trained for 150 steps on 64 short CC-CEDICT pairs (characters → SentencePiece),
    saved with its tokenisers and exported; plus 16 dev headwords it has never seen."""
    train = [p for p in load_cedict("train") if 2 <= len(p.src) <= 4 and 1 <= len(p.tgt.split()) <= 3][:64]
    src_tok = CharTokenizer.train([p.src for p in train] + [KNOWN])
    tgt_tok = SentencePieceTokenizer.train([p.tgt for p in train], vocab_size=300)
    unseen = [p.src for p in load_cedict("dev") if 2 <= len(p.src) <= 4][:16]
    torch.manual_seed(0)
    model = build_model(TransformerConfig(**EXPORTABLE), src_tok.vocab_size, tgt_tok.vocab_size)
    src = _pad([src_tok.encode(p.src) + [2] for p in train])
    tgt_in = _pad([[1] + tgt_tok.encode(p.tgt) for p in train])
    tgt_out = _pad([tgt_tok.encode(p.tgt) + [2] for p in train])
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(150):
        loss = label_smoothed_nll(model(src, tgt_in)[0], tgt_out, smoothing=0.0, reduction="mean")
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    root = tmp_path_factory.mktemp("export")
    save_model(model, root / "model")
    save_tokenizers(root / "model", src_tok, tgt_tok)
    result = export_marian(root / "model", root / "marian")
    hf, info = MarianMTModel.from_pretrained(root / "marian", output_loading_info=True)
    sources = [p.src for p in train] + unseen
    return dict(model=model, src_tok=src_tok, tgt_tok=tgt_tok, train=train, sources=sources, root=root,
                result=result, hf=hf.eval(), info=info,
                src=_pad([src_tok.encode(s) + [2] for s in sources]), tgt_in=tgt_in, train_src=src)


def _hf_tokens(row: torch.Tensor) -> list[int]:
    """A generated row without its start token, cut at the first EOS (what follows is padding)."""
    ids = row.tolist()[1:]
    return ids[: ids.index(2)] if 2 in ids else ids


# ------------------------------------------------------------------------------------- the layout


@pytest.mark.parametrize("d_model", [8, 32, 27])
def test_permuted_sinusoids_are_marians_table(d_model):
    """Marian's table is [sin … | cos …]; attnkit's interleaves them: one feature permutation apart."""
    marian = MarianSinusoidalPositionalEmbedding(64, d_model).create_weight()
    ours = sinusoidal_table(torch.arange(64), d_model)[:, residual_permutation(d_model)]
    torch.testing.assert_close(ours.float(), marian, atol=1e-6, rtol=0)


# ------------------------------------------------------------------------------------- transformers


def test_export_writes_every_marian_weight_and_the_start_token(trained):
    info, hf = trained["info"], trained["hf"]
    # Marian rebuilds its position tables itself; nothing else may be missing, nothing unexpected
    assert set(info["missing_keys"]) <= {"model.encoder.embed_positions.weight", "model.decoder.embed_positions.weight"}
    assert not info["unexpected_keys"] and not info["mismatched_keys"]
    assert hf.generation_config.decoder_start_token_id == 1  # attnkit decodes from BOS, Marian by default from PAD
    assert hf.generation_config.forced_eos_token_id is None
    assert set(trained["result"].files) >= {"config.json", "model.safetensors", "source.spm", "target.spm",
                                            "vocab.json", "target_vocab.json", "tokenizer_config.json"}
    assert trained["result"].notes == ()


def test_teacher_forced_logits_equal_marian(trained):
    model, hf, src, tgt_in = trained["model"], trained["hf"], trained["train_src"], trained["tgt_in"]
    with torch.no_grad():
        ours = model(src, tgt_in)[0]
        theirs = hf(input_ids=src, attention_mask=src != 0, decoder_input_ids=tgt_in).logits
    assert (ours - theirs).abs().max().item() <= 1e-4


VARIANTS = {
    "shared-untied": dict(share_embeddings=True, tie_output=False),
    "separate-untied": dict(tie_output=False),
    "odd-width": dict(d_model=27, heads=3),
}


@pytest.mark.parametrize("name", list(VARIANTS))
def test_random_variants_have_marians_logits(name, tmp_path):
    torch.manual_seed(1)
    cfg = TransformerConfig(**{**EXPORTABLE, **VARIANTS[name]})
    model = build_model(cfg, 50, 50 if cfg.share_embeddings else 40).eval()
    save_model(model, tmp_path / "model")
    result = export_marian(tmp_path / "model", tmp_path / "marian")
    assert any("no tokenizers" in n for n in result.notes)
    hf = MarianMTModel.from_pretrained(tmp_path / "marian").eval()
    src = torch.randint(4, 50, (3, 9))
    src[1, 6:], src[2, 3:] = 0, 0
    tgt = torch.randint(4, model.tgt_vocab_size, (3, 7))
    with torch.no_grad():
        ours = model(src, tgt)[0]
        theirs = hf(input_ids=src, attention_mask=src != 0, decoder_input_ids=tgt).logits
    assert (ours - theirs).abs().max().item() <= 1e-4


def test_greedy_and_beam_equal_marian_generate(trained):
    """Length penalty 0 on both sides: both rank finished hypotheses by log-probability (transformers
    divides by len^alpha, attnkit by GNMT's ((5 + len) / 6)^alpha, which differ for alpha > 0)."""
    model, hf, src = trained["model"], trained["hf"], trained["src"]
    greedy = [h.tokens for h in greedy_decode(model, src, max_len=MAX_LEN)]
    beam = [h[0].tokens for h in beam_search(model, src, beam_size=4, length_penalty=0.0, max_len=MAX_LEN)]
    # max_length counts the start token. early_stopping="never" is transformers' exact stopping rule, as
    # attnkit's; early_stopping=True stops once num_beams hypotheses have finished, and then returns
    # a worse one for some of these sentences (-5.27 instead of -0.11 for one of them).
    with torch.no_grad():
        hf_greedy = hf.generate(input_ids=src, attention_mask=src != 0, do_sample=False, num_beams=1,
                                max_length=MAX_LEN + 1)
        hf_beam = hf.generate(input_ids=src, attention_mask=src != 0, do_sample=False, num_beams=4,
                              length_penalty=0.0, early_stopping="never", max_length=MAX_LEN + 1)
    assert [_hf_tokens(r) for r in hf_greedy] == greedy
    assert [_hf_tokens(r) for r in hf_beam] == beam
    # the model is not trivial: most outputs stop with EOS (62 of 80 here), and beam search finds what
    # greedy decoding does not (13 here)
    assert sum(len(t) < MAX_LEN for t in greedy) >= 40
    assert sum(g != b for g, b in zip(greedy, beam)) >= 3
    tokenizer = MarianTokenizer.from_pretrained(trained["root"] / "marian")
    assert tokenizer.batch_decode(hf_beam, skip_special_tokens=True) == [trained["tgt_tok"].decode(t) for t in beam]


def test_min_len_equals_transformers_min_new_tokens(trained):
    """Exactly MAX_LEN steps for every sentence (the benchmarks' setting): EOS blocked until the limit."""
    model, hf, src = trained["model"], trained["hf"], trained["src"]
    greedy = [h.tokens for h in greedy_decode(model, src, max_len=MAX_LEN, min_len=MAX_LEN)]
    beam = [h[0].tokens for h in beam_search(model, src, beam_size=4, max_len=MAX_LEN, min_len=MAX_LEN)]
    assert all(len(t) == MAX_LEN for t in greedy + beam)
    with torch.no_grad():
        common = dict(input_ids=src, attention_mask=src != 0, do_sample=False, min_new_tokens=MAX_LEN,
                      max_new_tokens=MAX_LEN)
        hf_greedy = hf.generate(num_beams=1, **common)
        hf_beam = hf.generate(num_beams=4, **common)
    assert [_hf_tokens(r) for r in hf_greedy] == greedy
    assert [_hf_tokens(r) for r in hf_beam] == beam
    # shorter minimums: no output ends before its minimum, and some still end with EOS after it
    for minimum in (3, 6):
        outs = greedy_decode(model, src, max_len=MAX_LEN, min_len=minimum)
        assert all(len(h.tokens) >= minimum for h in outs)
        assert any(len(h.tokens) < MAX_LEN for h in outs)
        hf_out = hf.generate(input_ids=src, attention_mask=src != 0, do_sample=False, num_beams=1,
                             min_new_tokens=minimum, max_new_tokens=MAX_LEN)
        assert [_hf_tokens(r) for r in hf_out] == [h.tokens for h in outs]
    with pytest.raises(ValueError, match="min_len"):
        greedy_decode(model, src, min_len=-1)


def test_marian_tokenizer_gives_attnkit_ids(trained):
    """source.spm is a char SentencePiece model over attnkit's characters; target.spm is attnkit's own."""
    tokenizer = MarianTokenizer.from_pretrained(trained["root"] / "marian")
    src_tok, tgt_tok = trained["src_tok"], trained["tgt_tok"]
    sources = [p.src for p in trained["train"]] + [KNOWN, "翻译机器 注意"]
    assert tokenizer(sources).input_ids == [src_tok.encode(s) + [2] for s in sources]
    targets = [p.tgt for p in trained["train"]] + ["an unseen sentence, with punctuation!"]
    assert tokenizer(text_target=targets).input_ids == [tgt_tok.encode(t) + [2] for t in targets]
    # the one difference: SentencePiece merges a run of unknown characters into one <unk>
    assert src_tok.encode("丈母") == [3, 3] and tokenizer("丈母").input_ids == [3, 2]


# ------------------------------------------------------------------------------------- CTranslate2


def test_ctranslate2_translates_like_attnkit(trained, tmp_path):
    ctranslate2 = pytest.importorskip("ctranslate2", reason="ctranslate2 is not installed (pip install ctranslate2)")
    from attnkit.interop.ct2 import export_ctranslate2

    out = export_ctranslate2(trained["root"] / "marian", tmp_path / "ct2")
    translator = ctranslate2.Translator(str(out), device="cpu", inter_threads=1, intra_threads=1)
    src_tok, tgt_vocab = trained["src_tok"], trained["tgt_tok"]
    sources = [[src_tok.id_to_piece(i) for i in src_tok.encode(s)] + ["</s>"] for s in trained["sources"]]
    to_ids = {tgt_vocab.id_to_piece(i): i for i in range(tgt_vocab.vocab_size)}
    model, src = trained["model"], trained["src"]
    greedy = [h.tokens for h in greedy_decode(model, src, max_len=MAX_LEN)]
    beam = [h[0].tokens for h in beam_search(model, src, beam_size=4, length_penalty=0.0, max_len=MAX_LEN)]
    for size, ours in ((1, greedy), (4, beam)):
        results = translator.translate_batch(sources, beam_size=size, length_penalty=0.0, max_decoding_length=MAX_LEN)
        assert [[to_ids[t] for t in r.hypotheses[0]] for r in results] == ours, f"beam_size={size}"


def test_the_ctranslate2_export_through_marian_loads_the_model_and_checks_out_once(trained, tmp_path, monkeypatch):
    """The one command writes what its two steps write (export_marian, then export_ctranslate2)."""
    pytest.importorskip("ctranslate2", reason="ctranslate2 is not installed (pip install ctranslate2)")
    import attnkit.interop.ct2 as ct2
    import attnkit.models

    loads, checks = [], []
    load_model, check_out = attnkit.models.load_model, ct2.check_ctranslate2_out
    monkeypatch.setattr(attnkit.models, "load_model", lambda folder: loads.append(folder) or load_model(folder))
    monkeypatch.setattr(ct2, "check_ctranslate2_out", lambda *a: checks.append(a) or check_out(*a))
    result = ct2.export_model_ctranslate2(trained["root"] / "model", tmp_path / "ct2")
    assert loads == [trained["root"] / "model"] and checks == [(tmp_path / "ct2", False)]
    monkeypatch.undo()
    two_steps = ct2.export_ctranslate2(trained["root"] / "marian", tmp_path / "two-steps")
    assert result.files == ("config.json", "model.bin", "source_vocabulary.json", "target_vocabulary.json")
    assert all((result.out_dir / f).read_bytes() == (two_steps / f).read_bytes() for f in result.files)


DIRECT = {  # models MarianMT cannot express, which export to CTranslate2 directly
    "post-norm, without transformers": dict(),  # MarianMT could express it: the route when transformers is absent
    "pre-norm": dict(norm_first=True),
    "pre-norm-learned": dict(norm_first=True, positions="learned", max_len=24),
    "post-norm-learned": dict(positions="learned", max_len=24),
    "pre-norm-shared-untied-odd": dict(norm_first=True, share_embeddings=True, tie_output=False, d_model=27, heads=3),
}


def _direct_model(options: dict, folder: Path):
    """A random model of ``options`` with character tokenisers (a space among them), every LayerNorm and
    bias perturbed so that a weight put in the wrong place shows; saved in ``folder``."""
    torch.manual_seed(3)
    text = "机器翻译 注意力，我们学习中文。你好吗？"
    src_tok = CharTokenizer.train([text])
    tgt_tok = src_tok if options.get("share_embeddings") else CharTokenizer.train(["attention is all we need!"])
    model = build_model(TransformerConfig(**{**EXPORTABLE, **options}), src_tok.vocab_size, tgt_tok.vocab_size).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.LayerNorm):
                m.weight.copy_(1 + 0.3 * torch.randn_like(m.weight))
                m.bias.copy_(0.3 * torch.randn_like(m.bias))
            elif isinstance(m, torch.nn.Linear) and m.bias is not None:
                m.bias.copy_(0.3 * torch.randn_like(m.bias))
    save_model(model, folder)
    save_tokenizers(folder, src_tok, tgt_tok)
    return model, src_tok, tgt_tok


@pytest.mark.parametrize("name", list(DIRECT))
def test_models_marian_cannot_express_export_to_ctranslate2_directly(name, tmp_path, monkeypatch):
    """CTranslate2's teacher-forced log-probs equal attnkit's, and its greedy and beam-4 outputs are
    attnkit's token for token, on a model whose every weight matters."""
    import sys

    ctranslate2 = pytest.importorskip("ctranslate2", reason="ctranslate2 is not installed (pip install ctranslate2)")
    import attnkit.interop.marian as marian_module
    from attnkit.interop.ct2 import export_model_ctranslate2
    from attnkit.interop.marian import tokenizer_pieces

    model, src_tok, tgt_tok = _direct_model(DIRECT[name], tmp_path / "model")
    if "without transformers" in name:
        import ctranslate2.converters.transformers  # noqa: F401  (imported as it is, before transformers is hidden)

        monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers raises ImportError
        monkeypatch.setattr(marian_module, "_export_marian_model", None)  # the MarianMT route is not taken
    else:
        with pytest.raises(ExportError):
            export_marian(tmp_path / "model", tmp_path / "marian")
    result = export_model_ctranslate2(tmp_path / "model", tmp_path / "ct2")
    assert "model.bin" in result.files
    config = json.loads((result.out_dir / "config.json").read_text())
    assert config["layer_norm_epsilon"] == model.encoder[0].ffn_norm.eps
    assert bool(result.notes) == (model.config.positions == "learned")  # learned tables end at max_len
    translator = ctranslate2.Translator(str(result.out_dir), device="cpu", inter_threads=1, intra_threads=1)
    src_pieces, tgt_pieces = tokenizer_pieces(src_tok), tokenizer_pieces(tgt_tok)
    texts = ["机器翻译", "注意力", "我们学习中文。", "你好吗？", "翻译 注意力", "中猫"]  # 猫: unknown
    ids = [src_tok.encode(t) + [2] for t in texts]
    src = _pad(ids)
    # a character of no piece goes in as it is: CTranslate2 reads it as its unk_token, as attnkit does
    sources = [[c if i == 3 else src_pieces[i] for c, i in zip(text, row)] + ["</s>"] for text, row in zip(texts, ids)]
    assert "猫" in sources[-1]
    greedy = [h.tokens for h in greedy_decode(model, src, max_len=MAX_LEN)]
    beam = [h[0].tokens for h in beam_search(model, src, beam_size=4, length_penalty=0.0, max_len=MAX_LEN)]
    for size, ours in ((1, greedy), (4, beam)):
        # min_decoding_length: CTranslate2 blocks EOS at the first step unless told not to (its default is 1)
        results = translator.translate_batch(sources, beam_size=size, length_penalty=0.0, max_decoding_length=MAX_LEN,
                                             min_decoding_length=0)
        assert [[tgt_pieces.index(t) for t in r.hypotheses[0]] for r in results] == ours, f"beam_size={size}"
    # and every output position on targets of random tokens, not only on what the model prefers
    targets = [torch.randint(3, len(tgt_pieces), (n,)).tolist() for n in (1, 5, 9, 12, 3, 7)]
    scored = translator.score_batch(sources, [[tgt_pieces[i] for i in row] for row in targets])
    with torch.no_grad():
        for n, (row, target) in enumerate(zip(ids, targets)):
            logp = model(torch.tensor([row]), torch.tensor([[1] + target]))[0].log_softmax(-1)[0]
            ours = [logp[j, token].item() for j, token in enumerate(target + [2])]
            assert ours == pytest.approx(scored[n].log_probs, abs=1e-4), texts[n]


def test_the_export_command_takes_the_direct_route_only_for_what_marian_cannot_express(trained, tmp_path, capsys,
                                                                                      monkeypatch):
    pytest.importorskip("ctranslate2", reason="ctranslate2 is not installed (pip install ctranslate2)")
    import attnkit.interop.ct2 as ct2

    _direct_model(DIRECT["pre-norm-learned"], tmp_path / "pre")
    routes, real = [], ct2.ctranslate2_spec
    monkeypatch.setattr(ct2, "ctranslate2_spec", lambda *a, **k: routes.append("direct") or real(*a, **k))
    args = ["export", "--format", "ctranslate2", "--max-positions", "100"]
    assert main([*args, "--model", str(tmp_path / "pre"), "--out", str(tmp_path / "a")]) == 0
    out = capsys.readouterr()
    assert "learned positions end at 24" in out.err and (tmp_path / "a" / "model.bin").is_file()
    assert routes == ["direct"]
    assert main([*args, "--model", str(trained["root"] / "model"), "--out", str(tmp_path / "b")]) == 0
    assert routes == ["direct"] and (tmp_path / "b" / "model.bin").is_file()  # post-norm sinusoidal: via MarianMT
    assert main([*args, "--model", str(tmp_path / "pre"), "--out", str(tmp_path / "a")]) == 2
    assert "holds an earlier CTranslate2 model" in capsys.readouterr().err
    assert main([*args, "--model", str(tmp_path / "pre"), "--out", str(tmp_path / "a"), "--force"]) == 0
    capsys.readouterr()
    assert main([*args, "--model", str(tmp_path / "pre"), "--out", str(tmp_path / "c"), "--max-positions", "0"]) == 2
    assert "--max-positions must be a positive integer, got 0" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


def test_a_pre_norm_model_refused_by_marian_is_told_of_the_ctranslate2_export_which_takes_it(tmp_path, capsys):
    pytest.importorskip("ctranslate2", reason="ctranslate2 is not installed (pip install ctranslate2)")
    _direct_model(DIRECT["pre-norm"], tmp_path / "pre")
    assert main(["export", "--model", str(tmp_path / "pre"), "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert "or export it to CTranslate2 (attnkit export --format ctranslate2), which takes pre-norm models" in err
    assert not (tmp_path / "m").exists()
    # what it advises works
    assert main(["export", "--model", str(tmp_path / "pre"), "--out", str(tmp_path / "c"), "--format", "ctranslate2"]) == 0
    assert (tmp_path / "c" / "model.bin").is_file()


# ------------------------------------------------------------------------------------- refusals and the command


@pytest.mark.parametrize("options, says", [
    (dict(norm_first=True), "model.norm_first: false"),
    (dict(positions="learned"), "model.positions: sinusoidal"),
])
def test_unexpressible_configs_are_refused_saying_what_to_change(options, says, tmp_path):
    model = build_model(TransformerConfig(**{**EXPORTABLE, **options}), 20, 20)
    save_model(model, tmp_path / "model")
    with pytest.raises(ExportError, match=says):
        export_marian(tmp_path / "model", tmp_path / "marian")
    assert not (tmp_path / "marian").exists()


def test_rnn_models_and_overwriting_a_model_are_refused(tmp_path):
    save_model(build_model(RNNConfig(embed_dim=8, hidden=8), 20, 20), tmp_path / "rnn")
    with pytest.raises(ExportError, match="only Transformer"):
        export_marian(tmp_path / "rnn", tmp_path / "marian")
    save_model(build_model(TransformerConfig(**EXPORTABLE), 20, 20), tmp_path / "model")
    with pytest.raises(ExportError, match="overwrite"):
        export_marian(tmp_path / "model", tmp_path / "model")


@pytest.mark.parametrize("norm_first, side", [(False, "source"), (True, "target")])
def test_a_tokenizer_of_another_size_than_the_model_is_refused_naming_the_model_folder(norm_first, side, tmp_path,
                                                                                      capsys):
    """Post-norm: the MarianMT export and the CTranslate2 export through it; pre-norm: the direct
    CTranslate2 route. Each names the folder whose tokenizers.json disagrees with its model."""
    src_tok, tgt_tok = CharTokenizer.train(["机器翻译 注意力"]), CharTokenizer.train(["attention"])
    sizes = {"source": src_tok.vocab_size, "target": tgt_tok.vocab_size}
    model_sizes = {**sizes, side: sizes[side] + 3}
    folder = tmp_path / "model"
    save_model(build_model(TransformerConfig(**{**EXPORTABLE, "norm_first": norm_first}), model_sizes["source"],
                           model_sizes["target"]), folder)
    save_tokenizers(folder, src_tok, tgt_tok)
    says = (f"{folder}: the {side} tokenizer (tokenizers.json) has {sizes[side]} ids but the model (config.json) has "
            f"{model_sizes[side]}: the tokenizers saved there are not this model's")
    with pytest.raises(TokenizerError) as caught:  # translating from the folder refuses it in the same words
        Translator.load(folder)
    assert str(caught.value) == says
    if not norm_first:
        with pytest.raises(ExportError) as caught:
            export_marian(folder, tmp_path / "marian")
        assert str(caught.value) == says and not (tmp_path / "marian").exists()
        assert main(["export", "--model", str(folder), "--out", str(tmp_path / "marian")]) == 2
        assert says in capsys.readouterr().err
    pytest.importorskip("ctranslate2", reason="ctranslate2 is not installed (pip install ctranslate2)")
    from attnkit.interop.ct2 import export_model_ctranslate2

    with pytest.raises(ExportError) as caught:
        export_model_ctranslate2(folder, tmp_path / "ct2")
    assert str(caught.value) == says and not (tmp_path / "ct2").exists()


def test_vocabularies_of_another_size_than_the_model_are_refused_by_the_ctranslate2_spec():
    """Pieces given directly (no model folder to name): the message says which side and both sizes."""
    pytest.importorskip("ctranslate2", reason="ctranslate2 is not installed (pip install ctranslate2)")
    from attnkit.interop.ct2 import ctranslate2_spec

    model = build_model(TransformerConfig(**EXPORTABLE), 20, 20)
    pieces = [f"p{k}" for k in range(20)]
    with pytest.raises(ExportError) as caught:
        ctranslate2_spec(model, pieces, pieces[:-1])
    assert str(caught.value) == "the target tokenizer has 19 ids but the model has 20"


def test_export_command(trained, tmp_path, capsys):
    model_dir = trained["root"] / "model"
    assert main(["export", "--model", str(model_dir), "--format", "marian", "--out", str(tmp_path / "m")]) == 0
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["model_type"] == "marian" and config["decoder_start_token_id"] == 1
    save_model(build_model(TransformerConfig(**{**EXPORTABLE, "norm_first": True}), 20, 20), tmp_path / "pre")
    assert main(["export", "--model", str(tmp_path / "pre"), "--format", "marian", "--out", str(tmp_path / "x")]) == 2
    assert "model.norm_first: false" in capsys.readouterr().err
    assert main(["export", "--model", str(tmp_path / "nothing"), "--out", str(tmp_path / "x")]) == 2
    assert "holds no attnkit model" in capsys.readouterr().err


def test_export_command_to_ctranslate2(trained, tmp_path, capsys):
    pytest.importorskip("ctranslate2", reason="ctranslate2 is not installed (pip install ctranslate2)")
    args = ["export", "--model", str(trained["root"] / "model"), "--format", "ctranslate2", "--out", str(tmp_path / "c")]
    assert main(args) == 0 and (tmp_path / "c" / "model.bin").is_file()
    assert main(args) == 2 and "holds an earlier CTranslate2 model" in capsys.readouterr().err
    assert main([*args, "--force", "--quantization", "int8"]) == 0
    save_model(build_model(TransformerConfig(**EXPORTABLE), 20, 20), tmp_path / "bare")
    assert main(["export", "--model", str(tmp_path / "bare"), "--format", "ctranslate2", "--out", str(tmp_path / "d")]) == 2
    assert "tokenizers" in capsys.readouterr().err


def _tree(folder) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_export_never_writes_into_a_training_run_or_a_foreign_folder(trained, tmp_path, capsys):
    import shutil

    run = tmp_path / "run1"  # a training --out: recipe, log, best/
    shutil.copytree(trained["root"] / "model", run / "best")
    (run / "recipe.yaml").write_text("data: {}\n")
    (run / "log.jsonl").write_text("{}\n")
    before = _tree(run)
    for fmt in ("marian", "ctranslate2"):
        for force in ([], ["--force"]):
            assert main(["export", "--model", str(run), "--format", fmt, "--out", str(run), *force]) == 2
            assert "Traceback" not in capsys.readouterr().err
            assert _tree(run) == before
    assert main(["translate", "--model", str(run), "--beam", "1", "机器"]) == 0  # still a working model
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.json").write_text('{"model_type": "marian", "mine": 1}')  # not all of an export's files
    (mine / "notes.txt").write_text("keep")
    before = _tree(mine)
    assert main(["export", "--model", str(run), "--out", str(mine), "--force"]) == 2
    assert "is not empty (2 entries" in capsys.readouterr().err and _tree(mine) == before


def test_export_replaces_an_earlier_marian_export_only_with_force(trained, tmp_path, capsys):
    hf = tmp_path / "hf"
    args = ["export", "--model", str(trained["root"] / "model"), "--out", str(hf)]
    assert main(args) == 0
    first = _tree(hf)
    (hf / "config.json").write_text(json.dumps({**json.loads(first["config.json"]), "d_model": 1}))
    assert main(args) == 2
    assert f"{hf} holds an earlier MarianMT export" in capsys.readouterr().err
    assert json.loads((hf / "config.json").read_text())["d_model"] == 1  # not replaced silently
    assert main([*args, "--force"]) == 0
    assert _tree(hf) == first


def _an_earlier_export(trained, tmp_path):
    """A MarianMT export in ``tmp_path/hf``: ``(folder, the forced export's arguments, its files)``."""
    hf = tmp_path / "hf"
    args = ["export", "--model", str(trained["root"] / "model"), "--out", str(hf), "--force"]
    assert main(args) == 0
    return hf, args, _tree(hf)


def test_a_failed_forced_export_keeps_the_earlier_one_and_leaves_no_partial_one(trained, tmp_path, monkeypatch,
                                                                              capsys):
    import attnkit.interop.marian as marian
    from attnkit.text import TokenizerError

    hf, args, first = _an_earlier_export(trained, tmp_path)

    def fail(*_, **__):
        raise TokenizerError("this tokenizer cannot be exported")

    monkeypatch.setattr(marian, "_write_tokenizers", fail)
    assert main(args) == 2
    assert "this tokenizer cannot be exported" in capsys.readouterr().err
    assert _tree(hf) == first and sorted(p.name for p in tmp_path.iterdir()) == ["hf"]


def test_a_failed_forced_ctranslate2_export_keeps_the_earlier_one(trained, tmp_path, monkeypatch, capsys):
    pytest.importorskip("ctranslate2", reason="ctranslate2 is not installed (pip install ctranslate2)")
    import attnkit.interop.ct2 as ct2
    from attnkit.interop.marian import ExportError

    c = tmp_path / "c"
    args = ["export", "--model", str(trained["root"] / "model"), "--format", "ctranslate2", "--out", str(c), "--force"]
    assert main(args) == 0
    first = _tree(c)

    class Failing:
        def __init__(self, marian_dir):
            pass

        def convert(self, output_dir, **_):
            Path(output_dir).mkdir()
            (Path(output_dir) / "model.bin").write_bytes(b"half")
            raise ExportError("conversion failed")

    monkeypatch.setattr(ct2, "_converter_class", lambda: Failing)
    assert main(args) == 2
    assert "conversion failed" in capsys.readouterr().err
    assert _tree(c) == first and sorted(p.name for p in tmp_path.iterdir()) == ["c"]


def test_ctranslate2_export_prints_no_progress_bar_or_sacremoses_advice(trained, tmp_path, capsys):
    import warnings

    pytest.importorskip("ctranslate2", reason="ctranslate2 is not installed (pip install ctranslate2)")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert main(["export", "--model", str(trained["root"] / "model"), "--format", "ctranslate2",
                     "--out", str(tmp_path / "c")]) == 0
    err = capsys.readouterr().err
    assert "Loading weights" not in err and "it/s" not in err
    assert not [w for w in seen if "sacremoses" in str(w.message)]
    from transformers.utils import logging as hf_logging

    assert hf_logging.is_progress_bar_enabled()  # restored for the rest of the process


def test_export_writes_into_the_out_folder_itself_keeping_a_symlink_its_mode_and_the_current_folder(
        trained, tmp_path, monkeypatch, capsys):
    import os
    import stat

    model = str(trained["root"] / "model")
    real = tmp_path / "real"
    real.mkdir()
    real.chmod(0o2750)
    link = tmp_path / "link"
    link.symlink_to(real)
    for force in ([], ["--force"]):  # into the empty folder, then over the earlier export
        assert main(["export", "--model", model, "--out", str(link), *force]) == 0
        assert link.is_symlink() and (real / "model.safetensors").is_file()
        assert stat.S_IMODE(real.stat().st_mode) == 0o2750
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    assert main(["export", "--model", model, "--out", "."]) == 0 and (here / "config.json").is_file()
    assert main(["export", "--model", model, "--out", ".", "--force"]) == 0 and Path(os.getcwd()) == here
    # a staging folder left by a killed export is the export's own: cleaned up, never in the way
    (here / ".attnkit-export-123-abcd").mkdir()
    (here / ".attnkit-export-123-abcd" / "model.safetensors").write_bytes(b"half")
    assert main(["export", "--model", model, "--out", ".", "--force"]) == 0
    assert not [p for p in here.iterdir() if p.name.startswith(".attnkit-export-")]


def test_ctranslate2_force_never_replaces_a_folder_holding_other_files(trained, tmp_path, capsys):
    pytest.importorskip("ctranslate2", reason="ctranslate2 is not installed (pip install ctranslate2)")
    c = tmp_path / "c"
    args = ["export", "--model", str(trained["root"] / "model"), "--format", "ctranslate2", "--out", str(c)]
    assert main(args) == 0
    (c / "notes.txt").write_text("mine")
    assert main([*args, "--force"]) == 2
    assert "is not an earlier CTranslate2 model" in capsys.readouterr().err and (c / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("fmt", ["marian", "ctranslate2"])
@pytest.mark.parametrize("exists", [True, False])
def test_an_out_that_cannot_be_written_in_is_named_as_out(trained, tmp_path, monkeypatch, capsys, fmt, exists):
    """A read-only place (simulated: root may write anywhere): the message named the export's hidden staging
    folder ('out/.attnkit-export-123-ab12cd34: Operation not permitted'), and an --out created for the
    export was left behind, empty."""
    if fmt == "ctranslate2":
        pytest.importorskip("ctranslate2", reason="ctranslate2 is not installed (pip install ctranslate2)")
    from attnkit.interop.marian import STAGING_PREFIX

    real_mkdir, real_makedirs = Path.mkdir, os.makedirs

    def refused(path):
        return PermissionError(13, "Permission denied", str(path))

    def mkdir(self, *args, **kwargs):
        if self.name.startswith(STAGING_PREFIX):
            raise refused(self)
        return real_mkdir(self, *args, **kwargs)

    def makedirs(name, *args, **kwargs):
        if Path(name).name.startswith(STAGING_PREFIX):
            raise refused(name)
        return real_makedirs(name, *args, **kwargs)

    out = tmp_path / "ro"
    if exists:
        out.mkdir()
    monkeypatch.setattr(Path, "mkdir", mkdir)
    monkeypatch.setattr(os, "makedirs", makedirs)
    assert main(["export", "--model", str(trained["root"] / "model"), "--format", fmt, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err == f"attnkit export: error: --out {out}: cannot write in it (Permission denied)\n"
    assert out.exists() == exists and (not exists or not any(out.iterdir()))


def test_a_failure_while_moving_the_files_in_says_so_and_force_can_export_again(trained, tmp_path, monkeypatch,
                                                                                 capsys):
    import os

    import attnkit.interop.marian as marian

    out, args, first = _an_earlier_export(trained, tmp_path)
    real, calls = os.replace, []

    def fails_third(src, dst):
        calls.append(Path(dst).name)
        if len(calls) == 3:
            raise PermissionError(1, "Operation not permitted", str(dst))
        return real(src, dst)

    monkeypatch.setattr(marian.os, "replace", fails_third)
    assert main(args) == 2
    assert "holds part of each export and no config.json, so it loads as no model: export again with --force" \
        in capsys.readouterr().err
    assert "config.json" not in calls  # the file that marks a complete export is moved in last
    assert not (out / "config.json").exists()  # the earlier one's went first: the mix loads as nothing
    monkeypatch.undo()
    assert main([a for a in args if a != "--force"]) == 2
    assert "holds an interrupted MarianMT export (no config.json)" in capsys.readouterr().err
    assert main(args) == 0 and _tree(out) == first  # the same export again: as before


def test_an_interrupted_ctranslate2_move_leaves_no_model_bin_and_force_exports_again(trained, tmp_path, monkeypatch,
                                                                                      capsys):
    import os

    pytest.importorskip("ctranslate2", reason="ctranslate2 is not installed (pip install ctranslate2)")
    import attnkit.interop.marian as marian

    c = tmp_path / "c"
    args = ["export", "--model", str(trained["root"] / "model"), "--format", "ctranslate2", "--out", str(c), "--force"]
    assert main(args) == 0
    first = _tree(c)
    real = os.replace

    def fails_on_a_vocabulary(src, dst):
        if "vocabulary" in Path(dst).name:
            raise OSError(28, "No space left on device", str(dst))
        return real(src, dst)

    monkeypatch.setattr(marian.os, "replace", fails_on_a_vocabulary)
    assert main(args) == 2
    assert "no model.bin, so it loads as no model" in capsys.readouterr().err
    assert not (c / "model.bin").exists()
    monkeypatch.undo()
    assert main(args) == 0 and _tree(c) == first


def test_a_staging_folder_of_an_export_still_running_is_left_to_it(trained, tmp_path):
    import os

    from attnkit.interop.marian import staged_entries

    out = tmp_path / "hf"
    mine = out / f".attnkit-export-{os.getpid()}-abcd"  # this process: still running
    gone = out / ".attnkit-export-999999999-abcd"  # no such process
    for folder in (mine, gone):
        folder.mkdir(parents=True)
    assert staged_entries(out) == [] and mine.is_dir() and not gone.exists()
