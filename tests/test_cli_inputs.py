"""Bad input to the commands gets one clear line naming the file, line or flag (exit 2), never a
traceback or a silent wrong answer, and nothing the user had is lost."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from attnkit.cli import UserError, build_parser, main
from attnkit.models import TransformerConfig, build_model, save_model
from attnkit.text import save_tokenizers
from attnkit.text.char import CharTokenizer

pytestmark = pytest.mark.usefixtures("one_thread")

SOURCES = ["机器翻译", "注意力", "你好", "谢谢"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A random tiny post-norm Transformer with character tokenisers, saved as a model folder."""
    torch.manual_seed(0)
    src, tgt = CharTokenizer.train(SOURCES), CharTokenizer.train(["machine translation attention hello thanks"])
    config = TransformerConfig(d_model=16, heads=2, encoder_layers=1, decoder_layers=1, ffn_dim=32, dropout=0.0,
                               norm_first=False)
    folder = tmp_path_factory.mktemp("model") / "m"
    save_model(build_model(config, src.vocab_size, tgt.vocab_size), folder)
    save_tokenizers(folder, src, tgt)
    return folder


@pytest.fixture
def copy(model_dir, tmp_path):
    """A copy of the model folder that a test may damage."""
    def make(name: str = "copy") -> Path:
        return Path(shutil.copytree(model_dir, tmp_path / name))
    return make


