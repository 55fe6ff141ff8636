"""Choosing a font that has Chinese glyphs, so labels never render as empty boxes."""

from __future__ import annotations

import subprocess
from functools import lru_cache

__all__ = ["cjk_font", "NoCJKFontError", "INSTALL_HINT"]

# Families known to cover CJK, best first.
PREFERRED = ("Noto Sans CJK SC", "Noto Sans SC", "Source Han Sans SC", "WenQuanYi Micro Hei", "WenQuanYi Zen Hei",
             "Droid Sans Fallback", "AR PL UMing CN", "AR PL UKai CN", "Noto Sans CJK JP")
INSTALL_HINT = "install one, e.g. `apt-get install fonts-wqy-microhei` (./setup.sh does this when run as root)"


class NoCJKFontError(RuntimeError):
    pass


@lru_cache(maxsize=1)
def cjk_font() -> tuple[str, str]:
    """``(family, file)`` of an installed font with Chinese glyphs, registered with matplotlib."""
    from matplotlib import font_manager

    by_name = {f.name: f.fname for f in font_manager.fontManager.ttflist}
    for family in PREFERRED:
        if family in by_name:
            return family, by_name[family]
    # Ask fontconfig for anything that covers Chinese and register it with matplotlib.
    try:
        out = subprocess.run(["fc-list", ":lang=zh", "file", "family"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        out = ""
    for line in sorted(out.splitlines()):
        path = line.split(":")[0].strip()
        if path:
            font_manager.fontManager.addfont(path)
            return font_manager.FontProperties(fname=path).get_name(), path
    raise NoCJKFontError(f"no font with Chinese glyphs is installed; {INSTALL_HINT}")
