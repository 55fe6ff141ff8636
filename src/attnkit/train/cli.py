"""``attnkit train --config FILE --out DIR [overrides] [--resume]``."""

from __future__ import annotations

import sys

from attnkit.cli import UserError
from attnkit.configfile import SettingsFileError, read_settings_file
from attnkit.models import ConfigError

from .config import RecipeError, apply_override, recipe_from_dict, set_value
from .corpus import CorpusError

# flag -> (recipe key, type, metavar, help)
FLAGS = {
    "--model": ("model.kind", str, "KIND", "model kind: seq2seq-fixed, seq2seq-context, seq2seq-attention, transformer"),
    "--train": ("data.train", str, "FILE", "training data file"),
    "--dev": ("data.dev", str, "FILE", "development data file (validation loss and BLEU)"),
    "--format": ("data.format", str, "FORMAT", "data format: manythings, tsv, moses, cedict"),
    "--max-minutes": ("train.max_minutes", float, "M", "stop cleanly after this many minutes, keeping the best checkpoint"),
    "--max-steps": ("train.max_steps", int, "N", "stop after this many optimizer steps"),
    "--max-epochs": ("train.max_epochs", int, "N", "stop after this many passes over the training data"),
    "--max-tokens": ("train.max_tokens", int, "N", "padded tokens per batch and side"),
    "--lr": ("train.lr", float, "LR", "peak learning rate"),
    "--eval-every": ("train.eval_every", int, "N", "optimizer steps between validations and checkpoints"),
    "--seed": ("train.seed", int, "N", "random seed"),
    "--threads": ("train.threads", int, "N", "CPU threads for PyTorch"),
}


def _dest(flag: str) -> str:
    return "flag_" + flag[2:].replace("-", "_")


def add_arguments(parser) -> None:
    parser.add_argument("--config", required=True, metavar="FILE", help="YAML recipe with data/tokenizer/model/train sections")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (checkpoints, best/, log.jsonl)")
    parser.add_argument("--resume", action="store_true", help="continue exactly from the last checkpoint in --out")
    parser.add_argument("--strict", action="store_true", help="refuse data with bad lines instead of skipping them")
    parser.add_argument("--deterministic", action="store_true", help="deterministic algorithms (bit-exact resume)")
    parser.add_argument("--set", action="append", default=[], metavar="section.key=value",
                        help="override any recipe key, e.g. --set train.label_smoothing=0.2 (repeatable)")
    parser.add_argument("--quiet", action="store_true", help="no progress line")
    for flag, (key, typ, metavar, help_text) in FLAGS.items():
        parser.add_argument(flag, type=typ, dest=_dest(flag), metavar=metavar, help=f"{help_text} ({key})")


def load_recipe(args):
    """The recipe of ``--config`` with the command line's flags and ``--set`` applied, validated."""
    return _load_recipe(args)[0]


def _load_recipe(args):
    """:func:`load_recipe`'s recipe, and the command-line option that set each recipe key set on the command
    line (for the errors about a value that only the data and the model show to be impossible)."""
    try:
        data = read_settings_file(args.config)
    except SettingsFileError as err:
        raise UserError(str(err)) from None
    origins: dict[str, str] = {}  # recipe key -> the command-line option that set it
    try:
        for flag, (key, _, _, _) in FLAGS.items():
            value = getattr(args, _dest(flag))
            if value is not None:
                # the flag's value as argparse typed it: a file named "5" or "yes" stays a file name
                set_value(data, key, value, flag)
                origins[key] = f"{flag} {value}"
        if args.strict:
            set_value(data, "data.strict", True, "--strict")
            origins["data.strict"] = "--strict"
        if args.deterministic:
            set_value(data, "train.deterministic", True, "--deterministic")
            origins["train.deterministic"] = "--deterministic"
        for assignment in args.set:
            apply_override(data, assignment)
            key = assignment.split("=", 1)[0].strip()
            origins.pop(key, None)  # the latest assignment comes last
            origins[key] = f"--set {assignment}"
        if args.flag_model:
            from attnkit.models.cli import with_kind
            from attnkit.models.config import MODEL_KINDS

            if args.flag_model not in MODEL_KINDS:
                raise UserError(f"--model must be one of {', '.join(MODEL_KINDS)}, got {args.flag_model!r}")
            data["model"] = with_kind(data.get("model") or {}, args.flag_model)
        note = _drop_files_for_cedict(data, origins, args.config)
        recipe = recipe_from_dict(data)
        if note:
            print(f"attnkit train: note: {note}", file=sys.stderr)
        return recipe, origins
    except RecipeError as err:
        raise UserError(_located(err, origins, args.config)) from None
    except ConfigError as err:
        raise UserError(f"{args.config}: {err}") from None


def _located(err: RecipeError, origins: dict[str, str], config: str) -> str:
    """The error about a recipe value, after the option that set it, or else the recipe file."""
    return f"{_origin(origins, err.key) or config}: {err}"


def _origin(origins: dict[str, str], key: str | tuple[str, ...]) -> str | None:
    """The command-line option that set ``key`` (or one of several keys) or a section holding it
    (``--set model.attention={...}`` sets ``model.attention.kind``): the latest such, or None when the value
    came from the recipe file."""
    keys = (key,) if isinstance(key, str) else key
    found = None
    for set_key, option in origins.items():
        if any(k == set_key or k.startswith(set_key + ".") for k in keys):
            found = option
    return found


def _drop_files_for_cedict(data: dict, origins: dict[str, str], config: str) -> str | None:
    """``--format cedict`` (or ``--set data.format=cedict``) on the command line trains on the built-in
    dictionary: the data files the recipe file names are not read, so they are dropped (files given on the
    command line are kept, and refused). Returns the note saying so, or None."""
    section = data.get("data")
    if "data.format" not in origins or not isinstance(section, dict) or section.get("format") != "cedict":
        return None
    dropped = [f"data.{k}" for k in ("train", "dev", "test") if section.get(k) is not None and f"data.{k}" not in origins]
    for key in dropped:
        section[key.split(".")[1]] = None
    if not dropped:
        return None
    return (f"{origins['data.format']}: training on the built-in CC-CEDICT dictionary, not on the "
            f"{', '.join(dropped)} file(s) of {config}")


def run(args) -> int:
    from attnkit.data import DataError
    from attnkit.text import TokenizerError

    from .loop import TrainError, train

    recipe, origins = _load_recipe(args)
    try:
        result = train(recipe, args.out, resume=args.resume, progress=not args.quiet)
    except RecipeError as err:  # a value the data and the model make impossible (train.eval_beam): as at loading
        raise UserError(_located(err, origins, args.config)) from None
    except (CorpusError, DataError, TokenizerError, TrainError) as err:
        raise UserError(str(err)) from None
    return 0 if result.step > 0 else 1
