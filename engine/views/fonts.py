"""The fonts pictures are drawn with: a CJK font shipped as a Python package.

Labels in Chinese (``label: 受理``) need a font with CJK glyphs, and a host cannot be
trusted to have one (a server image rarely does): matplotlib falls back to empty boxes,
Graphviz to whatever fontconfig finds. So the pictures use Noto Sans SC (SIL Open Font
License 1.1) from the ``pylopdf-fonts-zh-cn`` package, a dependency of the ``pictures`` and
``server`` extras: matplotlib is given the file itself, Graphviz's ``dot`` a fontconfig
file that adds the package's folder to the system's fonts. Without the package, pictures
are drawn as before with the default fonts.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from functools import cache
from pathlib import Path
from typing import Any

__all__ = ["CJK_FAMILY", "cjk_font_file", "dot_environment", "matplotlib_families"]

CJK_FAMILY = "Noto Sans SC"
_FILE = "NotoSansSC-Regular.otf"
_LOCK = threading.Lock()
_registered: list[str] = []


@cache
def cjk_font_file() -> Path | None:
    """The packaged CJK font file (OpenType), or None when its package is not installed."""
    try:
        from importlib import resources

        path = Path(str(resources.files("pylopdf_fonts_zh_cn") / _FILE))
    except (ImportError, ModuleNotFoundError, TypeError):
        return None
    return path if path.is_file() else None


def matplotlib_families(mpl: Any) -> list[str]:
    """The font families for matplotlib's ``font.family``: its default sans-serif for Latin
    text, then the packaged CJK font for what the first lacks (registered once)."""
    font = cjk_font_file()
    if font is None:
        return ["sans-serif"]
    with _LOCK:
        if not _registered:
            from matplotlib import font_manager

            font_manager.fontManager.addfont(str(font))
            name = font_manager.FontProperties(fname=str(font)).get_name()
            # The font has one weight: bold CJK text is drawn in it, which is what we want,
            # without the log line matplotlib writes each time it looks for a bold one.
            logging.getLogger("matplotlib.font_manager").addFilter(
                lambda r: not (r.getMessage().startswith("findfont: Failed to find font weight")
                               and name in r.getMessage()))
            _registered.append(name)
    return ["DejaVu Sans", _registered[0]]


@cache
def _fontconfig_file() -> Path | None:
    font = cjk_font_file()
    if font is None:
        return None
    home = Path(tempfile.gettempdir()) / f"casework-fonts-{os.getuid() if hasattr(os, 'getuid') else 0}"
    home.mkdir(parents=True, exist_ok=True)
    conf = home / "fonts.conf"
    text = ('<?xml version="1.0"?>\n<!DOCTYPE fontconfig SYSTEM "fonts.dtd">\n<fontconfig>\n'
            '  <include ignore_missing="yes">/etc/fonts/fonts.conf</include>\n'
            f"  <dir>{font.parent}</dir>\n  <cachedir>{home / 'cache'}</cachedir>\n</fontconfig>\n")
    if not conf.exists() or conf.read_text(encoding="utf-8") != text:
        tmp = home / f"fonts.conf.{os.getpid()}"
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(conf)
    return conf


def dot_environment() -> tuple[dict[str, str], str | None]:
    """The environment to run Graphviz's ``dot`` in, and the font name to give it (None: the
    package is not installed; keep the default)."""
    conf = _fontconfig_file()
    if conf is None:
        return dict(os.environ), None
    return {**os.environ, "FONTCONFIG_FILE": str(conf)}, CJK_FAMILY
