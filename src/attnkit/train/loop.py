"""The training loop: batches → label-smoothed loss → Adam with a schedule, validation with BLEU,
checkpoints, early stopping, a time budget and exact resumption.

Output folder::

    OUT/recipe.yaml        the resolved recipe (after command-line overrides)
    OUT/log.jsonl          one JSON object per report: {"event": "train" | "valid" | "stop", ...}
    OUT/checkpoints/step-N the last ``keep_last`` checkpoints (model folder + trainer state)
    OUT/best/              the model folder with the best dev BLEU (what ``attnkit translate`` loads)
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Collection, Mapping

import torch
import yaml
from safetensors import SafetensorError

from attnkit.cli import json_line
from attnkit.data.batching import BatchLoader, DataPosition, encode_pairs
from attnkit.decode.translator import Translator
from attnkit.evaluate import corpus_scores
from attnkit.models import build_model, label_smoothed_nll
from attnkit.text import build_tokenizers, load_tokenizers

from .checkpoint import (STEP_PREFIX, CheckpointError, checkpoint_dir, earlier_checkpoint, latest_checkpoint,
                         load_checkpoint, prune_checkpoints, publish_best, recover_best, save_checkpoint)
from .clip import clip_grad_norm
from .config import Recipe, RecipeError, TrainSettings
from .corpus import read_split
from .mfu import matmul_rate
from .progress import Progress
from .schedule import learning_rate

__all__ = ["train", "TrainResult", "TrainError", "TrainRecipeError", "OutputExistsError", "NoCheckpointError",
           "optimizer_update"]

# What a resumed run must share with the run it continues: the model, the tokenizers, the data stream (the
# data read and how it is batched) and the dev set, whose BLEU decides best/ and patience. The rest (limits,
# learning rate, how often to validate) may change.
_FIXED_SECTIONS = ("data", "tokenizer", "model")
# test is never read by training; strict only refuses bad lines
_FREE_DATA_KEYS = {"data.test", "data.strict"}
_FIXED_TRAIN_KEYS = ("train.max_tokens", "train.seed")  # the batches and their order
# sentences decoded together for dev BLEU
_EVAL_BATCH = 64


class TrainError(ValueError):
    """A run that cannot start or continue as asked; the message says why and what to do instead."""


class TrainRecipeError(TrainError, RecipeError):
    """A recipe value that the data and the model make impossible, found once they are read, before training:
    a :class:`TrainError` that names its key (``key``) as a :class:`~attnkit.train.config.RecipeError` does, so
    that ``attnkit train`` names the file or option that gave it."""


class NoCheckpointError(TrainError, FileNotFoundError):
    """``resume`` asked for, and ``out`` holds no checkpoint. Earlier versions raised :class:`FileNotFoundError`
    here, so both ``except TrainError`` and ``except FileNotFoundError`` catch it."""


class OutputExistsError(TrainError, FileExistsError):
    """A fresh run's ``out`` already holds checkpoints, a trained model or other files. Earlier versions
    raised :class:`FileExistsError` here, so both ``except TrainError`` and ``except FileExistsError``
    catch it."""


@dataclass(frozen=True)
class TrainResult:
    out: Path
    step: int
    best_bleu: float | None
    best_dir: Path | None
    stopped_because: str


class _Stop:
    """SIGINT/SIGTERM ask the loop to stop after the current step, with a checkpoint."""

    def __init__(self):
        self.reason: str | None = None

    def __call__(self, signum, frame):
        self.reason = f"signal {signal.Signals(signum).name}"


def _setup(recipe: Recipe) -> None:
    t = recipe.train
    if t.threads:
        torch.set_num_threads(t.threads)
    torch.use_deterministic_algorithms(t.deterministic)
    torch.manual_seed(t.seed)
    random.seed(t.seed)


def train(recipe: Recipe, out: str | Path, *, resume: bool = False, log: Callable[[str], None] = print,
          progress: bool = True, beside: Collection[str] = ()) -> TrainResult:
    """Train as ``recipe`` says into the folder ``out`` (or continue the run there with ``resume``).
    A fresh run refuses an ``out`` holding anything but an unfinished run's files, except the names in
    ``beside``: files of the caller's own that the run may sit beside (the demo's cache marker)."""
    out = Path(out)
    t = recipe.train
    _check_out(out, resume, frozenset(beside))
    ckpt = None
    if resume:
        ckpt = latest_checkpoint(out)
        if ckpt is None:
            raise NoCheckpointError(f"--resume: no checkpoint in {out / 'checkpoints'} to resume from")
        _check_same_run(out, recipe, ckpt)
        done = _already_done(out, ckpt, t)
        if done is not None:
            log(done.stopped_because)
            return done
    _setup(recipe)

    train_pairs = read_split(recipe.data, "train", log=log)
    dev_pairs = read_split(recipe.data, "dev", log=log)
    if resume:
        src_tok, tgt_tok = load_tokenizers(latest_checkpoint(out))
    else:
        log(f"training tokenizers on {len(train_pairs):,} pairs")
        src_tok, tgt_tok = build_tokenizers(recipe.tokenizer, train_pairs)
    digests = {"train_digests": _digests(recipe.data.train), "dev_digests": _digests(recipe.data.dev)}  # for --resume
    encoded = encode_pairs(train_pairs, src_tok, tgt_tok, max_len=recipe.data.max_len)
    if encoded.skipped:
        log(f"train: {encoded.summary()}")
    _check_batchable(encoded, "train", recipe)
    loader = BatchLoader(encoded.examples, max_tokens=t.max_tokens, seed=t.seed)
    dev_encoded = encode_pairs(dev_pairs, src_tok, tgt_tok, max_len=recipe.data.max_len) if dev_pairs else None
    if dev_encoded is not None:
        _check_batchable(dev_encoded, "dev", recipe)
    dev_loader = BatchLoader(dev_encoded.examples, max_tokens=t.max_tokens, shuffle=False) if dev_encoded else None

    model = build_model(recipe.model, src_tok.vocab_size, tgt_tok.vocab_size)
    _check_eval_memory(model, src_tok, tgt_tok, dev_pairs, recipe)
    # The fused kernel updates all parameters in a few calls instead of ~10 small ops per tensor.
    optimizer = torch.optim.Adam(model.parameters(), lr=t.lr, betas=t.betas, weight_decay=t.weight_decay, fused=True)
    step, position, elapsed_before = 0, loader.start(), 0.0
    best_bleu, best_dir, stale = None, None, 0
    if resume:
        try:
            state = load_checkpoint(ckpt, model, optimizer)
        except CheckpointError as err:  # damaged (e.g. a disk that filled up, a copy cut short): say what else there is
            earlier = earlier_checkpoint(out, ckpt)
            instead = (f"move {ckpt} away to resume from {earlier}" if earlier is not None
                       else "train into a new --out")
            raise TrainError(f"--resume: {err}: the checkpoint {ckpt} is damaged; {instead}") from None
        except (RuntimeError, ValueError, KeyError, OSError) as err:
            lines = [line.strip() for line in str(err).splitlines() if line.strip()] or [type(err).__name__]
            detail = lines[1] if len(lines) > 1 and lines[0].endswith(":") else lines[0]  # torch: "Error(s) in ...:"
            raise TrainError(f"--resume: {ckpt} does not fit the model this recipe builds ({detail}); "
                             f"train into a new --out") from None
        step, position = state["step"], DataPosition.from_dict(state["data_position"])
        if position.fingerprint and position.fingerprint != loader.start().fingerprint:
            raise TrainError(f"--resume: the training data ({recipe.data.train}) no longer gives the batches {ckpt} "
                             f"was trained on (its pairs or their lengths changed); resuming would not continue the same "
                             f"stream: restore the data, or train into a new --out")
        elapsed_before, best_bleu, stale = state["elapsed"], state["best_bleu"], state["stale"]
        best_dir = recover_best(out)
        log(f"resuming from {ckpt} (step {step}, epoch {position.epoch}, batch {position.batch})")
    # the machine's float32 matmul rate, for the MFU of the train events (models that count their FLOPs)
    rate = matmul_rate() if model.training_flops(1, 1, 1) is not None else None
    log(f"{recipe.model.kind}: {model.num_parameters():,} parameters; vocabularies {src_tok.vocab_size:,} → "
        f"{tgt_tok.vocab_size:,}; {len(encoded):,} training pairs")

    # Only now does the run start with what the recipe says: write it down.
    out.mkdir(parents=True, exist_ok=True)
    (out / "recipe.yaml").write_text(yaml.safe_dump(_plain(recipe), allow_unicode=True, sort_keys=False),
                                     encoding="utf-8")

    stop = _Stop()
    old_handlers = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    bar = Progress(total_steps=t.max_steps, max_minutes=t.max_minutes, start_step=step, start_elapsed=elapsed_before,
                   enabled=progress)
    started = time.monotonic()
    _drop_partial_line(out / "log.jsonl")  # a run stopped mid-write (a full disk) may have left half an event
    logfile = (out / "log.jsonl").open("a", encoding="utf-8")

    def elapsed() -> float:
        return elapsed_before + time.monotonic() - started

    def report(event: dict) -> None:
        try:
            logfile.write(json_line(event) + "\n")
            logfile.flush()
        except OSError as err:  # e.g. the disk is full
            raise TrainError(f"cannot write {out / 'log.jsonl'} ({_os_reason(err)}); {_saved_before(out)}") from None

    def checkpoint(reason: str) -> None:
        nonlocal best_bleu, best_dir, stale, window_start, rate
        begun = time.monotonic()
        metrics = _validate(model, dev_loader, dev_pairs, src_tok, tgt_tok, recipe, t.label_smoothing)
        model.train()
        better = metrics.get("bleu") is not None and (best_bleu is None or metrics["bleu"] > best_bleu)
        if dev_loader is None or better:
            best_bleu = metrics.get("bleu", best_bleu)
            stale = 0
        else:
            stale += 1
        epochs_done = position.epoch + (position.batch >= len(loader.sampler.epoch_batches(position.epoch)))
        state = {"data_position": position.to_dict(), "elapsed": elapsed(), "best_bleu": best_bleu, "stale": stale,
                 "epochs_done": epochs_done,
                 "train_files": _resolved(recipe.data.train), "dev_files": _resolved(recipe.data.dev), **digests}
        extra = {"training": {"step": step, "epoch": position.epoch, **metrics}}
        path = checkpoint_dir(out, step)
        existed = path.exists()
        try:
            save_checkpoint(out, step, model, optimizer, (src_tok, tgt_tok), state, extra)
            if dev_loader is None or better:
                best_dir = publish_best(out, path)
        except (OSError, SafetensorError) as err:  # e.g. the disk is full: what was saved before stays as it was
            if not existed and path.exists():  # saved, but not published as best/: resume from the one before
                shutil.rmtree(path, ignore_errors=True)
            raise TrainError(f"cannot save the checkpoint of step {step} in {out} ({_os_reason(err)}); "
                             f"{_saved_before(out)}") from None
        prune_checkpoints(out, t.keep_last, protect=set())
        event = {"event": "valid", "step": step, "epoch": position.epoch, "elapsed": round(elapsed(), 1),
                 **metrics, "best_bleu": best_bleu, "reason": reason}
        report(event)
        bar.message(_valid_line(event))
        if rate is not None and reason == "eval_every":
            # measured again for the windows to come (none follow a stop), the highest kept: a machine busy at
            # start gave a rate too low
            rate = max(rate, matmul_rate())
        window_start += time.monotonic() - begun  # the train events' speed is training's, without this

    def report_train(lr: float) -> None:
        """The ``train`` event of the update just made (loss and speed since the last one), and a new window."""
        nonlocal loss_sum, tokens, window_start, window_tokens, window_flops, rate
        now = time.monotonic()
        seconds = max(now - window_start, 1e-9)
        event = {"event": "train", "step": step, "epoch": position.epoch, "loss": round(loss_sum / max(tokens, 1), 4),
                 "tokens_per_s": round(window_tokens / seconds), "lr": lr, "elapsed": round(elapsed(), 1)}
        if rate is not None:
            if window_flops / seconds > rate:  # above the machine's rate: it was measured while the machine was busy
                rate = max(rate, matmul_rate())
                now = time.monotonic()  # (the next window leaves the measurement out)
            event["mfu"] = round(window_flops / seconds / rate, 3)
        report(event)
        bar.update(step, event, elapsed())
        loss_sum = tokens = 0.0
        window_start, window_tokens, window_flops = now, 0, 0.0

    model.train()
    d_model = getattr(recipe.model, "d_model", 512)  # the Noam schedule's scale (RNN models have none)
    loss_sum = tokens = 0.0
    reason = None
    window_start, window_tokens, window_flops = time.monotonic(), 0, 0.0
    batches = loader.iter_from(position, epochs=t.max_epochs)
    pending = group_tokens = 0
    divisor = 1
    optimizer.zero_grad(set_to_none=True)
    finished = False
    try:
        for batch in batches:
            logits, _ = model(batch.src, batch.tgt_in)
            n = batch.num_target_tokens
            loss = label_smoothed_nll(logits, batch.tgt_out, smoothing=t.label_smoothing, ignore_index=model.config.pad_id)
            if pending == 0:
                divisor = max(n, 1)  # the group's first batch's tokens; the update divides by all of the group's
            (loss / divisor).backward()
            group_tokens += n
            loss_sum += float(loss.detach())
            tokens += n
            window_tokens += n
            if rate is not None:
                window_flops += model.training_flops(batch.src.shape[0], batch.src.shape[1], batch.tgt_in.shape[1])
            pending += 1
            position = batch.next_position
            if pending < t.accumulate:
                continue
            pending = 0
            step += 1
            per_token_gradient(model, divisor, group_tokens)
            group_tokens = 0
            lr = optimizer_update(model, optimizer, step, t, d_model=d_model)
            if step % t.log_every == 0:
                report_train(lr)
            if t.max_steps is not None and step >= t.max_steps:
                reason = f"reached max_steps={t.max_steps}"
            elif t.max_minutes is not None and elapsed() >= 60 * t.max_minutes:
                reason = f"reached max_minutes={t.max_minutes:g}"
            elif stop.reason:
                reason = stop.reason
            if step % t.eval_every == 0 or reason:
                checkpoint(reason or "eval_every")
                if reason is None and t.patience is not None and stale >= t.patience:
                    reason = f"no better dev BLEU in {t.patience} validations"
            if reason:
                break
        else:
            reason = f"reached max_epochs={t.max_epochs}"
            if pending:  # the last batches, fewer than train.accumulate: one more update, with their gradient
                per_token_gradient(model, divisor, group_tokens)
                step += 1
                report_train(optimizer_update(model, optimizer, step, t, d_model=d_model))
                log(f"the last {pending} batch(es) of the run, fewer than train.accumulate={t.accumulate}, made "
                    f"update {step}")
            if step and latest_checkpoint(out) != checkpoint_dir(out, step):
                checkpoint(reason)
        finished = True
    except TrainError as err:  # the run stops on it: the stop event says why
        reason = str(err)
        raise
    finally:
        bar.close()
        for s, h in old_handlers.items():
            signal.signal(s, h)
        try:
            report({"event": "stop", "step": step, "reason": reason, "best_bleu": best_bleu,
                    "elapsed": round(elapsed(), 1)})
        except TrainError:  # a full disk: the error that stopped the run, if any, is the one to show
            if finished:
                raise
        finally:
            try:
                logfile.close()
            except OSError:  # what report() could not write, it said so
                pass
    log(f"stopped at step {step}: {reason}; best dev BLEU {best_bleu if best_bleu is None else round(best_bleu, 2)}; "
        f"model in {best_dir}")
    return TrainResult(out, step, best_bleu, best_dir, reason or "")


def _drop_partial_line(path: Path) -> None:
    """Cut ``path`` back to its last complete line: every line of log.jsonl is one JSON event."""
    try:
        with path.open("rb+") as f:
            size = f.seek(0, 2)
            if size == 0:
                return
            start = f.seek(max(size - 65536, 0))  # a line (one event) is far shorter than this
            tail = f.read()
            if tail.endswith(b"\n"):
                return
            cut = tail.rfind(b"\n")
            if cut >= 0:
                f.truncate(start + cut + 1)
            elif start == 0:  # the whole file is the one line cut short
                f.truncate(0)
    except FileNotFoundError:
        pass


def _saved_before(out: Path) -> str:
    """What a run stopped by a failed write leaves to continue from."""
    last = latest_checkpoint(out)
    if last is None:
        return "no checkpoint was saved before it: free some space and train again"
    return f"the checkpoints saved before are intact: free some space and pass --resume to continue from {last}"


def _os_reason(err: Exception) -> str:
    """What went wrong in an OSError, and with which file (shutil.copytree gathers its errors in a list)."""
    if isinstance(err, shutil.Error) and err.args and isinstance(err.args[0], list) and err.args[0]:
        return str(err.args[0][0][-1])
    if getattr(err, "strerror", None) and getattr(err, "filename", None):
        return f"{err.strerror}: {err.filename}"
    return getattr(err, "strerror", None) or str(err)


def _plain(recipe: Recipe) -> dict:
    """The recipe as plain YAML/JSON data (tuples as lists), as recipe.yaml holds it."""
    return json.loads(json.dumps(recipe.to_dict()))


def _check_out(out: Path, resume: bool, beside: frozenset[str] = frozenset()) -> None:
    """Refuse an --out that is a file, lies under a file, or holds anything a fresh run would overwrite
    or mix with: a model, checkpoints, or files that are not a training run's."""
    for folder in (out, *out.parents):
        if folder.exists() or folder.is_symlink():
            if not folder.is_dir():
                where = "is a file" if folder == out else f"is inside {folder}, which is a file"
                raise TrainError(f"--out {out} {where}, not a folder: choose another --out")
            break
    if resume or not out.is_dir():
        return
    if latest_checkpoint(out) is not None:
        raise OutputExistsError(f"{out} already holds checkpoints: pass --resume to continue, or choose another --out")
    if (out / "best").exists():
        raise OutputExistsError(f"{out} already holds a trained model ({out / 'best'}) and no checkpoint to resume "
                                f"from: choose another --out, or move {out / 'best'} away to train a new model here")
    # a run that stopped before its first checkpoint leaves only these: training again there is safe
    ours = {"recipe.yaml", "log.jsonl", "checkpoints"} | beside
    others = sorted(p.name for p in out.iterdir() if p.name not in ours)
    if (out / "checkpoints").is_dir():
        others += sorted(f"checkpoints/{p.name}" for p in (out / "checkpoints").iterdir()
                         if not p.name.startswith(f".tmp-{STEP_PREFIX}"))
    if others:
        shown = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
        raise OutputExistsError(f"{out} is not empty and is not a training run to resume (it holds {shown}): "
                                f"choose a new or empty --out")


