"""Export a trained attnkit Transformer as a Hugging Face MarianMT folder.

The folder holds ``config.json``, ``generation_config.json``, ``model.safetensors`` and the files of a
``MarianTokenizer`` (``source.spm``, ``target.spm``, ``vocab.json``, ``target_vocab.json`` for separate
vocabularies, ``tokenizer_config.json``), so that::

    MarianMTModel.from_pretrained(out_dir)      # same logits as the attnkit model, same greedy/beam outputs
    MarianTokenizer.from_pretrained(out_dir)    # same source ids as attnkit's tokenizers (see below)

What Marian can express, and so what exports (checked against ``transformers``' modeling_marian.py):

- **post-norm blocks only.** ``MarianEncoderLayer``/``MarianDecoderLayer`` compute
  ``LayerNorm(x + Sublayer(x))``; there is no ``normalize_before`` option and no final encoder/decoder
  LayerNorm. A pre-norm model (``norm_first: true``, attnkit's default) is refused: no weights make a
  post-norm stack compute a pre-norm one.
- **sinusoidal positions only.** ``MarianSinusoidalPositionalEmbedding`` rebuilds its table when the model
  is created and ``save_pretrained`` drops it, so a learned table would not survive; ``positions: learned``
  is refused. Marian lays the table out as ``[sin … | cos …]`` (all sines, then all cosines) where attnkit
  interleaves them (``sin, cos, sin, …``, Vaswani et al. 2017, section 3.5). The two are one permutation of
  the features apart, and nothing in the model mixes features other than through weight matrices and
  LayerNorm (whose mean and variance ignore order), so the export permutes the model's width — every
  embedding column, every weight that reads or writes the residual stream, every LayerNorm — and the
  permuted model computes exactly the same logits.
- the rest maps one to one: embeddings scaled by √d_model (``scale_embedding``), q/k/v/out projections
  with biases and the same 1/√d_head scaling, ReLU feed-forward (``activation_function``), dropout on the
  FFN hidden units (``activation_dropout``), causal decoder self-attention, source padding masked in
  cross-attention, separate or shared vocabularies (``share_encoder_decoder_embeddings``,
  ``decoder_vocab_size``), output tied to the target embedding or not (``tie_word_embeddings``), no
  output bias (``final_logits_bias`` is zero).
- decoding starts from BOS (id 1), not from PAD as original Marian models do: ``decoder_start_token_id=1``,
  and ``forced_eos_token_id`` is unset because attnkit never forces an EOS at the length limit.
  ``max_position_embeddings`` (``max_positions``, default 1024) bounds the source and the output length in
  ``transformers``; attnkit's sinusoids have no bound.

Decoding. ``generate(num_beams=1)`` is attnkit's :func:`~attnkit.decode.greedy_decode`, and
``generate(num_beams=k, length_penalty=0.0, early_stopping="never")`` its
``beam_search(beam_size=k, length_penalty=0.0)``, token for token, when both get the same length limit
(``max_length = 1 + max_len``: it counts the start token). Two settings differ otherwise: transformers
divides a hypothesis's log-probability by ``len ** alpha``, attnkit by GNMT's ``((5 + len) / 6) ** alpha``
(only ``alpha = 0`` ranks alike); and ``early_stopping=True`` stops once ``num_beams`` hypotheses have
finished, which can return a worse one than attnkit's exact stopping rule does.

Tokenisers. A SentencePiece side is written as it is (``source.spm``/``target.spm``; the vocabulary maps
each piece to its id). A character side (attnkit's default for Chinese) becomes a SentencePiece model of
type ``char`` over the same characters, with identity normalisation, so ``MarianTokenizer`` splits text
into the same characters and ``vocab.json`` maps each to its attnkit id; a space is SentencePiece's ``▁``.
One difference remains: SentencePiece merges a *run* of unknown characters into one ``<unk>``, where
attnkit gives one per character (1 of the 879 Tatoeba dev sentences has such a run under a tokenizer
trained on its train split). A character that SentencePiece cannot produce as a piece of its own is
listed in the export's notes. Decoding with ``MarianTokenizer.decode(..., skip_special_tokens=True)``
gives attnkit's text.
"""

from __future__ import annotations

import io
import json
import os
import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors.torch import save_file
from torch import Tensor, nn

