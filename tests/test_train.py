"""The translator pipeline: train (killed and resumed), translate, evaluate — as a user runs them."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from attnkit.cli import main
from attnkit.train.schedule import learning_rate

RECIPE = """
data:
  format: manythings
  train: {train}
  dev: {dev}
  dev_max_sentences: 20
tokenizer:
  src: {{kind: char}}
  tgt: {{kind: sentencepiece, vocab_size: 500}}
model: {{kind: transformer, d_model: 32, heads: 2, encoder_layers: 1, decoder_layers: 1, ffn_dim: 64, dropout: 0.1}}
train:
  max_steps: 40
  eval_every: 10
  log_every: 5
  max_tokens: 600
  warmup: 10
  lr: 0.002
  threads: 1
  deterministic: true
  keep_last: 5
"""


@pytest.fixture
def recipe(tmp_path, cmn_eng):
    """A small real corpus: the first 1,500 Tatoeba training pairs and 60 dev pairs."""
    train = tmp_path / "train.tsv"
    dev = tmp_path / "dev.tsv"
    train.write_text("".join((cmn_eng / "train.tsv").read_text(encoding="utf-8").splitlines(True)[:1500]), encoding="utf-8")
    dev.write_text("".join((cmn_eng / "dev.tsv").read_text(encoding="utf-8").splitlines(True)[:60]), encoding="utf-8")
    path = tmp_path / "recipe.yaml"
    path.write_text(RECIPE.format(train=train, dev=dev), encoding="utf-8")
    return path


def _train_cmd(recipe, out, *extra):
    return [sys.executable, "-m", "attnkit", "train", "--config", str(recipe), "--out", str(out), "--quiet", *extra]


def _weights(out: Path, step: int):
    return load_file(str(out / "checkpoints" / f"step-{step:06d}" / "model.safetensors"))


def test_killed_training_resumes_to_the_same_weights(recipe, tmp_path):
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    subprocess.run(_train_cmd(recipe, whole), check=True, capture_output=True, timeout=600)

    proc = subprocess.Popen(_train_cmd(recipe, broken), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while not (broken / "checkpoints" / "step-000020").exists():
        assert proc.poll() is None, "training ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)  # a real kill: no handler runs, nothing is flushed
    proc.wait()
    assert not (broken / "checkpoints" / "step-000040").exists()

    resumed = subprocess.run(_train_cmd(recipe, broken, "--resume"), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from" in resumed.stdout
    a, b = _weights(whole, 40), _weights(broken, 40)
    assert a.keys() == b.keys()
    assert max(float((a[k] - b[k]).abs().max()) for k in a) <= 1e-6
    # the log records the kill as a gap, then the same validations
    events = [json.loads(line) for line in (broken / "log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in events if e["event"] == "valid"][-2:] == [30, 40]


def test_translate_and_evaluate_after_training(recipe, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--config", str(recipe), "--out", str(out), "--quiet", "--max-steps", "20"]) == 0
    capsys.readouterr()
    assert (out / "best" / "model.safetensors").is_file()
    sentences = ["我爱你。", "", "他很高兴。"]
    (tmp_path / "src.txt").write_text("\n".join(sentences) + "\n", encoding="utf-8")
    with open(tmp_path / "src.txt", encoding="utf-8") as stdin:
        proc = subprocess.run([sys.executable, "-m", "attnkit", "translate", "--model", str(out), "--beam", "1"],
                              stdin=stdin, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.split("\n")[:-1]
    assert len(lines) == 3 and lines[1] == ""  # one output line per input line, blank stays blank

    # BLEU through the command equals sacreBLEU called directly
    import sacrebleu

    hyp, ref = tmp_path / "hyp.txt", tmp_path / "ref.txt"
    hyp.write_text("the cat sat on the mat\nhello there\n", encoding="utf-8")
    ref.write_text("the cat sat on a mat\nhello there friend\n", encoding="utf-8")
    assert main(["evaluate", "--hyp", str(hyp), "--ref", str(ref), "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    expected = sacrebleu.corpus_bleu(["the cat sat on the mat", "hello there"], [["the cat sat on a mat", "hello there friend"]])
    assert abs(got["bleu"]["score"] - round(expected.score, 2)) < 1e-9
    assert "tok:13a" in got["bleu"]["signature"]


def test_max_minutes_stops_cleanly_and_keeps_the_best(recipe, tmp_path, capsys):
    out = tmp_path / "timed"
    code = main(["train", "--config", str(recipe), "--out", str(out), "--quiet", "--max-steps", "100000",
                 "--max-minutes", "0.05", "--set", "train.patience=null"])
    assert code == 0
    stop = json.loads((out / "log.jsonl").read_text().splitlines()[-1])
    assert stop["event"] == "stop" and stop["reason"].startswith("reached max_minutes")
    assert (out / "best" / "model.safetensors").is_file()


def test_bad_input_gives_clear_errors(recipe, tmp_path, capsys):
    bad = tmp_path / "bad.tsv"
    lines = (recipe.parent / "train.tsv").read_text(encoding="utf-8").splitlines(True)[:50]
    lines[6] = "no tab on this line\n"
    bad.write_text("".join(lines), encoding="utf-8")
    code = main(["train", "--config", str(recipe), "--out", str(tmp_path / "o1"), "--train", str(bad), "--strict"])
    err = capsys.readouterr().err
    assert code == 2 and f"{bad}:7" in err
    code = main(["train", "--config", str(recipe), "--out", str(tmp_path / "o2"), "--train", str(tmp_path / "missing.tsv")])
    assert code == 2 and "missing.tsv does not exist" in capsys.readouterr().err
    code = main(["train", "--config", str(recipe), "--out", str(tmp_path / "o3"), "--set", "train.lr=-1"])
    assert code == 2 and "train.lr must be > 0" in capsys.readouterr().err
    code = main(["train", "--config", str(recipe), "--out", str(tmp_path / "o4"), "--set", "model.heads=3"])
    assert code == 2 and "heads (3) must divide d_model (32)" in capsys.readouterr().err


def test_schedules_follow_their_formulas():
    # inverse square root: linear warm-up to the peak, then lr * sqrt(warmup / step)
    assert learning_rate(50, schedule="inverse_sqrt", lr=1e-3, warmup=100) == pytest.approx(5e-4)
    assert learning_rate(400, schedule="inverse_sqrt", lr=1e-3, warmup=100) == pytest.approx(5e-4)
    # noam (Vaswani et al. 2017, eq. 3): d^-0.5 * min(step^-0.5, step * warmup^-1.5); peak at step = warmup
    peak = learning_rate(4000, schedule="noam", lr=1.0, warmup=4000, d_model=512)
    assert peak == pytest.approx(512**-0.5 * 4000**-0.5)
    assert learning_rate(3999, schedule="noam", lr=1.0, warmup=4000, d_model=512) < peak
    assert learning_rate(4001, schedule="noam", lr=1.0, warmup=4000, d_model=512) < peak





def test_progress_line_shows_the_budget_that_ends_first():
    import io

    from attnkit.train.progress import Progress

    stream = io.StringIO()
    bar = Progress(total_steps=1_000_000, max_minutes=10, enabled=True, stream=stream)
    bar.update(100, {"loss": 2.5, "tokens_per_s": 3000, "lr": 1e-3}, elapsed=300.0)  # half the time budget
    line = stream.getvalue()
    assert "[##########..........]" in line and "loss 2.500" in line and "3,000 tok/s" in line
    assert "ETA 05:00" in line  # the time budget ends before the step budget
    assert "MFU" not in line  # a model that does not count its FLOPs
    bar.update(101, {"loss": 2.5, "tokens_per_s": 3000, "lr": 1e-3, "mfu": 0.643}, elapsed=301.0)
    assert "3,000 tok/s (MFU 64%) |" in stream.getvalue()

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    tty = Terminal()
    bar = Progress(total_steps=1_000_000, max_minutes=10, enabled=True, stream=tty)
    bar.update(100, {"loss": 2.5, "tokens_per_s": 123_456, "lr": 1e-3, "mfu": 0.643}, elapsed=300.0)
    bar.update(101, {"loss": 2.5, "tokens_per_s": 3, "lr": 1e-3}, elapsed=301.0)
    first, second = tty.getvalue().split("\r")[1:]
    assert len(first) > 100 and len(second) == len(first)  # the shorter line covers all of the longer one
    assert second.rstrip().endswith("ETA 04:59")


def test_train_events_report_the_mfu_of_models_that_count_their_flops(recipe, tmp_path):
    from attnkit.models import build_model
    from attnkit.models.config import RNNConfig

    out = tmp_path / "mfu"
    assert main(["train", "--config", str(recipe), "--out", str(out), "--quiet", "--max-steps", "10"]) == 0
    events = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    train = [e for e in events if e["event"] == "train"]
    assert [e["step"] for e in train] == [5, 10]
    assert all(0 < e["mfu"] < 1 for e in train)  # a share of the machine's matmul rate
    # the RNN generations do not count their FLOPs: no MFU, rather than a wrong one
    assert build_model(RNNConfig(), 20, 20).training_flops(4, 5, 6) is None
    rnn = tmp_path / "rnn"
    assert main(["train", "--config", str(recipe), "--out", str(rnn), "--quiet", "--max-steps", "5",
                 "--model", "seq2seq-attention"]) == 0
    events = [json.loads(line) for line in (rnn / "log.jsonl").read_text().splitlines()]
    assert [e.get("mfu", "none") for e in events if e["event"] == "train"] == ["none"]


def test_a_matmul_rate_measured_while_the_machine_was_busy_is_measured_again(recipe, tmp_path, monkeypatch):
    import attnkit.train.loop as loop

    real, calls = loop.matmul_rate, []

    def busy_at_start(*args, **kwargs):  # the first measurement 1,000× too low, as under a heavy load
        calls.append(args)
        return real(*args, **kwargs) / (1000 if len(calls) == 1 else 1)

    monkeypatch.setattr(loop, "matmul_rate", busy_at_start)
    out = tmp_path / "busy"
    assert main(["train", "--config", str(recipe), "--out", str(out), "--quiet", "--max-steps", "10"]) == 0
    train = [e for e in map(json.loads, (out / "log.jsonl").read_text().splitlines()) if e["event"] == "train"]
    assert len(calls) >= 2 and all(0 < e["mfu"] < 1 for e in train)  # not a share above the whole machine


def test_matmul_rate_leaves_the_random_stream_and_threads_alone():
    import torch

    from attnkit.train.mfu import matmul_rate

    threads = torch.get_num_threads()
    other = 2 if threads == 1 else 1  # a count that differs from the current one, which must come back
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    rate = matmul_rate(threads=other, size=64, repeats=2)
    assert torch.equal(torch.rand(3), expected)  # training's dropout and initialisation draw the same numbers
    assert torch.get_num_threads() == threads and rate > 0
    with pytest.raises(ValueError, match="size and repeats must be >= 1"):
        matmul_rate(size=0)
