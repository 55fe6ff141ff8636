"""The training recipe: one YAML file with four sections, read and validated once.

    data:       where the pairs come from (format, files, direction, strictness)
    tokenizer:  attnkit.text.TokenizerConfig (char / sentencepiece per side, joint or not)
    model:      attnkit.models config (kind and sizes)
    train:      TrainSettings below

Any key can be overridden from the command line (``--set train.lr=3e-4``; the common ones have their
own flags). Relative data paths are taken from the current directory.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, Union

from attnkit.configfile import load_yaml
from attnkit.models import ConfigError, ModelConfig, config_from_dict, config_to_dict
from attnkit.models.config import RNNConfig, TransformerConfig, dataclass_from_dict
from attnkit.text import BOS_ID, EOS_ID, PAD_ID, TokenizerConfig
from attnkit.text.build import SpecError
from attnkit.text.build import CharSpec, SentencePieceSpec

from .schedule import SCHEDULES

__all__ = ["DataSettings", "TrainSettings", "Recipe", "RecipeError", "recipe_from_dict", "apply_override", "set_value",
           "FORMATS"]

FORMATS = ("manythings", "tsv", "moses", "cedict")


class RecipeError(ConfigError):
    """A recipe value of the wrong type or out of range; ``key`` is its full name (``train.lr``), or the
    names of the values that clash together."""

    def __init__(self, key: str | tuple[str, ...], message: str):
        super().__init__(message)
        self.key = key

    def __reduce__(self):
        # pickle rebuilds an exception as cls(*args), and args holds only the message
        return type(self), (self.key, str(self)), self.__dict__


# --- one typed check of every value against its config dataclass's field type ------------------------

def _expected(hint) -> str:
    """How a field type reads in an error message."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        kinds = [_expected(a) for a in args if a is not type(None)]
        return " or ".join(kinds) + (" or null" if type(None) in args else "")
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin is tuple:
        return f"a list of {len(args)} " + ("numbers" if all(a is float for a in args) else "values")
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(hint, "a mapping")


def _fits(value, hint) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if origin in (Union, types.UnionType):
        return any(_fits(value, a) for a in args)
    if hint is type(None):
        return value is None
    if origin is Literal:
        return isinstance(value, str) and value in args
    if origin is tuple:
        return isinstance(value, (list, tuple)) and len(value) == len(args) and all(map(_fits, value, args))
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:  # an integer is a number too; NaN and infinities are no setting
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if hint is str:
        return isinstance(value, str)
    if dataclasses.is_dataclass(hint):  # a mapping of its fields; null (or {}) is its defaults
        return value is None or isinstance(value, (dict, hint))
    return isinstance(value, hint)


def check_types(cls, values: dict[str, Any], prefix: str) -> None:
    """Raise :class:`RecipeError` naming the first value in ``values`` that does not fit the type of the
    field of ``cls`` it sets (``prefix`` + name is the key in the message); unknown names are left to
    the caller. A nested config dataclass given as a mapping is checked the same way."""
    hints = typing.get_type_hints(cls)
    for name, value in values.items():
        if name not in hints:
            continue
        key, hint = prefix + name, hints[name]
        if not _fits(value, hint):
            shown = list(value) if isinstance(value, tuple) else value  # as it was written: a YAML list
            raise RecipeError(key, f"{key} must be {_expected(hint)}, got {shown!r}")
        if dataclasses.is_dataclass(hint) and isinstance(value, dict):
            check_types(hint, value, key + ".")


def _require(ok: bool, key: str, what: str, value) -> None:
    if not ok:
        raise RecipeError(key, f"{key} must be {what}, got {value!r}")


