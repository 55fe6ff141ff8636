"""`attnkit demo`: the corpus around its phrases, the cache per phrase set, its errors, and one short run."""

from __future__ import annotations

import pytest

from attnkit.cli import main
from attnkit.data import load_cedict
from attnkit.demo.cli import PHRASES, RECIPE, default_cache, focus_text
from attnkit.train import recipe_from_dict
from attnkit.train.corpus import CorpusError, read_split
from attnkit.train.config import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")


def test_default_phrases_select_a_small_corpus_that_contains_them():
    recipe = recipe_from_dict({**RECIPE, "data": {**RECIPE["data"], "focus": focus_text(PHRASES)}})
    pairs = read_split(recipe.data, "train")
    heads = {p.src for p in pairs}
    # every default phrase that CC-CEDICT has is in the demo's training data (机器学习 is not in it)
    in_dictionary = {p.src for p in load_cedict("train")} & set(PHRASES)
    assert in_dictionary == set(PHRASES) - {"机器学习"}
    assert in_dictionary <= heads
    assert all(set(p.src) & set(focus_text(PHRASES)) for p in pairs)
    assert 2_000 < len(pairs) < 10_000


def test_cache_folder_depends_on_the_phrases_only(tmp_path, monkeypatch):
    monkeypatch.setenv("ATTNKIT_HOME", str(tmp_path))
    assert default_cache() == tmp_path / "demo"
    assert default_cache(list(reversed(PHRASES))) == tmp_path / "demo"
    other = default_cache(["电脑", "手机"])
    assert other != tmp_path / "demo" and other == default_cache(["手机", "电脑"])
    assert other.parent == tmp_path


def test_focus_is_refused_for_files_and_phrases_without_chinese(tmp_path, capsys):
    with pytest.raises(ConfigError, match="data.focus"):
        recipe_from_dict({"data": {"format": "manythings", "train": "x.tsv", "focus": "机器"}})
    recipe = recipe_from_dict({"data": {"format": "cedict", "focus": "hello"}})
    with pytest.raises(CorpusError, match="data.focus: focus must contain Chinese characters"):
        read_split(recipe.data, "train")
    assert main(["demo", "--cache", str(tmp_path / "c"), "hello"]) == 2
    assert "must contain Chinese characters" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


def test_phrases_whose_characters_no_entry_has_are_refused_before_the_cache_is_touched(tmp_path, capsys):
    rare = "\u3400"  # 㐀: a Chinese character that no CC-CEDICT headword holds
    assert not any(rare in p.src for split in ("train", "dev", "test") for p in load_cedict(split))
    recipe = recipe_from_dict({"data": {"format": "cedict", "focus": rare}})
    with pytest.raises(CorpusError, match=f"data.focus: no CC-CEDICT entry shares a Chinese character with '{rare}'"):
        read_split(recipe.data, "train")
    assert read_split(recipe.data, "dev") == []  # no dev set: training goes without validation
    assert main(["demo", "--steps", "2", "--cache", str(tmp_path / "c"), rare]) == 2
    assert f"attnkit demo: error: no CC-CEDICT entry shares a character with {rare}" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


def test_an_error_while_the_demo_trains_is_one_clear_line(tmp_path, monkeypatch, capsys):
    from attnkit.train.loop import TrainError

    def train(*args, **kwargs):
        raise TrainError("cannot save the checkpoint of step 100 in the cache (No space left on device)")

    monkeypatch.setattr("attnkit.train.train", train)
    assert main(["demo", "--steps", "2", "--cache", str(tmp_path / "c"), "--heatmap", str(tmp_path / "h.png"),
                 "你好"]) == 2
    assert capsys.readouterr().err == ("attnkit demo: error: cannot save the checkpoint of step 100 in the cache "
                                       "(No space left on device)\n")


@pytest.mark.parametrize("option,value", [("--steps", "0"), ("--minutes", "-1")])
def test_a_demo_budget_that_is_not_positive_is_refused_before_anything_is_written(option, value, tmp_path, capsys):
    assert main(["demo", option, value, "--cache", str(tmp_path / "c"), "你好"]) == 2
    assert f"{option} must be > 0, got {value}" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


