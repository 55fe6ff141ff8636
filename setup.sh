#!/usr/bin/env bash
# Set up attnkit in ./.venv:  ./setup.sh [EXTRAS]   (e.g. ./setup.sh dev  or  ./setup.sh viz,serve)
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
# A .venv made by another Python cannot be re-created in place (venv stops in ensurepip): say so, keep it.
base() { "$1" -c 'import os, sys; print(os.path.realpath(sys.base_prefix), "(Python %d.%d.%d)" % sys.version_info[:3])' 2>/dev/null; }
if [[ -e .venv/pyvenv.cfg || -e .venv/bin/python ]]; then  # (an empty .venv, e.g. a mounted volume, is filled)
    venv_base=$(base .venv/bin/python || true)
    if [[ -z "${venv_base}" ]]; then
        echo "setup: .venv exists but its python does not run; remove it (rm -rf .venv) and run setup.sh again" >&2
        exit 1
    elif [[ "${venv_base}" != "$(base python3)" ]]; then
        echo "setup: .venv was made by the Python in ${venv_base}, not by $(command -v python3) in $(base python3);" \
             "remove it (rm -rf .venv) or put that Python first on PATH, then run setup.sh again" >&2
        exit 1
    fi
fi
python3 -m venv .venv
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
