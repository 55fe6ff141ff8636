"""``python -m attnkit.native``: build the compiled CPU kernels now (``setup.sh`` runs it) and
say where they are; exit status 1, with the reason, when they cannot be built here."""

import sys

from . import NativeBuildError, build


def main() -> int:
    try:
        folder = build()
    except NativeBuildError as exc:
        print(f"attnkit: the compiled CPU kernels cannot be built here: {exc}\n"
              "attnkit works without them (decoding is slower).", file=sys.stderr)
        return 1
    print(f"attnkit: compiled CPU kernels ready in {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
