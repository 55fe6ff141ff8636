"""Checkpoints that a killed run can resume from exactly.

A checkpoint is a folder ``checkpoints/step-000500/`` holding a complete model folder (weights,
config, tokenizers: ``attnkit translate --model`` reads it as it is) plus the trainer's state:
``optimizer.safetensors`` (Adam's moments), ``trainer.json`` (step, data position, best score,
elapsed time, optimizer hyper-parameters) and ``rng.safetensors`` (the RNG states, so dropout draws
the same masks after a resume). It is written into a hidden temporary folder and renamed into place:
a kill at any moment leaves either the old set of checkpoints or the new one, never half a folder.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from attnkit.models import Seq2SeqModel, save_model
from attnkit.models.io import load_tensors
from attnkit.text import Tokenizer, save_tokenizers

__all__ = ["checkpoint_dir", "save_checkpoint", "load_checkpoint", "latest_checkpoint", "earlier_checkpoint", "prune_checkpoints",
           "publish_best", "recover_best", "STEP_PREFIX", "CheckpointError"]

STEP_PREFIX = "step-"


class CheckpointError(ValueError):
    """A file of a checkpoint cannot be read (truncated, damaged, or not what it should be): names the file."""


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    state = optimizer.state_dict()
    tensors, plain = {}, {}
    for idx, slots in state["state"].items():
        for name, value in slots.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{idx}.{name}"] = value.detach().contiguous().clone()
            else:
                plain[f"{idx}.{name}"] = value
    return tensors, {"param_groups": state["param_groups"], "plain": plain}


def _restore_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    for key, value in meta["plain"].items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def _rng_tensors() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    py_version, py_state, py_gauss = random.getstate()
    return {"torch": torch.get_rng_state()}, {"python": [py_version, list(py_state), py_gauss]}


def _restore_rng(tensors: dict[str, torch.Tensor], meta: dict) -> None:
    torch.set_rng_state(tensors["torch"])
    version, state, gauss = meta["python"]
    random.setstate((version, tuple(state), gauss))


def checkpoint_dir(root: Path, step: int) -> Path:
    """The folder of the checkpoint of update ``step`` in ``root``: ``root/checkpoints/step-NNNNNN``."""
    return root / "checkpoints" / f"{STEP_PREFIX}{step:06d}"


def save_checkpoint(
    root: Path,
    step: int,
    model: Seq2SeqModel,
    optimizer: torch.optim.Optimizer,
    tokenizers: tuple[Tokenizer, Tokenizer],
    trainer_state: dict[str, Any],
    model_extra: dict[str, Any],
) -> Path:
    """Write ``root/checkpoints/step-NNNNNN`` (:func:`checkpoint_dir`) atomically and return its path."""
    final = checkpoint_dir(root, step)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".tmp-{final.name}")
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        save_model(model, tmp, extra=model_extra)
        save_tokenizers(tmp, *tokenizers)
        opt_tensors, opt_meta = _optimizer_tensors(optimizer)
        save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
        rng_tensors, rng_meta = _rng_tensors()
        save_file(rng_tensors, str(tmp / "rng.safetensors"))
        state = {**trainer_state, "step": step, "optimizer": opt_meta, "rng": rng_meta}
        (tmp / "trainer.json").write_text(json.dumps(state, indent=2), encoding="utf-8")
    except BaseException:  # e.g. a full disk: the half-written folder would only take space
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():  # the same step saved again (e.g. the final save after a validation)
        shutil.rmtree(final)
    tmp.rename(final)
    return final


def _complete_checkpoints(root: Path) -> list[Path]:
    """The checkpoints of ``root`` whose trainer state was written (the last file of a save), oldest first."""
    folder = root / "checkpoints"
    return sorted(p for p in folder.glob(f"{STEP_PREFIX}*") if (p / "trainer.json").is_file()) if folder.is_dir() else []


def latest_checkpoint(root: Path) -> Path | None:
    steps = _complete_checkpoints(root)
    return steps[-1] if steps else None


def earlier_checkpoint(root: Path, checkpoint: Path) -> Path | None:
    """The newest complete checkpoint of ``root`` before ``checkpoint``, or None."""
    steps = [p for p in _complete_checkpoints(root) if p.name < checkpoint.name]
    return steps[-1] if steps else None


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError

    try:
        return load_tensors(path)
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        detail = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise CheckpointError(f"{path} is not a readable tensor file ({detail})") from None


def load_checkpoint(path: Path, model: Seq2SeqModel, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Restore model weights, optimizer and RNG states from ``path``; return the trainer state. A file that
    cannot be read raises :class:`CheckpointError`; weights or optimizer state of another model, ValueError."""
    from attnkit.models.io import MODEL_FILE

    try:
        state = json.loads((path / "trainer.json").read_text(encoding="utf-8"))
        if not isinstance(state, dict) or not all(k in state for k in ("optimizer", "rng")):
            raise ValueError("not the trainer state of a checkpoint")
    except (OSError, ValueError) as err:  # JSON and UTF-8 errors are ValueErrors
        raise CheckpointError(f"{path / 'trainer.json'} is not readable ({err})") from None
    weights = _tensors(path / MODEL_FILE)
    missing, unexpected = model.load_state_dict(weights, strict=False)
    params = dict(model.named_parameters(remove_duplicate=False))
    untied = [n for n in missing if not any(params.get(n) is params.get(m) for m in weights)]
    if untied or unexpected:
        raise ValueError(f"{path}: checkpoint does not fit the model (missing {untied}, unexpected {unexpected})")
    _restore_optimizer(optimizer, _tensors(path / "optimizer.safetensors"), state["optimizer"])
    _restore_rng(_tensors(path / "rng.safetensors"), state["rng"])
    return state


def prune_checkpoints(root: Path, keep_last: int, protect: set[Path]) -> None:
    """Delete all but the newest ``keep_last`` step checkpoints (never one in ``protect``)."""
    folder = root / "checkpoints"
    steps = sorted(folder.glob(f"{STEP_PREFIX}*"))
    for old in steps[:-keep_last]:
        if old not in protect:
            shutil.rmtree(old, ignore_errors=True)


def recover_best(root: Path) -> Path | None:
    """``root/best``, or None when there is none; a run stopped between :func:`publish_best`'s two renames
    (the old best moved aside, the new one complete but not yet in place) gets its new best put in place."""
    best, tmp, old = root / "best", root / ".tmp-best", root / ".old-best"
    if not best.is_dir() and old.is_dir():
        if tmp.is_dir():  # the copy into tmp had finished before old was moved aside: it is the best
            tmp.rename(best)
            shutil.rmtree(old)
        else:
            old.rename(best)
    return best if best.is_dir() else None


def publish_best(root: Path, checkpoint: Path) -> Path:
    """Copy a checkpoint's model folder to ``root/best`` (atomically replacing the old best)."""
    best, tmp, old = root / "best", root / ".tmp-best", root / ".old-best"
    recover_best(root)  # what an earlier run stopped in the middle of this left, before it is cleared
    for p in (tmp, old):
        if p.exists():
            shutil.rmtree(p)
    try:
        shutil.copytree(checkpoint, tmp, ignore=shutil.ignore_patterns("optimizer.safetensors", "rng.safetensors"))
    except BaseException:  # the old best/ stays; the half copy would only take space
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if best.exists():
        best.rename(old)
    tmp.rename(best)
    if old.exists():
        shutil.rmtree(old)
    return best
