#!/usr/bin/env bash
# Set up attnkit in ./.venv:  ./setup.sh [EXTRAS]   (e.g. ./setup.sh dev  or  ./setup.sh viz,bench)
#
# - a virtual environment with the package installed in editable mode and the given extras;
# - torch pinned by constraints.txt to the CPU build that installs in seconds on the project's machines;
# - a font with Chinese glyphs for the plots (Debian/Ubuntu, as root), if none is installed;
# - a C++ compiler (same conditions), and attnkit's CPU decoding kernels compiled with it (python -m attnkit.native);
# - with the dev extra, Chromium for the browser test of the HTML report (same conditions).
set -euo pipefail
cd "$(dirname "$0")"
extras="${1:-viz}"
if ! command -v python3 >/dev/null 2>&1; then
    echo "setup: python3 (3.10 or newer) is needed and is not on PATH" >&2
    exit 1
fi
# A working .venv is reused, whichever Python made it. Otherwise one is created; venv cannot re-create in
# place a .venv made by another Python (it stops in ensurepip), so say what to do instead of only its error.
if ! .venv/bin/python -c 'import pip' >/dev/null 2>&1; then
    made_by=$(sed -n 's/^home = //p' .venv/pyvenv.cfg 2>/dev/null | head -n 1 || true)
    if ! python3 -m venv .venv; then
        echo "setup: could not create .venv with $(command -v python3) ($(python3 -V 2>&1))" \
             "${made_by:+over the one made by the Python in ${made_by}}; remove .venv (rm -rf .venv)" \
             "and run setup.sh again" >&2
        exit 1
    fi
fi
.venv/bin/pip install -q --disable-pip-version-check -c constraints.txt -e ".[${extras}]"

system_packages=()
if ! fc-list :lang=zh 2>/dev/null | grep -q .; then
    system_packages+=(fonts-wqy-microhei fontconfig)
fi
if ! command -v c++ >/dev/null 2>&1 && ! command -v g++ >/dev/null 2>&1; then
    system_packages+=(g++)
fi
if [[ ",${extras}," == *",dev,"* ]] && ! command -v chromium >/dev/null 2>&1; then
    system_packages+=(chromium)
fi
if (( ${#system_packages[@]} )); then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
        echo "setup: installing ${system_packages[*]} (apt-get)" >&2
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${system_packages[@]}" >/dev/null
    else
        echo "setup: please install ${system_packages[*]} with your system's package manager" >&2
    fi
fi
# The compiled decoding kernels (~20 s, once per machine): without them attnkit decodes the same, slower.
.venv/bin/python -m attnkit.native || echo "setup: continuing without the compiled kernels" >&2
