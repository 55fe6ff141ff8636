"""``attnkit evaluate --hyp FILE --ref FILE`` or ``attnkit evaluate --model DIR --test FILE``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from attnkit.cli import UserError, check_output_file, note_replaced, note_truncated, split_lines, write_output

# Issues printed one per line before the summary; the rest are counted.
MAX_ISSUES_SHOWN = 20


def _language(code: str) -> str:
    """A language code as sacreBLEU takes them: two or three lowercase letters (en, zh, de, yue)."""
    import argparse
    import re

    if not re.fullmatch(r"[a-z]{2,3}", code):
        hint = f" (did you mean {code.lower()}?)" if re.fullmatch(r"[A-Za-z]{2,3}", code) else ""
        raise argparse.ArgumentTypeError(f"expected a language code of 2 or 3 lowercase letters such as en, zh "
                                         f"or de, got {code!r}{hint}")
    if code in CHINESE:
        return "zh"  # Han text is not split into words: the 13a tokenizer would score it as one token per sentence
    if code in UNSEGMENTED:
        raise argparse.ArgumentTypeError(f"{code}: text in this language is not split into words, and no tokenizer "
                                         "for it is installed here (sacreBLEU's ja/ko ones need MeCab; it has none "
                                         "for Thai, Lao, Burmese or Khmer): score it with chrF instead")
    return code


# Codes of Chinese languages and scripts (ISO 639-1/-2/-3), scored with sacreBLEU's zh tokenizer.
CHINESE = frozenset({"zh", "zho", "chi", "cmn", "yue", "wuu", "hak", "nan", "gan", "hsn", "cjy", "lzh"})
UNSEGMENTED = frozenset({"ja", "jpn", "ko", "kor", "th", "tha", "lo", "lao", "my", "mya", "bur", "km", "khm"})


def add_arguments(parser) -> None:
    parser.add_argument("--hyp", help="hypotheses, one per line")
    parser.add_argument("--ref", help="references, one per line (line-aligned with --hyp)")
    parser.add_argument("--model", help="a model folder (or training --out folder) to translate --test with")
    parser.add_argument("--test", help="test pairs in the manythings format (English<TAB>Chinese<TAB>attribution)")
    parser.add_argument("--direction", default="zh-en", choices=["zh-en", "en-zh"], help="with --test (default zh-en)")
    parser.add_argument("--beam", type=int, default=4, help="beam size with --model (default 4)")
    parser.add_argument("--target-lang", default=None, type=_language, metavar="LANG",
                        help="target language code for BLEU's tokenizer: Chinese (zh, yue, cmn, ...) uses 'zh', "
                             "any other (en, de, ...) '13a'; ja, ko, th, lo, my and km are refused (no tokenizer for them here) "
                             "(default: the --direction's target with --test, else en)")
    parser.add_argument("--by-length", action="store_true", help="also BLEU by source-length bucket (needs --test)")
    parser.add_argument("--output", help="with --model: write the translations to this file")
    parser.add_argument("--json", action="store_true", help="print JSON")


def _read_lines(path: str, what: str) -> list[str]:
    p = Path(path)
    if p.is_dir():
        raise UserError(f"{what} {p}: is a folder, expected a text file with one sentence per line")
    if not p.is_file():
        raise UserError(f"{what} {p}: no such file")
    try:
        data = p.read_bytes()
    except OSError as err:
        raise UserError(f"{what} {p}: cannot read it ({err.strerror or err})") from None
    from attnkit.data.readers import line_problem, not_text

    kind = not_text(data[:16])
    if kind is not None:
        raise UserError(f"{what} {p} {kind}")
    try:
        lines = split_lines(data.decode("utf-8"))
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise UserError(f"{p}:{line}: not valid UTF-8 ({err.reason})") from None
    for number, line in enumerate(lines, start=1):
        # as the corpus readers refuse them: a CR left in a line is a line break of another convention (a file
        # of CR-only line ends was one "sentence", scored against another such file without a word)
        problem = line_problem(line)
        if problem is not None:
            raise UserError(f"{p}:{number}: {problem}")
    return lines


def _report_skipped(report) -> None:
    """Say which lines of the test file were skipped, as ``file:line: reason``, and how many."""
    for issue in report.issues[:MAX_ISSUES_SHOWN]:
        print(f"attnkit evaluate: skipped {issue.file}:{issue.line}: {issue.reason}", file=sys.stderr)
    more = len(report.issues) - MAX_ISSUES_SHOWN
    print(f"attnkit evaluate: skipped {report.skipped} of {report.lines} lines of {report.source}"
          + (f" ({more} more not shown)" if more > 0 else "") + f"; scoring the other {len(report.pairs)}",
          file=sys.stderr)


def run(args) -> int:
    from .metrics import bleu_by_length, corpus_scores

    sources = None
    if args.model or args.test:
        if not (args.model and args.test) or args.hyp or args.ref:
            raise UserError("use either --hyp FILE --ref FILE, or --model DIR --test FILE")
        if args.beam < 1:
            raise UserError(f"--beam must be >= 1, got {args.beam}")
        if args.output:
            check_output_file(args.output, "--output", input_file=("--test", args.test))
        from attnkit.data import DataError, read_manythings
        from attnkit.decode.cli import check_decoding_memory
        from attnkit.decode.translator import Translator

        try:
            report = read_manythings(args.test, direction=args.direction, warn=False)
            translator = Translator.load(args.model)
        except (DataError, FileNotFoundError, ValueError) as err:
            raise UserError(str(err)) from None
        if report.skipped:
            _report_skipped(report)
        sources = [p.src for p in report.pairs]
        refs = [p.tgt for p in report.pairs]
        check_decoding_memory(translator, sources, args.beam)
        done = translator.translate(sources, beam=args.beam)
        note_truncated("evaluate", done, translator.max_source_tokens(),
                       lambda i: str(report.pairs[i].origin or f"test pair {i + 1}"))
        hyps = [t.text for t in done]
        if args.output:
            from attnkit.decode.cli import one_line

            lines = [one_line(h) for h in hyps]  # one line per test pair, whatever the model decoded
            existed = Path(args.output).is_file()
            try:  # a temporary file renamed over --output: a failed write leaves the file that was there
                write_output(args.output, lambda tmp: tmp.write_text("\n".join(lines) + "\n", encoding="utf-8"))
            except OSError as err:
                raise UserError(f"--output {args.output}: cannot write it ({err.strerror or err})") from None
            if existed:
                note_replaced(args.output, "evaluate")
        target_lang = args.target_lang or args.direction.split("-")[1]
    else:
        if not (args.hyp and args.ref):
            raise UserError("use either --hyp FILE --ref FILE, or --model DIR --test FILE")
        if args.output:
            raise UserError("--output writes the translations of --model and --test; with --hyp there is none to write")
        if args.by_length:
            raise UserError("--by-length needs --model and --test (it buckets by source length)")
        hyps, refs = _read_lines(args.hyp, "--hyp"), _read_lines(args.ref, "--ref")
        if len(hyps) != len(refs):
            raise UserError(f"{args.hyp} has {len(hyps)} lines but {args.ref} has {len(refs)}: they must be line-aligned")
        if not hyps:
            raise UserError(f"{args.hyp} and {args.ref} are empty: no sentences to score")
        target_lang = args.target_lang or "en"
    try:
        scores = corpus_scores(hyps, refs, target_lang=target_lang)
    except ValueError as err:
        raise UserError(str(err)) from None
    result = {name: {"score": round(s.score, 2), "signature": s.signature} for name, s in scores.items()}
    if args.by_length:
        if sources is None:
            raise UserError("--by-length needs --model and --test (it buckets by source length)")
        result["by_length"] = bleu_by_length(sources, hyps, refs, target_lang=target_lang)
    if args.json:
        print(json.dumps(result, ensure_ascii=False, indent=2))
    else:
        for s in scores.values():
            print(s)
        for row in result.get("by_length", []):
            print(f"  source length {row['bucket']:>6}: {row['sentences']:>5} sentences, BLEU {row['bleu']:.2f}")
    return 0