def test_a_short_demo_trains_translates_writes_a_heatmap_and_then_uses_its_cache(tmp_path, monkeypatch, capsys):
    import attnkit.runtime as runtime
    from attnkit.decode.cli import check_decoding_memory
    from attnkit.decode.translator import Translator
    from attnkit.demo.cli import _floor_translator
    from attnkit.models import build_model
    from attnkit.text.char import CharTokenizer

    cache, png = tmp_path / "cache", tmp_path / "heat.png"
    args = ["demo", "--steps", "2", "--cache", str(cache), "--heatmap", str(png), "--beam", "2", "你好", "谢谢"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "for 2 updates (at most 12 minutes) on the CC-CEDICT entries that share a character with 你好 谢谢" in out
    assert "stopped at step 2: reached max_steps=2" in out
    lines = [line for line in out.splitlines() if line.startswith("  ") and "  →  " in line]
    assert [line.split("→")[0].strip().rstrip("\u3000") for line in lines] == ["你好", "谢谢"]
    assert (cache / "best" / "model.safetensors").is_file()
    if png.exists():  # no CJK font: the demo says so instead of writing it
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    else:
        assert "no heatmap written" in out
    assert main(args) == 0
    assert "using the cached demo model" in capsys.readouterr().out
    # the check before training never asks for more than a trained model needs: no --beam that fits is refused
    trained, floor = Translator.load(cache / "best"), _floor_translator()
    assert trained.model.tgt_vocab_size > 260
    for phrases in (["你好", "谢谢"], list(PHRASES), ["一" * 300]):
        for beam in (1, 4, 50, 5000):
            assert floor.decoding_bytes(phrases, beam=beam, need_attention=True) < trained.decoding_bytes(
                phrases, beam=beam, need_attention=True)
    # the default --beam 4 over the default phrases fits this machine, before training and after, even with the
    # most target pieces the recipe allows
    largest = recipe_from_dict(RECIPE)
    largest = Translator(build_model(largest.model, 10, largest.tokenizer.tgt.vocab_size), CharTokenizer([]),
                         CharTokenizer([]))
    for translator in (floor, trained, largest):
        check_decoding_memory(translator, list(PHRASES), 4, need_attention=True)
    # the cached model is checked itself before it translates: a --beam above its need is refused, though the
    # check before training (at most this model's need) let it through
    need = trained.decoding_bytes(["你好", "谢谢"], beam=2, need_attention=True)
    assert floor.decoding_bytes(["你好", "谢谢"], beam=2, need_attention=True) < need - 1
    picture = png.read_bytes() if png.exists() else None
    monkeypatch.setattr(runtime, "available_memory", lambda: need - 1)
    assert main(args) == 2
    captured = capsys.readouterr()
    assert captured.err == (f"attnkit demo: error: --beam 2: beam search over 2 sentences at a time needs at least "
                            f"{need / 1024:.1f} KiB of memory, more than the {(need - 1) / 1024:.1f} KiB available: "
                            f"use a smaller --beam\n")
    assert captured.out == "" and (png.read_bytes() if png.exists() else None) == picture
    monkeypatch.setattr(runtime, "available_memory", lambda: need)
    assert main(args) == 0


def test_a_demo_interrupted_while_it_trains_continues_its_training_when_run_again(tmp_path, monkeypatch, capsys):
    import attnkit.train.loop as loop

    class CtrlC:  # Ctrl-C pressed during the first update: the loop stops after it, with a checkpoint
        reason = "signal SIGINT"

        def __call__(self, signum, frame):
            pass

    cache = tmp_path / "cache"
    args = ["demo", "--steps", "3", "--cache", str(cache), "--heatmap", str(tmp_path / "h.png"), "--beam", "1", "你好"]
    with monkeypatch.context() as patch:
        patch.setattr(loop, "_Stop", CtrlC)
        assert main(args) == 0
    out = capsys.readouterr().out
    assert "stopped at step 1: signal SIGINT" in out
    assert "training interrupted at update 1: `attnkit demo` with these phrases and this cache continues it" in out
    # a --beam the cached model cannot decode in memory is refused before the training goes on
    import attnkit.runtime as runtime
    from attnkit.decode.translator import Translator
    from attnkit.demo.cli import _floor_translator

    need = Translator.load(cache / "best").decoding_bytes(["你好"], beam=8, need_attention=True)
    assert _floor_translator().decoding_bytes(["你好"], beam=8, need_attention=True) < need - 1
    with monkeypatch.context() as patch:
        patch.setattr(runtime, "available_memory", lambda: need - 1)
        assert main([*args, "--beam", "8"]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("attnkit demo: error: --beam 8: beam search over 1 sentence at a time needs ")
    assert captured.out == "" and sorted(p.name for p in (cache / "checkpoints").iterdir()) == ["step-000001"]
    assert main(args) == 0  # not taken for the demo's model: trained on to its 3 updates
    out = capsys.readouterr().out
    assert f"continuing the training of the cached demo model in {cache}, stopped at update 1 of 3, for at most 12 " \
           "minutes in all" in out
    assert f"resuming from {cache / 'checkpoints' / 'step-000001'}" in out and "stopped at step 3: reached max_steps=3" in out
    assert main(args) == 0
    assert "using the cached demo model" in capsys.readouterr().out


def test_a_demo_stopped_by_its_time_cap_continues_only_when_given_more_minutes(tmp_path, capsys):
    cache = tmp_path / "cache"
    args = ["demo", "--steps", "3", "--cache", str(cache), "--heatmap", str(tmp_path / "h.png"), "--beam", "1", "你好"]
    assert main([*args, "--minutes", "0.0001"]) == 0  # the cap stops it after its first update
    assert "stopped at step 1: reached max_minutes=0.0001" in capsys.readouterr().out
    assert main([*args, "--minutes", "0.0001"]) == 0  # the same budget: that is the model it gives
    assert "using the cached demo model" in capsys.readouterr().out
    assert main(args) == 0  # no --minutes: the model the user capped is not trained on behind their back
    assert "using the cached demo model" in capsys.readouterr().out
    assert main([*args, "--minutes", "12"]) == 0  # more time: trained on to its 3 updates
    out = capsys.readouterr().out
    assert f"continuing the training of the cached demo model in {cache}, stopped at update 1 of 3, for at most 12 " \
           "minutes in all" in out
    assert "stopped at step 3: reached max_steps=3" in out
    assert main(args) == 0
    assert "using the cached demo model" in capsys.readouterr().out


# ------------------------------------------------------------------------------- the memory of --beam


def _demo_floor(phrases, beam: int) -> int:
    """The least decoding memory of any demo model for ``phrases``, written out: the recipe's Transformer with a
    target vocabulary of 260 pieces, the least a sentencepiece model holds (256 bytes + 4 specials); a source
    piece per character, plus EOS; outputs of up to 2 × (longest source) + 10 steps; all at once (batches of 64);
    the attention recorded, for the heatmap."""
    from attnkit.decode.memory import decoding_bytes
    from attnkit.models import build_model
    from attnkit.models.config import TransformerConfig

    assert RECIPE["tokenizer"]["src"]["kind"] == "char" and RECIPE["tokenizer"]["tgt"]["kind"] == "sentencepiece"
    model = build_model(TransformerConfig(**RECIPE["model"]), 10, 260)
    s = max(len(p) for p in phrases) + 1
    return decoding_bytes(model, len(phrases), beam, s, 2 * s + 10, need_attention=True)


def _no_training(*args, **kwargs):
    from attnkit.train.loop import TrainError

    raise TrainError("training started")


def test_a_beam_no_demo_model_can_decode_in_memory_is_refused_before_anything_is_trained(tmp_path, monkeypatch,
                                                                                            capsys):
    """--beam 10⁹ needs terabytes; the demo would train for minutes, then be killed without a word while it
    translates. Refused first, naming --beam, in one line; the cache is not touched."""
    from attnkit.runtime import available_memory

    if available_memory() is None:
        pytest.skip("no /proc/meminfo: the memory available is unknown and not checked")
    monkeypatch.setattr("attnkit.train.train", _no_training)
    cache = tmp_path / "c"
    assert main(["demo", "--beam", "1000000000", "--cache", str(cache), "你好"]) == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and captured.err.count("\n") == 1
    assert captured.err.startswith("attnkit demo: error: --beam 1000000000: beam search over 1 sentence at a time "
                                   "needs at least ")
    assert captured.err.endswith(" available: use a smaller --beam\n") and captured.out == ""
    assert not cache.exists()


def test_the_demo_refuses_before_training_only_a_beam_above_the_least_any_demo_model_needs(tmp_path, monkeypatch,
                                                                                              capsys):
    """Before training, the model's vocabulary is not known: the check takes the least it can be, so that no
    --beam a trained model could decode is refused (the estimate is itself a floor)."""
    import attnkit.runtime as runtime

    phrases = ["你好", "机器翻译"]
    monkeypatch.setattr("attnkit.train.train", _no_training)
    monkeypatch.setattr(runtime, "available_memory", lambda: _demo_floor(phrases, 8))
    cache = tmp_path / "c"
    assert main(["demo", "--beam", "8", "--cache", str(cache), *phrases]) == 2
    assert capsys.readouterr().err == "attnkit demo: error: training started\n"  # let through, to training
    assert main(["demo", "--beam", "9", "--cache", str(tmp_path / "d"), *phrases]) == 2
    need = _demo_floor(phrases, 9)
    assert capsys.readouterr().err == (
        f"attnkit demo: error: --beam 9: beam search over 2 sentences at a time needs at least {need / 2**20:.1f} MiB "
        f"of memory, more than the {_demo_floor(phrases, 8) / 2**20:.1f} MiB available: use a smaller --beam\n")
    assert not (tmp_path / "d").exists()
