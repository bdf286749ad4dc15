"""The case file (一案一檔): documents that commands bring, kept by their SHA-256.

A command or activity may carry documents (the written reply, the minutes of a
coordination meeting, a scanned letter). Each is kept once by its digest, with its name,
media type and size in the event that brought it, so the hash chain covers it; its
content is in the database, or in a folder of the office's choosing (one file per
digest, written before the command commits: a file whose command failed is an unused
copy, never a missing one). ``verify`` checks every document against its digest; a
ledger carries the documents of its cases. Size and media types are bounded by the
settings (``[documents]``).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from .errors import InvalidInput
from .persistence.tx import ReadTx, WriteTx

DEFAULT_TYPES = frozenset({"application/pdf", "image/png", "image/jpeg", "image/tiff",
                           "text/plain", "application/vnd.openxmlformats-officedocument."
                           "wordprocessingml.document"})


@dataclass(frozen=True)
class Document:
    """A document a command brings: its file name, media type and content."""

    name: str
    media_type: str
    content: bytes


@dataclass(frozen=True)
class DocumentLimits:
    """What a command may bring: at most ``max_count`` documents of ``max_bytes`` each, of
    the media ``types``; content kept in ``folder`` (None: in the database)."""

    max_bytes: int = 20_000_000
    max_count: int = 20
    types: frozenset[str] = DEFAULT_TYPES
    folder: Path | None = None


class DocumentStore:
    """Checks, keeps and reads the documents of commands."""

    def __init__(self, limits: DocumentLimits | None = None) -> None:
        self.limits = limits or DocumentLimits()

    def check(self, docs: Sequence[Document]) -> list[dict[str, Any]]:
        """The references the event records (refused with :class:`InvalidInput` naming the
        document when one is not acceptable)."""
        lim = self.limits
        if not isinstance(docs, (list, tuple)):
            raise InvalidInput("documents: a list of Document")
        if len(docs) > lim.max_count:
            raise InvalidInput(f"documents: at most {lim.max_count} per command")
        refs = []
        for i, d in enumerate(docs):
            where = f"documents[{i}]"
            if not isinstance(d, Document) or not isinstance(d.content, (bytes, bytearray)):
                raise InvalidInput(f"{where}: a Document with bytes content")
            name = d.name
            if (not isinstance(name, str) or not name.strip() or len(name) > 255 or "\x00" in name
                    or "/" in name or "\\" in name):
                raise InvalidInput(f"{where}: a file name of 1 to 255 characters, without a path")
            if d.media_type not in lim.types:
                raise InvalidInput(f"{where} ({name}): media type {d.media_type!r} is not "
                                   f"accepted (accepted: {', '.join(sorted(lim.types))})")
            if len(d.content) > lim.max_bytes:
                raise InvalidInput(f"{where} ({name}): {len(d.content):,} bytes; at most "
                                   f"{lim.max_bytes:,}")
            refs.append({"name": name, "media_type": d.media_type, "size": len(d.content),
                         "sha256": hashlib.sha256(d.content).hexdigest()})
        return refs

    def put(self, tx: WriteTx, docs: Sequence[Document], refs: Iterable[dict[str, Any]],
            at: datetime) -> None:
        """Keep the documents of a command, in its transaction."""
        for d, ref in zip(docs, refs, strict=True):
            self.keep(tx, ref["sha256"], d.media_type, bytes(d.content), at)

    def keep(self, tx: WriteTx, sha256: str, media_type: str, content: bytes,
             at: datetime) -> None:
        folder = self.limits.folder
        if folder is not None:
            path = self._path(sha256)
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name(path.name + f".{os.getpid()}.part")
                tmp.write_bytes(content)
                os.replace(tmp, path)
        tx.put_document(sha256, media_type, len(content), None if folder else content, at)

    def read(self, tx: ReadTx, sha256: str) -> tuple[str, bytes] | None:
        """(media type, content) of a kept document, or None."""
        row = tx.document(sha256)
        if row is None:
            return None
        _, media_type, _, content = row
        if content is None:
            path = self._path(sha256)
            if not path.exists():
                return None
            content = path.read_bytes()
        return media_type, content

    def problems(self, tx: ReadTx, case_id: str, refs: Iterable[tuple[int, dict[str, Any]]]
                 ) -> list[str]:
        """Where a case's documents (``(event seq, reference)``) are missing or altered."""
        out = []
        for seq, ref in refs:
            got = self.read(tx, str(ref.get("sha256")))
            what = f"case {case_id}: event {seq}'s document {ref.get('name')!r}"
            if got is None:
                out.append(f"{what} is missing")
            elif hashlib.sha256(got[1]).hexdigest() != ref.get("sha256"):
                out.append(f"{what} was altered (its content no longer matches its digest)")
        return out

    def _path(self, sha256: str) -> Path:
        folder = self.limits.folder
        assert folder is not None
        if len(sha256) != 64 or not all(c in "0123456789abcdef" for c in sha256):
            raise InvalidInput("not a document digest")
        return folder / sha256[:2] / sha256
