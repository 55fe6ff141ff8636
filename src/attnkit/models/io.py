"""Building a model from its config, and a model folder: ``model.safetensors`` + ``config.json``."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from safetensors.torch import load, load_file, save_file

from .base import Seq2SeqModel
from .config import ConfigError, ModelConfig, RNNConfig, TransformerConfig, config_from_dict, config_to_dict

__all__ = ["build_model", "save_model", "load_model", "load_tensors", "resolve_model_dir", "MODEL_FILE", "CONFIG_FILE"]

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


def _umask_now() -> int | None:
    """The process's umask as Linux reports it (/proc/self/status), without changing it; None elsewhere."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return None


def _read_umask_once() -> int:
    mask = _umask_now()
    if mask is None:  # no /proc: read it the only portable way, once, at import (before any save thread runs)
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


_UMASK_AT_IMPORT = _read_umask_once()


def _umask() -> int:
    """The umask for new files. Never set to read it (setting it, even briefly, would race with other
    threads creating files): from /proc where there is one, else the umask the process had at import."""
    mask = _umask_now()
    return _UMASK_AT_IMPORT if mask is None else mask


def _atomic_write(path: Path, write, mode: int | None = None) -> None:
    """Write through a temporary file in the same folder (with ``path``'s suffix, which some writers read the
    format from) and rename it: never a half-written file. The file gets ``mode``, or the mode an ordinary new
    file would (mkstemp's are 0600, private to the owner)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask() if mode is None else mode)
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


def resolve_model_dir(path: str | Path) -> Path:
    """A training output folder means its ``best`` model; a model folder means itself."""
    path = Path(path)
    if (path / MODEL_FILE).is_file():
        return path
    if (path / "best" / MODEL_FILE).is_file():
        return path / "best"
    if (path / "model.bin").is_file():  # what `attnkit export --format ctranslate2` writes
        hint = "it looks like a CTranslate2 model: run it with ctranslate2.Translator, as the README's Interoperability shows"
    else:
        hint = "train one with `attnkit train` or `attnkit demo`"
    raise FileNotFoundError(
        f"{path} holds no attnkit model: expected {MODEL_FILE} in it or in {path / 'best'} ({hint})"
    )


def load_tensors(path: str | Path) -> dict[str, Any]:
    """The tensors of the safetensors file ``path``. safetensors opens only paths that are valid UTF-8
    ("Path … is not valid UTF-8" for a folder named with other bytes, as Linux allows): such a file is read
    here and loaded from its bytes (held in memory twice while loading); any other is mapped by safetensors."""
    name = os.fspath(path)
    if isinstance(name, bytes):
        name = os.fsdecode(name)
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # the lone surrogates that stand for the bytes of a name that is not UTF-8
        with open(name, "rb") as f:
            return load(f.read())
    return load_file(name)


def load_model(folder: str | Path) -> tuple[Seq2SeqModel, dict[str, Any]]:
    """The model saved in ``folder`` (in eval mode) and the folder's metadata. A damaged folder raises
    :class:`ConfigError` naming the file: an unreadable ``config.json`` or ``model.safetensors``, or a
    config that does not match the weights."""
    from safetensors import SafetensorError

    folder = Path(folder)
    config_path, weights_path = folder / CONFIG_FILE, folder / MODEL_FILE
    for p in (config_path, weights_path):
        if not p.is_file():
            raise FileNotFoundError(f"{folder} is not an attnkit model folder: {p.name} is missing")
    meta = None
    try:
        meta = json.loads(config_path.read_text(encoding="utf-8"))
        config = config_from_dict(meta["model"])
        model = build_model(config, meta["src_vocab_size"], meta["tgt_vocab_size"])
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError) as err:
        if isinstance(meta, dict) and "model_type" in meta and "model" not in meta:  # e.g. `attnkit export`'s MarianMT
            raise ConfigError(f"{config_path}: a Hugging Face {meta['model_type']!r} model config, not an attnkit one: "
                              "run that folder with transformers (README, Interoperability)") from None
        raise ConfigError(f"{config_path}: not a valid attnkit model config ({err})") from None
    except ConfigError as err:
        raise ConfigError(f"{config_path}: {err}") from None
    except (RuntimeError, MemoryError) as err:  # e.g. a vocabulary size too large to allocate
        raise ConfigError(f"{config_path}: cannot build the model it describes ({_first_line(err)})") from None
    try:
        state = load_tensors(weights_path)
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise ConfigError(f"{weights_path}: not a readable weights file ({_first_line(err)})") from None
    mismatch = f"{config_path} does not match the weights in {weights_path}"
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # a tensor of another shape than the config builds
        details = [line.strip().rstrip(".") for line in str(err).splitlines()[1:] if line.strip()]
        raise ConfigError(f"{mismatch}: {details[0] if details else _first_line(err)}"
                          + (f" (and {len(details) - 1} more)" if len(details) > 1 else "")) from None
    # Tied parameters were saved once: the missing names must be aliases of saved ones.
    tied = {n for n in missing if _is_tied(model, n, state)}
    if set(missing) - tied or unexpected:
        raise ConfigError(f"{mismatch}: missing {sorted(set(missing) - tied)}, unexpected {sorted(unexpected)}")
    model.eval()
    return model, meta


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _is_tied(model: Seq2SeqModel, name: str, state: dict) -> bool:
    params = dict(model.named_parameters(remove_duplicate=False))
    target = params.get(name)
    return target is not None and any(params.get(n) is target for n in state)