__all__ = [
    "ExportError", "MarianExport", "export_marian", "check_exportable", "marian_config", "marian_state_dict",
    "residual_permutation", "tokenizer_pieces", "DEFAULT_MAX_POSITIONS",
]

DEFAULT_MAX_POSITIONS = 1024
# attnkit's ids (attnkit.text.base): PAD 0, BOS 1, EOS 2, UNK 3
PAD, BOS, EOS, UNK = 0, 1, 2, 3
SPIECE_SPACE = "\u2581"


class ExportError(ValueError):
    """A model or folder that cannot be exported as asked; the message says which option to change."""


@dataclass(frozen=True)
class MarianExport:
    """What :func:`export_marian` wrote: the folder, its files and notes for the user (e.g. characters
    ``MarianTokenizer`` cannot reproduce)."""

    out_dir: Path
    files: tuple[str, ...]
    notes: tuple[str, ...] = field(default_factory=tuple)


# --------------------------------------------------------------------------------------------- checks


def check_exportable(config: Any) -> None:
    """Raise :class:`ExportError` naming every option of ``config`` that MarianMT cannot express."""
    from attnkit.models.config import TransformerConfig

    if not isinstance(config, TransformerConfig):
        kind = getattr(config, "kind", type(config).__name__)
        raise ExportError(f"only Transformer models export to MarianMT; this model is {kind!r}")
    problems = []
    if config.norm_first:
        problems.append(
            "the model is pre-norm (model.norm_first: true) but Hugging Face MarianMT blocks are post-norm only "
            "(no normalize_before option, no final LayerNorm); train with model.norm_first: false, or export it to "
            "CTranslate2 (attnkit export --format ctranslate2), which takes pre-norm models"
        )
    if config.positions != "sinusoidal":
        problems.append(
            f"the model has {config.positions} positions but MarianMT's positions are fixed sinusoids (its table "
            "is rebuilt on load and never saved); train with model.positions: sinusoidal"
        )
    if problems:
        raise ExportError("cannot export to MarianMT: " + "; ".join(problems))


def check_tokenizer_sizes(model, src_size: int, tgt_size: int, folder: Path | None = None) -> None:
    """Raise :class:`ExportError` when a tokenizer's number of ids (``src_size``, ``tgt_size``) is not
    the model's (:func:`attnkit.text.tokenizer_size_mismatch`, naming the model ``folder`` when given)."""
    from attnkit.text import tokenizer_size_mismatch

    mismatch = tokenizer_size_mismatch((src_size, tgt_size), (model.src_vocab_size, model.tgt_vocab_size), folder)
    if mismatch:
        raise ExportError(mismatch)


# --------------------------------------------------------------------------------------------- weights


def residual_permutation(d_model: int) -> Tensor:
    """``perm (d_model,)`` with Marian feature ``m`` = attnkit feature ``perm[m]``: attnkit's even features
    (sines) first, then its odd ones (cosines) — Marian's ``[sin … | cos …]`` table layout."""
    return torch.cat([torch.arange(0, d_model, 2), torch.arange(1, d_model, 2)])


def _reads(linear: nn.Linear, perm: Tensor) -> dict[str, Tensor]:
    """A linear layer whose *input* is the residual stream: permute its input columns."""
    out = {"weight": linear.weight[:, perm]}
    if linear.bias is not None:
        out["bias"] = linear.bias
    return out


def _writes(linear: nn.Linear, perm: Tensor) -> dict[str, Tensor]:
    """A linear layer whose *output* is the residual stream: permute its output rows."""
    out = {"weight": linear.weight[perm]}
    if linear.bias is not None:
        out["bias"] = linear.bias[perm]
    return out


def _norm(norm: nn.LayerNorm, perm: Tensor) -> dict[str, Tensor]:
    return {"weight": norm.weight[perm], "bias": norm.bias[perm]}


def _attention(attn, perm: Tensor) -> dict[str, Tensor]:
    """q/k/v read the residual stream (or the encoder's), out_proj writes it; heads stay as they are."""
    parts = {"q_proj": _reads(attn.q_proj, perm), "k_proj": _reads(attn.k_proj, perm),
             "v_proj": _reads(attn.v_proj, perm), "out_proj": _writes(attn.out_proj, perm)}
    return {f"{name}.{p}": t for name, d in parts.items() for p, t in d.items()}


