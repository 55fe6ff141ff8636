"""`attnkit train` with input a user gets wrong: every mistake is refused with a message naming the key,
flag, file or line, before anything the user had is touched; a resumed run is the run it continues."""

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import yaml

from attnkit.cli import build_parser, main

pytestmark = pytest.mark.usefixtures("one_thread")

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cmn-eng"

RECIPE = """
data: {{format: manythings, train: {train}, dev: {dev}, dev_max_sentences: 10}}
tokenizer: {{src: {{kind: char}}, tgt: {{kind: sentencepiece, vocab_size: 400}}}}
model: {{kind: transformer, d_model: 16, heads: 2, encoder_layers: 1, decoder_layers: 1, ffn_dim: 32, norm_first: false}}
train: {{max_steps: 3, eval_every: 2, max_tokens: 600, warmup: 2, threads: 1, log_every: 1}}
"""


@pytest.fixture(scope="module")
def recipe(tmp_path_factory) -> Path:
    """A tiny post-norm Transformer recipe on the first 300 Tatoeba training pairs and 30 dev pairs."""
    if not (DATA / "train.tsv").exists():
        pytest.skip(f"Tatoeba data not found at {DATA}")
    folder = tmp_path_factory.mktemp("recipe")
    for split, n in (("train", 300), ("dev", 30)):
        lines = (DATA / f"{split}.tsv").read_text(encoding="utf-8").splitlines(True)[:n]
        (folder / f"{split}.tsv").write_text("".join(lines), encoding="utf-8")
    path = folder / "recipe.yaml"
    path.write_text(RECIPE.format(train=folder / "train.tsv", dev=folder / "dev.tsv"), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def finished(recipe, tmp_path_factory) -> Path:
    """A run that reached its max_steps=3: checkpoints step 2 and 3, best/, recipe.yaml, log.jsonl.
    It is trained into an empty folder that already exists (which is allowed)."""
    out = tmp_path_factory.mktemp("finished") / "run"
    out.mkdir()
    assert main(["train", "--config", str(recipe), "--out", str(out), "--quiet"]) == 0
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-000002", "step-000003"]
    return out


@pytest.fixture
def run_copy(finished, tmp_path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    return out


def _snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` with a digest of its bytes."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _train(recipe, out, *extra) -> list[str]:
    return ["train", "--config", str(recipe), "--out", str(out), "--quiet", *extra]


def test_a_key_written_twice_in_the_recipe_file_is_refused_with_its_line(recipe, tmp_path, capsys):
    path = tmp_path / "twice.yaml"
    path.write_text(recipe.read_text(encoding="utf-8") + "train: {max_steps: 2}\n", encoding="utf-8")
    assert main(_train(path, tmp_path / "out")) == 2
    assert f"{path}: line 6 is not valid YAML/JSON: duplicate key 'train' (first on line 5)" in capsys.readouterr().err