def error_of(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


# ------------------------------------------------------------------------------- damaged model folders

MODEL_COMMANDS = {
    "translate": lambda m, tmp: ["translate", "--model", str(m), "你好"],
    "evaluate": lambda m, tmp: ["evaluate", "--model", str(m), "--test", str(tmp / "test.tsv")],
    "plot": lambda m, tmp: ["plot", "--model", str(m), "你好", "--output", str(tmp / "p.png")],
    "report": lambda m, tmp: ["report", "--model", str(m), "--input", str(tmp / "in.txt"), "--output",
                              str(tmp / "r.html")],
    "info": lambda m, tmp: ["info", "--model", str(m)],
    "export": lambda m, tmp: ["export", "--model", str(m), "--out", str(tmp / "exported")],
}


@pytest.fixture
def inputs(tmp_path) -> Path:
    (tmp_path / "test.tsv").write_text("Hello.\t你好。\tCC-BY\n", encoding="utf-8")
    (tmp_path / "in.txt").write_text("你好\n", encoding="utf-8")
    return tmp_path


@pytest.mark.parametrize("command", sorted(MODEL_COMMANDS))
def test_a_truncated_weights_file_is_named(command, copy, inputs, capsys):
    m = copy()
    data = (m / "model.safetensors").read_bytes()
    (m / "model.safetensors").write_bytes(data[:1000])
    assert main(MODEL_COMMANDS[command](m, inputs)) == 2
    assert f"{m / 'model.safetensors'}: not a readable weights file (" in error_of(capsys)
    assert not (inputs / "exported").exists()


@pytest.mark.parametrize("beam", ["1", "2"])
def test_a_model_folder_whose_name_is_not_utf8_loads_and_translates(beam, model_dir, tmp_path, capsysbinary):
    """safetensors opens only paths that are valid UTF-8: a model in a folder named with the byte 0xff (as
    Linux allows) was "not a readable weights file". It loads, and translates as the same folder elsewhere."""
    from attnkit.models import load_model

    odd = os.fsencode(tmp_path) + b"/model\xff"
    os.mkdir(odd)
    for name in os.listdir(model_dir):
        (shutil.copytree if (model_dir / name).is_dir() else shutil.copy)(model_dir / name, os.fsdecode(odd + b"/" + os.fsencode(name)))
    folder = Path(os.fsdecode(odd))
    (model, meta), (ref, ref_meta) = load_model(folder), load_model(model_dir)
    assert meta == ref_meta and model.state_dict().keys() == ref.state_dict().keys()
    assert all(torch.equal(model.state_dict()[k], ref.state_dict()[k]) for k in ref.state_dict())
    outputs = []
    for m in (folder, model_dir):
        assert main(["translate", "--model", str(m), "--beam", beam, "--json", *SOURCES]) == 0
        outputs.append(capsysbinary.readouterr().out)
    assert outputs[0] == outputs[1] and outputs[0].count(b"\n") == len(SOURCES)
    assert main(["info", "--model", str(folder)]) == 0 and b"transformer:" in capsysbinary.readouterr().out


@pytest.mark.parametrize("command", sorted(MODEL_COMMANDS))
def test_a_config_that_does_not_match_the_weights_is_named(command, copy, inputs, capsys):
    m = copy()
    meta = json.loads((m / "config.json").read_text())
    meta["model"]["ffn_dim"] = 48
    (m / "config.json").write_text(json.dumps(meta))
    assert main(MODEL_COMMANDS[command](m, inputs)) == 2
    err = error_of(capsys)
    assert f"{m / 'config.json'} does not match the weights in {m / 'model.safetensors'}: size mismatch" in err


@pytest.mark.parametrize("command", sorted(MODEL_COMMANDS))
def test_an_unknown_model_kind_names_config_json(command, copy, inputs, capsys):
    m = copy()
    meta = json.loads((m / "config.json").read_text())
    meta["model"]["kind"] = "lstm"
    (m / "config.json").write_text(json.dumps(meta))
    assert main(MODEL_COMMANDS[command](m, inputs)) == 2
    assert f"{m / 'config.json'}: kind must be one of" in error_of(capsys)


@pytest.mark.parametrize("command", ["translate", "evaluate", "plot", "report", "export"])
def test_a_corrupt_sentencepiece_model_is_named(command, copy, inputs, capsys):
    m = copy()
    tok = m / "tgt_tokenizer"
    shutil.rmtree(tok)
    tok.mkdir()
    (tok / "tokenizer.json").write_text(json.dumps({"format": "attnkit-tokenizer", "version": 1,
                                                    "kind": "sentencepiece", "model_file": "sentencepiece.model"}))
    (tok / "sentencepiece.model").write_bytes(b"not a model\n")
    assert main(MODEL_COMMANDS[command](m, inputs)) == 2
    assert f"{tok / 'sentencepiece.model'}: not a sentencepiece model" in error_of(capsys)



@pytest.mark.parametrize("side", ["source", "target"])
@pytest.mark.parametrize("command", ["translate", "evaluate", "plot", "report", "export"])
def test_tokenizers_of_another_model_are_refused_naming_the_folder(command, side, copy, inputs, capsys):
    # A target tokenizer with more pieces than the model's output would decode its ids as other pieces (a
    # wrong translation, silently); a source one with more ids would index past the embeddings.
    m = copy()
    src, tgt = CharTokenizer.train(SOURCES), CharTokenizer.train(["machine translation attention hello thanks"])
    other = CharTokenizer.train(SOURCES + ["machine translation attention hello thanks extra words: 早上好"])
    save_tokenizers(m, other if side == "source" else src, other if side == "target" else tgt)
    size = (src if side == "source" else tgt).vocab_size
    assert main(MODEL_COMMANDS[command](m, inputs)) == 2
    err = error_of(capsys)
    assert f"{m}" in err and f"the {side} tokenizer" in err and f"has {other.vocab_size} ids but the model" in err
    assert err.rstrip().endswith(f"{size}") or f"has {size}:" in err
    assert not (inputs / "exported").exists() and not (inputs / "p.png").exists() and not (inputs / "r.html").exists()

@pytest.mark.parametrize("command", ["translate", "info", "export"])
def test_an_exported_folder_given_as_a_model_says_which_engine_runs_it(command, inputs, tmp_path, capsys):
    marian = tmp_path / "marian"
    marian.mkdir()
    (marian / "config.json").write_text(json.dumps({"model_type": "marian", "d_model": 16}))
    (marian / "model.safetensors").write_bytes(b"")
    assert main(MODEL_COMMANDS[command](marian, inputs)) == 2
    assert "a Hugging Face 'marian' model config, not an attnkit one: run that folder with transformers" \
        in error_of(capsys)
    ct2 = tmp_path / "ct2"
    ct2.mkdir()
    for name in ("model.bin", "config.json", "shared_vocabulary.json"):
        (ct2 / name).write_text("{}")
    assert main(MODEL_COMMANDS[command](ct2, inputs)) == 2
    assert "it looks like a CTranslate2 model: run it with ctranslate2.Translator" in error_of(capsys)


def test_saved_model_files_honour_the_umask(model_dir, tmp_path):
    old = os.umask(0o022)
    try:
        save_model(build_model(TransformerConfig(d_model=8, heads=2, encoder_layers=1, decoder_layers=1, ffn_dim=8),
                               8, 8), tmp_path / "m")
    finally:
        os.umask(old)
    for name in ("config.json", "model.safetensors"):
        assert stat.S_IMODE((tmp_path / "m" / name).stat().st_mode) == 0o644, name
    assert not [p for p in (tmp_path / "m").iterdir() if p.name.startswith(".")]  # no temporary file left


def test_saving_a_model_never_sets_the_umask(tmp_path, monkeypatch):
    """Setting the umask to read it races with other threads creating files: it is only read."""
    real_umask = os.umask
    old = real_umask(0o027)
    try:
        def refuse(mask):
            raise AssertionError(f"os.umask({mask:o}) called while saving")

        monkeypatch.setattr(os, "umask", refuse)
        save_model(build_model(TransformerConfig(d_model=8, heads=2, encoder_layers=1, decoder_layers=1, ffn_dim=8),
                               8, 8), tmp_path / "m")
        monkeypatch.undo()
    finally:
        real_umask(old)
    for name in ("config.json", "model.safetensors"):
        assert stat.S_IMODE((tmp_path / "m" / name).stat().st_mode) == 0o640, name


# ----------------------------------------------------------------------------------------------- info


def test_info_accepts_a_training_out_folder(model_dir, tmp_path, capsys):
    shutil.copytree(model_dir, tmp_path / "run" / "best")
    assert main(["info", "--model", str(tmp_path / "run"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["kind"] == "transformer"


@pytest.mark.parametrize("text,says", [
    ("model: 5\n", "its 'model' section is 5"),
    ("model: transformer\n", "its 'model' section is 'transformer'"),
    ("kind: transformer\nd_model: [1]\n", "d_model must be a positive integer"),
    # quoted text is truthy: it would count a model with the option on
    ('model: {kind: transformer, share_embeddings: "no"}\n', "share_embeddings must be true or false, got 'no'"),
    ('model: {kind: transformer, tie_output: "false"}\n', "tie_output must be true or false, got 'false'"),
    ("model: {kind: transformer, norm_first: maybe}\n", "norm_first must be true or false, got 'maybe'"),
    ('model: {kind: seq2seq-attention, bidirectional: "no"}\n', "bidirectional must be true or false, got 'no'"),
    ('model: {kind: seq2seq-attention, attention: {temperature: "2"}}\n',
     "attention.temperature must be a number > 0, got '2'"),
])
def test_info_refuses_a_config_that_is_not_a_model_config(text, says, tmp_path, capsys):
    (tmp_path / "c.yaml").write_text(text)
    assert main(["info", "--config", str(tmp_path / "c.yaml")]) == 2
    err = error_of(capsys)
    assert f"attnkit info: error: {tmp_path / 'c.yaml'}:" in err and says in err


def test_info_counts_a_huge_vocabulary_without_allocating_it(tmp_path, capsys):
    (tmp_path / "c.yaml").write_text("model: {kind: transformer, d_model: 64, heads: 4}\n")
    assert main(["info", "--config", str(tmp_path / "c.yaml"), "--json"]) == 0
    small = json.loads(capsys.readouterr().out)
    assert main(["info", "--config", str(tmp_path / "c.yaml"), "--json", "--src-vocab", "100000000000"]) == 0
    big = json.loads(capsys.readouterr().out)
    assert big["by_module"]["src_embed"] == 100_000_000_000 * 64
    assert big["parameters"] - small["parameters"] == (100_000_000_000 - 8000) * 64
    assert main(["info", "--config", str(tmp_path / "c.yaml"), "--tgt-vocab", "2"]) == 2
    assert "--tgt-vocab must be at least 4" in error_of(capsys)


# ----------------------------------------------------------------------------------------------- demo


def demo_cache(model_dir: Path, folder: Path, focus: str) -> Path:
    """A demo cache as the demo writes it (marker, best/), holding the tiny model: no training needed."""
    from attnkit.demo.cli import MARKER

    shutil.copytree(model_dir, folder / "best")
    (folder / MARKER).write_text(json.dumps({"focus": focus}), encoding="utf-8")
    return folder


@pytest.mark.parametrize("layout", ["user-files", "training-out-without-best"])
def test_demo_never_deletes_a_folder_that_is_not_its_cache(layout, tmp_path, capsys):
    folder = tmp_path / "mine"
    folder.mkdir()
    if layout == "user-files":
        (folder / "thesis.tex").write_text("years of work")
        (folder / "data").mkdir()
        (folder / "data" / "a.tsv").write_text("x\ty\n")
    else:  # an `attnkit train --out` that has not validated yet
        (folder / "recipe.yaml").write_text("data: {format: manythings, train: t.tsv}\n")
        (folder / "log.jsonl").write_text("{}\n")
        (folder / "checkpoints").mkdir()
    before = sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))
    assert main(["demo", "--steps", "2", "--cache", str(folder), "--heatmap", str(tmp_path / "h.png"), "你好"]) == 2
    assert "is not empty and is not a demo cache" in error_of(capsys)
    assert sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) == before
    assert main(["demo", "--steps", "2", "--cache", str(folder), "--heatmap", str(tmp_path / "h.png"), "--retrain",
                 "你好"]) == 2
    assert f"--cache {folder}: the folder is not empty and is not a demo cache" in error_of(capsys)
    assert sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) == before


