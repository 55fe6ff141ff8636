"""``attnkit explain TOPIC [--lang zh|en]``."""

from __future__ import annotations

from .lesson import LANGS, render
from .topics import TOPICS


def add_arguments(parser) -> None:
    parser.add_argument("topic", choices=sorted(TOPICS), help="which worked example to print")
    parser.add_argument("--lang", choices=LANGS, default="zh", help="language of the text (default: zh)")
    parser.add_argument("--digits", type=int, default=4, help="decimals printed for each number (default: 4)")


def run(args) -> int:
    from attnkit.cli import UserError

    if args.digits < 0:
        raise UserError(f"--digits must be >= 0, got {args.digits}")
    print(render(TOPICS[args.topic](args.lang), args.lang, args.digits), end="")
    return 0
