"""``attnkit demo [--steps N] [--minutes M] [--cache DIR] [--retrain] [PHRASE ...]``."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from attnkit.cli import UserError, check_output_file, check_utf8_arguments, note_replaced, write_output

_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")

PHRASES = ("机器翻译", "注意力", "深度学习", "机器学习", "神经网络", "人工智能", "你好", "谢谢")

# The demo recipe: sized so that a 2-core CPU learns the dictionary entries around the phrases in minutes.
# The corpus is the CC-CEDICT entries that share a character with the phrases (~6,300 for the default ones):
# the whole dictionary (~96,000 entries) needs hours of this machine's time, not minutes.
RECIPE = {
    "data": {"format": "cedict", "dev_max_sentences": 200, "max_len": 32},
    "tokenizer": {"src": {"kind": "char"}, "tgt": {"kind": "sentencepiece", "vocab_size": 4000}},
    "model": {"kind": "transformer", "d_model": 256, "heads": 4, "encoder_layers": 3, "decoder_layers": 3,
              "ffn_dim": 1024, "dropout": 0.1},
    # A short warm-up and a high peak for a budget of 650 updates (~50 passes over the entries, ~8 minutes on a
    # 2-core CPU). The budget is a number of updates, so that the same machine gives the same model whatever
    # else it is doing; the time is only a cap, for much slower machines.
    "train": {"max_steps": 650, "max_minutes": 12.0, "eval_every": 100, "log_every": 25, "max_tokens": 3072,
              "warmup": 300, "lr": 1.5e-3, "patience": None},
}


def default_cache(phrases=PHRASES) -> Path:
    """``~/.cache/attnkit/demo`` for the default phrases; other phrases get their own folder."""
    base = os.environ.get("ATTNKIT_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache", "attnkit")
    if focus_text(phrases) == focus_text(PHRASES):
        return Path(base) / "demo"
    digest = hashlib.blake2b(focus_text(phrases).encode("utf-8"), digest_size=4).hexdigest()
    return Path(base) / f"demo-{digest}"


def focus_text(phrases) -> str:
    """The phrases' distinct characters in a fixed order: what selects the demo's corpus."""
    return "".join(sorted(set("".join(phrases))))


def add_arguments(parser) -> None:
    parser.add_argument("phrases", nargs="*", help=f"Chinese phrases to translate (default: {' '.join(PHRASES)}); "
                        "the model is trained on the dictionary entries that share a character with them")
    parser.add_argument("--steps", type=int, default=RECIPE["train"]["max_steps"],
                        help=f"training updates (default {RECIPE['train']['max_steps']})")
    parser.add_argument("--minutes", type=float, default=None,  # None: not given (see _interrupted)
                        help=f"stop training after this many minutes even if the updates are not done "
                             f"(default {RECIPE['train']['max_minutes']:g}; given, it also lets a demo model its "
                             f"time cap stopped train on)")
    parser.add_argument("--cache", type=Path, default=None,
                        help="where the demo model is kept: a new or empty folder, or one an earlier demo wrote "
                             "(default: ~/.cache/attnkit/demo, another folder beside it per phrase set)")
    parser.add_argument("--retrain", action="store_true", help="train again even if a cached model exists")
    parser.add_argument("--heatmap", type=Path, default=Path("demo-attention.png"),
                        help="where to write the attention heatmap (default: ./demo-attention.png)")
    parser.add_argument("--beam", type=int, default=4, help="beam size (default 4)")


# Written into the cache before training: the folder is the demo's own, which it may delete and
# train again. Any other folder given as --cache is never deleted.
MARKER = "attnkit-demo.json"
# What `attnkit train` writes into its --out (the demo cache's layout, with the marker); .tmp-best and
# .old-best are left by a run killed while it replaced best/.
_CACHE_ENTRIES = {MARKER, "recipe.yaml", "log.jsonl", "checkpoints", "best", ".tmp-best", ".old-best"}


def _subset(wanted, saved) -> bool:
    """Whether every key of ``wanted`` has the same value in ``saved`` (recursively)."""
    if isinstance(wanted, dict):
        return isinstance(saved, dict) and all(k in saved and _subset(v, saved[k]) for k, v in wanted.items())
    return wanted == saved


def _demo_recipe(cache: Path) -> dict | None:
    """The recipe of a folder laid out exactly as a demo training run, whose data, tokenizer and model
    sections are the demo's (apart from data.focus), or None."""
    import yaml

    if not {p.name for p in cache.iterdir()} <= _CACHE_ENTRIES:
        return None
    try:
        recipe = yaml.safe_load((cache / "recipe.yaml").read_text("utf-8"))
    except (OSError, ValueError, yaml.YAMLError):
        return None
    if not _subset({k: RECIPE[k] for k in ("data", "tokenizer", "model")}, recipe):
        return None
    return recipe