def test_demo_replaces_only_its_own_cache(tmp_path):
    from attnkit.demo.cli import MARKER, _prepare_cache, cached_focus

    cache = tmp_path / "cache"
    assert _prepare_cache(cache, "你好", ["你好"], retrain=False)  # a new folder: train into it
    assert cached_focus(cache) == "你好" and (cache / MARKER).is_file()
    (cache / "log.jsonl").write_text("{}\n")  # a demo run killed before best/: trained again, from scratch
    assert _prepare_cache(cache, "你好", ["你好"], retrain=False)
    assert sorted(p.name for p in cache.iterdir()) == [MARKER]
    (cache / "best").mkdir()
    (cache / "best" / "model.safetensors").write_bytes(b"")
    assert not _prepare_cache(cache, "你好", ["你好"], retrain=False)  # cached: used as it is
    assert (cache / "best").is_dir()
    assert _prepare_cache(cache, "电脑", ["电脑"], retrain=True)  # --retrain replaces it
    assert cached_focus(cache) == "电脑" and not (cache / "best").exists()
    # a file of the user's in the cache (a heatmap written there, notes) is never deleted with the model
    (cache / "best").mkdir()
    (cache / "best" / "model.safetensors").write_bytes(b"")
    (cache / "h.png").write_bytes(b"my heatmap")
    (cache / "notes.txt").write_text("mine")
    for focus, retrain in (("电脑", True), ("你好", True)):
        with pytest.raises(UserError, match=r"holds files the demo did not write \(h.png, notes.txt\)"):
            _prepare_cache(cache, focus, [focus], retrain=retrain)
        assert (cache / "h.png").read_bytes() == b"my heatmap" and (cache / "notes.txt").read_text() == "mine"
        assert (cache / "best" / "model.safetensors").is_file() and cached_focus(cache) == "电脑"
    assert not _prepare_cache(cache, "电脑", ["电脑"], retrain=False)  # the cached model is still used


def test_demo_recognises_a_cache_written_before_the_marker(tmp_path):
    import yaml

    from attnkit.demo.cli import RECIPE, cached_focus
    from attnkit.train import recipe_from_dict

    cache = tmp_path / "old"
    cache.mkdir()
    recipe = recipe_from_dict({**RECIPE, "data": {**RECIPE["data"], "focus": "好你"}})
    (cache / "recipe.yaml").write_text(yaml.safe_dump(json.loads(json.dumps(recipe.to_dict())), allow_unicode=True))
    (cache / "best").mkdir()
    assert cached_focus(cache) == "好你"
    (cache / ".old-best").mkdir()  # left by a run killed while it replaced best/
    assert cached_focus(cache) == "好你"
    (cache / "notes.txt").write_text("mine")  # anything else in it: not the demo's layout
    assert cached_focus(cache) is None


def test_demo_replaces_a_cache_written_before_focus_only_with_retrain(tmp_path):
    import yaml

    from attnkit.demo.cli import MARKER, RECIPE, _prepare_cache, cached_focus

    cache = tmp_path / "old"
    (cache / "best").mkdir(parents=True)
    (cache / "best" / "model.safetensors").write_bytes(b"")
    (cache / "checkpoints").mkdir()
    older = {**RECIPE, "train": {"max_steps": 1_000_000, "eval_every": 400, "log_every": 25, "max_tokens": 3072,
                                 "warmup": 300, "lr": 1.5e-3, "patience": None}}  # no data.focus: whole dictionary
    (cache / "recipe.yaml").write_text(yaml.safe_dump(older, allow_unicode=True))
    assert cached_focus(cache) is None
    with pytest.raises(UserError, match="holds a demo model from an older attnkit .* pass --retrain to replace it"):
        _prepare_cache(cache, "你好", ["你好"], retrain=False)
    assert (cache / "best" / "model.safetensors").is_file()
    assert _prepare_cache(cache, "你好", ["你好"], retrain=True)
    assert sorted(p.name for p in cache.iterdir()) == [MARKER] and cached_focus(cache) == "你好"


def test_demo_retrain_never_takes_a_users_own_focused_run_for_an_older_cache(tmp_path):
    import yaml

    from attnkit.demo.cli import RECIPE, _prepare_cache

    run = tmp_path / "mine"
    (run / "best").mkdir(parents=True)
    (run / "best" / "model.safetensors").write_bytes(b"weeks of training")
    # the demo's data, tokenizer and model, but a focus and training settings of one's own
    mine = {**RECIPE, "data": {**RECIPE["data"], "focus": "我的"},
            "train": {**RECIPE["train"], "max_steps": 200_000, "lr": 5e-4, "eval_every": 1000}}
    (run / "recipe.yaml").write_text(yaml.safe_dump(mine, allow_unicode=True))
    for retrain in (False, True):
        with pytest.raises(UserError, match="is not a demo cache"):
            _prepare_cache(run, "你好", ["你好"], retrain=retrain)
    assert (run / "best" / "model.safetensors").read_bytes() == b"weeks of training"


def test_demo_writes_its_new_marker_only_after_deleting_the_earlier_model(model_dir, tmp_path, monkeypatch):
    import shutil as sh

    from attnkit.demo.cli import _prepare_cache, cached_focus

    cache = demo_cache(model_dir, tmp_path / "cache", "电脑")

    def killed(path, *args, **kwargs):
        raise KeyboardInterrupt  # the process stops while the earlier model is being deleted

    monkeypatch.setattr(sh, "rmtree", killed)
    with pytest.raises(KeyboardInterrupt):
        _prepare_cache(cache, "你好", ["你好"], retrain=True)
    monkeypatch.undo()
    assert cached_focus(cache) == "电脑"  # never the 电脑 model under a 你好 marker
    with pytest.raises(UserError, match="holds the demo model for other phrases"):
        _prepare_cache(cache, "你好", ["你好"], retrain=False)


def test_demo_names_its_default_cache_without_claiming_a_flag(tmp_path, monkeypatch, capsys):
    from attnkit.demo.cli import default_cache

    monkeypatch.setenv("ATTNKIT_HOME", str(tmp_path / "home"))
    cache = default_cache(["你好"])
    cache.mkdir(parents=True)
    (cache / "notes.txt").write_text("mine")
    for retrain in ([], ["--retrain"]):
        assert main(["demo", "--steps", "2", "--heatmap", str(tmp_path / "h.png"), *retrain, "你好"]) == 2
        err = error_of(capsys)
        assert f"the demo cache {cache}: the folder is not empty and is not a demo cache" in err
        assert "--cache " + str(cache) not in err and "pass --cache DIR to use another folder" in err
    assert [p.name for p in cache.iterdir()] == ["notes.txt"]


def test_demo_refuses_a_cache_of_other_phrases_and_uses_its_own(model_dir, tmp_path, capsys):
    cache = demo_cache(model_dir, tmp_path / "c", "你好")
    png = tmp_path / "h.png"
    assert main(["demo", "--cache", str(cache), "--heatmap", str(png), "电脑"]) == 2
    err = error_of(capsys)
    assert f"--cache {cache} holds the demo model for other phrases (the characters 你好)" in err
    assert (cache / "best" / "model.safetensors").is_file()
    png.write_bytes(b"old")
    assert main(["demo", "--cache", str(cache), "--heatmap", str(png), "--beam", "1", "你好"]) == 0
    captured = capsys.readouterr()
    assert "using the cached demo model" in captured.out
    if "no heatmap written" not in captured.out:
        assert png.read_bytes()[:4] == b"\x89PNG"
        assert f"attnkit demo: note: replaced the existing file {png}" in captured.err


