"""`attnkit train` with input a user gets wrong: every mistake is refused with a message naming the key,
flag, file or line, before anything the user had is touched; a resumed run is the run it continues."""

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
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


# --- the output folder ---------------------------------------------------------------------------------

def test_an_out_holding_a_model_without_checkpoints_is_refused_and_kept(recipe, run_copy, capsys):
    shutil.rmtree(run_copy / "checkpoints")  # e.g. deleted to save space
    before = _snapshot(run_copy)
    assert main(_train(recipe, run_copy)) == 2
    err = capsys.readouterr().err
    assert f"{run_copy} already holds a trained model" in err and "choose another --out" in err
    assert _snapshot(run_copy) == before


def test_an_out_holding_checkpoints_is_refused_and_kept(recipe, run_copy, capsys):
    before = _snapshot(run_copy)
    assert main(_train(recipe, run_copy)) == 2
    assert "already holds checkpoints: pass --resume" in capsys.readouterr().err
    assert _snapshot(run_copy) == before


def test_an_out_holding_other_files_is_refused_and_kept(recipe, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("my notes\n", encoding="utf-8")
    assert main(_train(recipe, out)) == 2
    assert "is not empty and is not a training run to resume (it holds notes.txt)" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


@pytest.mark.parametrize("holding", ["checkpoints", "a trained model", "other files"])
def test_an_out_that_already_holds_something_is_refused_as_a_train_error_and_a_file_exists_error(
        recipe, run_copy, holding):
    """Library users catch either: earlier versions raised FileExistsError for these, the CLI catches
    TrainError (and prints its message, unchanged)."""
    from attnkit.train import recipe_from_dict, train
    from attnkit.train.loop import OutputExistsError, TrainError

    out = run_copy
    if holding == "a trained model":
        shutil.rmtree(out / "checkpoints")
    elif holding == "other files":
        shutil.rmtree(out)
        out.mkdir()
        (out / "notes.txt").write_text("my notes\n", encoding="utf-8")
    before = _snapshot(out)
    loaded = recipe_from_dict(yaml.safe_load(recipe.read_text(encoding="utf-8")))
    with pytest.raises(TrainError, match=f"already holds {holding}" if holding != "other files" else "is not empty"):
        train(loaded, out, progress=False, log=lambda _: None)
    with pytest.raises(FileExistsError) as caught:
        train(loaded, out, progress=False, log=lambda _: None)
    assert type(caught.value) is OutputExistsError and str(caught.value).startswith(f"{out} ")
    assert _snapshot(out) == before


def test_resume_without_a_checkpoint_is_a_train_error_and_a_file_not_found_error(recipe, tmp_path, capsys):
    from attnkit.train import recipe_from_dict, train
    from attnkit.train.loop import NoCheckpointError, TrainError

    loaded = recipe_from_dict(yaml.safe_load(recipe.read_text(encoding="utf-8")))
    for kind in (TrainError, FileNotFoundError):
        with pytest.raises(kind) as caught:
            train(loaded, tmp_path / "never", resume=True, progress=False, log=lambda _: None)
        assert type(caught.value) is NoCheckpointError
    assert main(_train(recipe, tmp_path / "never", "--resume")) == 2
    assert f"--resume: no checkpoint in {tmp_path / 'never' / 'checkpoints'} to resume from" in capsys.readouterr().err
    assert not (tmp_path / "never").exists()


def test_an_out_that_is_a_file_or_inside_one_is_refused(recipe, tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("keep me\n", encoding="utf-8")
    assert main(_train(recipe, afile)) == 2
    assert f"--out {afile} is a file, not a folder" in capsys.readouterr().err
    assert main(_train(recipe, afile / "sub")) == 2
    assert f"--out {afile / 'sub'} is inside {afile}, which is a file" in capsys.readouterr().err
    assert afile.read_text(encoding="utf-8") == "keep me\n"


def test_a_failed_start_leaves_no_folder_and_no_recipe(recipe, tmp_path, capsys):
    out = tmp_path / "new"
    assert main(_train(recipe, out, "--max-tokens", "10")) == 2
    err = capsys.readouterr().err
    assert "train.max_tokens=10 (--max-tokens) is smaller than the longest data.train pair" in err
    assert not out.exists()


# --- resuming ------------------------------------------------------------------------------------------

def test_resuming_a_finished_run_does_nothing_and_says_so(recipe, run_copy, capsys):
    before = _snapshot(run_copy)
    assert main(_train(recipe, run_copy, "--resume")) == 0
    assert "already reached max_steps=3 at step 3 (raise --max-steps to train on)" in capsys.readouterr().out
    assert _snapshot(run_copy) == before  # no step 4, no checkpoint rotated out, nothing rewritten


@pytest.mark.parametrize("copied", [True, False], ids=["new-copy-complete", "old-only"])
def test_a_run_stopped_while_its_best_model_was_replaced_gets_it_back(recipe, run_copy, capsys, copied):
    # publish_best moves the old best/ aside, then renames the finished new copy into place: a stop between
    best = run_copy / "best"
    if copied:
        shutil.copytree(best, run_copy / ".tmp-best")
        (run_copy / ".tmp-best" / "marker").write_text("new", encoding="utf-8")
    best.rename(run_copy / ".old-best")
    assert main(_train(recipe, run_copy, "--resume")) == 0
    assert f"model in {best}" in capsys.readouterr().out
    assert (best / "model.safetensors").is_file() and (best / "marker").exists() == copied
    assert not (run_copy / ".tmp-best").exists() and not (run_copy / ".old-best").exists()


def test_resuming_with_a_raised_limit_trains_on_and_records_it(recipe, run_copy, capsys):
    assert main(_train(recipe, run_copy, "--resume", "--max-steps", "4")) == 0
    assert "stopped at step 4: reached max_steps=4" in capsys.readouterr().out
    assert sorted(p.name for p in (run_copy / "checkpoints").iterdir()) == ["step-000003", "step-000004"]
    assert yaml.safe_load((run_copy / "recipe.yaml").read_text(encoding="utf-8"))["train"]["max_steps"] == 4


@pytest.mark.parametrize("change, key", [
    (["--set", "model.d_model=64"], "model.d_model: 16 in recipe.yaml, 64 now"),
    (["--set", "tokenizer.tgt.vocab_size=600"], "tokenizer.tgt.vocab_size: 400 in recipe.yaml, 600 now"),
    (["--max-tokens", "500"], "train.max_tokens: 600 in recipe.yaml, 500 now"),
    (["--seed", "7"], "train.seed: 1 in recipe.yaml, 7 now"),
    (["--set", "data.max_len=50"], "data.max_len: 128 in recipe.yaml, 50 now"),
    (["--model", "seq2seq-attention"], "model.kind: 'transformer' in recipe.yaml, 'seq2seq-attention' now"),
])
def test_resuming_with_another_model_tokenizer_or_batching_is_refused_and_the_recipe_kept(
        recipe, run_copy, capsys, change, key):
    before = _snapshot(run_copy)
    assert main(_train(recipe, run_copy, "--resume", "--max-steps", "5", *change)) == 2
    err = capsys.readouterr().err
    assert "attnkit train: error: --resume: " in err and key in err and "cannot change when it resumes" in err
    assert _snapshot(run_copy) == before


def test_resuming_on_other_training_data_is_refused(recipe, run_copy, tmp_path, capsys):
    other = tmp_path / "other.tsv"
    other.write_text("no tab on this line\n" + (recipe.parent / "train.tsv").read_text(encoding="utf-8"), encoding="utf-8")
    before = _snapshot(run_copy)
    assert main(_train(recipe, run_copy, "--resume", "--max-steps", "5", "--train", str(other))) == 2
    assert f"data.train: '{recipe.parent / 'train.tsv'}' in recipe.yaml, '{other}' now" in capsys.readouterr().err
    assert _snapshot(run_copy) == before


def test_resuming_with_the_same_data_by_another_path_is_allowed_and_another_dev_set_refused(
        recipe, run_copy, tmp_path, monkeypatch, capsys):
    other_dev = tmp_path / "dev2.tsv"
    other_dev.write_text("".join((recipe.parent / "dev.tsv").read_text(encoding="utf-8").splitlines(True)[:5]),
                         encoding="utf-8")
    before = _snapshot(run_copy)
    monkeypatch.chdir(recipe.parent.parent)  # the run was started with absolute paths, from elsewhere
    for change in (["--train", f"{recipe.parent.name}/train.tsv"],
                   ["--train", f"{recipe.parent.name}/../{recipe.parent.name}/train.tsv"],
                   ["--dev", f"{recipe.parent.name}/dev.tsv"]):
        assert main(_train(recipe, run_copy, "--resume", *change)) == 0, capsys.readouterr().err
        assert "already reached max_steps=3" in capsys.readouterr().out
    for change, key in ((["--dev", str(other_dev)], "data.dev"), (["--set", "data.dev_max_sentences=3"],
                                                                  "data.dev_max_sentences")):
        assert main(_train(recipe, run_copy, "--resume", *change)) == 2
        assert f"--resume: {key}:" in capsys.readouterr().err  # its BLEU would not compare with the best so far
    assert _snapshot(run_copy) == before


def _run_with_relative_paths(recipe, tmp_path, monkeypatch):
    """A one-step run started in a copy of the data folder, its recipe naming the files relative to it:
    ``(data folder, recipe, --out)``."""
    data = Path(shutil.copytree(recipe.parent, tmp_path / "data"))
    relative = data / "relative.yaml"
    relative.write_text(RECIPE.format(train="train.tsv", dev="dev.tsv").replace("max_steps: 3", "max_steps: 1")
                        .replace("eval_every: 2", "eval_every: 1"), encoding="utf-8")
    monkeypatch.chdir(data)
    out = tmp_path / "run"
    assert main(_train(relative, out)) == 0
    return data, relative, out


def test_resuming_from_another_folder_never_takes_another_file_of_the_same_name(recipe, tmp_path, monkeypatch,
                                                                               capsys):
    data, relative, out = _run_with_relative_paths(recipe, tmp_path, monkeypatch)
    elsewhere = Path(shutil.copytree(data, tmp_path / "elsewhere"))  # another train.tsv, one pair fewer
    lines = (elsewhere / "train.tsv").read_text(encoding="utf-8").splitlines(True)
    (elsewhere / "train.tsv").write_text("".join(lines[:-1]), encoding="utf-8")
    monkeypatch.chdir(elsewhere)
    capsys.readouterr()
    before = _snapshot(out)
    assert main(_train(relative, out, "--resume")) == 2  # "train.tsv" now names elsewhere/train.tsv
    err = capsys.readouterr().err
    assert f"data.train: 'train.tsv' named '{data / 'train.tsv'}' when the run was saved, " \
           f"'{elsewhere / 'train.tsv'}' now (other bytes)" in err
    assert _snapshot(out) == before


def test_a_run_whose_project_folder_moved_resumes_with_its_relative_paths(recipe, tmp_path, monkeypatch, capsys):
    """The data and the run moved together (relative names now resolve elsewhere): the files hold the bytes the
    checkpoint recorded, so the run continues, to the weights an unmoved run reaches."""
    data, relative, out = _run_with_relative_paths(recipe, tmp_path, monkeypatch)
    unmoved = Path(shutil.copytree(out, tmp_path / "unmoved"))
    moved = tmp_path / "moved"
    moved.mkdir()
    shutil.move(str(data), moved / "data")
    shutil.move(str(out), moved / "run")
    monkeypatch.chdir(moved / "data")
    capsys.readouterr()
    assert main(_train(moved / "data" / relative.name, moved / "run", "--resume", "--max-steps", "2")) == 0, \
        capsys.readouterr().err
    assert "resuming from" in capsys.readouterr().out
    shutil.copytree(moved / "data", data)  # the unmoved run, continued where it was
    monkeypatch.chdir(data)
    assert main(_train(relative, unmoved, "--resume", "--max-steps", "2")) == 0, capsys.readouterr().err
    step2 = Path("checkpoints") / "step-000002"
    assert _snapshot(moved / "run" / step2)["model.safetensors"] == _snapshot(unmoved / step2)["model.safetensors"]
    assert json.loads((moved / "run" / step2 / "trainer.json").read_text(encoding="utf-8"))["train_digests"] \
        == hashlib.sha256((moved / "data" / "train.tsv").read_bytes()).hexdigest()


def test_resuming_from_another_folder_with_a_relative_data_path_is_allowed(recipe, tmp_path, monkeypatch, capsys):
    """The same file named relative to the folder the run started in, then relative to another one."""
    data, relative, out = _run_with_relative_paths(recipe, tmp_path, monkeypatch)
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    capsys.readouterr()
    assert main(_train(relative, out, "--resume", "--train", "../data/train.tsv", "--dev", "../data/dev.tsv")) == 0, \
        capsys.readouterr().err
    assert "already reached max_steps=1" in capsys.readouterr().out


def test_resuming_when_the_data_file_changed_in_place_is_refused(recipe, run_copy, tmp_path, capsys):
    moved = tmp_path / "recipe"
    shutil.copytree(recipe.parent, moved)
    saved = yaml.safe_load((run_copy / "recipe.yaml").read_text(encoding="utf-8"))
    lines = (moved / "train.tsv").read_text(encoding="utf-8").splitlines(True)
    (moved / "train.tsv").write_text("".join(lines[:250]), encoding="utf-8")
    saved["data"]["train"] = str(moved / "train.tsv")  # the same path in both recipes and the checkpoint
    (run_copy / "recipe.yaml").write_text(yaml.safe_dump(saved), encoding="utf-8")
    for state_file in (run_copy / "checkpoints").glob("*/trainer.json"):
        state = json.loads(state_file.read_text(encoding="utf-8"))
        state["train_files"] = str(moved / "train.tsv")
        state_file.write_text(json.dumps(state), encoding="utf-8")
    changed = moved / "changed.yaml"
    changed.write_text(yaml.safe_dump(saved), encoding="utf-8")
    assert main(_train(changed, run_copy, "--resume", "--max-steps", "5")) == 2
    err = capsys.readouterr().err
    assert "no longer gives the batches" in err and "step-000003 was trained on" in err
    assert "Traceback" not in err


def test_resuming_another_model_without_a_saved_recipe_is_a_clear_error(recipe, run_copy, capsys):
    (run_copy / "recipe.yaml").unlink()
    assert main(_train(recipe, run_copy, "--resume", "--max-steps", "5", "--set", "model.d_model=64")) == 2
    err = capsys.readouterr().err
    assert "step-000003 does not fit the model this recipe builds (size mismatch for" in err
    assert not (run_copy / "recipe.yaml").exists()


@pytest.mark.parametrize("name", ["model.safetensors", "optimizer.safetensors", "rng.safetensors"])
def test_resuming_from_a_truncated_checkpoint_names_the_file_and_the_checkpoint_before_it(recipe, run_copy, capsys, name):
    last = run_copy / "checkpoints" / "step-000003"
    damaged = last / name
    damaged.write_bytes(damaged.read_bytes()[:1000])  # e.g. a copy of the run cut short
    before = _snapshot(run_copy)
    assert main(_train(recipe, run_copy, "--resume", "--max-steps", "4")) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"attnkit train: error: --resume: {damaged} is not a readable tensor file ("), err
    assert f"the checkpoint {last} is damaged; move {last} away to resume from {run_copy / 'checkpoints' / 'step-000002'}" in err
    assert _snapshot(run_copy) == before
    shutil.move(last, run_copy / "damaged")  # as advised: the run continues from the checkpoint before it
    assert main(_train(recipe, run_copy, "--resume", "--max-steps", "4")) == 0
    assert "resuming from " + str(run_copy / "checkpoints" / "step-000002") in capsys.readouterr().out


@pytest.mark.parametrize("text, says", [('{"step": 3}', "no 'elapsed' in it"), ("[3]", "not a mapping"),
                                         ('{"step": 3', "Expecting")])
def test_resuming_from_a_damaged_trainer_state_names_the_file(recipe, run_copy, capsys, text, says):
    state = run_copy / "checkpoints" / "step-000003" / "trainer.json"
    state.write_text(text, encoding="utf-8")
    assert main(_train(recipe, run_copy, "--resume", "--max-steps", "4")) == 2
    err = capsys.readouterr().err
    assert f"attnkit train: error: --resume: cannot read {state}: {says}" in err
    assert f"is damaged; move {state.parent} away to resume from {state.parent.parent / 'step-000002'}" in err


def test_a_log_line_cut_short_is_dropped_before_a_resumed_run_appends(recipe, run_copy):
    log = run_copy / "log.jsonl"
    complete = log.read_text(encoding="utf-8")
    log.write_text(complete + '{"event": "stop", "st', encoding="utf-8")  # a write a full disk cut short
    assert main(_train(recipe, run_copy, "--resume", "--max-steps", "4")) == 0
    lines = log.read_text(encoding="utf-8").splitlines()
    assert "\n".join(lines).startswith(complete.rstrip("\n"))
    assert [json.loads(line)["event"] for line in lines][-1] == "stop"  # every line one JSON event


def _disk_full(path) -> OSError:
    import errno
    import os

    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


def test_a_disk_that_fills_up_while_a_checkpoint_is_saved_keeps_the_ones_before(recipe, tmp_path, monkeypatch, capsys):
    import attnkit.train.checkpoint as checkpoint

    real = checkpoint.save_file

    def save_file(tensors, path):  # the optimizer state of step 3 half written, then no space left
        if "step-000003" in str(path) and path.endswith("optimizer.safetensors"):
            Path(path).write_bytes(b"\0" * 100)
            raise _disk_full(path)
        real(tensors, path)

    monkeypatch.setattr(checkpoint, "save_file", save_file)
    out = tmp_path / "out"
    assert main(_train(recipe, out)) == 2
    err = capsys.readouterr().err
    step2 = out / "checkpoints" / "step-000002"
    assert err.startswith(f"attnkit train: error: cannot save the checkpoint of step 3 in {out} (No space left on device:"), err
    assert f"the checkpoints saved before are intact: free some space and pass --resume to continue from {step2}" in err
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-000002"]  # no half-written folder
    stop = json.loads((out / "log.jsonl").read_text(encoding="utf-8").splitlines()[-1])
    assert stop["event"] == "stop" and stop["reason"].startswith("cannot save the checkpoint of step 3")
    monkeypatch.setattr(checkpoint, "save_file", real)  # space freed: the run continues from step 2
    assert main(_train(recipe, out, "--resume")) == 0
    assert f"resuming from {step2} (step 2" in capsys.readouterr().out
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-000002", "step-000003"]


def test_a_disk_that_fills_up_while_best_is_replaced_keeps_the_best_before(recipe, tmp_path, monkeypatch, capsys):
    import attnkit.train.checkpoint as checkpoint

    out = tmp_path / "out"
    real = checkpoint.shutil.copytree
    copies = []

    def copytree(src, dst, *args, **kwargs):
        if Path(dst).name == ".tmp-best":
            copies.append(src)
        if len(copies) == 2:  # best/ for step 3: half copied, then no space left
            Path(dst).mkdir()
            (Path(dst) / "model.safetensors").write_bytes(b"\0" * 100)
            raise shutil.Error([(str(src), str(dst), str(_disk_full(dst)))])
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(checkpoint.shutil, "copytree", copytree)
    monkeypatch.setattr("attnkit.train.loop._validate", lambda *a, **k: {"bleu": float(len(copies)), "chrf": 0.0})
    assert main(_train(recipe, out)) == 2
    err = capsys.readouterr().err
    assert f"cannot save the checkpoint of step 3 in {out} ([Errno 28] No space left on device" in err, err
    assert f"pass --resume to continue from {out / 'checkpoints' / 'step-000002'}" in err
    # step 3 is not kept as a checkpoint whose best/ was never written: the run resumes from step 2's
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-000002"]
    assert sorted(p.name for p in out.iterdir()) == ["best", "checkpoints", "log.jsonl", "recipe.yaml"]
    assert (out / "best" / "model.safetensors").read_bytes() == \
        (out / "checkpoints" / "step-000002" / "model.safetensors").read_bytes()


def test_a_log_that_cannot_be_written_stops_the_run_with_a_clear_error(recipe, tmp_path, monkeypatch, capsys):
    import attnkit.train.loop as loop

    real = loop.json_line

    def json_line(event):
        if event.get("event") == "train" and event.get("step") == 3:
            raise _disk_full("log.jsonl")
        return real(event)

    monkeypatch.setattr(loop, "json_line", json_line)
    out = tmp_path / "out"
    assert main(_train(recipe, out)) == 2
    err = capsys.readouterr().err
    assert f"attnkit train: error: cannot write {out / 'log.jsonl'} (No space left on device" in err, err
    assert f"continue from {out / 'checkpoints' / 'step-000002'}" in err


# --- the recipe's values: one typed check for YAML and the command line alike ---------------------------

@pytest.mark.parametrize("args, message", [
    (["--set", "train.clip_norm=-1"], "--set train.clip_norm=-1: train.clip_norm must be > 0, or null for no clipping"),
    (["--max-steps", "0"], "--max-steps 0: train.max_steps must be a positive integer, or null for none, got 0"),
    (["--max-steps", "-5"], "train.max_steps must be a positive integer, or null for none, got -5"),
    (["--max-minutes", "-1", "--set", "train.max_steps=null"], "train.max_minutes must be > 0, or null for none"),
    (["--set", "train.max_epochs=0", "--set", "train.max_steps=null"], "train.max_epochs must be a positive integer"),
    (["--set", "train.weight_decay=-1"], "train.weight_decay must be >= 0, got -1"),
    (["--set", "train.betas=[0.9,0.98,0.5]"], "train.betas must be a list of 2 numbers, got [0.9, 0.98, 0.5]"),
    (["--set", "train.betas=abc"], "train.betas must be a list of 2 numbers, got 'abc'"),
    (["--set", "train.betas=[0.9,1.5]"], "train.betas must be two numbers in [0, 1), got [0.9, 1.5]"),
    (["--threads", "-3"], "--threads -3: train.threads must be a positive integer, or null for none"),
    (["--threads", "0"], "train.threads must be a positive integer, or null for none, got 0"),
    (["--set", "train.seed=abc"], "train.seed must be an integer, got 'abc'"),
    (["--set", "train.max_steps=abc"], "train.max_steps must be an integer or null, got 'abc'"),
    (["--set", "train.deterministic=maybe"], "train.deterministic must be true or false, got 'maybe'"),
    (["--set", "train.patience=0"], "train.patience must be a positive integer, or null for none, got 0"),
    (["--set", "train.patience=-2"], "train.patience must be a positive integer, or null for none, got -2"),
    (["--set", "train.lr=abc"], "--set train.lr=abc: train.lr must be a number, got 'abc'"),
    (["--set", "train.lr=.nan"], "train.lr must be a number, got nan"),
    (["--format", "tsv", "--set", "data.src_col=-1"], "data.src_col must be a column number >= 0, got -1"),
    (["--set", "data.max_chars=0"], "data.max_chars must be a positive integer, got 0"),
    (["--set", "data.max_len=0"], "data.max_len must be a positive integer, got 0"),
    (["--set", "data.dev=[a,b]"], "data.dev must be a file path for data.format='manythings' (a list of two files is for 'moses')"),
    (["--set", "data.train=5"], "data.train must be a file path for data.format='manythings'"),
    (["--set", "data.strict=maybe"], "data.strict must be true or false, got 'maybe'"),
    (["--set", "data.dev_max_sentences=-1"], "data.dev_max_sentences must be a positive integer, or null for all, got -1"),
    (["--set", "model.norm_first=maybe"], "--set model.norm_first=maybe: model.norm_first must be true or false"),
    (["--model", "seq2seq-attention", "--set", "model.bidirectional=maybe"], "model.bidirectional must be true or false"),
    (["--model", "seq2seq-attention", "--set", "model.attention.hidden=x"], "model.attention.hidden must be an integer or null"),
    (["--model", "seq2seq-attention", "--set", "model.attention={kind: foo}"],
     "--set model.attention={kind: foo}: model.attention.kind must be one of"),
    (["--set", "tokenizer.tgt.vocab_size=big"], "tokenizer.tgt.vocab_size must be an integer, got 'big'"),
    (["--set", "tokenizer.joint=maybe"], "tokenizer.joint must be true or false, got 'maybe'"),
    # ranges checked by the model and tokenizer configs themselves name the flag and the recipe key too
    (["--set", "model.d_model=-1"], "--set model.d_model=-1: model.d_model must be a positive integer, got -1"),
    (["--set", "model.heads=3"], "--set model.heads=3: model.heads (3) must divide d_model"),
    (["--set", "model.dropout=2"], "--set model.dropout=2: model.dropout must be a number in [0, 1), got 2"),
    (["--set", "model.d_model=7"], "--set model.d_model=7: model.heads (2) must divide d_model (7)"),  # either key
    (["--set", "model.bos_id=0"], "--set model.bos_id=0: model.pad_id, bos_id and eos_id must be three different"),
    (["--set", "model.foo=1"], "--set model.foo=1: model: unknown key(s) ['foo'] for TransformerConfig"),
    # the tokenizers and batches number <pad>, <s>, </s> 0, 1, 2: a model told otherwise would learn from padding
    (["--set", "model.pad_id=5"], "--set model.pad_id=5: model.pad_id must be 0, the id of <pad> in attnkit's tokenizers"),
    (["--model", "seq2seq-attention", "--set", "model.eos_id=7"],
     "--set model.eos_id=7: model.eos_id must be 2, the id of </s> in attnkit's tokenizers"),
    (["--set", "model.bos_id=2", "--set", "model.eos_id=1"], "model.bos_id must be 1, the id of <s>"),
    (["--set", "model.share_embeddings=true"],
     "--set model.share_embeddings=true: model.share_embeddings: true needs one vocabulary for both sides: set "
     "tokenizer.joint: true"),
    (["--model", "seq2seq-attention", "--set", "model.attention.hidden=0"],
     "--set model.attention.hidden=0: model.attention.hidden must be a positive integer, got 0"),
    (["--set", "tokenizer.tgt.vocab_size=5"],
     "--set tokenizer.tgt.vocab_size=5: tokenizer.tgt.vocab_size must be >= 260 (256 bytes + 4 specials), got 5"),
    (["--set", "tokenizer.src.min_freq=0"], "--set tokenizer.src.min_freq=0: tokenizer.src.min_freq must be >= 1, got 0"),
    (["--set", "tokenizer.joint=true"], "--set tokenizer.joint=true: tokenizer.joint needs the same spec on both sides"),
    (["--set", "tokenizer.tgt.kind=foo"], "--set tokenizer.tgt.kind=foo: tokenizer.tgt.kind must be one of char, "
                                          "sentencepiece, got 'foo'"),
    (["--set", "tokenizer.tgt.vocab=5"], "--set tokenizer.tgt.vocab=5: tokenizer.tgt.vocab is not a key of a "
                                         "sentencepiece tokenizer"),
    (["--format", "cedict", "--train", "t.tsv"], "--train t.tsv: data.train is not read with data.format='cedict'"),
    (["--model", "lstm"], "--model must be one of seq2seq-fixed, seq2seq-context, seq2seq-attention, transformer, got 'lstm'"),
])
def test_a_bad_value_is_refused_naming_its_key_before_anything_is_written(recipe, tmp_path, capsys, args, message):
    out = tmp_path / "out"
    assert main(_train(recipe, out, *args)) == 2
    err = capsys.readouterr().err
    assert err.startswith("attnkit train: error: ") and message in err, err
    assert not out.exists()


def test_a_bad_value_in_the_recipe_file_names_the_file_and_key(recipe, tmp_path, capsys):
    path = tmp_path / "base.yaml"
    path.write_text(recipe.read_text(encoding="utf-8").replace("max_steps: 3,", "max_steps: 3, lr: abc,"), encoding="utf-8")
    assert main(_train(path, tmp_path / "out")) == 2
    assert f"{path}: train.lr must be a number, got 'abc'" in capsys.readouterr().err


def test_a_range_checked_by_the_model_or_tokenizer_config_in_the_recipe_file_names_the_file_and_key(recipe, tmp_path,
                                                                                                   capsys):
    path = tmp_path / "base.yaml"
    data = yaml.safe_load(recipe.read_text(encoding="utf-8"))
    data["tokenizer"]["tgt"] = {"kind": "sentencepiece", "vocab_size": 7}
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    assert main(_train(path, tmp_path / "out")) == 2
    assert f"{path}: tokenizer.tgt.vocab_size must be >= 260" in capsys.readouterr().err
    data["tokenizer"]["tgt"]["vocab_size"] = 400
    data["model"]["ffn_dim"] = 0
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    assert main(_train(path, tmp_path / "out")) == 2
    assert f"{path}: model.ffn_dim must be a positive integer, got 0" in capsys.readouterr().err


def test_format_cedict_on_the_command_line_drops_the_recipe_files_with_a_note(recipe, capsys):
    from attnkit.train.cli import load_recipe

    args = build_parser().parse_args(_train(recipe, "unused", "--format", "cedict"))
    data = load_recipe(args).data
    assert (data.format, data.train, data.dev, data.test) == ("cedict", None, None, None)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "attnkit train: note: --format cedict: training on the built-in CC-CEDICT " \
        f"dictionary, not on the data.train, data.dev file(s) of {recipe}" in err


def test_format_cedict_with_files_in_the_recipe_file_names_the_file(recipe, tmp_path, capsys):
    path = tmp_path / "cedict.yaml"
    path.write_text(recipe.read_text(encoding="utf-8").replace("format: manythings", "format: cedict"), encoding="utf-8")
    assert main(_train(path, tmp_path / "out")) == 2
    assert f"{path}: data.train is not read with data.format='cedict'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_key_written_twice_in_the_recipe_file_is_refused_with_its_line(recipe, tmp_path, capsys):
    path = tmp_path / "twice.yaml"
    path.write_text(recipe.read_text(encoding="utf-8") + "train: {max_steps: 2}\n", encoding="utf-8")
    assert main(_train(path, tmp_path / "out")) == 2
    assert f"{path}: line 6 is not valid YAML/JSON: duplicate key 'train' (first on line 5)" in capsys.readouterr().err


def test_clipping_can_be_switched_off_with_null(recipe):
    from attnkit.train.cli import load_recipe

    args = build_parser().parse_args(_train(recipe, "unused", "--set", "train.clip_norm=null"))
    assert load_recipe(args).train.clip_norm is None


@pytest.mark.parametrize("value", ["null", "{}"])
def test_a_null_or_empty_nested_section_means_its_defaults(recipe, value):
    from attnkit.models.config import AttentionConfig
    from attnkit.train.cli import load_recipe

    args = build_parser().parse_args(_train(recipe, "unused", "--model", "seq2seq-attention",
                                            "--set", f"model.attention={value}"))
    assert load_recipe(args).model.attention == AttentionConfig()


def test_the_last_batches_fewer_than_accumulate_make_one_more_update_with_their_gradient(recipe, tmp_path,
                                                                                        capsys, monkeypatch):
    """An epoch of fewer batches than train.accumulate (or the last batches of the last epoch) is not thrown
    away: it makes one last update, as transformers' Trainer does, with the gradient of its batches' loss per
    target token — the gradient that accumulate = that many batches gives."""
    import re

    import attnkit.train.loop as loop

    grads = []
    original = loop.optimizer_update

    def recording(model, *args, **kwargs):
        grads.append([p.grad.clone() for p in model.parameters()])
        return original(model, *args, **kwargs)

    monkeypatch.setattr(loop, "optimizer_update", recording)
    epoch = ["--set", "train.max_steps=null", "--set", "train.max_epochs=1"]
    assert main(_train(recipe, tmp_path / "a", *epoch, "--set", "train.accumulate=1000")) == 0
    out = capsys.readouterr().out
    found = re.search(r"the last (\d+) batch\(es\) of the run, fewer than train.accumulate=1000, made update 1", out)
    assert found and "stopped at step 1" in out, out
    assert (tmp_path / "a" / "best" / "model.safetensors").is_file()
    events = [json.loads(line) for line in (tmp_path / "a" / "log.jsonl").read_text().splitlines()]
    assert [(e["event"], e["step"]) for e in events] == [("train", 1), ("valid", 1), ("stop", 1)]
    assert events[0]["loss"] > 0 and events[0]["lr"] > 0
    # the run reached its max_epochs: --resume has nothing to do, and writes nothing
    before = (tmp_path / "a" / "log.jsonl").read_text()
    assert main(_train(recipe, tmp_path / "a", *epoch, "--set", "train.accumulate=1000", "--resume")) == 0
    assert "already reached max_epochs=1 at step 1 (raise --max-epochs to train on)" in capsys.readouterr().out
    assert (tmp_path / "a" / "log.jsonl").read_text() == before
    batches = int(found.group(1))
    assert batches > 1
    assert main(_train(recipe, tmp_path / "b", *epoch, "--set", f"train.accumulate={batches}")) == 0
    assert "made update" not in capsys.readouterr().out  # a whole group: the usual update
    assert len(grads) == 2
    # the same sums, scaled in another order: equal to float32 rounding (over all parameters at once, as some,
    # like the key biases, have gradients of rounding noise alone: softmax ignores a shift of every score)
    leftover, whole = (torch.cat([g.flatten() for g in gs]) for gs in grads)
    assert (leftover - whole).norm() <= 1e-5 * whole.norm()


def test_an_update_of_accumulated_batches_takes_the_loss_per_target_token_of_all_of_them(recipe, tmp_path,
                                                                                        monkeypatch):
    """With train.accumulate = 3 an update's gradient is that of the three batches' summed loss divided by all
    their target tokens, as one batch of them all would give — not the mean of each batch's loss per token,
    which weighs a token of a short batch more than one of a long batch."""
    import copy

    import attnkit.train.loop as loop
    from attnkit.data.batching import BatchLoader
    from attnkit.models import label_smoothed_nll

    batches, seen = [], []
    original_iter, original_update = BatchLoader.iter_from, loop.optimizer_update

    def recording_iter(self, *args, **kwargs):
        for batch in original_iter(self, *args, **kwargs):
            batches.append(batch)
            yield batch

    def recording_update(model, *args, **kwargs):
        # the first update: the weights are still those every batch of the group was run with
        seen.append((copy.deepcopy(model), [p.grad.clone() for p in model.parameters()]))
        return original_update(model, *args, **kwargs)

    monkeypatch.setattr(BatchLoader, "iter_from", recording_iter)
    monkeypatch.setattr(loop, "optimizer_update", recording_update)
    assert main(_train(recipe, tmp_path / "a", "--set", "train.accumulate=3", "--max-steps", "1",
                       "--set", "model.dropout=0")) == 0
    (model, grads), group = seen[0], batches[:3]
    counts = [b.num_target_tokens for b in group]
    assert len(set(counts)) > 1, counts  # batches of unequal tokens: where the two normalisations differ
    model.zero_grad(set_to_none=True)
    model.train()
    total = sum(label_smoothed_nll(model(b.src, b.tgt_in)[0], b.tgt_out, smoothing=0.1,
                                   ignore_index=model.config.pad_id) for b in group)
    (total / sum(counts)).backward()
    want, got = (torch.cat([g.flatten() for g in gs]) for gs in ([p.grad for p in model.parameters()], grads))
    assert (got - want).norm() <= 1e-5 * want.norm()


def test_learned_positions_fewer_than_the_longest_pair_needs_are_refused_before_anything_is_written(recipe, tmp_path,
                                                                                                    capsys):
    learned = ["--set", "model.positions=learned", "--set", "model.max_len=8"]
    assert main(_train(recipe, tmp_path / "out", *learned)) == 2
    err = capsys.readouterr().err
    assert "model.max_len=8 learned positions are fewer than the longest data.train pair needs" in err, err
    assert "or set data.max_len to 7 or less" in err
    assert not (tmp_path / "out").exists()
    # what the message advises: the longer pairs are skipped, and every batch fits the 8 positions
    assert main(_train(recipe, tmp_path / "out", *learned, "--set", "data.max_len=7", "--max-steps", "1")) == 0


# --- the memory of dev BLEU's beam search ---------------------------------------------------------------

def _eval_need(finished, recipe, beam: int) -> int:
    """What decoding for dev BLEU needs, written out: the recipe's first 10 dev sources (dev_max_sentences) in one
    batch, of up to (longest source in characters + EOS) positions, for up to 2 × that + 10 output steps, with the
    finished run's model (the same recipe and data: the same vocabularies)."""
    from attnkit.data import read_manythings
    from attnkit.decode.memory import decoding_bytes
    from attnkit.models import load_model

    model, _ = load_model(finished / "best")
    dev = yaml.safe_load(recipe.read_text(encoding="utf-8"))["data"]["dev"]
    sources = [p.src for p in read_manythings(dev).pairs[:10]]
    s = max(len(text) for text in sources) + 1
    return decoding_bytes(model, 10, beam, s, 2 * s + 10)


def test_an_eval_beam_no_memory_can_hold_is_refused_before_training_naming_where_it_was_set(recipe, tmp_path, capsys):
    """train.eval_beam 10⁹ would allocate terabytes at the first validation, after eval_every updates of work, and
    the kernel kill the run without a word: refused before anything is trained or written, naming the key and the
    option or file that set it, in one line."""
    from attnkit.runtime import available_memory

    if available_memory() is None:
        pytest.skip("no /proc/meminfo: the memory available is unknown and not checked")
    out = tmp_path / "out"
    assert main(_train(recipe, out, "--set", "train.eval_beam=1000000000")) == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and captured.err.count("\n") == 1
    assert captured.err.startswith("attnkit train: error: --set train.eval_beam=1000000000: train.eval_beam=1000000000 "
                                   "is too large: the beam search for dev BLEU needs at least "), captured.err
    assert " GiB of memory for 10 dev sentences at a time, more than the " in captured.err
    assert captured.err.endswith(" available: use a smaller train.eval_beam\n")
    assert not out.exists()
    path = tmp_path / "base.yaml"
    path.write_text(recipe.read_text(encoding="utf-8").replace("max_steps: 3,", "max_steps: 3, eval_beam: 1000000000,"),
                    encoding="utf-8")
    assert main(_train(path, out)) == 2
    assert f"error: {path}: train.eval_beam=1000000000 is too large: " in capsys.readouterr().err
    assert not out.exists()


def test_greedy_dev_decoding_that_cannot_fit_advises_what_would_shrink_it(recipe, finished, tmp_path, monkeypatch,
                                                                           capsys):
    """With train.eval_beam 1 there is no beam to shrink: the advice is fewer dev sentences only while they are
    decoded in one batch (the recipe's 10 are; dev BLEU decodes 64 at a time), and shorter ones."""
    import attnkit.runtime as runtime

    monkeypatch.setattr(runtime, "available_memory", lambda: _eval_need(finished, recipe, 1) - 1)
    assert main(_train(recipe, tmp_path / "out", "--max-steps", "1")) == 2
    err = capsys.readouterr().err
    assert "dev BLEU's greedy decoding needs at least " in err and "for 10 dev sentences at a time" in err, err
    assert err.endswith(": validate on fewer than 10 (data.dev_max_sentences) or shorter dev sentences\n")
    assert not (tmp_path / "out").exists()
    # what it advises: one dev sentence at a time needs less, and fits
    monkeypatch.setattr(runtime, "available_memory", lambda: _eval_need(finished, recipe, 1) // 2)
    assert main(_train(recipe, tmp_path / "out", "--max-steps", "1", "--set", "data.dev_max_sentences=1")) == 0


def test_an_eval_beam_is_refused_exactly_when_its_decoding_estimate_exceeds_the_memory(recipe, finished, tmp_path,
                                                                                        monkeypatch, capsys):
    import attnkit.runtime as runtime

    have = _eval_need(finished, recipe, 8)
    monkeypatch.setattr(runtime, "available_memory", lambda: have)
    assert main(_train(recipe, tmp_path / "out", "--set", "train.eval_beam=9", "--max-steps", "1")) == 2
    assert capsys.readouterr().err == (
        f"attnkit train: error: --set train.eval_beam=9: train.eval_beam=9 is too large: the beam search for dev BLEU "
        f"needs at least {_eval_need(finished, recipe, 9) / 1024:.1f} KiB of memory for 10 dev sentences at a time, "
        f"more than the {have / 1024:.1f} KiB available: use a smaller train.eval_beam\n")
    assert not (tmp_path / "out").exists()
    assert main(_train(recipe, tmp_path / "out", "--set", "train.eval_beam=8", "--max-steps", "1")) == 0
    assert (tmp_path / "out" / "best").is_dir()
    # a resumed run checks the eval_beam it continues with (the limits and eval_beam may change on resuming)
    assert main(_train(recipe, tmp_path / "out", "--resume", "--set", "train.eval_beam=9", "--max-steps", "2")) == 2
    assert "--set train.eval_beam=9: train.eval_beam=9 is too large" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "out" / "checkpoints").iterdir()) == ["step-000001"]