def _check_path(data: "DataSettings", split: str) -> None:
    spec, key = getattr(data, split), f"data.{split}"
    if data.format == "cedict":
        if spec is not None:
            raise RecipeError(key, f"{key} is not read with data.format='cedict' (the embedded dictionary); "
                                   f"remove it, or set it to null (--set {key}=null), or choose another data.format")
        return
    if data.format == "moses":
        ok = spec is None or (isinstance(spec, (list, tuple)) and len(spec) == 2 and all(isinstance(p, str) and p for p in spec))
        _require(ok, key, "[source_file, target_file] for data.format='moses'", spec)
    else:
        ok = spec is None or (isinstance(spec, str) and spec != "")
        _require(ok, key, f"a file path for data.format={data.format!r} (a list of two files is for 'moses')", spec)


@dataclass(frozen=True)
class DataSettings:
    """``format``: ``manythings`` (English<TAB>Chinese<TAB>attribution), ``tsv`` (columns ``src_col`` and
    ``tgt_col``), ``moses`` (``train``/``dev``/``test`` are ``[source_file, target_file]``) or ``cedict``
    (the embedded CC-CEDICT corpus; no files)."""

    format: str = "cedict"
    train: Any = None
    dev: Any = None
    test: Any = None
    direction: str = "zh-en"
    src_col: int = 0
    tgt_col: int = 1
    strict: bool = False
    max_chars: int = 1000
    max_len: int = 128  # pairs with a side longer than this many tokens are skipped (and counted)
    dev_max_sentences: int | None = 500  # dev BLEU on the first N dev pairs (None: all)
    focus: str | None = None  # cedict only: keep entries sharing a Chinese character with this text

    def __post_init__(self):
        check_types(DataSettings, _values(self), "data.")
        if self.format not in FORMATS:
            raise RecipeError("data.format", f"data.format must be one of {list(FORMATS)}, got {self.format!r}")
        if self.format != "cedict" and not self.train:
            raise RecipeError("data.train", f"data.train is required for data.format={self.format!r}")
        for split in ("train", "dev", "test"):
            _check_path(self, split)
        if self.focus is not None and self.format != "cedict":
            raise RecipeError("data.focus", f"data.focus applies to data.format='cedict' only, not {self.format!r}")
        if self.direction not in ("zh-en", "en-zh"):
            raise RecipeError("data.direction", f"data.direction must be 'zh-en' or 'en-zh', got {self.direction!r}")
        for name in ("src_col", "tgt_col"):
            _require(getattr(self, name) >= 0, f"data.{name}", "a column number >= 0", getattr(self, name))
        if self.src_col == self.tgt_col:
            raise RecipeError("data.tgt_col", f"data.src_col and data.tgt_col must differ, both are {self.src_col}")
        for name in ("max_chars", "max_len"):
            _require(getattr(self, name) >= 1, f"data.{name}", "a positive integer", getattr(self, name))
        if self.dev_max_sentences is not None:
            _require(self.dev_max_sentences >= 1, "data.dev_max_sentences", "a positive integer, or null for all",
                     self.dev_max_sentences)