def cached_focus(cache: Path) -> str | None:
    """The focus text of the demo model cached in ``cache``, or None when ``cache`` is not
    recognisably a demo cache: its marker file, or (caches written before the marker) exactly the
    layout of a training run whose recipe is the demo's."""
    import json

    try:
        marker = json.loads((cache / MARKER).read_text("utf-8"))
        if isinstance(marker, dict) and isinstance(marker.get("focus"), str):
            return marker["focus"]
    except (OSError, ValueError):
        pass
    recipe = _demo_recipe(cache)
    if recipe is None:
        return None
    fixed = {k: v for k, v in RECIPE["train"].items() if k not in ("max_steps", "max_minutes")}
    if not _subset(fixed, recipe.get("train")) or not isinstance(recipe["data"].get("focus"), str):
        return None
    return recipe["data"]["focus"]


def _older_demo_cache(cache: Path) -> bool:
    """Whether ``cache`` is a demo cache written before the demo recorded its phrases: the demo's layout and
    recipe, without data.focus (a run that has one is someone's own focused run, never taken for the
    demo's). --retrain may replace it."""
    recipe = _demo_recipe(cache)
    if recipe is None or "focus" in (recipe.get("data") or {}):
        return False
    return any(_subset(train, recipe.get("train")) for train in _OLDER_TRAIN)


# The demo's training settings before it recorded its phrases (whole-dictionary runs), --minutes aside.
_OLDER_TRAIN = (
    {"max_steps": 1_000_000, "eval_every": 400, "log_every": 25, "max_tokens": 3072, "warmup": 300, "lr": 1.5e-3,
     "patience": None},
    {"max_steps": 1_000_000, "eval_every": 500, "log_every": 25, "max_tokens": 4096, "warmup": 500, "lr": 1e-3,
     "patience": None},
)


def _check(args, phrases: list[str]) -> None:
    """Everything about the options that can be checked before minutes of training."""
    if args.minutes is not None and args.minutes <= 0:
        raise UserError(f"--minutes must be > 0, got {args.minutes}")
    if args.steps <= 0:
        raise UserError(f"--steps must be > 0, got {args.steps}")
    if args.beam < 1:
        raise UserError(f"--beam must be >= 1, got {args.beam}")
    for n, p in enumerate(phrases, start=1):
        if not p.strip():
            raise UserError(f"phrase {n} is empty: give Chinese phrases to translate")
    if not any(_HAN.search(p) for p in phrases):
        raise UserError(f"the phrases must contain Chinese characters, got {' '.join(phrases)!r}")
    check_output_file(args.heatmap, "--heatmap", (".png", ".svg"))  # --cache: checked by _prepare_cache


def _interrupted(cache: Path, minutes_now: float, recipe) -> tuple[int, int, float] | None:
    """``(update, max_steps, max_minutes)`` of the demo run in ``cache`` when resuming it would train on: when
    its last checkpoint has reached no limit (:func:`attnkit.train.loop.limit_reached`, the test ``train``
    itself makes on resuming) of ``recipe(max_steps, max_minutes)``, its own budget with the minutes raised to
    ``minutes_now`` (--minutes, when given). So a run stopped before its budget (a Ctrl-C, a kill), or at its
    time cap before its updates when --minutes allows more, continues (for the larger of the minutes); for
    any other, None: the cached model is used as it is."""
    import json

    import yaml

    from attnkit.train.checkpoint import latest_checkpoint
    from attnkit.train.loop import limit_reached

    last = latest_checkpoint(cache)
    try:
        budget = yaml.safe_load((cache / "recipe.yaml").read_text("utf-8"))["train"]
        steps, minutes = budget["max_steps"], max(budget["max_minutes"], minutes_now)
        state = json.loads((last / "trainer.json").read_text("utf-8"))
        if limit_reached(recipe(steps, minutes).train, state) is None:
            return state["step"], steps, minutes
    except (OSError, ValueError, KeyError, TypeError, yaml.YAMLError):
        pass  # not a run this attnkit wrote: the cached model is used as it is
    return None