def test_the_dev_bleu_settings_of_the_shipped_recipes_fit_this_machine(monkeypatch):
    """configs/*.yaml (eval_beam 1, the default, over their 879 dev sentences) are not refused against the real
    memory, with the most target pieces they allow (the estimate grows with the vocabulary)."""
    from attnkit.configfile import read_settings_file
    from attnkit.models import build_model
    from attnkit.runtime import available_memory
    from attnkit.text.char import CharTokenizer
    from attnkit.train.config import recipe_from_dict
    from attnkit.train.corpus import read_split
    from attnkit.train.loop import _check_eval_memory

    if not (DATA / "dev.tsv").exists():
        pytest.skip(f"Tatoeba data not found at {DATA}")
    if available_memory() is None:
        pytest.skip("no /proc/meminfo: the memory available is unknown and not checked")
    root = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(root)  # the recipes name the data from the repository's root
    configs = sorted((root / "configs").glob("*.yaml"))
    assert len(configs) == 4
    for config in configs:
        recipe = recipe_from_dict(read_settings_file(config))
        assert recipe.tokenizer.src.kind == "char" and recipe.train.eval_beam == 1, config  # a piece per character
        dev = read_split(recipe.data, "dev")
        model = build_model(recipe.model, 10, recipe.tokenizer.tgt.vocab_size)
        _check_eval_memory(model, CharTokenizer([]), CharTokenizer([]), dev, recipe)  # raises if refused


