"""``attnkit report --model DIR --input FILE [--output report.html] [--beam N] [--max-sentences N]``.

Translates FILE (one sentence per line, blank lines skipped) and writes one self-contained HTML page
with each sentence's cross-attention, per layer and head (see :mod:`attnkit.viz.report`).
"""

from __future__ import annotations

from pathlib import Path

from attnkit.cli import UserError, check_output_file, check_utf8_arguments, note_replaced, note_truncated, write_output

# Models whose decoder has no attention: nothing to show.
NO_ATTENTION = ("seq2seq-fixed", "seq2seq-context")


def add_arguments(parser) -> None:
    parser.add_argument("--model", required=True, help="a model folder, or a training --out folder (uses its best/)")
    parser.add_argument("--input", required=True, type=Path,
                        help="UTF-8 text file, one sentence per line (blank lines skipped)")
    parser.add_argument("--output", type=Path, default=Path("report.html"), help="HTML file to write (default report.html)")
    parser.add_argument("--beam", type=int, default=4, help="beam size (default 4; 1 is greedy)")
    parser.add_argument("--max-sentences", type=int, default=100, metavar="N",
                        help="report at most the first N sentences (default 100)")
    parser.add_argument("--title", default=None, help="page title (default: 'attnkit attention report: FILE')")


def read_sentences(path: Path) -> list[str]:
    """The non-blank lines of ``path``, stripped; invalid UTF-8 is an error that names the line."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"--input {path}: no such file") from None
    except IsADirectoryError:
        raise UserError(f"--input {path}: is a folder, expected a text file with one sentence per line") from None
    except OSError as err:
        raise UserError(f"--input {path}: cannot read it ({err.strerror or err})") from None
    sentences = []
    for number, line in enumerate(raw.splitlines(), start=1):  # \n, \r\n or \r, as an editor counts lines
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as err:
            raise UserError(f"{path}:{number}: not valid UTF-8 (byte 0x{line[err.start]:02x} at column "
                            f"{err.start + 1}); save the file as UTF-8") from None
        if number == 1:
            text = text.removeprefix("\ufeff")  # a byte-order mark some editors write
        if text.strip():
            sentences.append(text.strip())
    if not sentences:
        raise UserError(f"--input {path}: no sentences in it (every line is blank)")
    return sentences


def _shown(path) -> str:
    """A path as the page shows it: bytes of its name that are not UTF-8 (kept by Python as lone surrogates,
    which a UTF-8 page cannot hold) become U+FFFD."""
    return str(path).encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def run(args) -> int:
    from attnkit.decode.cli import check_decoding_memory
    from attnkit.decode.translator import Translator, resolve_model_dir

    from .report import write_report

    if args.beam < 1:
        raise UserError(f"--beam must be at least 1, got {args.beam}")
    if args.max_sentences < 1:
        raise UserError(f"--max-sentences must be at least 1, got {args.max_sentences}")
    if args.title is not None:
        check_utf8_arguments([args.title], "--title")
    check_output_file(args.output, "--output", input_file=("--input", args.input))
    sentences = read_sentences(args.input)
    try:
        folder = resolve_model_dir(args.model)
        translator = Translator.load(folder)
    except (FileNotFoundError, ValueError) as err:
        raise UserError(str(err)) from None
    kind = translator.model.config.kind
    if kind in NO_ATTENTION:
        raise UserError(f"{folder} is a {kind} model: its decoder has no attention to show "
                        "(use a seq2seq-attention or transformer model)")
    if len(sentences) > args.max_sentences:
        print(f"reporting the first {args.max_sentences} of {len(sentences)} sentences (--max-sentences)")
        sentences = sentences[: args.max_sentences]
    check_decoding_memory(translator, sentences, args.beam, need_attention=True)
    results = translator.translate(sentences, beam=args.beam, need_attention=True)
    note_truncated("report", results, translator.max_source_tokens(), lambda i: f"sentence {i + 1} of {args.input}")
    layers, heads = results[0].attention.shape[:2]
    info = {"model": _shown(folder), "kind": kind, "decoder layers": layers, "heads": heads,
            "decoding": "greedy" if args.beam == 1 else f"beam {args.beam}"}
    title = args.title or f"attnkit attention report: {_shown(args.input.name)}"
    existed = args.output.is_file()
    try:
        # a temporary file renamed over --output: a failed write leaves an earlier report as it was
        write_output(args.output, lambda tmp: write_report(results, tmp, title=title, model_info=info))
    except OSError as err:
        raise UserError(f"--output {args.output}: cannot write it ({err.strerror or err})") from None
    if existed:
        note_replaced(args.output, "report")
    print(f"wrote {args.output} ({len(results)} sentence{'s' if len(results) != 1 else ''})")
    return 0
