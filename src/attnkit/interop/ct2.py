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

Models that MarianMT cannot express — pre-norm blocks (attnkit's default) or learned positions — are
described to CTranslate2 directly (:func:`ctranslate2_spec`): its own ``TransformerSpec``, which has the
pre-norm layout with the stacks' final LayerNorms, filled from attnkit's weights as they are, the
positions as a table of ``max_positions`` rows (attnkit's interleaved sinusoids, or its learned rows),
and the same vocabularies, special tokens and start token as above. :func:`export_model_ctranslate2`
takes either route from an attnkit model folder: through MarianMT when MarianMT can express the model
and ``transformers`` is installed (what the speed benchmarks compare), directly otherwise (which needs
only ``ctranslate2``).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import warnings
from pathlib import Path

from .marian import (
    DEFAULT_MAX_POSITIONS,
    UNK,
    ExportError,
    MarianExport,
    abandon_staging,
    check_earlier_export,
    check_tokenizer_sizes,
    move_up,
    start_staging,
)

__all__ = ["export_ctranslate2", "export_model_ctranslate2", "ctranslate2_spec", "QUANTIZATIONS"]

# CTranslate2's weight types for `quantization` (ctranslate2.converters.Converter.convert)
QUANTIZATIONS = ("int8", "int8_float32", "int8_float16", "int8_bfloat16", "int16", "float16", "bfloat16", "float32")


def _ctranslate2(module: str):
    """``ctranslate2.<module>``, or an :class:`ExportError` saying how to install the package."""
    import importlib

    try:
        return importlib.import_module(f"ctranslate2.{module}")
    except ImportError:
        raise ExportError(
            "exporting to CTranslate2 needs the ctranslate2 package: pip install ctranslate2 "
            "(or install attnkit with the bench extra)"
        ) from None


def _check_quantization(quantization: str | None) -> None:
    if quantization is not None and quantization not in QUANTIZATIONS:
        raise ExportError(f"quantization must be one of {', '.join(QUANTIZATIONS)}, got {quantization!r}")


def _converter_class():
    ct2 = _ctranslate2("converters.transformers")
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
    return out, check_earlier_export(out, force, "CTranslate2 model", lambda name: bool(_CT2_FILE.fullmatch(name)),
                                     lambda folder: (folder / "model.bin").is_file(), "model.bin",
                                     lambda name: "vocabulary" in name)


def export_ctranslate2(marian_dir: str | os.PathLike, out_dir: str | os.PathLike, quantization: str | None = None,
                       *, force: bool = False) -> Path:
    """Convert the MarianMT folder ``marian_dir`` (written by :func:`export_marian`, tokenizer files
    included) into a CTranslate2 model folder ``out_dir``; ``quantization`` is one of
    :data:`QUANTIZATIONS` or ``None`` (keep float32). ``force`` overwrites an existing ``out_dir``."""
    marian_dir = Path(marian_dir)
    _check_quantization(quantization)
    missing = [n for n in ("config.json", "model.safetensors", "source.spm", "target.spm", "vocab.json")
               if not (marian_dir / n).is_file()]
    if missing:
        raise ExportError(f"{marian_dir} is not a MarianMT export with tokenizer files: {', '.join(missing)} missing "
                          "(export a model folder that has its tokenizers, as training saves them)")
    out, earlier = check_ctranslate2_out(out_dir, force)
    _convert(_converter_class()(str(marian_dir)), out, earlier, quantization)
    return out


def _convert(converter, out: Path, earlier: list[Path], quantization: str | None) -> None:
    """Run the CTranslate2 ``converter`` into ``out``, checked by :func:`check_ctranslate2_out` (which gave
    the ``earlier`` model's files to replace). Converted into a staging folder inside ``out`` and moved up
    only when complete: a failed conversion leaves an earlier model as it was, and no partial one."""
    tmp, created = start_staging(out)
    try:
        converter.convert(str(tmp), quantization=quantization)
    except BaseException:
        abandon_staging(tmp, out, created)
        raise
    move_up(tmp, out, earlier, marker="model.bin")


# ---------------------------------------------------------------------------------- without MarianMT


def _linear(spec, *linears) -> None:
    """``spec`` (a CTranslate2 LinearSpec) as ``linears`` stacked by their outputs (q, k, v fused as
    CTranslate2 holds them); a bias only if one of them has one (zeros for those without)."""
    import torch

    spec.weight = torch.cat([lin.weight for lin in linears]).float().contiguous()
    if any(lin.bias is not None for lin in linears):
        spec.bias = torch.cat([lin.bias if lin.bias is not None else lin.weight.new_zeros(lin.out_features)
                               for lin in linears]).float().contiguous()


def _norm(spec, norm) -> None:
    spec.gamma = norm.weight.float().contiguous()
    spec.beta = norm.bias.float().contiguous()


def _positions(pos, n: int):
    """The first ``n`` rows of a positional encoding's table, as attnkit adds them."""
    from attnkit.layers import LearnedPositionalEncoding

    if isinstance(pos, LearnedPositionalEncoding):
        return pos.embedding.weight[:n].float().contiguous()
    return pos.encoding(n).float().contiguous()


def _check_direct(model) -> float:
    """What the direct description assumes of ``model``; returns its LayerNorms' one epsilon."""
    from torch import nn

    from attnkit.models.transformer import TransformerSeq2Seq

    if not isinstance(model, TransformerSeq2Seq):
        kind = getattr(model.config, "kind", type(model).__name__)
        raise ExportError(f"only Transformer models export to CTranslate2; this model is {kind!r}")
    eps = {m.eps for m in model.modules() if isinstance(m, nn.LayerNorm)}
    if len(eps) != 1:  # CTranslate2 has one layer_norm_epsilon for the whole model
        raise ExportError(f"the model's LayerNorms use different eps values ({sorted(eps)}); CTranslate2 takes one")
    activations = {block.ffn.activation_name for block in [*model.encoder, *model.decoder]}
    if activations != {"relu"}:
        raise ExportError(f"the feed-forward activation is {sorted(activations)}; the export writes ReLU only")
    return eps.pop()


def ctranslate2_spec(model, src_pieces: list[str], tgt_pieces: list[str], *,
                     max_positions: int = DEFAULT_MAX_POSITIONS):
    """A CTranslate2 ``TransformerSpec`` of ``model`` (an attnkit Transformer, pre- or post-norm, with
    sinusoidal or learned positions) with the vocabularies ``src_pieces``/``tgt_pieces`` (id order):
    embeddings scaled by √d_model, positions as a table of ``max_positions`` rows (at most the learned
    table's), q/k/v fused as CTranslate2 holds them, the output layer without bias, decoding started
    from BOS. Weights are attnkit's, unpermuted."""
    import torch

    common_spec, transformer_spec = _ctranslate2("specs.common_spec"), _ctranslate2("specs.transformer_spec")
    eps = _check_direct(model)
    c = model.config
    check_tokenizer_sizes(model, len(src_pieces), len(tgt_pieces))
    for side, pieces, n in (("source", src_pieces, model.src_vocab_size), ("target", tgt_pieces, model.tgt_vocab_size)):
        if len(set(pieces)) != n:
            twice = sorted({p for p in pieces if pieces.count(p) > 1})[:5]
            raise ExportError(f"the {side} vocabulary names a piece twice ({', '.join(map(repr, twice))}); "
                              "CTranslate2 needs every piece once")
    spec = transformer_spec.TransformerSpec.from_config((c.encoder_layers, c.decoder_layers), c.heads,
                                                        pre_norm=c.norm_first, activation=common_spec.Activation.RELU)
    with torch.no_grad():
        for stack, embed, pos, blocks, final in ((spec.encoder, model.src_embed, model.src_pos, model.encoder,
                                                  model.encoder_norm),
                                                 (spec.decoder, model.tgt_embed, model.tgt_pos, model.decoder,
                                                  model.decoder_norm)):
            embeddings = stack.embeddings[0] if isinstance(stack.embeddings, list) else stack.embeddings
            embeddings.weight = embed.weight.float().contiguous()
            stack.scale_embeddings = True  # × √d_model, as attnkit scales them
            stack.position_encodings.encodings = _positions(pos, max_positions)
            if c.norm_first:
                _norm(stack.layer_norm, final)
            for layer, block in zip(stack.layer, blocks):
                attn = block.self_attn
                _linear(layer.self_attention.linear[0], attn.q_proj, attn.k_proj, attn.v_proj)
                _linear(layer.self_attention.linear[1], attn.out_proj)
                _norm(layer.self_attention.layer_norm, block.self_attn_norm)
                if blocks is model.decoder:
                    cross = block.cross_attn
                    _linear(layer.attention.linear[0], cross.q_proj)
                    _linear(layer.attention.linear[1], cross.k_proj, cross.v_proj)
                    _linear(layer.attention.linear[2], cross.out_proj)
                    _norm(layer.attention.layer_norm, block.cross_attn_norm)
                _linear(layer.ffn.linear_0, block.ffn.linear1)
                _linear(layer.ffn.linear_1, block.ffn.linear2)
                _norm(layer.ffn.layer_norm, block.ffn_norm)
        _linear(spec.decoder.projection, model.output)
    spec.config.bos_token = tgt_pieces[c.bos_id]
    spec.config.eos_token = tgt_pieces[c.eos_id]
    spec.config.unk_token = tgt_pieces[UNK]
    spec.config.decoder_start_token = tgt_pieces[c.bos_id]
    spec.config.layer_norm_epsilon = eps
    spec.register_source_vocabulary(src_pieces)
    spec.register_target_vocabulary(tgt_pieces)
    return spec


def export_model_ctranslate2(model_dir: str | os.PathLike, out_dir: str | os.PathLike, quantization: str | None = None,
                             *, max_positions: int = DEFAULT_MAX_POSITIONS, force: bool = False) -> MarianExport:
    """Write the attnkit Transformer in ``model_dir`` (a model folder with its tokenisers, or a training
    output) as a CTranslate2 model in ``out_dir``: through a MarianMT export when MarianMT can express the
    model and ``transformers`` is installed, described directly otherwise (see the module docstring). ``quantization``, ``force`` as for
    :func:`export_ctranslate2`; ``max_positions`` bounds the source and output lengths."""
    import tempfile

    from attnkit.decode.translator import load_folder_tokenizers
    from attnkit.models import load_model

    from .marian import _export_marian_model, check_exportable, export_folders, tokenizer_pieces

    _check_quantization(quantization)
    folder, out = export_folders(model_dir, out_dir, max_positions)
    out, earlier = check_ctranslate2_out(out, force)  # before the work, not after it
    model, _ = load_model(folder)
    _check_direct(model)  # a Transformer, which either route can write
    if not (folder / "tokenizers.json").is_file():
        raise ExportError(f"{folder} has no tokenizers (tokenizers.json), and a CTranslate2 model needs its "
                          "vocabularies; export a folder saved with its tokenizers, as training does")
    try:
        check_exportable(model.config)
    except ExportError:
        direct = True
    else:
        direct = not _transformers_importable()  # the MarianMT route loads the export with transformers
    if not direct:
        # export_marian then export_ctranslate2, without the loading and the checks made above
        with tempfile.TemporaryDirectory(prefix="attnkit-marian-") as tmp:
            result = _export_marian_model(model, folder, Path(tmp) / "marian", [], max_positions)
            _convert(_converter_class()(str(result.out_dir)), out, earlier, quantization)
        return MarianExport(out, _files(out), result.notes)
    Converter = _ctranslate2("converters.converter").Converter
    src_tok, tgt_tok = load_folder_tokenizers(folder)
    check_tokenizer_sizes(model, src_tok.vocab_size, tgt_tok.vocab_size, folder)
    notes = []
    if model.config.positions == "learned" and max_positions > model.config.max_len:
        n = model.config.max_len
        notes.append(f"the model's learned positions end at {n}: the exported model accepts sources and outputs "
                     f"of at most {n} tokens, not {max_positions} (CTranslate2 refuses longer ones: translate with "
                     f"max_input_length={n}, max_decoding_length={n})")
        max_positions = model.config.max_len
    spec = ctranslate2_spec(model, tokenizer_pieces(src_tok), tokenizer_pieces(tgt_tok), max_positions=max_positions)

    class AttnkitConverter(Converter):
        def _load(self):
            return spec

    _convert(AttnkitConverter(), out, earlier, quantization)
    return MarianExport(out, _files(out), tuple(notes))


def _transformers_importable() -> bool:
    try:
        import transformers  # noqa: F401
    except ImportError:
        return False
    return True


def _files(out: Path) -> tuple[str, ...]:
    return tuple(sorted(p.name for p in out.iterdir() if _CT2_FILE.fullmatch(p.name)))
