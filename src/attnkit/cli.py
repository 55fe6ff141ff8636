"""The ``attnkit`` command: thin, it parses arguments and calls the package.

Each sub-command lives in its own module exposing ``add_arguments(parser)`` and ``run(args) -> int``;
modules are imported only when their command runs, so ``attnkit --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "explain": ("attnkit.explain.cli", "print a worked example of attention, step by step"),
    "demo": ("attnkit.demo.cli", "train a small translator on the embedded dictionary and translate with it"),
    "train": ("attnkit.train.cli", "train a translation model from a YAML recipe"),
    "translate": ("attnkit.decode.cli", "translate text with a trained model"),
    "evaluate": ("attnkit.evaluate.cli", "BLEU and chrF of translations (sacreBLEU)"),
    "plot": ("attnkit.viz.cli", "translate a sentence and draw its attention heatmap: cross-attention, or the "
                                "encoder's or decoder's self-attention (--attention)"),
    "report": ("attnkit.viz.report_cli", "translate a file and write a self-contained HTML page of its attention"),
    "info": ("attnkit.models.cli", "show a model's configuration and parameter counts"),
    "attention": ("attnkit.interop.cli", "print a pretrained encoder's attention weights on a sentence, as JSON"),
    "export": ("attnkit.interop.export_cli", "export a Transformer to Hugging Face MarianMT or CTranslate2"),
}


class UserError(Exception):
    """An error in what the user asked for: printed as one clear line, exit status 2."""


def check_output_file(path, flag: str, suffixes: tuple[str, ...] = (), *, input_file: tuple[str, object] | None = None):
    """Check, before any long work, that ``path`` can be written as the output file of ``flag``: a
    file name (not a folder) in a folder that exists, with one of ``suffixes`` when given, and not the
    file the command reads, ``input_file`` (its flag and path) when given, by any name: writing the
    output would replace the input."""
    from pathlib import Path

    path = Path(path)
    if path.is_dir():
        raise UserError(f"{flag} {path}: is a folder; name the file to write")
    if suffixes and path.suffix.lower() not in suffixes:
        raise UserError(f"{flag} {path}: use a {' or '.join(suffixes)} file name")
    parent = path.parent
    if not parent.is_dir():
        raise UserError(f"{flag} {path}: folder {parent} "
                        + ("is not a folder" if parent.exists() else "does not exist"))
    if input_file is not None:
        input_flag, read = input_file[0], Path(input_file[1])
        if path.is_file() and read.is_file() and path.samefile(read):
            raise UserError(f"{flag} {path} is the {input_flag} file: writing it would replace that input; "
                            "name another file")
    return path


# Characters that JSON leaves raw but that Python's str.splitlines (and so many JSON-lines readers) split at
_LINE_BREAKS = str.maketrans({"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})


def json_line(obj) -> str:
    """``obj`` as one line of JSON, non-ASCII text kept readable: the line breaks JSON allows raw inside a
    string (U+0085, U+2028, U+2029) are escaped too, so that every reader sees one line per record."""
    import json

    return json.dumps(obj, ensure_ascii=False).translate(_LINE_BREAKS)


def check_utf8_arguments(texts, what: str) -> None:
    """Refuse a text argument that is not valid UTF-8 (Python keeps its bytes as lone surrogates, which would
    otherwise reach tokenizers and outputs as they are), naming it; ``what`` says which (``"argument"``)."""
    for n, text in enumerate(texts, start=1):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as err:
            code = ord(text[err.start])
            byte = f"byte 0x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"U+{code:04X}"
            before = text[max(err.start - 8, 0): err.start].encode("utf-8", "surrogateescape").decode("utf-8", "replace")
            raise UserError(f"{what}{f' {n}' if len(texts) > 1 else ''}: not valid UTF-8 ({byte} after "
                            f"{before!r})") from None


def split_lines(text: str) -> list[str]:
    """The lines of ``text`` as ``wc -l`` and editors count them: split at ``\\n`` only (a ``\\r`` before
    it is dropped), no empty line after a final newline, a byte-order mark at the start removed.
    ``str.splitlines`` would also split at U+2028, U+0085, form feeds and other characters that can
    occur inside a sentence."""
    text = text.removeprefix("\ufeff")
    if not text:
        return []
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def write_output(path, write) -> None:
    """Write the output file ``path`` by calling ``write(tmp)`` on a temporary file beside it (same suffix),
    renamed over ``path`` once complete: a write cut short (a full disk) leaves the file that was there as it
    was, and no truncated one. A symbolic link is followed (the file it names is replaced, the link kept); a
    path that is not a regular file (``/dev/null``, ``/dev/stdout``, a FIFO) is written in place, as ``open``
    would. The new file keeps the mode of the file it replaces, or gets an ordinary new file's."""
    import os
    from pathlib import Path

    if Path(path).exists() and (not Path(path).is_file() or _is_open_stream(path)):
        write(Path(path))  # (through any links) a device, a FIFO, a pipe, or the file stdout/stderr go to
        return
    real = Path(os.path.realpath(path))
    if real.is_file() and os.access(real, os.W_OK) and not os.access(real.parent, os.W_OK):
        write(real)  # a file the user may write in a folder they may not: no temporary file can go beside it
        return
    from attnkit.models.io import _atomic_write

    _atomic_write(real, lambda tmp: write(Path(tmp)), mode=real.stat().st_mode & 0o7777 if real.exists() else None)


