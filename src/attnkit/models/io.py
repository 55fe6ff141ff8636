"""Building a model from its config, and a model folder: ``model.safetensors`` + ``config.json``."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file

from .base import Seq2SeqModel
from .config import ConfigError, ModelConfig, RNNConfig, TransformerConfig, config_from_dict, config_to_dict

__all__ = ["build_model", "save_model", "load_model", "MODEL_FILE", "CONFIG_FILE"]

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


def build_model(config: ModelConfig | dict[str, Any], src_vocab_size: int, tgt_vocab_size: int) -> Seq2SeqModel:
    """A fresh model for ``config`` (a config dataclass or a plain dict)."""
    if isinstance(config, dict):
        config = config_from_dict(config)
    for name, n in (("src_vocab_size", src_vocab_size), ("tgt_vocab_size", tgt_vocab_size)):
        if not isinstance(n, int) or n <= max(config.pad_id, config.bos_id, config.eos_id):
            raise ConfigError(f"{name} must be an integer larger than the special ids, got {n!r}")
    if isinstance(config, TransformerConfig):
        from .transformer import TransformerSeq2Seq

        return TransformerSeq2Seq(config, src_vocab_size, tgt_vocab_size)
    if isinstance(config, RNNConfig):
        from .rnn import RNNSeq2Seq

        return RNNSeq2Seq(config, src_vocab_size, tgt_vocab_size)
    raise ConfigError(f"not a model config: {type(config).__name__}")


def _atomic_write(path: Path, write) -> None:
    """Write through a temporary file in the same folder and rename it: never a half-written file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_model(model: Seq2SeqModel, folder: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write the model's weights and config (plus ``extra`` JSON metadata) into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    # Tied weights are stored once; safetensors refuses shared storage.
    state, seen = {}, {}
    for name, tensor in model.state_dict().items():
        key = (tensor.data_ptr(), tuple(tensor.shape))
        if key in seen:
            continue
        seen[key] = name
        state[name] = tensor.detach().contiguous().clone()
    _atomic_write(folder / MODEL_FILE, lambda tmp: save_file(state, tmp))
    meta = {"model": config_to_dict(model.config), "src_vocab_size": model.src_vocab_size,
            "tgt_vocab_size": model.tgt_vocab_size, **(extra or {})}
    _atomic_write(folder / CONFIG_FILE, lambda tmp: Path(tmp).write_text(json.dumps(meta, indent=2, ensure_ascii=False)))
    return folder


def load_model(folder: str | Path) -> tuple[Seq2SeqModel, dict[str, Any]]:
    """The model saved in ``folder`` (in eval mode) and the folder's metadata."""
    folder = Path(folder)
    config_path, weights_path = folder / CONFIG_FILE, folder / MODEL_FILE
    for p in (config_path, weights_path):
        if not p.is_file():
            raise FileNotFoundError(f"{folder} is not an attnkit model folder: {p.name} is missing")
    try:
        meta = json.loads(config_path.read_text(encoding="utf-8"))
        config = config_from_dict(meta["model"])
        model = build_model(config, meta["src_vocab_size"], meta["tgt_vocab_size"])
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ConfigError(f"{config_path}: not a valid attnkit model config ({err})") from None
    state = load_file(str(weights_path))
    missing, unexpected = model.load_state_dict(state, strict=False)
    # Tied parameters were saved once: the missing names must be aliases of saved ones.
    tied = {n for n in missing if _is_tied(model, n, state)}
    if set(missing) - tied or unexpected:
        raise ValueError(f"{weights_path}: weights do not fit the config: missing {sorted(set(missing) - tied)}, "
                         f"unexpected {sorted(unexpected)}")
    model.eval()
    return model, meta


def _is_tied(model: Seq2SeqModel, name: str, state: dict) -> bool:
    params = dict(model.named_parameters(remove_duplicate=False))
    target = params.get(name)
    return target is not None and any(params.get(n) is target for n in state)
