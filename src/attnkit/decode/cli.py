"""``attnkit translate --model DIR [--beam N] [TEXT ...]`` (no text: stdin → stdout, line by line)."""

from __future__ import annotations

import math
import sys

from attnkit.cli import UserError, check_utf8_arguments, json_line, note_truncated, split_lines


def add_arguments(parser) -> None:
    parser.add_argument("text", nargs="*", help="sentences to translate (default: read stdin, one per line)")
    parser.add_argument("--model", required=True, help="a model folder, or a training --out folder (uses its best/)")
    parser.add_argument("--beam", type=int, default=4, help="beam size; 1 = greedy (default 4)")
    parser.add_argument("--length-penalty", type=float, default=0.6, help="GNMT length penalty alpha (default 0.6)")
    parser.add_argument("--batch-size", type=int, default=64, help="sentences decoded together (default 64)")
    parser.add_argument("--json", action="store_true", help="one JSON object per line with pieces, score and alignment")


def one_line(text: str) -> str:
    """``text`` with its line breaks (``\\n``, ``\\r``) written as spaces: a translation is one line of a
    line-aligned output, and a model can decode a line break (SentencePiece's byte pieces ``<0x0A>``,
    ``<0x0D>``), which would otherwise shift every later line."""
    return text.replace("\r\n", " ").replace("\n", " ").replace("\r", " ")


def _lines(args):
    if args.text:
        check_utf8_arguments(args.text, "argument")
        return list(args.text)
    data = sys.stdin.buffer.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise UserError(f"stdin line {line}: not valid UTF-8 ({err.reason})") from None
    lines = split_lines(text)
    from attnkit.data.readers import CR_INSIDE

    for number, line in enumerate(lines, start=1):
        if "\r" in line:  # CR-only line ends: the whole input was one "sentence", translated as one line
            raise UserError(f"stdin line {number}: {CR_INSIDE}")
    return lines


def check_decoding_memory(translator, sentences, beam: int, batch_size: int | None = None,
                          need_attention: bool = False) -> None:
    """Refuse, naming ``--beam`` (or ``--batch-size``), a decoding whose tensors alone would not fit in the
    memory available: the kernel would kill the process partway, without a word. ``batch_size`` None: the
    command has no ``--batch-size`` and translates in batches of 64."""
    from attnkit.runtime import available_memory

    from .memory import format_bytes

    have = available_memory()
    if have is None:  # not Linux: nothing to compare with
        return
    need = translator.decoding_bytes(sentences, beam=beam, batch_size=batch_size or 64, need_attention=need_attention)
    if need <= have:
        return
    together = min(batch_size or 64, len(sentences))
    flags = (["--beam"] if beam > 1 else []) + (["--batch-size"] if batch_size is not None and together > 1 else [])
    named = f"--beam {beam}" if beam > 1 else f"--batch-size {batch_size}" if flags else "decoding"
    how = f"beam search over {together} sentence{'s' * (together != 1)} at a time" if beam > 1 else (
        f"greedy decoding of {together} sentence{'s' * (together != 1)} at a time")
    advice = f": use a smaller {' or '.join(flags)}" if flags else ""
    raise UserError(f"{named}: {how} needs at least {format_bytes(need)} of memory, more than the "
                    f"{format_bytes(have)} available{advice}")


def run(args) -> int:
    from .translator import Translator

    if args.beam < 1:
        raise UserError(f"--beam must be >= 1, got {args.beam}")
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {args.batch_size}")
    if not math.isfinite(args.length_penalty):
        raise UserError(f"--length-penalty must be a finite number, got {args.length_penalty}")
    try:
        translator = Translator.load(args.model)
    except (FileNotFoundError, ValueError) as err:
        raise UserError(str(err)) from None
    lines = _lines(args)
    keep = [n for n, s in enumerate(lines) if s.strip()]
    check_decoding_memory(translator, [lines[n] for n in keep], args.beam, args.batch_size, args.json)
    done = translator.translate([lines[n] for n in keep], beam=args.beam, length_penalty=args.length_penalty,
                                batch_size=args.batch_size, need_attention=args.json)
    by_line = dict(zip(keep, done))
    note_truncated("translate", done, translator.max_source_tokens(),
                   lambda i: f"argument {keep[i] + 1}" if args.text else f"stdin line {keep[i] + 1}")
    for n, source in enumerate(lines):
        t = by_line.get(n)
        if args.json:
            record = {"source": source, "translation": t.text if t else ""}
            if t:
                record.update(src_pieces=t.src_pieces, tgt_pieces=t.tgt_pieces, score=round(t.score, 4))
                if t.attention is not None:  # the source piece each output piece attends to most
                    record["alignment"] = [int(i) for i in t.attention.mean(dim=(0, 1)).argmax(-1).tolist()]
            print(json_line(record))
        else:
            print(one_line(t.text) if t else "")  # an empty line stays an empty line: outputs stay line-aligned
    return 0