def _prefixed(prefix: str, tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    return {f"{prefix}.{k}": v for k, v in tensors.items()}


def _block(block, perm: Tensor, decoder: bool) -> dict[str, Tensor]:
    out = {**_prefixed("self_attn", _attention(block.self_attn, perm)),
           **_prefixed("self_attn_layer_norm", _norm(block.self_attn_norm, perm)),
           **_prefixed("fc1", _reads(block.ffn.linear1, perm)),
           **_prefixed("fc2", _writes(block.ffn.linear2, perm)),
           **_prefixed("final_layer_norm", _norm(block.ffn_norm, perm))}
    if decoder:
        out.update(_prefixed("encoder_attn", _attention(block.cross_attn, perm)))
        out.update(_prefixed("encoder_attn_layer_norm", _norm(block.cross_attn_norm, perm)))
    return out


@torch.no_grad()
def marian_state_dict(model) -> dict[str, Tensor]:
    """The weights of ``model`` (a post-norm, sinusoidal :class:`TransformerSeq2Seq`) under MarianMTModel's
    names, in Marian's feature order. Tied weights are written under every name they have in Marian, as
    separate copies, so the folder loads the same whether or not ``transformers`` re-ties them."""
    check_exportable(model.config)
    perm = residual_permutation(model.config.d_model)
    src_embed, tgt_embed = model.src_embed.weight[:, perm], model.tgt_embed.weight[:, perm]
    state = {"model.encoder.embed_tokens.weight": src_embed, "model.decoder.embed_tokens.weight": tgt_embed}
    if model.config.share_embeddings:
        state["model.shared.weight"] = src_embed
    for i, block in enumerate(model.encoder):
        state.update(_prefixed(f"model.encoder.layers.{i}", _block(block, perm, decoder=False)))
    for i, block in enumerate(model.decoder):
        state.update(_prefixed(f"model.decoder.layers.{i}", _block(block, perm, decoder=True)))
    state["lm_head.weight"] = model.output.weight[:, perm]  # reads the decoder's output features
    state["final_logits_bias"] = torch.zeros(1, model.tgt_vocab_size)  # attnkit's output has no bias
    return {k: v.detach().float().contiguous().clone() for k, v in state.items()}


def marian_config(model, *, max_positions: int = DEFAULT_MAX_POSITIONS) -> dict[str, Any]:
    """``config.json`` of the exported MarianMTModel (plain JSON: exporting needs no ``transformers``)."""
    c = model.config
    check_exportable(c)
    return {
        "architectures": ["MarianMTModel"],
        "model_type": "marian",
        "vocab_size": model.src_vocab_size,
        "decoder_vocab_size": model.tgt_vocab_size,
        "share_encoder_decoder_embeddings": bool(c.share_embeddings),
        "tie_word_embeddings": bool(c.tie_output),
        "d_model": c.d_model,
        "encoder_layers": c.encoder_layers,
        "decoder_layers": c.decoder_layers,
        "encoder_attention_heads": c.heads,
        "decoder_attention_heads": c.heads,
        "encoder_ffn_dim": c.ffn_dim,
        "decoder_ffn_dim": c.ffn_dim,
        "activation_function": "relu",  # attnkit's Transformer blocks use ReLU (BlockConfig default)
        "dropout": c.dropout,
        "attention_dropout": c.attention_dropout,
        "activation_dropout": c.dropout,  # attnkit's FeedForward drops its hidden units at the model's rate
        "encoder_layerdrop": 0.0,
        "decoder_layerdrop": 0.0,
        "max_position_embeddings": max_positions,
        "scale_embedding": True,
        "pad_token_id": c.pad_id,
        "bos_token_id": c.bos_id,
        "eos_token_id": c.eos_id,
        "decoder_start_token_id": c.bos_id,
        "forced_eos_token_id": None,
        "is_encoder_decoder": True,
        "use_cache": True,
        "dtype": "float32",
    }


def _generation_config(model, max_positions: int) -> dict[str, Any]:
    c = model.config
    # transformers' default max_length is 20 tokens; attnkit's limit is 2 × source + 10, which has no
    # equivalent in a generation config, so the positions table's size is the bound here.
    return {"decoder_start_token_id": c.bos_id, "bos_token_id": c.bos_id, "eos_token_id": c.eos_id,
            "pad_token_id": c.pad_id, "forced_eos_token_id": None, "max_length": max_positions}


# --------------------------------------------------------------------------------------------- tokenizers


def _char_spm(chars: list[str]) -> bytes:
    """A SentencePiece model of type ``char`` whose pieces are ``chars`` (a space becomes ``▁``), with
    identity normalisation, so it splits text exactly as :class:`~attnkit.text.CharTokenizer` does.
    The ids inside it do not matter: ``MarianTokenizer`` maps pieces to ids through ``vocab.json``."""
    import sentencepiece as spm

    chunks = ["".join(chars[i : i + 256]) for i in range(0, len(chars), 256)]  # short sentences for the trainer
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(chunks), model_writer=model, model_type="char",
        vocab_size=len(chars) + 4, hard_vocab_limit=False, character_coverage=1.0,
        normalization_rule_name="identity", remove_extra_whitespaces=False, add_dummy_prefix=False,
        pad_id=PAD, bos_id=BOS, eos_id=EOS, unk_id=UNK, num_threads=1, minloglevel=2,
    )
    return model.getvalue()