@dataclass(frozen=True)
class TrainSettings:
    max_tokens: int = 4096  # padded tokens per side per batch
    accumulate: int = 1  # batches per optimizer step, their loss per target token (with max_epochs, fewer left at the end make one more)
    lr: float = 7e-4
    schedule: str = "inverse_sqrt"
    warmup: int = 1000
    betas: tuple[float, float] = (0.9, 0.98)  # Adam's beta1 and beta2, each in [0, 1)
    weight_decay: float = 0.0
    label_smoothing: float = 0.1
    clip_norm: float | None = 1.0  # largest gradient norm (> 0); None: no clipping
    max_steps: int | None = None
    max_epochs: int | None = None
    max_minutes: float | None = None
    eval_every: int = 500  # optimizer steps between validations (and checkpoints)
    patience: int | None = 10  # (None: never) stop after this many validations without a better dev BLEU
    keep_last: int = 2  # checkpoints kept besides the best
    seed: int = 1
    eval_beam: int = 1  # beam size for dev BLEU (1 = greedy)
    deterministic: bool = False  # torch.use_deterministic_algorithms, for bit-exact resumes
    threads: int | None = None  # torch.set_num_threads; None keeps PyTorch's choice
    log_every: int = 50  # optimizer steps between progress reports

    def __post_init__(self):
        check_types(TrainSettings, _values(self), "train.")
        for name in ("max_tokens", "accumulate", "warmup", "eval_every", "keep_last", "log_every", "eval_beam"):
            _require(getattr(self, name) >= 1, f"train.{name}", "a positive integer", getattr(self, name))
        for name in ("max_steps", "max_epochs", "patience", "threads"):
            v = getattr(self, name)
            _require(v is None or v >= 1, f"train.{name}", "a positive integer, or null for none", v)
        _require(self.max_minutes is None or self.max_minutes > 0, "train.max_minutes", "> 0, or null for none",
                 self.max_minutes)
        if self.schedule not in SCHEDULES:
            raise RecipeError("train.schedule", f"train.schedule must be one of {list(SCHEDULES)}, got {self.schedule!r}")
        if not self.lr > 0:
            raise RecipeError("train.lr", f"train.lr must be > 0, got {self.lr!r}")
        _require(all(0 <= b < 1 for b in self.betas), "train.betas", "two numbers in [0, 1)", list(self.betas))
        _require(self.weight_decay >= 0, "train.weight_decay", ">= 0", self.weight_decay)
        if not 0 <= self.label_smoothing < 1:
            raise RecipeError("train.label_smoothing", f"train.label_smoothing must be in [0, 1), got {self.label_smoothing!r}")
        _require(self.clip_norm is None or self.clip_norm > 0, "train.clip_norm", "> 0, or null for no clipping",
                 self.clip_norm)
        _require(0 <= self.seed < 2**63, "train.seed", "an integer in [0, 2**63)", self.seed)
        if self.max_steps is None and self.max_epochs is None and self.max_minutes is None:
            raise ConfigError("set at least one of train.max_steps, train.max_epochs, train.max_minutes")


def _values(settings) -> dict[str, Any]:
    return {f.name: getattr(settings, f.name) for f in dataclasses.fields(settings)}


@dataclass(frozen=True)
class Recipe:
    data: DataSettings = field(default_factory=DataSettings)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    model: ModelConfig = field(default_factory=lambda: config_from_dict({"kind": "transformer"}))
    train: TrainSettings = field(default_factory=lambda: TrainSettings(max_steps=1000))

    def to_dict(self) -> dict[str, Any]:
        return {
            "data": dataclasses.asdict(self.data),
            "tokenizer": self.tokenizer.to_dict(),
            "model": config_to_dict(self.model),
            "train": dataclasses.asdict(self.train),
        }


def _section(cls, data: Any, name: str):
    if cls is TrainSettings and isinstance(data, dict) and isinstance(data.get("betas"), list):
        data = {**data, "betas": tuple(data["betas"])}
    return dataclass_from_dict(cls, data, f"{name}.")


def _check_model(data: Any) -> None:
    """Types of the model section (the model configs check ranges, not types: ``norm_first: maybe``)."""
    if not isinstance(data, dict):
        return
    kind = data.get("kind", "transformer")
    cls = TransformerConfig if kind == "transformer" else RNNConfig
    check_types(cls, {k: v for k, v in data.items() if k != "kind"}, "model.")  # attention: nested


def _check_tokenizer(data: Any) -> None:
    """Types of the tokenizer section (``joint: maybe`` or ``vocab_size: big``)."""
    if not isinstance(data, dict):
        raise RecipeError("tokenizer", f"tokenizer must be a mapping, got {data!r}")
    if "joint" in data:
        check_types(TokenizerConfig, {"joint": data["joint"]}, "tokenizer.")
    specs = {"char": CharSpec, "sentencepiece": SentencePieceSpec}
    for side in ("src", "tgt"):
        spec = data.get(side)
        if isinstance(spec, dict) and spec.get("kind") in specs:
            check_types(specs[spec["kind"]], {k: v for k, v in spec.items() if k != "kind"}, f"tokenizer.{side}.")


