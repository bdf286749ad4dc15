"""The packaged CJK font, cut down for browsers to the characters most pages use.

A browser on a machine without a CJK font of its own falls back to the font the console
serves (Noto Sans SC from the package, 8 MB, every character). It decodes the web font it
uses on every page, so the console also serves a slice of it (about 2 MB): ASCII, CJK
punctuation and full-width forms, the 6,763 characters of GB 2312 and the 5,401 frequent
traditional ones of Big5 (the definitions' descriptions quote the seed's traditional
words). The style sheet names the slice first and the whole font after it, so a page whose
text the slice covers never loads the whole font; a rarer character loads it.

The slice is made once, when a browser first asks for it (fontTools, which matplotlib
brings; 20 to 40 s), in a background thread, into a cache folder keyed by the font and the
characters, and kept there for the next start. Until it is made, or without fontTools, the
slice's URL serves the whole font.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from pathlib import Path

from loguru import logger

from ...views.fonts import cjk_font_file

__all__ = ["FontSlice"]

_MAKING: dict[Path, threading.Thread] = {}  # one maker per slice in a process
_LOCK = threading.Lock()


def _common() -> set[int]:
    """GB 2312's 6,763 characters and Big5's 5,401 frequent ones (traditional)."""
    out: set[int] = set()
    for hi in range(0xB0, 0xF8):
        for lo in range(0xA1, 0xFF):
            try:
                out.add(ord(bytes([hi, lo]).decode("gb2312")))
            except UnicodeDecodeError:
                pass
    for hi in range(0xA4, 0xC7):
        for lo in [*range(0x40, 0x7F), *range(0xA1, 0xFF)]:
            try:
                out.add(ord(bytes([hi, lo]).decode("big5")))
            except UnicodeDecodeError:
                pass
    return out


class FontSlice:
    """The slice of the packaged font: made when a browser first asks for it (or on
    :meth:`start`), by one thread per process, kept on disk for every later start."""

    def __init__(self, cache: Path | None = None) -> None:
        self.font = cjk_font_file()
        self.codepoints = (set(range(0x20, 0x7F)) | set(range(0x3000, 0x3040))
                           | set(range(0xFF00, 0xFFF0)) | _common())
        self.path: Path | None = None
        if self.font is None:
            return
        uid = os.getuid() if hasattr(os, "getuid") else 0
        folder = cache or Path(tempfile.gettempdir()) / f"casework-fonts-{uid}"
        key = hashlib.sha256(f"{self.font.stat().st_size}:{self.font.stat().st_mtime_ns}:"
                             f"{sorted(self.codepoints)}".encode()).hexdigest()[:16]
        self._target = folder / f"cjk-slice-{key}.otf"
        if self._target.is_file():
            self.path = self._target

    def start(self) -> None:
        """Make the slice in the background unless it is made or being made."""
        if self.path is not None or self.font is None:
            return
        with _LOCK:
            if self._target not in _MAKING:
                maker = threading.Thread(target=self._make, name="console-font-slice",
                                         daemon=True)
                _MAKING[self._target] = maker
                maker.start()

    def current(self) -> Path | None:
        """The file to serve as the slice: the slice once made, else the whole font."""
        if self.path is None and self.font is not None and self._target.is_file():
            self.path = self._target  # made by another instance, or another process
        if self.path is None:
            self.start()
        return self.path or self.font

    def wait(self, timeout: float) -> bool:
        """Wait until the slice is made (True), for at most ``timeout`` seconds."""
        self.start()
        if self.current() == self.path and self.path is not None:
            return True
        maker = _MAKING.get(self._target) if self.font is not None else None
        if maker is not None:
            maker.join(timeout)
        return self.current() == self.path and self.path is not None

    def _make(self) -> None:
        try:
            from fontTools import subset
            from fontTools.ttLib import TTFont
        except ImportError:
            return
        assert self.font is not None
        try:
            options = subset.Options()
            options.layout_features = ["*"]
            options.name_IDs = ["*"]
            options.notdef_outline = True
            options.hinting = False
            font = TTFont(str(self.font))
            cmap = set(font.getBestCmap())
            sub = subset.Subsetter(options)
            sub.populate(unicodes=sorted(self.codepoints & cmap))
            sub.subset(font)
            self._target.parent.mkdir(parents=True, exist_ok=True)
            tmp = self._target.with_name(f"{self._target.name}.{os.getpid()}.tmp")
            font.save(str(tmp))
            tmp.replace(self._target)
            self.path = self._target
        except Exception as e:  # a font fontTools cannot cut: the whole font is served
            logger.bind(case_id="-", workflow="-").warning(
                "console: the CJK font slice was not made ({}): the whole font is served", e)