def _floor_translator():
    """A stand-in for the demo model before it is trained, for :meth:`Translator.decoding_bytes`: the
    recipe's Transformer with the smallest vocabularies its tokenizers can have (a sentencepiece target
    holds at least its 256 byte pieces and 4 specials, whatever the corpus), and an empty character
    vocabulary, which encodes each character as one piece (UNK), as the trained source tokenizer does. Of
    what a trained model could have otherwise, the estimate grows only with the target vocabulary, so it
    is at most the trained model's: a --beam it refuses fits no demo model. (~20 MB, freed at once; on
    the meta device it would take a second longer to build.)"""
    from attnkit.decode.translator import Translator
    from attnkit.models import build_model
    from attnkit.text.char import CharTokenizer
    from attnkit.text.spm import MIN_VOCAB_SIZE
    from attnkit.train import recipe_from_dict

    none = CharTokenizer([])
    return Translator(build_model(recipe_from_dict(RECIPE).model, none.vocab_size, MIN_VOCAB_SIZE), none, none)


def _check_corpus(phrases: list[str]) -> None:
    """Refuse phrases none of whose characters occurs in a CC-CEDICT headword: there is nothing to train on."""
    from attnkit.data import load_cedict

    if not load_cedict("train", focus=focus_text(phrases)):
        raise UserError(f"no CC-CEDICT entry shares a character with {' '.join(phrases)}: there is nothing to train "
                        f"the demo on; give phrases with other Chinese characters")


def _prepare_cache(cache: Path, focus: str, phrases: list[str], retrain: bool, where: str | None = None) -> bool:
    """Whether to train into ``cache``; deletes an earlier demo model only when the folder is
    recognisably the demo's own, and only the entries the demo writes there. A folder holding anything
    else is refused, never emptied. ``where`` names the folder in errors (default ``--cache CACHE``)."""
    import json
    import shutil

    where = where or f"--cache {cache}"
    other = "choose another --cache" if where.startswith("--cache") else "pass --cache DIR to use another folder"
    if cache.exists() and not cache.is_dir():
        raise UserError(f"{where}: is a file, not a folder; move it away, or {other}")
    if cache.is_dir() and any(cache.iterdir()):
        found = cached_focus(cache)
        if found is None and not _older_demo_cache(cache):
            raise UserError(f"{where}: the folder is not empty and is not a demo cache (no {MARKER}); refusing to "
                            f"delete what is in it: move it away, or {other} (a new or empty folder)")
        if found is None and not retrain:
            raise UserError(f"{where} holds a demo model from an older attnkit (its phrases were not recorded); "
                            f"pass --retrain to replace it, or {other}")
        if found is not None and found != focus and not retrain:
            raise UserError(f"{where} holds the demo model for other phrases (the characters {found}); "
                            f"{other} for {' '.join(phrases)}, or pass --retrain to replace it")
        if found is not None and (cache / "best" / "model.safetensors").is_file() and not retrain:
            return False
        extra = sorted(p.name for p in cache.iterdir() if p.name not in _CACHE_ENTRIES)
        if extra:
            shown = ", ".join(extra[:5]) + (f" and {len(extra) - 5} more" if len(extra) > 5 else "")
            raise UserError(f"{where} holds files the demo did not write ({shown}); refusing to delete them with "
                            f"the demo model: move them away, or {other}")
    cache.mkdir(parents=True, exist_ok=True)
    for name in sorted(_CACHE_ENTRIES - {MARKER}):  # the earlier model and training run, nothing else
        entry = cache / name
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        elif entry.exists() or entry.is_symlink():
            entry.unlink()
    # the marker only now: a run killed before this point leaves the earlier marker and no model (never the
    # earlier phrases' model under the new phrases' marker)
    (cache / MARKER).write_text(json.dumps({"focus": focus, "phrases": phrases}, ensure_ascii=False) + "\n",
                                encoding="utf-8")
    return True