def _check_special_ids(model: ModelConfig) -> None:
    """The model's pad, bos and eos ids must be the ones attnkit's tokenizers and batches use (0, 1, 2):
    with others the loss would count padding and skip a real token, and decoding start and stop on the
    wrong tokens."""
    for name, want, piece in (("pad_id", PAD_ID, "<pad>"), ("bos_id", BOS_ID, "<s>"), ("eos_id", EOS_ID, "</s>")):
        value = getattr(model, name)
        if value != want:
            key = f"model.{name}"
            raise RecipeError(key, f"{key} must be {want}, the id of {piece} in attnkit's tokenizers and batches "
                                   f"(<pad>, <s>, </s> are 0, 1, 2), got {value!r}: remove {key} from the recipe")


def recipe_from_dict(data: dict[str, Any]) -> Recipe:
    if not isinstance(data, dict):
        raise ConfigError(f"a training config must be a mapping, got {type(data).__name__}")
    unknown = sorted(set(data) - {"data", "tokenizer", "model", "train"})
    if unknown:
        raise ConfigError(f"unknown section(s) {unknown}; known: data, tokenizer, model, train")
    _check_tokenizer(data.get("tokenizer") or {})
    _check_model(data.get("model"))
    try:
        tokenizer = TokenizerConfig.from_dict(data.get("tokenizer") or {})
    except SpecError as err:  # a range: name the recipe key, so that the file or --set that gave it is named
        if err.side is None:  # joint: both sides' specs are involved
            raise RecipeError(("tokenizer.joint", "tokenizer.src", "tokenizer.tgt"),
                              f"tokenizer.{err.key} {err.detail}") from None
        key = f"tokenizer.{err.side}.{err.key}"
        raise RecipeError(key, f"{key} {err.detail}") from None
    except (ValueError, TypeError) as err:
        raise ConfigError(str(err)) from None
    try:
        model = config_from_dict(data.get("model") or {"kind": "transformer"})
    except RecipeError:
        raise
    except ConfigError as err:
        if err.key is None:
            raise
        keys = (err.key,) if isinstance(err.key, str) else err.key
        message = f"model.{err}" if str(err).startswith(keys[0]) else f"model: {err}"
        raise RecipeError(tuple(f"model.{k}" for k in keys), message) from None
    _check_special_ids(model)
    if getattr(model, "share_embeddings", False) and not tokenizer.joint:
        # two vocabularies of the same size by chance would otherwise share rows of unrelated tokens
        raise RecipeError(("model.share_embeddings", "tokenizer.joint"),
                          "model.share_embeddings: true needs one vocabulary for both sides: set tokenizer.joint: "
                          "true (the same tokenizer spec for src and tgt), or model.share_embeddings: false")
    return Recipe(
        data=_section(DataSettings, data.get("data"), "data"),
        tokenizer=tokenizer,
        model=model,
        train=_section(TrainSettings, data.get("train") or {"max_steps": 1000}, "train"),
    )


def apply_override(data: dict[str, Any], assignment: str) -> None:
    """Apply ``section.key=value`` (value parsed as YAML: numbers, booleans, lists, null) in place."""
    if "=" not in assignment:
        raise ConfigError(f"--set expects section.key=value, got {assignment!r}")
    path, raw = assignment.split("=", 1)
    keys = path.strip().split(".")
    if len(keys) < 2 or not all(keys):
        raise ConfigError(f"--set expects section.key=value (e.g. train.lr=3e-4), got {assignment!r}")
    try:
        value = load_yaml(raw)
    except Exception:  # not YAML: keep the text as it is
        value = raw
    set_value(data, path.strip(), value, f"--set {assignment}")


def set_value(data: dict[str, Any], key: str, value: Any, origin: str) -> None:
    """Set ``section.key`` (dotted) of the raw recipe ``data`` to ``value`` as it is, in place; ``origin``
    (the flag that asked for it) names the assignment in errors."""
    keys = key.split(".")
    node = data
    for k in keys[:-1]:
        if node.get(k) is None:
            node[k] = {}
        node = node[k]
        if not isinstance(node, dict):
            raise ConfigError(f"{origin}: {k} is not a section")
    node[keys[-1]] = value