def _flat(data, prefix: str = "") -> dict:
    if isinstance(data, dict):
        return {k: v for key, value in data.items() for k, v in _flat(value, f"{prefix}{key}.").items()}
    return {prefix.rstrip("."): data}


def _resolved(spec):
    """``data.train`` (a path or a list of paths) as absolute paths with symlinks resolved."""
    if isinstance(spec, str):
        return str(Path(spec).resolve())
    if isinstance(spec, (list, tuple)):
        return [_resolved(p) for p in spec]
    return spec


def _digests(spec):
    """The SHA-256 of each file ``data.train`` (a path or a list of paths) names, None where it names none."""
    if isinstance(spec, (list, tuple)):
        return [_digests(p) for p in spec]
    if not isinstance(spec, str) or not Path(spec).is_file():
        return None
    digest = hashlib.sha256()
    with open(spec, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _same_files(old, new, recorded, digests=None) -> bool:
    """Whether ``old`` (data.train of the saved recipe, as written then) and ``new`` (now) name the same
    data: ``new`` resolved from the current folder is ``recorded`` (``old`` resolved when the checkpoint
    was written; for older checkpoints, ``old`` resolved from the current folder), or holds the bytes whose
    SHA-256 the checkpoint recorded in ``digests`` (the files moved, with the project or on their own). The
    data fingerprint checks only the pairs' token lengths, not their text."""
    if old == new and recorded is None:  # a relative name may now name another file: compare with the record
        return True
    if (isinstance(old, list) and isinstance(new, list) and len(old) == len(new)
            and (recorded is None or isinstance(recorded, list) and len(recorded) == len(new))):
        digests = digests if isinstance(digests, list) and len(digests) == len(new) else [None] * len(new)
        return all(_same_files(o, n, None if recorded is None else r, d) for o, n, r, d in
                   zip(old, new, recorded if recorded is not None else [None] * len(new), digests))
    if not (isinstance(old, str) and isinstance(new, str)):
        return False
    then = recorded if isinstance(recorded, str) else old  # checkpoints written before train_files: old as it is
    return Path(then).resolve() == Path(new).resolve() or (isinstance(digests, str) and _digests(new) == digests)


def _check_same_run(out: Path, recipe: Recipe, ckpt: Path | None = None) -> None:
    """--resume: refuse a recipe whose model, tokenizers, data (training or dev) or batching differ from the
    saved one (``data.train`` and ``data.dev`` compare as the files they name: ``ckpt``'s state records them
    resolved)."""
    path = out / "recipe.yaml"
    if not path.is_file():
        return  # nothing to compare with: the checkpoint's weights and data position are still checked
    try:
        saved = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise TrainError(f"--resume: cannot read the recipe the run was started with, {path}: {err}") from None
    if not isinstance(saved, dict):
        raise TrainError(f"--resume: {path} is not a recipe (a mapping of sections)")
    old, new = _flat({k: saved.get(k) for k in (*_FIXED_SECTIONS, "train")}), _flat(_plain(recipe))
    fixed = lambda k: (k.split(".")[0] in _FIXED_SECTIONS and k not in _FREE_DATA_KEYS) or k in _FIXED_TRAIN_KEYS  # noqa: E731
    recorded = {}
    if ckpt is not None:
        try:
            recorded = json.loads((ckpt / "trainer.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            pass  # reported by the checks that need the state
    recorded = recorded if isinstance(recorded, dict) else {}
    # the files compare as the files they name (the dev set too: its BLEU decides best/ and patience)
    same = lambda k: (_same_files(old.get(k), new.get(k), recorded.get(f"{k[5:]}_files"),  # noqa: E731
                                  recorded.get(f"{k[5:]}_digests"))
                      if k in ("data.train", "data.dev") else old.get(k) == new.get(k))
    changed = sorted(k for k in set(old) | set(new) if fixed(k) and not same(k))
    if changed:
        def says(k: str) -> str:
            if old.get(k) == new.get(k):  # the same name, now for another file
                other = " (other bytes)" if recorded.get(f"{k[5:]}_digests") is not None else ""
                return (f"{k}: {old.get(k)!r} named {recorded.get(f'{k[5:]}_files')!r} when the run was saved, "
                        f"{_resolved(new.get(k))!r} now{other}")
            return f"{k}: {old.get(k)!r} in {path.name}, {new.get(k)!r} now"

        shown = "; ".join(says(k) for k in changed)
        raise TrainError(f"--resume: {shown}. The model, tokenizers, data (training and dev) and batching of a run "
                         f"cannot change when it resumes: drop the change(s), or train into a new --out")


def limit_reached(t: TrainSettings, state: Mapping[str, Any]) -> tuple[str, str] | None:
    """The limit of the train settings ``t`` that a run has reached, by its last checkpoint's trainer state
    ``state`` (its ``step``, ``elapsed`` seconds, ``stale`` validations and ``epochs_done``), as ``(what it
    reached, what to raise to train on)``; None when resuming it with ``t`` trains on. The one test of
    ``--resume`` and of the demo's choice between continuing a cached run and using its model."""
    step, elapsed = state["step"], state["elapsed"]
    if t.max_steps is not None and step >= t.max_steps:
        return f"reached max_steps={t.max_steps}", "raise --max-steps"
    if t.max_minutes is not None and elapsed >= 60 * t.max_minutes:
        return f"reached max_minutes={t.max_minutes:g}", "raise --max-minutes"
    if t.patience is not None and state["stale"] >= t.patience:
        return f"no better dev BLEU in {t.patience} validations", "raise train.patience"
    if t.max_epochs is not None and state.get("epochs_done", 0) >= t.max_epochs:
        return f"reached max_epochs={t.max_epochs}", "raise --max-epochs"
    return None


def _already_done(out: Path, ckpt: Path, t) -> TrainResult | None:
    """--resume of a run whose last checkpoint already reached this recipe's step or time limit, or ran out of
    patience: a result saying so (nothing is trained or written), else None."""
    try:
        state = json.loads((ckpt / "trainer.json").read_text(encoding="utf-8"))
        # all four read here: a checkpoint missing one is damaged (limit_reached reads the others)
        step, _, _, best = state["step"], state["elapsed"], state["stale"], state["best_bleu"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        why = f"no {err} in it" if isinstance(err, KeyError) else "not a mapping" if isinstance(err, TypeError) else err
        earlier = earlier_checkpoint(out, ckpt)  # as load_checkpoint's errors say: what else there is
        instead = f"move {ckpt} away to resume from {earlier}" if earlier is not None else "train into a new --out"
        raise TrainError(f"--resume: cannot read {ckpt / 'trainer.json'}: {why}: the checkpoint {ckpt} is damaged; "
                         f"{instead}") from None
    reached = limit_reached(t, state)
    if reached is None:
        return None
    why, raise_it = reached
    best_dir = recover_best(out)
    return TrainResult(out, step, best, best_dir,
                       f"nothing to resume: the run in {out} already {why.replace('no better', 'had no better')} "
                       f"at step {step} ({raise_it} to train on); model in {best_dir}")


def _check_batchable(encoded, split: str, recipe: Recipe) -> None:
    """Every kept pair must fit one batch of train.max_tokens tokens (with its end/start token), and the
    model's learned positions when it has them."""
    max_tokens, max_len = recipe.train.max_tokens, recipe.data.max_len
    if not encoded.examples:
        raise TrainError(f"data.{split}: all {encoded.skipped:,} pairs have a side longer than data.max_len={max_len} "
                         f"tokens: raise data.max_len")
    widest = max(max(len(x), len(y)) for x, y in encoded.examples) + 1
    positions = getattr(recipe.model, "max_len", None) if getattr(recipe.model, "positions", None) == "learned" else None
    if positions is not None and widest > positions:  # a learned position for each token, its end/start one too
        raise TrainError(f"model.max_len={positions} learned positions are fewer than the longest data.{split} pair "
                         f"needs ({widest} tokens): raise model.max_len to at least {widest}, or set data.max_len to "
                         f"{positions - 1} or less to skip the longer pairs")
    if widest > max_tokens:
        raise TrainError(f"train.max_tokens={max_tokens} (--max-tokens) is smaller than the longest data.{split} pair, "
                         f"which needs {widest} tokens: raise train.max_tokens to at least {widest}, or set "
                         f"data.max_len to {max_tokens - 1} or less to skip the longer pairs")


def per_token_gradient(model: torch.nn.Module, divisor: int, tokens: int) -> None:
    """Rescales gradients summed over a group of batches, each batch's loss divided by ``divisor``, to the
    gradient of the group's loss per target token (``tokens`` of them): a group's tokens count alike whichever
    batch holds them, as in one batch of them all. Nothing to do for a group of one batch (``tokens`` is then
    its ``divisor``) or of no target tokens."""
    if tokens and tokens != divisor:
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        if grads:
            torch._foreach_mul_(grads, divisor / tokens)


def optimizer_update(model: torch.nn.Module, optimizer: torch.optim.Optimizer, step: int, t, *, d_model: int) -> float:
    """Optimizer step ``step`` (1-based) with the recipe's schedule and clipping (``t``: TrainSettings);
    the gradients are zeroed after it. Returns the learning rate used."""
    lr = learning_rate(step, schedule=t.schedule, lr=t.lr, warmup=t.warmup, d_model=d_model)
    for group in optimizer.param_groups:
        group["lr"] = lr
    if t.clip_norm:
        clip_grad_norm(model.parameters(), t.clip_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return lr


def _valid_line(e: dict) -> str:
    parts = [f"step {e['step']}"]
    if e.get("dev_loss") is not None:
        parts.append(f"dev loss {e['dev_loss']:.3f}")
    if e.get("bleu") is not None:
        parts.append(f"BLEU {e['bleu']:.2f}  chrF {e['chrf']:.2f}")
    parts.append(f"best {e['best_bleu']:.2f}" if e.get("best_bleu") is not None else "")
    return "valid: " + ", ".join(p for p in parts if p)


@torch.no_grad()
def _validate(model, dev_loader, dev_pairs, src_tok, tgt_tok, recipe: Recipe, smoothing: float) -> dict:
    if dev_loader is None:
        return {}
    model.eval()
    loss_sum = tokens = 0.0
    for batch in dev_loader.epoch(0):
        logits, _ = model(batch.src, batch.tgt_in)
        loss_sum += float(label_smoothed_nll(logits, batch.tgt_out, smoothing=0.0, ignore_index=model.config.pad_id))
        tokens += batch.num_target_tokens
    subset = _dev_subset(dev_pairs, recipe)
    hyps = Translator(model, src_tok, tgt_tok).translate([p.src for p in subset], beam=recipe.train.eval_beam,
                                                         batch_size=_EVAL_BATCH)
    target_lang = recipe.data.direction.split("-")[1]
    scores = corpus_scores([h.text for h in hyps], [p.tgt for p in subset], target_lang=target_lang)
    return {"dev_loss": round(loss_sum / max(tokens, 1), 4), "dev_ppl": round(math.exp(min(loss_sum / max(tokens, 1), 50)), 2),
            "bleu": round(scores["bleu"].score, 2), "chrf": round(scores["chrf"].score, 2),
            "bleu_signature": scores["bleu"].signature}


def _dev_subset(dev_pairs: list, recipe: Recipe) -> list:
    """The dev pairs whose translations give dev BLEU: the first ``data.dev_max_sentences`` (all for None)."""
    limit = recipe.data.dev_max_sentences
    return dev_pairs[:limit] if limit else dev_pairs


def _check_eval_memory(model, src_tok, tgt_tok, dev_pairs: list, recipe: Recipe) -> None:
    """Refuse a ``train.eval_beam`` whose decoding for dev BLEU cannot fit in the memory available: the kernel
    would kill the run at its first validation, after ``eval_every`` updates of work, without a word. The
    estimate is :meth:`Translator.decoding_bytes` of the dev sources :func:`_validate` translates, in its
    batches (a floor: :mod:`attnkit.decode.memory`); the memory, :func:`attnkit.runtime.available_memory`."""
    from attnkit.decode.memory import format_bytes
    from attnkit.runtime import available_memory

    have = available_memory()
    sources = [p.src for p in _dev_subset(dev_pairs, recipe)]
    if have is None or not sources:  # not Linux, or no validation
        return
    beam, training = recipe.train.eval_beam, model.training
    need = Translator(model, src_tok, tgt_tok).decoding_bytes(sources, beam=beam, batch_size=_EVAL_BATCH)
    model.train(training)  # (a Translator puts its model in eval mode)
    if need <= have:
        return
    together = min(_EVAL_BATCH, len(sources))
    what = (f"needs at least {format_bytes(need)} of memory for {together} dev sentence{'s' * (together != 1)} at a "
            f"time, more than the {format_bytes(have)} available")
    if beam > 1:
        raise TrainRecipeError("train.eval_beam", f"train.eval_beam={beam} is too large: the beam search for dev BLEU "
                                                  f"{what}: use a smaller train.eval_beam")
    fewer = f"fewer than {together} (data.dev_max_sentences) or " if together > 1 else ""
    raise TrainError(f"dev BLEU's greedy decoding {what}: validate on {fewer}shorter dev sentences")