def tokenizer_pieces(tok) -> list[str]:
    """The vocabulary of one attnkit tokeniser as the exports write it, in id order: a SentencePiece
    side's own pieces; for a character side the special pieces, then its characters, a space written as
    SentencePiece's ``▁`` (unless ``▁`` is itself a character of the vocabulary)."""
    from attnkit.text import CharTokenizer, SentencePieceTokenizer

    if isinstance(tok, SentencePieceTokenizer):
        return [tok.id_to_piece(i) for i in range(tok.vocab_size)]
    if not isinstance(tok, CharTokenizer):
        raise ExportError(f"cannot export the vocabulary of a {type(tok).__name__}")
    chars = tok.chars
    return [tok.id_to_piece(i) for i in range(4)] + [SPIECE_SPACE if c == " " and SPIECE_SPACE not in chars else c
                                                    for c in chars]


def _tokenizer_files(tok) -> tuple[bytes, dict[str, int], list[str]]:
    """``(spm model, piece → id, notes)`` of one attnkit tokeniser, for ``MarianTokenizer``."""
    import sentencepiece as spm

    from attnkit.text import SentencePieceTokenizer

    vocab = {piece: i for i, piece in enumerate(tokenizer_pieces(tok))}
    if isinstance(tok, SentencePieceTokenizer):
        return tok.model_proto, vocab, []
    chars = tok.chars
    proto = _char_spm([SPIECE_SPACE if c == " " else c for c in chars])
    sp = spm.SentencePieceProcessor(model_proto=proto)
    lost = [c for c in chars if [vocab.get(p, UNK) for p in sp.encode(c, out_type=str)] != tok.encode(c)]
    notes = []
    if lost:
        shown = ", ".join(repr(c) for c in lost[:10]) + (" …" if len(lost) > 10 else "")
        notes.append(f"{len(lost)} character(s) of the vocabulary cannot be reproduced by MarianTokenizer and "
                     f"become <unk> there (attnkit's own tokenizer keeps them): {shown}")
    return proto, vocab, notes


def _write_tokenizers(out: Path, src_tok, tgt_tok, max_positions: int) -> tuple[list[str], list[str]]:
    joint = src_tok is tgt_tok
    src_proto, src_vocab, src_notes = _tokenizer_files(src_tok)
    files: dict[str, Any] = {"source.spm": src_proto, "vocab.json": src_vocab}
    if joint:
        files["target.spm"] = src_proto
        notes = src_notes
    else:
        tgt_proto, tgt_vocab, tgt_notes = _tokenizer_files(tgt_tok)
        files.update({"target.spm": tgt_proto, "target_vocab.json": tgt_vocab})
        notes = [f"source: {n}" for n in src_notes] + [f"target: {n}" for n in tgt_notes]
    files["tokenizer_config.json"] = {
        "tokenizer_class": "MarianTokenizer", "separate_vocabs": not joint, "model_max_length": max_positions,
        "unk_token": "<unk>", "eos_token": "</s>", "pad_token": "<pad>",
    }
    for name, content in files.items():
        data = content if isinstance(content, bytes) else json.dumps(content, ensure_ascii=False, indent=1).encode()
        (out / name).write_bytes(data)
    return list(files), notes


# --------------------------------------------------------------------------------------------- export