def run(args) -> int:
    from attnkit.data import DataError
    from attnkit.decode.cli import check_decoding_memory
    from attnkit.decode.translator import Translator
    from attnkit.text import TokenizerError
    from attnkit.train import recipe_from_dict, train
    from attnkit.train.corpus import CorpusError
    from attnkit.train.loop import TrainError

    phrases = args.phrases or list(PHRASES)
    check_utf8_arguments(phrases, "phrase")
    _check(args, phrases)
    # a --beam no demo model's decoding can fit in memory: refused before minutes of training (the trained
    # model is checked again before it translates)
    check_decoding_memory(_floor_translator(), phrases, args.beam, need_attention=True)
    cache = args.cache or default_cache(phrases)
    if args.phrases and (args.retrain or not (cache / "best").is_dir()):
        _check_corpus(phrases)  # before the cache is touched (--retrain would delete a model for nothing); ~2 s
    where = None if args.cache is not None else f"the demo cache {cache}"
    model_dir = cache / "best"

    def recipe(steps: int, minutes: float):
        return recipe_from_dict({**RECIPE, "data": {**RECIPE["data"], "focus": focus_text(phrases)},
                                 "train": {**RECIPE["train"], "max_steps": steps, "max_minutes": minutes}})

    def run_training(*args, **kwargs):
        try:
            result = train(*args, beside={MARKER}, **kwargs)
        except (CorpusError, DataError, TokenizerError, TrainError) as err:
            raise UserError(str(err)) from None
        if result.stopped_because.startswith("signal"):
            print(f"training interrupted at update {result.step}: `attnkit demo` with these phrases and this cache "
                  f"continues it (--retrain starts again)")

    translator = None
    if _prepare_cache(cache, focus_text(phrases), phrases, args.retrain, where):
        minutes = RECIPE["train"]["max_minutes"] if args.minutes is None else args.minutes
        print(f"training a small Transformer for {args.steps} updates (at most {minutes:g} minutes) on the "
              f"CC-CEDICT entries that share a character with {' '.join(phrases)} (cached in {cache})")
        run_training(recipe(args.steps, minutes), cache)
    else:
        # the cached model, checked before it trains on or translates (training on keeps its vocabularies);
        # one that does not load is reported below, once the training that continues may have replaced it
        translator = _load_if_it_loads(model_dir)
        if translator is not None:
            check_decoding_memory(translator, phrases, args.beam, need_attention=True)
        if (stopped := _interrupted(cache, args.minutes or 0.0, recipe)) is not None:
            step, steps, minutes = stopped
            print(f"continuing the training of the cached demo model in {cache}, stopped at update {step} of "
                  f"{steps}, for at most {minutes:g} minutes in all (--retrain to start again)")
            run_training(recipe(steps, minutes), cache, resume=True)
            translator = None  # best/ may be a newer model now
        else:
            print(f"using the cached demo model in {model_dir} (--retrain to train again)")
    if translator is None:
        try:
            translator = Translator.load(model_dir)
        except (FileNotFoundError, ValueError) as err:
            raise UserError(f"{err} (--retrain to train it again)") from None
        check_decoding_memory(translator, phrases, args.beam, need_attention=True)
    results = translator.translate(phrases, beam=args.beam, need_attention=True)
    width = max(len(p) for p in phrases)
    print()
    for r in results:
        print(f"  {r.source}{'　' * (width - len(r.source))}  →  {r.text}")
    _heatmap(results[0], args.heatmap)
    return 0


def _load_if_it_loads(model_dir: Path):
    """The Translator of ``model_dir``, or None when it does not load."""
    from attnkit.decode.translator import Translator

    try:
        return Translator.load(model_dir)
    except (FileNotFoundError, ValueError):
        return None


def _heatmap(result, path: Path) -> None:
    from attnkit.viz import NoCJKFontError, plot_attention, select_heads

    try:
        weights = select_heads(result.attention, layer=-1, head="mean")
        existed = path.is_file()
        # a temporary file renamed over the path: a failed write leaves an earlier picture as it was
        write_output(path, lambda tmp: plot_attention(weights, result.src_pieces, result.attention_rows, tmp,
                                                      title=f"{result.source} → {result.text} (last layer, mean of heads)"))
    except NoCJKFontError as err:
        print(f"\nno heatmap written: {err}")
        return
    except OSError as err:
        raise UserError(f"--heatmap {path}: cannot write it ({err.strerror or err})") from None
    if existed:
        note_replaced(path, "demo")
    print(f"\ncross-attention of the last decoder layer for {result.source!r} written to {path}")