@pytest.mark.parametrize("extra,says", [
    (["--beam", "0", "你好"], "--beam must be >= 1, got 0"),
    (["你好", ""], "phrase 2 is empty"),
    ([" "], "phrase 1 is empty"),
    (["--heatmap", "x.jpg", "你好"], "--heatmap x.jpg: use a .png or .svg file name"),
    (["--heatmap", "{tmp}/d.png", "你好"], "d.png: is a folder"),
    (["--heatmap", "{tmp}/no/h.png", "你好"], "does not exist"),
    (["--cache", "{tmp}/file", "你好"], "is a file, not a folder"),
])
def test_demo_options_are_checked_before_training(extra, says, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    (tmp_path / "d.png").mkdir()
    extra = [e.replace("{tmp}", str(tmp_path)) for e in extra]
    args = (["demo", "--steps", "2"] + (["--cache", str(tmp_path / "c")] if "--cache" not in extra else [])
            + (["--heatmap", str(tmp_path / "h.png")] if "--heatmap" not in extra else []) + extra)
    assert main(args) == 2
    assert says in error_of(capsys)
    assert not (tmp_path / "c").exists()
    assert (tmp_path / "file").read_text() == "x"


# ------------------------------------------------------------------------------------------ translate


@pytest.fixture(scope="module")
def short_model(tmp_path_factory) -> Path:
    """A tiny model with learned positions for 8 tokens: a source of more than 7 characters is cut."""
    torch.manual_seed(0)
    src, tgt = CharTokenizer.train(SOURCES), CharTokenizer.train(["hello thanks"])
    config = TransformerConfig(d_model=16, heads=2, encoder_layers=1, decoder_layers=1, ffn_dim=32, dropout=0.0,
                               positions="learned", max_len=8)
    folder = tmp_path_factory.mktemp("short") / "m"
    save_model(build_model(config, src.vocab_size, tgt.vocab_size), folder)
    save_tokenizers(folder, src, tgt)
    return folder


def stdin(monkeypatch, data: bytes) -> None:
    import io
    import sys

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data), encoding="utf-8"))


@pytest.mark.parametrize("args, says", [
    (["translate", "--model", "{m}", "机器\udce9x"], "argument: not valid UTF-8 (byte 0xe9 after '机器')"),
    (["translate", "--model", "{m}", "你好", "\udcff"], "argument 2: not valid UTF-8 (byte 0xff after '')"),
    (["plot", "--model", "{m}", "注意\udcff", "--output", "{tmp}/p.png"], "the sentence to plot: not valid UTF-8"),
    (["demo", "--cache", "{tmp}/cache", "\udcff"], "phrase: not valid UTF-8 (byte 0xff"),
    (["attention", "a\udcffb"], "the sentence: not valid UTF-8 (byte 0xff after 'a')"),
])
def test_a_text_argument_that_is_not_utf8_is_refused_naming_it(args, says, model_dir, tmp_path, capsys):
    """Bytes that are not UTF-8 reach Python as lone surrogates (surrogateescape): refused, as on stdin,
    before any work, rather than written back raw."""
    args = [a.format(m=model_dir, tmp=tmp_path) for a in args]
    assert main(args) == 2
    assert says in error_of(capsys)
    assert not (tmp_path / "p.png").exists() and not (tmp_path / "cache").exists()


def _path_options():
    """Every (command, option) of the command line that names a file or folder."""
    from attnkit.cli import _NOT_PATHS, PATH_OPTIONS

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    return [(name, opt) for name, p in sub.choices.items() for a in p._actions for opt in a.option_strings
            if opt in PATH_OPTIONS and (name, a.option_strings[0]) not in _NOT_PATHS]


@pytest.mark.parametrize("command, option", _path_options())
def test_an_empty_path_is_refused_naming_its_option(command, option, capsys):
    """``--out "$OUT"`` with OUT unset gives an empty path, which Python takes as the current folder: exports,
    caches and outputs went there. Every path option refuses it, before anything else is looked at."""
    with pytest.raises(SystemExit) as stop:
        main([command, option, ""])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert re.search(rf"attnkit {command}: error: argument {option}(/-\w)?: an empty path \(an unset shell variable\?\)",
                     err), err


def test_the_path_options_are_those_of_every_command():
    """The list the empty-path check goes by holds the commands' file and folder options (a new one missing
    from it would take "" as the current folder)."""
    found = set(_path_options())
    assert {("export", "--out"), ("train", "--out"), ("demo", "--cache"), ("translate", "--model"),
            ("evaluate", "--output"), ("attention", "--model-dir"), ("train", "--train")} <= found
    assert ("train", "--model") not in found  # a model kind, not a path
    assert len(found) >= 20


def test_export_to_an_empty_out_writes_nothing_in_the_current_folder(model_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit):
        main(["export", "--model", str(model_dir), "--out", ""])
    assert list(tmp_path.iterdir()) == []


def test_translate_splits_stdin_at_newlines_only(model_dir, monkeypatch, capsys):
    lines = ["你好\u2028谢谢", "机器\x85翻译", "注意\x0c力\x1c你", "", "谢谢"]
    stdin(monkeypatch, ("\r\n".join(lines) + "\r\n").encode("utf-8"))
    assert main(["translate", "--model", str(model_dir), "--beam", "1", "--json"]) == 0
    out = capsys.readouterr().out
    assert out.endswith("\n")
    records = [json.loads(line) for line in out[:-1].split("\n")]
    assert [r["source"] for r in records] == lines  # one output per input line, no \r left on them
    assert records[3]["translation"] == ""
    # and one record per line for readers that split at every Unicode line break (str.splitlines)
    assert [json.loads(line)["source"] for line in out.splitlines()] == lines


def test_translate_refuses_stdin_whose_lines_end_in_a_lone_carriage_return(model_dir, monkeypatch, capsys):
    """A file of CR-only line ends (classic Mac OS) has no LF: it was one line, its sentences translated as one
    and written as one output line, without a word. It is refused, naming the first line holding a CR."""
    stdin(monkeypatch, "你好\n谢谢\r机器翻译\r\n".encode("utf-8"))
    assert main(["translate", "--model", str(model_dir), "--beam", "1"]) == 2
    captured = capsys.readouterr()
    assert "stdin line 2: contains a carriage return (CR) that does not end the line" in error_of_captured(captured)
    assert captured.out == ""


@pytest.mark.parametrize("option,value,says", [
    ("--batch-size", "0", "--batch-size must be >= 1, got 0"),
    ("--batch-size", "-1", "--batch-size must be >= 1, got -1"),
    ("--length-penalty", "nan", "--length-penalty must be a finite number, got nan"),
    ("--length-penalty", "inf", "--length-penalty must be a finite number, got inf"),
])
def test_translate_refuses_bad_numbers(option, value, says, model_dir, capsys):
    assert main(["translate", "--model", str(model_dir), option, value, "你好"]) == 2
    captured = capsys.readouterr()
    assert says in error_of_captured(captured) and captured.out == ""


def error_of_captured(captured) -> str:
    assert "Traceback" not in captured.err
    return captured.err


def test_translate_notes_each_truncated_line(short_model, monkeypatch, capsys):
    stdin(monkeypatch, "你好\n你好谢谢你好谢谢你好\n\n谢谢谢谢谢谢谢谢谢\n".encode("utf-8"))
    assert main(["translate", "--model", str(short_model), "--beam", "1"]) == 0
    captured = capsys.readouterr()
    assert len(captured.out.split("\n")) == 5  # four lines, each ended
    notes = [line for line in captured.err.splitlines() if "truncated" in line]
    assert notes == [f"attnkit translate: note: stdin line {n} was truncated to its first 7 tokens "
                     "(the model's longest source)" for n in (2, 4)]
    assert main(["translate", "--model", str(short_model), "--beam", "1", "你好", "你好谢谢你好谢谢"]) == 0
    assert "argument 2 was truncated" in capsys.readouterr().err
    assert main(["translate", "--model", str(short_model), "--beam", "1", "你好谢谢你好谢"]) == 0  # 7 fit
    assert "truncated" not in capsys.readouterr().err