def test_too_short_a_max_len_for_every_pair_is_a_clear_error(recipe, tmp_path, capsys):
    assert main(_train(recipe, tmp_path / "out", "--set", "data.max_len=2")) == 2
    assert "data.train: all 298 pairs have a side longer than data.max_len=2 tokens" in capsys.readouterr().err


def test_a_data_file_flag_is_taken_as_a_file_name(recipe, tmp_path, capsys):
    assert main(_train(recipe, tmp_path / "o1", "--train", "yes")) == 2  # not YAML's true
    assert "data.train: yes does not exist" in capsys.readouterr().err
    assert main(_train(recipe, tmp_path / "o2", "--dev", "12")) == 2  # not the number 12
    assert "data.dev: 12 does not exist" in capsys.readouterr().err


def test_a_folder_given_as_data_is_named_as_one(recipe, tmp_path, capsys):
    assert main(_train(recipe, tmp_path / "o1", "--train", str(tmp_path))) == 2
    assert f"data.train: {tmp_path} is a folder, not a data file" in capsys.readouterr().err


def test_help_shows_the_readme_usage(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    usage = " ".join(capsys.readouterr().out.split())
    for part in ("--config FILE", "--out DIR", "--model KIND", "--train FILE", "--dev FILE", "--max-minutes M",
                 "--max-steps N", "--lr LR", "--set section.key=value"):
        assert part in usage
    assert "FLAG_" not in usage


def test_a_pair_of_relative_data_files_compares_as_the_files_it_names(tmp_path, monkeypatch):
    from attnkit.train.loop import _same_files

    monkeypatch.chdir(tmp_path)
    then = [str(tmp_path / "data" / "train.zh"), str(tmp_path / "data" / "train.en")]  # recorded at the checkpoint
    assert not _same_files(["train.zh", "train.en"], ["train.zh", "train.en"], then)  # same words, other files now
    assert _same_files(["train.zh", "train.en"], ["data/train.zh", "data/train.en"], then)
    assert _same_files(["train.zh", "train.en"], ["train.zh", "train.en"], None)  # an older checkpoint: as written


# --- errors that cross a process boundary --------------------------------------------------------------

def _raised(build, *args, **kwargs) -> ValueError:
    with pytest.raises(ValueError) as info:
        build(*args, **kwargs)
    return info.value


def _error(name: str) -> ValueError:
    from attnkit.models.config import TransformerConfig
    from attnkit.text.build import TokenizerConfig
    from attnkit.train.config import recipe_from_dict
    from attnkit.train.loop import TrainRecipeError

    return {
        "SpecError with its side": lambda: _raised(TokenizerConfig.from_dict, {"src": {"kind": "char", "min_freq": 0}}),
        "SpecError with a message of its own": lambda: _raised(TokenizerConfig.from_dict, {"tgt": {"kind": "foo"}}),
        "RecipeError naming one key": lambda: _raised(
            recipe_from_dict, {"tokenizer": {"tgt": {"kind": "sentencepiece", "vocab_size": 5}}}),
        "RecipeError naming the keys that clash": lambda: _raised(
            recipe_from_dict, {"tokenizer": {"joint": True, "src": {"kind": "char"}, "tgt": {"kind": "sentencepiece"}}}),
        "ConfigError naming the keys that clash": lambda: _raised(TransformerConfig, d_model=30, heads=4),
        "TrainRecipeError naming its key": lambda: TrainRecipeError("train.eval_beam", "train.eval_beam=9 is too large"),
    }[name]()


@pytest.mark.parametrize("name", ["SpecError with its side", "SpecError with a message of its own",
                                  "RecipeError naming one key", "RecipeError naming the keys that clash",
                                  "ConfigError naming the keys that clash", "TrainRecipeError naming its key"])
def test_errors_with_attributes_survive_pickling_with_their_message_and_attributes(name):
    """A worker process (a DataLoader's, a process pool's) hands its exception back pickled: what arrives
    is the same error, its message and attributes (key, detail, side) included."""
    import pickle

    err = _error(name)
    assert type(err).__name__ == name.split()[0] and vars(err)  # the error meant, with attributes to keep
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is type(err) and str(back) == str(err) and back.args == err.args
    assert vars(back) == vars(err)


def test_shared_embeddings_are_taken_with_a_joint_vocabulary_only():
    from attnkit.train import recipe_from_dict
    from attnkit.train.config import RecipeError

    model = {"kind": "transformer", "share_embeddings": True}
    joint = {"joint": True, "src": {"kind": "char"}, "tgt": {"kind": "char"}}
    assert recipe_from_dict({"tokenizer": joint, "model": model}).model.share_embeddings is True
    with pytest.raises(RecipeError) as caught:  # two char vocabularies may be of one size by chance
        recipe_from_dict({"tokenizer": {**joint, "joint": False}, "model": model})
    assert caught.value.key == ("model.share_embeddings", "tokenizer.joint")


def test_a_run_in_a_folder_whose_name_is_not_utf8_resumes(recipe, finished, tmp_path, capsysbinary):
    """safetensors opens only paths that are valid UTF-8: the checkpoint of a run in a folder named with the
    byte 0xff (as Linux allows) was "not a readable tensor file". It resumes as the same run does elsewhere."""
    import os

    from safetensors.torch import load

    odd = Path(os.fsdecode(os.fsencode(tmp_path) + b"/run\xff"))
    plain = tmp_path / "run"
    for out in (odd, plain):
        shutil.copytree(finished, out)
        assert main(_train(recipe, out, "--resume", "--max-steps", "4")) == 0, capsysbinary.readouterr().err
        resumed = b"resuming from " + os.fsencode(out / "checkpoints" / "step-000003")  # the name as its bytes
        assert resumed in capsysbinary.readouterr().out
    step = Path("checkpoints") / "step-000004" / "model.safetensors"
    weights = [load((out / step).read_bytes()) for out in (odd, plain)]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


@pytest.mark.parametrize("limits, reached", [
    ({}, None),  # a run stopped before its limits (a Ctrl-C): resuming trains on
    ({"max_steps": 5}, ("reached max_steps=5", "raise --max-steps")),
    ({"max_minutes": 0.5}, ("reached max_minutes=0.5", "raise --max-minutes")),
    ({"patience": 2}, ("no better dev BLEU in 2 validations", "raise train.patience")),
    ({"max_epochs": 1}, ("reached max_epochs=1", "raise --max-epochs")),
    ({"max_steps": 5, "max_minutes": 0.5}, ("reached max_steps=5", "raise --max-steps")),  # the first that applies
])
def test_limit_reached_is_the_one_test_of_resume_and_of_the_demo(limits, reached):
    # train --resume (_already_done) and the demo's choice between continuing its cached run and using its
    # model (_interrupted) both ask it
    from attnkit.train import TrainSettings
    from attnkit.train.loop import limit_reached

    t = TrainSettings(**{"max_steps": 100, "max_minutes": 60.0, "patience": None, **limits})
    state = {"step": 5, "elapsed": 30.0, "stale": 2, "best_bleu": 1.0, "epochs_done": 1}
    assert limit_reached(t, state) == reached
    if limits.get("max_epochs"):
        assert limit_reached(t, {**state, "epochs_done": 0}) is None
        # a trainer.json written before epochs were counted: none done
        assert limit_reached(t, {k: v for k, v in state.items() if k != "epochs_done"}) is None
