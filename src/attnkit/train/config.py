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
from dataclasses import dataclass, field
from typing import Any

from attnkit.configfile import load_yaml
from attnkit.models import ConfigError, ModelConfig, config_from_dict, config_to_dict
from attnkit.models.config import dataclass_from_dict
from attnkit.text import TokenizerConfig

from .schedule import SCHEDULES

__all__ = ["DataSettings", "TrainSettings", "Recipe", "recipe_from_dict", "apply_override", "FORMATS"]

FORMATS = ("manythings", "tsv", "moses", "cedict")


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
        if self.format not in FORMATS:
            raise ConfigError(f"data.format must be one of {list(FORMATS)}, got {self.format!r}")
        if self.format != "cedict" and not self.train:
            raise ConfigError(f"data.train is required for data.format={self.format!r}")
        if self.focus is not None and self.format != "cedict":
            raise ConfigError(f"data.focus applies to data.format='cedict' only, not {self.format!r}")
        if self.direction not in ("zh-en", "en-zh"):
            raise ConfigError(f"data.direction must be 'zh-en' or 'en-zh', got {self.direction!r}")


@dataclass(frozen=True)
class TrainSettings:
    max_tokens: int = 4096  # padded tokens per side per batch
    accumulate: int = 1  # batches per optimizer step
    lr: float = 7e-4
    schedule: str = "inverse_sqrt"
    warmup: int = 1000
    betas: tuple[float, float] = (0.9, 0.98)
    weight_decay: float = 0.0
    label_smoothing: float = 0.1
    clip_norm: float | None = 1.0
    max_steps: int | None = None
    max_epochs: int | None = None
    max_minutes: float | None = None
    eval_every: int = 500  # optimizer steps between validations (and checkpoints)
    patience: int | None = 10  # stop after this many validations without a better dev BLEU
    keep_last: int = 2  # checkpoints kept besides the best
    seed: int = 1
    eval_beam: int = 1  # beam size for dev BLEU (1 = greedy)
    deterministic: bool = False  # torch.use_deterministic_algorithms, for bit-exact resumes
    threads: int | None = None  # torch.set_num_threads; None keeps PyTorch's choice
    log_every: int = 50  # optimizer steps between progress reports

    def __post_init__(self):
        for name in ("max_tokens", "accumulate", "warmup", "eval_every", "keep_last", "log_every"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ConfigError(f"train.{name} must be a positive integer, got {v!r}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"train.schedule must be one of {list(SCHEDULES)}, got {self.schedule!r}")
        if not self.lr > 0:
            raise ConfigError(f"train.lr must be > 0, got {self.lr!r}")
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError(f"train.label_smoothing must be in [0, 1), got {self.label_smoothing!r}")
        if self.max_steps is None and self.max_epochs is None and self.max_minutes is None:
            raise ConfigError("set at least one of train.max_steps, train.max_epochs, train.max_minutes")
        if self.eval_beam < 1:
            raise ConfigError(f"train.eval_beam must be >= 1, got {self.eval_beam!r}")


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
    if cls is TrainSettings and isinstance(data, dict) and "betas" in data:
        data = {**data, "betas": tuple(data["betas"])}
    return dataclass_from_dict(cls, data, f"{name}.")


def recipe_from_dict(data: dict[str, Any]) -> Recipe:
    if not isinstance(data, dict):
        raise ConfigError(f"a training config must be a mapping, got {type(data).__name__}")
    unknown = sorted(set(data) - {"data", "tokenizer", "model", "train"})
    if unknown:
        raise ConfigError(f"unknown section(s) {unknown}; known: data, tokenizer, model, train")
    try:
        tokenizer = TokenizerConfig.from_dict(data.get("tokenizer") or {})
    except (ValueError, TypeError) as err:
        raise ConfigError(str(err)) from None
    return Recipe(
        data=_section(DataSettings, data.get("data"), "data"),
        tokenizer=tokenizer,
        model=config_from_dict(data.get("model") or {"kind": "transformer"}),
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
    node = data
    for k in keys[:-1]:
        node = node.setdefault(k, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {assignment}: {k} is not a section")
    node[keys[-1]] = value
