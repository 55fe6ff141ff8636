"""Convert an exported MarianMT folder (:func:`attnkit.interop.marian.export_marian`) to CTranslate2.

CTranslate2 converts Marian models with its own ``TransformersConverter``, whose Marian loader assumes
what original Marian (C++) checkpoints are like, and two of those assumptions are false for a model
trained by attnkit:

- *the decoder starts from a zero vector* (``start_from_zero_embedding``) — original Marian models start
  from PAD, the last id, whose embedding is zero; attnkit starts from BOS (id 1), a learned embedding;
- *the last vocabulary entry is a PAD added by the conversion to transformers*, which it removes from the
  embeddings and the output layer — attnkit's PAD is id 0 and its last id is a real token;

and it registers the source vocabulary for the target side too, while attnkit's Chinese→English models
usually have two vocabularies. So the conversion here uses CTranslate2's own machinery — its converter
base class (validation, quantization, saving) and its BART/Marian weight loader (every layer of the
model, q/k/v fusion, embeddings, positions, projection) — with a loader that keeps the model as it is:
decoding starts from ``<s>`` (``decoder_start_token_id``), no vocabulary row is dropped, and the source
and target vocabularies are the tokenizer's own. Sources are given to ``translate_batch`` as tokens
followed by ``</s>`` (what ``MarianTokenizer`` produces).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import warnings
from pathlib import Path

from .marian import ExportError, abandon_staging, move_up, staged_entries, start_staging

__all__ = ["export_ctranslate2", "QUANTIZATIONS"]

# CTranslate2's weight types for `quantization` (ctranslate2.converters.Converter.convert)
QUANTIZATIONS = ("int8", "int8_float32", "int8_float16", "int8_bfloat16", "int16", "float16", "bfloat16", "float32")


def _ctranslate2():
    try:
        import ctranslate2  # noqa: F401
        from ctranslate2.converters import transformers as ct2_transformers
    except ImportError:
        raise ExportError(
            "exporting to CTranslate2 needs the ctranslate2 package: pip install ctranslate2 "
            "(or install attnkit with the bench extra)"
        ) from None
    return ct2_transformers


def _converter_class():
    ct2 = _ctranslate2()
    import torch
    import transformers

    class AttnkitMarianLoader(ct2.BartLoader):
        """CTranslate2's BART loader with Marian's layout (post-norm, no embedding LayerNorm), as its
        ``MarianMTLoader`` sets it up, without that loader's assumptions about original Marian models."""

        @property
        def architecture_name(self):
            return "MarianMTModel"

        def __init__(self, marian_dir: Path):
            self.marian_dir = marian_dir

        def get_model_spec(self, model):
            model.config.normalize_before = False  # Marian blocks are post-norm
            model.config.normalize_embedding = False  # and have no LayerNorm on the embeddings
            return super().get_model_spec(model)

        def __call__(self, model, tokenizer):
            spec = self.get_model_spec(model)
            spec.config.bos_token = tokenizer.convert_ids_to_tokens(model.config.bos_token_id)
            spec.config.eos_token = tokenizer.eos_token
            spec.config.unk_token = tokenizer.unk_token
            spec.config.decoder_start_token = tokenizer.convert_ids_to_tokens(model.config.decoder_start_token_id)
            # the vocabulary files themselves (MarianTokenizer.get_tgt_vocab fails in transformers 5)
            source = _read_vocab(self.marian_dir / "vocab.json")
            target = _read_vocab(self.marian_dir / "target_vocab.json") if tokenizer.separate_vocabs else source
            spec.register_source_vocabulary(source)
            spec.register_target_vocabulary(target)
            return spec

    class AttnkitMarianConverter(ct2.Converter):
        def __init__(self, marian_dir: str):
            self.marian_dir = marian_dir

        def _load(self):
            with torch.no_grad(), _quiet_transformers():
                model = transformers.MarianMTModel.from_pretrained(self.marian_dir)  # float32, as exported
                tokenizer = transformers.MarianTokenizer.from_pretrained(self.marian_dir)
                return AttnkitMarianLoader(Path(self.marian_dir))(model, tokenizer)

    return AttnkitMarianConverter


