"""``attnkit export --model DIR --format marian|ctranslate2 --out DIR``: a trained Transformer as a Hugging
Face MarianMT folder (config, safetensors, MarianTokenizer files), or as a CTranslate2 model converted
from that folder by CTranslate2's own machinery — or, for a model MarianMT cannot express (pre-norm,
learned positions), described to CTranslate2 directly (see :mod:`attnkit.interop.marian` and
:mod:`attnkit.interop.ct2` for what exports and what is refused)."""

from __future__ import annotations

import sys

FORMATS = ("marian", "ctranslate2")


def add_arguments(parser) -> None:
    from .ct2 import QUANTIZATIONS
    from .marian import DEFAULT_MAX_POSITIONS

    parser.add_argument("--model", required=True, metavar="DIR",
                        help="an attnkit model folder, or a training --out (its best/)")
    parser.add_argument("--format", choices=FORMATS, default="marian", help="what to write (default: marian)")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="the folder to write: a new or empty one (see --force)")
    parser.add_argument("--max-positions", type=int, default=DEFAULT_MAX_POSITIONS, metavar="N",
                        help=f"longest source or output the exported model accepts (default: {DEFAULT_MAX_POSITIONS})")
    parser.add_argument("--quantization", choices=QUANTIZATIONS, default=None,
                        help="ctranslate2 only: weight type of the converted model (default: float32)")
    parser.add_argument("--force", action="store_true",
                        help="replace an earlier export of the same format in --out (any other non-empty folder "
                             "is refused)")


def run(args) -> int:
    from attnkit.cli import UserError
    from attnkit.models import ConfigError
    from attnkit.text import TokenizerError

    from .marian import ExportError, export_marian

    if args.format == "marian" and args.quantization:
        raise UserError("--quantization applies to --format ctranslate2 only")
    if args.max_positions <= 0:
        raise UserError(f"--max-positions must be a positive integer, got {args.max_positions}")
    try:
        if args.format == "marian":
            result = export_marian(args.model, args.out, max_positions=args.max_positions, force=args.force)
            out, notes = result.out_dir, result.notes
        else:
            from .ct2 import export_model_ctranslate2

            result = export_model_ctranslate2(args.model, args.out, args.quantization,
                                              max_positions=args.max_positions, force=args.force)
            out, notes = result.out_dir, result.notes
    except (ExportError, ConfigError, TokenizerError, FileNotFoundError) as err:
        raise UserError(str(err)) from None
    except OSError as err:  # e.g. a folder that cannot be written, a file that cannot be read
        from .marian import STAGING_PREFIX

        if STAGING_PREFIX in str(err.filename or ""):  # the hidden folder written first, a name the user never gave
            raise UserError(f"--out {args.out}: cannot write in it ({err.strerror or err})") from None
        raise UserError(f"{err.filename or args.out}: {err.strerror or err}") from None
    for note in notes:
        print(f"attnkit export: note: {note}", file=sys.stderr)
    print(f"wrote {args.format} model to {out}")
    return 0