BEAM_COMMANDS = {
    "translate": lambda m, tmp: ["translate", "--model", str(m), "你好"],
    "evaluate": lambda m, tmp: ["evaluate", "--model", str(m), "--test", str(tmp / "test.tsv"), "--output",
                                str(tmp / "hyps.txt")],
    "plot": lambda m, tmp: ["plot", "--model", str(m), "你好", "--output", str(tmp / "p.png")],
    "plot-decoder": lambda m, tmp: ["plot", "--model", str(m), "你好", "--attention", "decoder", "--output",
                                    str(tmp / "p.png")],
    "report": lambda m, tmp: ["report", "--model", str(m), "--input", str(tmp / "in.txt"), "--output",
                              str(tmp / "r.html")],
}


@pytest.mark.parametrize("command", sorted(BEAM_COMMANDS))
def test_a_beam_no_memory_can_hold_is_refused_before_decoding(command, model_dir, inputs, capsys):
    """--beam 10⁹ would allocate terabytes partway (the kernel kills the process, without a word: --beam 100000
    on a real model was): refused up front, naming --beam, whatever the machine."""
    from attnkit.runtime import available_memory

    if available_memory() is None:
        pytest.skip("no /proc/meminfo: the memory available is unknown and not checked")
    assert main(BEAM_COMMANDS[command](model_dir, inputs) + ["--beam", "1000000000"]) == 2
    captured = capsys.readouterr()
    err = error_of_captured(captured)
    assert "--beam 1000000000: beam search over 1 sentence at a time needs at least " in err
    assert err.count("\n") == 1 and " GiB of memory, more than the " in err and err.endswith("available: use a smaller --beam\n")
    assert captured.out == ""
    assert not any((inputs / name).exists() for name in ("hyps.txt", "p.png", "r.html"))