@contextlib.contextmanager
def _quiet_transformers():
    """Without transformers' weight-loading progress bar and its advice to install sacremoses (which
    MarianTokenizer uses only for the source languages' punctuation normalisation the export does not
    use): nothing else is silenced."""
    from transformers.utils import logging as hf_logging

    bar = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Recommended: pip install sacremoses")
            yield
    finally:
        if bar:
            hf_logging.enable_progress_bar()


def _read_vocab(path: Path) -> list[str]:
    """The tokens of a ``piece → id`` JSON file in id order; the ids must be ``0 … n-1``."""
    vocab = json.loads(path.read_text("utf-8"))
    tokens = sorted(vocab, key=vocab.__getitem__)
    if [vocab[t] for t in tokens] != list(range(len(tokens))):
        raise ExportError(f"{path}: the ids are not 0 … n-1 without gaps")
    return tokens


# What a CTranslate2 conversion of a MarianMT model writes: a folder holding only these (model.bin among
# them) is an earlier model, which force=True may replace.
_CT2_FILE = re.compile(r"(model\.bin|config\.json|(shared_|source_|target_)?vocabulary\.(json|txt))")


def check_ctranslate2_out(out_dir: str | os.PathLike, force: bool) -> tuple[Path, list[Path]]:
    """``out_dir`` if a conversion may be written there — a new or empty folder, or with ``force`` an earlier
    CTranslate2 model (whose files are replaced once the new ones are complete) — and the earlier files."""
    out = Path(out_dir)
    if not out.exists():
        return out, []
    if not out.is_dir():
        raise ExportError(f"{out} is a file, not a folder")
    entries = staged_entries(out)
    if not entries:
        return out, []
    earlier = (out / "model.bin").is_file() and all(p.is_file() and _CT2_FILE.fullmatch(p.name) for p in entries)
    if not earlier:
        raise ExportError(f"{out} is not empty ({len(entries)} entries, e.g. {entries[0].name}) and is not an earlier "
                          "CTranslate2 model; choose a new or empty folder for --out")
    if not force:
        raise ExportError(f"{out} holds an earlier CTranslate2 model; choose another folder, or pass force=True "
                          "(--force) to replace it")
    return out, entries


def export_ctranslate2(marian_dir: str | os.PathLike, out_dir: str | os.PathLike, quantization: str | None = None,
                       *, force: bool = False) -> Path:
    """Convert the MarianMT folder ``marian_dir`` (written by :func:`export_marian`, tokenizer files
    included) into a CTranslate2 model folder ``out_dir``; ``quantization`` is one of
    :data:`QUANTIZATIONS` or ``None`` (keep float32). ``force`` overwrites an existing ``out_dir``."""
    marian_dir = Path(marian_dir)
    if quantization is not None and quantization not in QUANTIZATIONS:
        raise ExportError(f"quantization must be one of {', '.join(QUANTIZATIONS)}, got {quantization!r}")
    missing = [n for n in ("config.json", "model.safetensors", "source.spm", "target.spm", "vocab.json")
               if not (marian_dir / n).is_file()]
    if missing:
        raise ExportError(f"{marian_dir} is not a MarianMT export with tokenizer files: {', '.join(missing)} missing "
                          "(export a model folder that has its tokenizers, as training saves them)")
    out, earlier = check_ctranslate2_out(out_dir, force)
    converter = _converter_class()(str(marian_dir))
    # Converted into a staging folder inside ``out`` and moved up only when complete: a failed conversion
    # leaves an earlier model as it was, and no partial one.
    tmp, created = start_staging(out)
    try:
        converter.convert(str(tmp), quantization=quantization)
    except BaseException:
        abandon_staging(tmp, out, created)
        raise
    move_up(tmp, out, earlier)
    return out
