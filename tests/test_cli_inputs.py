"""Bad input to the commands gets one clear line naming the file, line or flag (exit 2), never a
traceback or a silent wrong answer, and nothing the user had is lost."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import pytest
import torch

from attnkit.cli import main
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


# ----------------------------------------------------------------------------------------------- info


def test_info_accepts_a_training_out_folder(model_dir, tmp_path, capsys):
    shutil.copytree(model_dir, tmp_path / "run" / "best")
    assert main(["info", "--model", str(tmp_path / "run"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["kind"] == "transformer"


@pytest.mark.parametrize("text,says", [
    ("model: 5\n", "its 'model' section is 5"),
    ("model: transformer\n", "its 'model' section is 'transformer'"),
    ("kind: transformer\nd_model: [1]\n", "d_model must be a positive integer"),
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