def test_translate_refuses_the_beam_or_batch_its_estimate_puts_beyond_the_memory(model_dir, monkeypatch, capsys):
    """The limit is the estimate of the largest batch (attnkit.decode.memory), against the memory available:
    settings up to it translate, one above it is refused naming the flag to lower."""
    import attnkit.runtime as runtime
    from attnkit.decode.memory import decoding_bytes
    from attnkit.decode.translator import Translator

    translator = Translator.load(model_dir)
    model = translator.model
    # SOURCES by length in pieces + EOS: 你好 3, 谢谢 3, 注意力 4, 机器翻译 5; in batches of 2, the longer pair
    # decodes for up to 2 × 5 + 10 = 20 steps: the largest
    assert translator.decoding_bytes(SOURCES, beam=3, batch_size=2) == decoding_bytes(model, 2, 3, 5, 20) > (
        decoding_bytes(model, 2, 3, 3, 16))
    assert translator.decoding_bytes(SOURCES, beam=3) == decoding_bytes(model, 4, 3, 5, 20)  # all four at once
    have = translator.decoding_bytes(SOURCES, beam=8, batch_size=64)
    monkeypatch.setattr(runtime, "available_memory", lambda: have)
    assert main(["translate", "--model", str(model_dir), "--beam", "8", *SOURCES]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 4
    assert main(["translate", "--model", str(model_dir), "--beam", "9", *SOURCES]) == 2
    captured = capsys.readouterr()
    need = translator.decoding_bytes(SOURCES, beam=9, batch_size=64)
    assert error_of_captured(captured) == (
        f"attnkit translate: error: --beam 9: beam search over 4 sentences at a time needs at least "
        f"{need / 1024:.1f} KiB of memory, more than the {have / 1024:.1f} KiB available: use a smaller --beam or "
        "--batch-size\n") and captured.out == ""
    assert main(["translate", "--model", str(model_dir), "--beam", "9", "--batch-size", "2", *SOURCES]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 4
    # greedy decoding: only the batch can be too large
    monkeypatch.setattr(runtime, "available_memory", lambda: translator.decoding_bytes(SOURCES, batch_size=2))
    assert main(["translate", "--model", str(model_dir), "--beam", "1", "--batch-size", "2", *SOURCES]) == 0
    capsys.readouterr()
    assert main(["translate", "--model", str(model_dir), "--beam", "1", *SOURCES]) == 2
    err = error_of(capsys)
    assert "error: --batch-size 64: greedy decoding of 4 sentences at a time needs at least " in err
    assert err.endswith(" available: use a smaller --batch-size\n")


# ------------------------------------------------------------------------------------------- evaluate


@pytest.fixture
def no_model_load(monkeypatch):
    """Loading a model fails the test: the option must be refused before any work."""
    from attnkit.decode.translator import Translator

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the options were checked")
    monkeypatch.setattr(Translator, "load", refuse)


def test_evaluate_reports_the_test_lines_it_skips(model_dir, tmp_path, capsys):
    test = tmp_path / "test.tsv"
    test.write_text("Hello.\t你好。\tCC\nno tab here\nThanks.\t谢谢。\tCC\n\t\tx\n", encoding="utf-8")
    assert main(["evaluate", "--model", str(model_dir), "--test", str(test), "--beam", "1", "--json"]) == 0
    captured = capsys.readouterr()
    assert f"skipped {test}:2: found 1 tab-separated columns" in captured.err
    assert f"skipped {test}:4: empty Chinese side" in captured.err
    assert f"skipped 2 of 4 lines of {test}; scoring the other 2" in captured.err
    assert set(json.loads(captured.out)) == {"bleu", "chrf"}


@pytest.mark.parametrize("extra,says", [
    (["--beam", "0"], "--beam must be >= 1, got 0"),
    (["--beam", "-3"], "--beam must be >= 1, got -3"),
    (["--output", "{tmp}/nodir/x.txt"], "nodir does not exist"),
    (["--output", "{tmp}"], "is a folder"),
])
def test_evaluate_checks_its_options_before_translating(extra, says, tmp_path, no_model_load, capsys):
    (tmp_path / "test.tsv").write_text("Hello.\t你好。\tCC\n", encoding="utf-8")
    extra = [e.replace("{tmp}", str(tmp_path)) for e in extra]
    assert main(["evaluate", "--model", "m", "--test", str(tmp_path / "test.tsv"), *extra]) == 2
    assert says in error_of(capsys)


def test_evaluate_notes_a_replaced_output(model_dir, tmp_path, capsys):
    (tmp_path / "test.tsv").write_text("Hello.\t你好。\tCC\n", encoding="utf-8")
    out = tmp_path / "hyps.txt"
    out.write_text("old\n")
    assert main(["evaluate", "--model", str(model_dir), "--test", str(tmp_path / "test.tsv"), "--beam", "1",
                 "--output", str(out)]) == 0
    assert f"attnkit evaluate: note: replaced the existing file {out}" in capsys.readouterr().err
    assert out.read_text() != "old\n" and len(out.read_text().split("\n")) == 2


def test_evaluate_hyp_and_ref_options(tmp_path, capsys):
    (tmp_path / "h.txt").write_text("你好\u2028谢谢\n机器\x85翻译\r\n", encoding="utf-8")  # 2 lines, as wc -l says
    (tmp_path / "r.txt").write_text("你好\u2028谢谢\n机器\x85翻译\n", encoding="utf-8")
    assert main(["evaluate", "--hyp", str(tmp_path / "h.txt"), "--ref", str(tmp_path / "r.txt"), "--json",
                 "--target-lang", "zh"]) == 0
    assert json.loads(capsys.readouterr().out)["bleu"]["score"] == 100.0
    (tmp_path / "r3.txt").write_text("a\nb\nc\n")
    assert main(["evaluate", "--hyp", str(tmp_path / "h.txt"), "--ref", str(tmp_path / "r3.txt")]) == 2
    assert "h.txt has 2 lines but" in error_of(capsys)
    (tmp_path / "e1.txt").write_bytes(b"")
    (tmp_path / "e2.txt").write_bytes(b"\xef\xbb\xbf")  # a byte-order mark alone: no line either
    assert main(["evaluate", "--hyp", str(tmp_path / "e1.txt"), "--ref", str(tmp_path / "e2.txt")]) == 2
    assert f"{tmp_path / 'e1.txt'} and {tmp_path / 'e2.txt'} are empty: no sentences to score" in error_of(capsys)
    assert main(["evaluate", "--hyp", str(tmp_path), "--ref", str(tmp_path / "r.txt")]) == 2
    assert f"--hyp {tmp_path}: is a folder" in error_of(capsys)
    assert main(["evaluate", "--hyp", str(tmp_path / "h.txt"), "--ref", str(tmp_path / "r.txt"),
                 "--output", str(tmp_path / "o.txt")]) == 2
    assert "with --hyp there is none to write" in error_of(capsys)
    assert not (tmp_path / "o.txt").exists()
    for lang in ("english", "e1", "EN", ""):
        with pytest.raises(SystemExit) as exit_:
            main(["evaluate", "--hyp", str(tmp_path / "h.txt"), "--ref", str(tmp_path / "r.txt"), "--target-lang", lang])
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and "argument --target-lang: expected a language code of 2 or 3 lowercase " \
            f"letters such as en, zh or de, got {lang!r}" in err
    for lang, tokenizer in (("de", "13a"), ("en", "13a"), ("yue", "zh"), ("cmn", "zh"), ("zh", "zh")):
        assert main(["evaluate", "--hyp", str(tmp_path / "h.txt"), "--ref", str(tmp_path / "r.txt"), "--json",
                     "--target-lang", lang]) == 0  # Chinese languages: the zh tokenizer; others sacreBLEU's 13a
        assert f"tok:{tokenizer}|" in json.loads(capsys.readouterr().out)["bleu"]["signature"]
    for lang in ("ja", "ko"):
        with pytest.raises(SystemExit):
            main(["evaluate", "--hyp", str(tmp_path / "h.txt"), "--ref", str(tmp_path / "r.txt"), "--target-lang", lang])
        assert f"{lang}: text in this language is not split into words" in capsys.readouterr().err


EVAL_REFS = ["The cat sat on the mat.", "I like tea.", "He is here.", "We go home now."]
EVAL_HYPS = ["The cat sat on a mat.", "I like tea.", "He is there.", "We go home."]


def test_evaluate_reads_lf_crlf_and_a_bom_alike_and_refuses_cr_line_ends(tmp_path, capsys):
    """LF, CRLF and a byte-order mark score as sacreBLEU scores the sentences themselves. Files of CR-only line
    ends were one "sentence" each and scored without a word (BLEU 60.59 for these, where it is 50.05);
    a NUL byte was scored as text; a gzip or UTF-16 file was 'not valid UTF-8' at line 1."""
    import sacrebleu

    expected = round(sacrebleu.corpus_bleu(EVAL_HYPS, [EVAL_REFS]).score, 2)
    hyp, ref = tmp_path / "hyp.txt", tmp_path / "ref.txt"
    for hyp_bytes, ref_bytes in ((b"\n".join(s.encode() for s in EVAL_HYPS) + b"\n",
                                  b"\r\n".join(s.encode() for s in EVAL_REFS) + b"\r\n"),
                                 (b"\xef\xbb\xbf" + "\r\n".join(EVAL_HYPS).encode(),  # no final line end
                                  "\n".join(EVAL_REFS).encode() + b"\n")):
        hyp.write_bytes(hyp_bytes)
        ref.write_bytes(ref_bytes)
        assert main(["evaluate", "--hyp", str(hyp), "--ref", str(ref), "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["bleu"]["score"] == expected
    hyp.write_bytes("\r".join(EVAL_HYPS).encode() + b"\r")
    ref.write_bytes("\r".join(EVAL_REFS).encode() + b"\r")
    assert main(["evaluate", "--hyp", str(hyp), "--ref", str(ref), "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.strip() == (f"attnkit evaluate: error: {hyp}:1: contains a carriage return (CR) that does "
                                    "not end the line (lines must end in LF or CRLF, not CR alone)")
    ref.write_bytes(("\n".join(EVAL_REFS[:2]) + "\n" + EVAL_REFS[2].replace(" ", "\x00") + "\n").encode())
    hyp.write_bytes("\n".join(EVAL_HYPS[:3]).encode() + b"\n")
    assert main(["evaluate", "--hyp", str(hyp), "--ref", str(ref)]) == 2
    assert f"{ref}:3: contains a NUL byte" in error_of(capsys)
    import gzip

    ref.write_bytes(gzip.compress("\n".join(EVAL_REFS).encode()))
    assert main(["evaluate", "--hyp", str(hyp), "--ref", str(ref)]) == 2
    assert f"--ref {ref} is gzip-compressed: decompress it first" in error_of(capsys)
    ref.write_bytes("\n".join(EVAL_REFS).encode("utf-16"))
    assert main(["evaluate", "--hyp", str(hyp), "--ref", str(ref)]) == 2
    assert f"--ref {ref} is UTF-16 text" in error_of(capsys)


# ------------------------------------------------------------------------------- plot, report, explain


def test_plot_refuses_an_empty_sentence_a_folder_and_a_bad_beam(model_dir, tmp_path, no_model_load, capsys):
    (tmp_path / "d.png").mkdir()
    for extra, says in ((["", "--output", str(tmp_path / "a.png")], "the sentence to plot is empty"),
                        (["  ", "--output", str(tmp_path / "a.png")], "the sentence to plot is empty"),
                        (["你好", "--output", str(tmp_path / "d.png")], f"--output {tmp_path / 'd.png'}: is a folder"),
                        (["你好", "--output", str(tmp_path / "no" / "a.png")], "does not exist"),
                        (["你好", "--beam", "0", "--output", str(tmp_path / "a.png")], "--beam must be >= 1")):
        assert main(["plot", "--model", str(model_dir), *extra]) == 2
        assert says in error_of(capsys)
    assert not (tmp_path / "a.png").exists()


def test_plot_and_report_note_a_replaced_output(model_dir, tmp_path, monkeypatch, capsys):
    from attnkit.viz import fonts

    try:
        fonts.cjk_font()
    except fonts.NoCJKFontError:
        pytest.skip("no CJK font: plot refuses to draw Chinese")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "attention.png").write_bytes(b"old")  # the default --output
    assert main(["plot", "--model", str(model_dir), "你好", "--beam", "1"]) == 0
    assert "attnkit plot: note: replaced the existing file attention.png" in capsys.readouterr().err
    assert (tmp_path / "attention.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["plot", "--model", str(model_dir), "你好", "--beam", "1", "--output", "new.svg"]) == 0
    assert "replaced" not in capsys.readouterr().err
    (tmp_path / "in.txt").write_text("你好\n", encoding="utf-8")
    (tmp_path / "report.html").write_text("old")  # the default --output
    assert main(["report", "--model", str(model_dir), "--input", "in.txt", "--beam", "1"]) == 0
    assert "attnkit report: note: replaced the existing file report.html" in capsys.readouterr().err
    assert (tmp_path / "report.html").read_text().startswith("<!DOCTYPE html>")
    (tmp_path / "r.html").mkdir()
    assert main(["report", "--model", str(model_dir), "--input", "in.txt", "--output", "r.html"]) == 2
    assert "--output r.html: is a folder" in error_of(capsys)


def test_plot_help_names_every_kind_of_attention(capsys):
    with pytest.raises(SystemExit):
        main(["plot", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "cross-attention, or the encoder's or decoder's self-attention" in text


@pytest.mark.parametrize("digits", ["-1", "-5", "31", "2147483648", "99999999999"])
def test_explain_refuses_negative_or_huge_digits(digits, capsys):
    assert main(["explain", "toy", "--digits", digits]) == 2
    assert f"--digits must be between 0 and 30, got {digits}" in error_of(capsys)
    assert main(["explain", "toy", "--digits", "0"]) == 0
    assert main(["explain", "toy", "--digits", "30"]) == 0
    assert "0.309999999999999997779553950750" in capsys.readouterr().out  # 0.31 in float64, to 30 decimals


def test_evaluate_report_and_plot_note_truncated_sources_too(short_model, tmp_path, capsys):
    test = tmp_path / "test.tsv"
    test.write_text("Hello.\t你好\tx\nThanks a lot.\t你好谢谢你好谢谢你好\tx\n", encoding="utf-8")
    assert main(["evaluate", "--model", str(short_model), "--test", str(test), "--beam", "1"]) == 0
    notes = [line for line in capsys.readouterr().err.splitlines() if "truncated" in line]
    assert notes == [f"attnkit evaluate: note: {test}:2 was truncated to its first 7 tokens (the model's longest source)"]
    lines = tmp_path / "in.txt"
    lines.write_text("你好\n你好谢谢你好谢谢你好\n", encoding="utf-8")
    assert main(["report", "--model", str(short_model), "--input", str(lines), "--output",
                 str(tmp_path / "r.html"), "--beam", "1"]) == 0
    assert f"attnkit report: note: sentence 2 of {lines} was truncated" in capsys.readouterr().err
    assert main(["plot", "--model", str(short_model), "你好谢谢你好谢谢你好", "--output", str(tmp_path / "p.png"),
                 "--beam", "1"]) == 0
    assert "attnkit plot: note: the sentence was truncated to its first 7 tokens" in capsys.readouterr().err
    for attention in ("encoder", "decoder"):  # self-attention of the first 7 tokens: said too
        assert main(["plot", "--model", str(short_model), "你好谢谢你好谢谢你好", "--output", str(tmp_path / "p.png"),
                     "--beam", "1", "--attention", attention]) == 0
        assert "attnkit plot: note: the sentence was truncated to its first 7 tokens" in capsys.readouterr().err


def _full_disk_after_half(monkeypatch):
    """Writes that stop halfway with ENOSPC, as on a full disk: ``Path.write_text`` and matplotlib's
    ``savefig`` put the first half of their bytes in the file, then fail."""
    import errno

    from matplotlib.figure import Figure

    def write_text(self, data, encoding=None, errors=None, newline=None):
        with open(self, "w", encoding=encoding) as f:
            f.write(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    def savefig(self, fname, **kwargs):
        with open(fname, "wb") as f:
            f.write(b"\x89PNG\r\n\x1a\n half a picture")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", write_text)
    monkeypatch.setattr(Figure, "savefig", savefig)


@pytest.mark.parametrize("command", ["evaluate", "plot", "report"])
def test_an_output_write_cut_short_leaves_the_earlier_file_as_it_was(command, model_dir, inputs, monkeypatch,
                                                                     capsys):
    from attnkit.viz import fonts

    if command == "plot":
        try:
            fonts.cjk_font()
        except fonts.NoCJKFontError:
            pytest.skip("no CJK font: plot refuses to draw Chinese")
    out = inputs / {"evaluate": "hyps.txt", "plot": "p.png", "report": "r.html"}[command]
    out.write_bytes(b"the user's earlier file\n")
    args = MODEL_COMMANDS[command](model_dir, inputs) + ["--beam", "1"]
    if command == "evaluate":
        args += ["--output", str(out)]
    before = sorted(p.name for p in inputs.iterdir())
    _full_disk_after_half(monkeypatch)
    assert main(args) == 2
    assert f"--output {out}: cannot write it (No space left on device)" in error_of(capsys)
    assert out.read_bytes() == b"the user's earlier file\n"
    assert sorted(p.name for p in inputs.iterdir()) == before  # and no temporary file left beside it


def test_a_demo_heatmap_cut_short_leaves_the_earlier_picture_as_it_was(model_dir, tmp_path, monkeypatch, capsys):
    from attnkit.viz import fonts

    try:
        fonts.cjk_font()
    except fonts.NoCJKFontError:
        pytest.skip("no CJK font: the demo draws no heatmap")
    cache = demo_cache(model_dir, tmp_path / "c", "你好")
    png = tmp_path / "h.png"
    png.write_bytes(b"the user's earlier picture")
    _full_disk_after_half(monkeypatch)
    assert main(["demo", "--cache", str(cache), "--heatmap", str(png), "--beam", "1", "你好"]) == 2
    assert f"--heatmap {png}: cannot write it (No space left on device)" in error_of(capsys)
    assert png.read_bytes() == b"the user's earlier picture"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c", "h.png"]  # and no temporary file left beside it


@pytest.mark.parametrize("by", ["relative path", "link"])
@pytest.mark.parametrize("command", ["evaluate", "report"])
def test_an_output_that_is_the_input_file_is_refused(command, by, model_dir, inputs, monkeypatch, capsys):
    # The same file by another name (a relative path from its folder, a link to it): replacing it would lose
    # the input. Both commands refuse it in the same words.
    source = inputs / ("test.tsv" if command == "evaluate" else "in.txt")
    kept = source.read_bytes()
    monkeypatch.chdir(inputs)
    output = Path(source.name)
    if by == "link":
        output = Path("link-to-input")
        output.symlink_to(source)
    args = MODEL_COMMANDS[command](model_dir, inputs) + ["--beam", "1", "--output", f"./{output}"]
    assert main(args) == 2
    flag = "--test" if command == "evaluate" else "--input"
    assert (f"--output {output} is the {flag} file: writing it would replace that input; name another file"
            in error_of(capsys))
    assert source.read_bytes() == kept and (by == "relative path" or output.is_symlink())


@pytest.fixture(scope="module")
def line_break_model(tmp_path_factory) -> Path:
    """A model that decodes nothing but line breaks: its last block's output is one constant vector (the
    LayerNorm's weight 0, its bias b) and only the output row of "\\n" is non-zero (b), so "\\n" wins
    every step up to the length limit (as a SentencePiece model's byte piece <0x0A> can)."""
    torch.manual_seed(0)
    src, tgt = CharTokenizer.train(SOURCES), CharTokenizer.train(["hello\nthanks"])
    config = TransformerConfig(d_model=16, heads=2, encoder_layers=1, decoder_layers=1, ffn_dim=32, dropout=0.0,
                               norm_first=False, tie_output=False)
    model = build_model(config, src.vocab_size, tgt.vocab_size)
    with torch.no_grad():
        b = torch.randn(16)
        model.decoder[-1].ffn_norm.weight.zero_()
        model.decoder[-1].ffn_norm.bias.copy_(b)
        model.output.weight.zero_()
        model.output.weight[tgt.encode("\n")[0]] = b
    folder = tmp_path_factory.mktemp("breaks") / "m"
    save_model(model, folder)
    save_tokenizers(folder, src, tgt)
    return folder


@pytest.mark.parametrize("beam", ["1", "2"])
def test_a_decoded_line_break_does_not_shift_the_output_lines(beam, line_break_model, monkeypatch, capsys, tmp_path):
    from attnkit.decode.translator import Translator

    assert "\n" in Translator.load(line_break_model).translate(["你好"], beam=int(beam))[0].text  # the model's output
    stdin(monkeypatch, "你好\n\n谢谢\n".encode("utf-8"))
    assert main(["translate", "--model", str(line_break_model), "--beam", beam]) == 0
    out = capsys.readouterr().out.split("\n")
    assert len(out) == 4 and out[1] == "" and out[3] == ""  # three lines, the blank one where it was
    assert out[0].strip() == "" and out[0] != ""  # the breaks written as spaces
    (tmp_path / "test.tsv").write_text("Hello.\t你好\tCC\nThanks.\t谢谢\tCC\n", encoding="utf-8")
    assert main(["evaluate", "--model", str(line_break_model), "--test", str(tmp_path / "test.tsv"), "--beam", beam,
                 "--output", str(tmp_path / "hyps.txt")]) == 0
    assert len((tmp_path / "hyps.txt").read_text(encoding="utf-8").splitlines()) == 2  # one line per test pair


def test_report_refuses_a_title_that_is_not_utf8_and_shows_a_file_name_that_is_not(model_dir, tmp_path, capsys):
    """Bytes that are not UTF-8 reach Python as lone surrogates, which a UTF-8 page cannot hold: a --title is
    refused naming it (it was a UnicodeEncodeError traceback), the name of an --input file is shown with
    U+FFFD for them."""
    name = os.fsdecode(b"in\xff.txt")
    (tmp_path / name).write_text("你好\n", encoding="utf-8")
    out = tmp_path / "r.html"
    assert main(["report", "--model", str(model_dir), "--input", str(tmp_path / name), "--output", str(out),
                 "--beam", "1", "--title", "bad\udcff"]) == 2
    assert "--title: not valid UTF-8 (byte 0xff after 'bad')" in error_of(capsys)
    assert not out.exists()
    assert main(["report", "--model", str(model_dir), "--input", str(tmp_path / name), "--output", str(out),
                 "--beam", "1"]) == 0
    assert "<title>attnkit attention report: in\ufffd.txt</title>" in out.read_text(encoding="utf-8")


def test_an_output_through_a_link_or_to_a_fifo_is_written_where_it_points(model_dir, inputs, capsys):
    """The temporary file renamed into place replaces the file a symbolic link names (the link, and the
    file's mode, kept), and a FIFO (as /dev/stdout or /dev/null, which are not regular files either) is
    written in place, never replaced by a regular file."""
    import threading

    real = inputs / "real"
    real.mkdir()
    (real / "hyps.txt").write_text("old\n")
    (real / "hyps.txt").chmod(0o640)
    link = inputs / "link.txt"
    link.symlink_to(real / "hyps.txt")
    args = MODEL_COMMANDS["evaluate"](model_dir, inputs) + ["--beam", "1", "--output"]
    assert main(args + [str(link)]) == 0
    assert link.is_symlink() and os.readlink(link) == str(real / "hyps.txt")
    assert (real / "hyps.txt").read_text() != "old\n" and len((real / "hyps.txt").read_text().splitlines()) == 1
    assert stat.S_IMODE((real / "hyps.txt").stat().st_mode) == 0o640
    assert sorted(p.name for p in real.iterdir()) == ["hyps.txt"]
    fifo = inputs / "fifo"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_text()), daemon=True)
    reader.start()
    assert main(args + [str(fifo)]) == 0
    reader.join(timeout=30)
    assert stat.S_ISFIFO(fifo.lstat().st_mode)
    assert got == [(real / "hyps.txt").read_text()]


@pytest.mark.parametrize("encoding", ["latin-1", "cp1252", "cp437"])
def test_an_output_encoding_without_chinese_is_an_error_saying_how_to_get_it(encoding, monkeypatch, capsys):
    import io
    import sys

    # a Windows code page (whose errors name the codec 'charmap'), or PYTHONIOENCODING=latin-1
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(io.BytesIO(), encoding=encoding))
    assert main(["explain", "toy"]) == 2
    err = capsys.readouterr().err
    assert f"attnkit explain: error: the output's encoding ({encoding}) cannot write '\\u" in err
    assert "set PYTHONIOENCODING=utf-8 (or PYTHONUTF8=1)" in err


def test_a_file_name_that_is_not_utf8_is_printed_as_its_bytes(tmp_path):
    # stdout in UTF-8, strict: the name's byte 0xff (a lone surrogate in Python) is written back as that byte
    out = os.fsencode(tmp_path) + b"/r\xff.png"
    code = ("import sys; from attnkit.cli import main; sys.exit(main(['explain', 'toy', '--lang', 'en']) or "
            "print(sys.argv[1]))")
    done = subprocess.run([sys.executable, "-c", code, os.fsdecode(out)], capture_output=True,
                          env={**os.environ, "PYTHONIOENCODING": "utf-8"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.endswith(out + b"\n")


def test_output_to_dev_stdout_redirected_to_a_file_keeps_the_rest_of_stdout(tmp_path):
    # written in place, not replaced: a new file would take the name, and stdout's later lines go nowhere
    code = ("import sys; from pathlib import Path; from attnkit.cli import write_output; print('before', flush=True); "
            "write_output('/dev/stdout', lambda p: Path(p).open('a').write('written\\n')); print('after')")
    with open(tmp_path / "res.txt", "a") as f:  # as `>> res.txt`: both descriptors append
        assert subprocess.run([sys.executable, "-c", code], stdout=f).returncode == 0
    assert (tmp_path / "res.txt").read_text() == "before\nwritten\nafter\n"


def test_every_way_of_running_the_command_reports_bad_input_in_one_line():
    """`python -m attnkit.cli` ran cli.py as __main__, a second copy of the module whose `except UserError`
    did not catch the UserError the commands raise (attnkit.cli's): a traceback, exit 1. It now answers as
    `attnkit` and `python -m attnkit` do."""
    ways = {"python -m attnkit.cli": [sys.executable, "-W", "error::RuntimeWarning", "-m", "attnkit.cli"],
            "python -m attnkit": [sys.executable, "-m", "attnkit"]}
    script = Path(sys.executable).parent / "attnkit"  # the installed console script, where there is one
    if script.is_file():
        ways["attnkit"] = [str(script)]
    answers = {}
    for name, way in ways.items():
        done = subprocess.run([*way, "explain", "toy", "--digits", "99"], capture_output=True, text=True)
        assert done.returncode == 2, (name, done.stderr)
        assert "Traceback" not in done.stderr and done.stderr.count("\n") == 1, (name, done.stderr)
        assert done.stderr.startswith("attnkit explain: error: --digits must be between 0 and"), (name, done.stderr)
        answers[name] = (done.stdout, done.stderr)
    assert len(set(answers.values())) == 1, answers
