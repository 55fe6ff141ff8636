"""``attnkit explain TOPIC [--lang zh|en]``."""

from __future__ import annotations

from .lesson import LANGS, render
from .topics import TOPICS

# More decimals only spell out the binary fraction; Python refuses a precision of 2**31 or more outright
# ("precision too big"), and one of hundreds of millions would print gigabytes.
MAX_DIGITS = 30


def add_arguments(parser) -> None:
    parser.add_argument("topic", choices=sorted(TOPICS), help="which worked example to print")
    parser.add_argument("--lang", choices=LANGS, default="zh", help="language of the text (default: zh)")
    parser.add_argument("--digits", type=int, default=4, help="decimals printed for each number, 0 to 30 (default: 4)")


def run(args) -> int:
    from attnkit.cli import UserError

    if not 0 <= args.digits <= MAX_DIGITS:
        raise UserError(f"--digits must be between 0 and {MAX_DIGITS}, got {args.digits} "
                        "(a float64 holds about 17 significant digits)")
    print(render(TOPICS[args.topic](args.lang), args.lang, args.digits), end="")
    return 0