def _is_attnkit_model_folder(folder: Path) -> bool:
    try:
        meta = json.loads((folder / "config.json").read_text("utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and "model" in meta and "src_vocab_size" in meta


# Every file export_marian writes: a folder holding only these, config.json of a MarianMT model, is an
# earlier export, which force=True may replace.
MARIAN_FILES = frozenset({"config.json", "generation_config.json", "model.safetensors", "source.spm", "target.spm",
                          "vocab.json", "target_vocab.json", "tokenizer_config.json"})


def check_earlier_export(out: Path, force: bool, kind: str, ours: Callable[[str], bool],
                         complete: Callable[[Path], bool], marker: str, evidence: Callable[[str], bool]) -> list[Path]:
    """The files of an earlier export to replace in ``out`` (none for a new or empty folder): a folder of
    files the export writes (``ours(name)``) that is a ``complete(out)`` export of ``kind`` (``"MarianMT
    export"``), or an interrupted one — its ``marker`` gone first (see :func:`move_up`), a file of it left
    (``evidence(name)``). A folder holding anything else is refused: the export never overwrites what it
    did not write, and replaces an earlier export only with ``force``."""
    if not out.exists():
        return []
    if not out.is_dir():
        raise ExportError(f"{out} is a file, not a folder")
    entries = staged_entries(out)
    if not entries:
        return []
    mine = all(p.is_file() and ours(p.name) for p in entries)
    interrupted = mine and not (out / marker).exists() and any(evidence(p.name) for p in entries)
    if not (mine and complete(out) or interrupted):
        raise ExportError(f"{out} is not empty ({len(entries)} entries, e.g. {entries[0].name}) and is not an earlier "
                          f"{kind}; choose a new or empty folder for --out")
    if not force:
        what = f"an interrupted {kind} (no {marker})" if interrupted else f"an earlier {kind}"
        raise ExportError(f"{out} holds {what}; choose another folder, or pass force=True (--force) to replace it")
    return entries


def _marian_config(out: Path) -> bool:
    try:
        return json.loads((out / "config.json").read_text("utf-8")).get("model_type") == "marian"
    except (OSError, ValueError, AttributeError):
        return False


def check_marian_out(out: Path, force: bool) -> list[Path]:
    """:func:`check_earlier_export` for a MarianMT export."""
    return check_earlier_export(out, force, "MarianMT export", MARIAN_FILES.__contains__, _marian_config,
                                "config.json", "model.safetensors".__eq__)


# Exports are written into a hidden folder of this name inside --out, and their files moved up only when all
# are written; one left by a killed export is ours to delete.
STAGING_PREFIX = ".attnkit-export-"


def _running(pid: str) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def staged_entries(out: Path) -> list[Path]:
    """The entries of ``out`` apart from staging folders: those left by an interrupted export (whose
    process is gone) are deleted here, those of an export still running are left to it."""
    entries = []
    for p in sorted(out.iterdir()):
        if p.name.startswith(STAGING_PREFIX) and p.is_dir() and not p.is_symlink():
            if not _running(p.name[len(STAGING_PREFIX):].split("-")[0]):
                shutil.rmtree(p)
        else:
            entries.append(p)
    return entries


def start_staging(out: Path) -> tuple[Path, bool]:
    """A new staging folder name inside ``out`` (created with its parents when missing), and whether
    ``out`` was created here."""
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    return out / f"{STAGING_PREFIX}{os.getpid()}-{secrets.token_hex(4)}", created


def move_up(staged: Path, out: Path, earlier: list[Path], marker: str = "config.json") -> None:
    """Move every file of the complete export in ``staged`` into ``out`` (each an atomic replace), then delete
    the files of the ``earlier`` export that the new one does not have, then ``staged``. ``out`` itself —
    a symlink, its permissions, a shell inside it — is left as it is. ``marker``, the file without which
    the folder loads as no model (MarianMT's config.json, CTranslate2's model.bin), goes first from the
    earlier export and last from the new one: a move cut short leaves a folder that loads as nothing,
    never one that loads the two exports' files together."""
    files = sorted(staged.iterdir(), key=lambda p: p.name == marker)
    try:
        if any(p.name == marker for p in earlier) and ((out / marker).is_file() or (out / marker).is_symlink()):
            (out / marker).unlink()
        for p in files:
            os.replace(p, out / p.name)
        names = {p.name for p in files}
        for p in earlier:
            if p.name not in names and (p.is_file() or p.is_symlink()):
                p.unlink()
        staged.rmdir()
    except OSError as err:
        shutil.rmtree(staged, ignore_errors=True)
        state = ("it holds part of each export and no " + marker + ", so it loads as no model"
                 if not (out / marker).exists() else "it holds the new export and files of the earlier one")
        raise ExportError(f"{out}: moving the new export's files in failed ({err.strerror or err}: {err.filename}); "
                          f"{state}: export again with --force") from None


def abandon_staging(staged: Path, out: Path, created: bool) -> None:
    """After a failed export: delete ``staged``, and ``out`` too when this export created it (and it is empty)."""
    if staged.exists():
        shutil.rmtree(staged)
    if created:
        try:
            out.rmdir()
        except OSError:
            pass


def export_folders(model_dir: str | os.PathLike, out_dir: str | os.PathLike, max_positions: int) -> tuple[Path, Path]:
    """What every export checks first: ``max_positions`` a positive integer, and ``(the model folder —
    ``model_dir`` or its training output's ``best/`` —, the output folder)``, which must not be the model's
    folder or another attnkit model folder."""
    from attnkit.decode.translator import resolve_model_dir
    from attnkit.layers.checks import check_count

    check_count("max_positions", max_positions, least=1, error=ExportError)
    folder = resolve_model_dir(model_dir)
    out = Path(out_dir)
    if out.resolve() == folder.resolve() or _is_attnkit_model_folder(out):
        raise ExportError(f"{out} holds an attnkit model, which the export would overwrite; choose another --out")
    return folder, out


def export_marian(model_dir: str | os.PathLike, out_dir: str | os.PathLike, *,
                  max_positions: int = DEFAULT_MAX_POSITIONS, force: bool = False) -> MarianExport:
    """Write the attnkit model in ``model_dir`` (a model folder or a training output, whose ``best/`` is
    used) as a MarianMT folder ``out_dir``. Tokeniser files are written when the model folder has its
    tokenisers (as training saves them). ``out_dir`` must be new or empty; ``force`` replaces an earlier
    export there (only that: a folder holding other files is refused). Raises :class:`ExportError` for a
    configuration MarianMT cannot express or such an ``out_dir``, and :class:`FileNotFoundError` for a
    folder without a model."""
    from attnkit.models import load_model

    folder, out = export_folders(model_dir, out_dir, max_positions)
    earlier = check_marian_out(out, force)
    model, _ = load_model(folder)
    check_exportable(model.config)
    return _export_marian_model(model, folder, out, earlier, max_positions)


def _export_marian_model(model, folder: Path, out: Path, earlier: list[Path], max_positions: int) -> MarianExport:
    """:func:`export_marian` once its checks are made and ``model`` is loaded from ``folder``: write it as a
    MarianMT folder ``out`` (checked by :func:`check_marian_out`, which gave the ``earlier`` export's files
    to replace), with ``folder``'s tokenisers when it has them."""
    from attnkit.decode.translator import load_folder_tokenizers

    # Written into a staging folder inside ``out`` and moved up only when complete: a failure (a tokenizer
    # that cannot be exported, a full disk) leaves the earlier export as it was, and no partial one.
    tmp, created = start_staging(out)
    try:
        tmp.mkdir()  # inside the try: an --out it cannot write in, created here, is removed again
        save_file(marian_state_dict(model), str(tmp / "model.safetensors"), metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(marian_config(model, max_positions=max_positions), indent=2) + "\n")
        (tmp / "generation_config.json").write_text(json.dumps(_generation_config(model, max_positions), indent=2)
                                                    + "\n")
        files, notes = ["config.json", "generation_config.json", "model.safetensors"], []
        if (folder / "tokenizers.json").is_file():
            src_tok, tgt_tok = load_folder_tokenizers(folder)
            check_tokenizer_sizes(model, src_tok.vocab_size, tgt_tok.vocab_size, folder)
            tok_files, notes = _write_tokenizers(tmp, src_tok, tgt_tok, max_positions)
            files += tok_files
        else:
            notes.append(f"{folder} has no tokenizers (tokenizers.json): only the model was written; feed token ids")
    except BaseException:
        abandon_staging(tmp, out, created)
        raise
    move_up(tmp, out, earlier)  # no file of an earlier export is left over
    return MarianExport(out, tuple(files), tuple(notes))