def _is_open_stream(path) -> bool:
    """Whether ``path`` is the file this process's stdout or stderr writes to (``--output /dev/stdout`` with
    stdout redirected to a file): replacing it would send the rest of that stream to a file no longer there."""
    import os

    try:
        target = os.stat(path)
    except OSError:
        return False
    for fd in (1, 2):
        try:
            stream = os.fstat(fd)
        except OSError:
            continue
        if (stream.st_dev, stream.st_ino) == (target.st_dev, target.st_ino):
            return True
    return False


def _unwritable_on(err: UnicodeEncodeError, streams) -> str | None:
    """The encoding of the first of ``streams`` that cannot write the text ``err`` could not encode, or None."""
    if not isinstance(err.object, str):
        return None
    text = err.object[err.start:err.end]
    for stream in streams:
        encoding = getattr(stream, "encoding", None)
        if encoding:
            try:
                text.encode(encoding, getattr(stream, "errors", None) or "strict")
            except UnicodeError:
                return encoding
    return None


def note_replaced(path, command: str) -> None:
    """Say on stderr that writing ``path`` replaced a file that was there (call it after the write,
    when ``path`` was a file before it)."""
    print(f"attnkit {command}: note: replaced the existing file {path}", file=sys.stderr)


def note_truncated(command: str, results, limit: int, where, shown: int = 20) -> None:
    """Say on stderr which sources were cut to the model's longest source (``limit`` tokens) before
    translating: ``results`` are the translations (``.truncated``), ``where(i)`` names the i-th source
    ("stdin line 3"); past ``shown`` notes, the rest are counted."""
    cut = [i for i, r in enumerate(results) if r.truncated]
    for i in cut[:shown]:
        print(f"attnkit {command}: note: {where(i)} was truncated to its first {limit} tokens "
              "(the model's longest source)", file=sys.stderr)
    if len(cut) > shown:
        print(f"attnkit {command}: note: {len(cut) - shown} more sources were truncated", file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="attnkit", description="Attention mechanisms made real.")
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        importlib.import_module(module).add_arguments(p)
        for action in p._actions:
            if PATH_OPTIONS.intersection(action.option_strings) and (name, action.option_strings[0]) not in _NOT_PATHS:
                action.type = _named_path(action.type)
    return parser


#: The options that name a file or a folder. An empty value (``--out "$OUT"`` with OUT unset) would be taken
#: as the current folder: it is refused, naming the option, before anything runs.
PATH_OPTIONS = frozenset({"--out", "--output", "--model", "--model-dir", "--config", "--input", "--test", "--hyp",
                          "--ref", "--cache", "--heatmap", "--train", "--dev"})
_NOT_PATHS = {("train", "--model")}  # the model's kind


def _named_path(convert):
    """An argparse ``type`` for a path option: refuses the empty string, else converts as ``convert`` (None:
    the string as it is) does."""
    def path(text: str):
        if text == "":
            raise argparse.ArgumentTypeError("an empty path (an unset shell variable?): name a file or folder")
        return text if convert is None else convert(text)

    path.__name__ = getattr(convert, "__name__", "path")
    return path


def _version() -> str:
    from attnkit import __version__

    return f"attnkit {__version__}"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    module = importlib.import_module(COMMANDS[args.command][0])
    from attnkit.runtime import keep_freed_memory

    keep_freed_memory()  # training and decoding reuse the same large buffers step after step
    if getattr(sys.stdout, "errors", None) == "strict" and hasattr(sys.stdout, "reconfigure"):
        # a file name that is not valid UTF-8 is printed as its bytes, as ls does, not as an encoding error
        sys.stdout.reconfigure(errors="surrogateescape")
    try:
        return int(module.run(args) or 0)
    except UserError as err:
        print(f"attnkit {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"attnkit {args.command}: interrupted", file=sys.stderr)
        return 130
    except UnicodeEncodeError as err:
        # The terminal or the file the output is redirected to takes an encoding without Chinese (a Windows
        # code page, PYTHONIOENCODING=latin-1): say how to get it, instead of a traceback partway through.
        # (decided by the text, not the codec's name: Windows code pages report theirs as 'charmap')
        encoding = _unwritable_on(err, (sys.stdout, sys.stderr))
        if encoding is None:
            raise
        print(f"attnkit {args.command}: error: the output's encoding ({encoding}) cannot write "
              f"{ascii(err.object[err.start:err.end])}: set PYTHONIOENCODING=utf-8 (or PYTHONUTF8=1) and run it again",
              file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader went away (e.g. `attnkit translate ... | head`): stop quietly, as Unix tools do.
        import os

        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    # `python -m attnkit.cli` runs this file as __main__, a second copy of the module beside the attnkit.cli
    # the commands import: their UserError is not this copy's, and would escape its `except UserError` as a
    # traceback. Run the one the commands know, as `attnkit` and `python -m attnkit` do.
    from attnkit.cli import main as installed_main

    sys.exit(installed_main())
