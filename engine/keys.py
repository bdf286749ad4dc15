"""The office's keys: the secret the history is keyed with, kept outside the database.

A key file is JSON, readable only by its owner::

    {"format": "casework-keys", "current": "k20261201",
     "keys": {"k20261201": "<64 hex digits>", "k20250101": "<64 hex digits>"},
     "identity": "<64 hex digits>"}

``current`` keys new events and case seals; every other key still verifies what it
keyed (so a rotated office, or a ledger from another office whose key is added here,
verifies). ``identity`` keys the match of a petitioner's cases and never changes.

With no key file configured, an engine on a SQLite file uses ``<database>.key`` beside
it, and one on a server database ``casework.key`` in the working directory; either is
created on first use (mode 0600) and the log says so. The key never lives in the
database it protects.
"""

from __future__ import annotations

import json
import os
import secrets
from datetime import UTC, datetime
from pathlib import Path

from loguru import logger
from sqlalchemy.engine import make_url

from .errors import SettingsError
from .persistence import Keyring

FORMAT = "casework-keys"


def default_key_file(database_url: str) -> Path | None:
    """Where an engine keeps its keys when none is configured (None: in memory only)."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        if not url.database or url.database == ":memory:":
            return None
        return Path(url.database).with_name(Path(url.database).name + ".key")
    return Path("casework.key").resolve()


def _new_id() -> str:
    """A key id: when it was made, and random digits so two offices never share one."""
    return f"k{datetime.now(UTC):%Y%m%d}-{secrets.token_hex(4)}"


def _hex_key(text: object, where: str) -> bytes:
    if not isinstance(text, str):
        raise SettingsError(f"{where}: a key must be 64 hex digits")
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raise SettingsError(f"{where}: a key must be 64 hex digits") from None
    if len(raw) < 32:
        raise SettingsError(f"{where}: a key must have at least 32 bytes (64 hex digits)")
    return raw


def read_key_file(path: Path) -> Keyring:
    """The keyring in ``path`` (a :class:`SettingsError` naming what is wrong)."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise SettingsError(f"{path}: cannot read the key file: {e.strerror}") from None
    except ValueError:
        raise SettingsError(f"{path}: the key file is not JSON") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise SettingsError(f"{path}: not a casework key file")
    keys = doc.get("keys")
    if not isinstance(keys, dict) or not keys:
        raise SettingsError(f"{path}: the key file holds no keys")
    ring = {str(k): _hex_key(v, f"{path}: key {k!r}") for k, v in keys.items()}
    current = doc.get("current")
    if current not in ring:
        raise SettingsError(f"{path}: the current key {current!r} is not among its keys")
    identity = _hex_key(doc.get("identity"), f"{path}: identity")
    return Keyring(str(current), ring, identity)


def write_key_file(path: Path, ring: Keyring) -> None:
    """Write ``ring`` to ``path``, readable and writable by its owner only."""
    doc = {"format": FORMAT, "current": ring.current,
           "keys": {k: v.hex() for k, v in ring.keys.items()}, "identity": ring.identity.hex()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


def new_keyring() -> Keyring:
    kid = _new_id()
    return Keyring(kid, {kid: secrets.token_bytes(32)}, secrets.token_bytes(32))


def load_or_create(path: Path | None) -> Keyring:
    """The keyring at ``path``, created there on first use; in memory when ``path`` is None."""
    if path is None:
        ring = new_keyring()
        return Keyring(ring.current, ring.keys, ring.identity, ephemeral=True)
    if path.exists():
        return read_key_file(path)
    ring = new_keyring()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return read_key_file(path)  # another process created it a moment ago
    except OSError as e:
        raise SettingsError(f"{path}: cannot create the key file: {e.strerror}") from None
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump({"format": FORMAT, "current": ring.current,
                   "keys": {k: v.hex() for k, v in ring.keys.items()},
                   "identity": ring.identity.hex()}, f, indent=2)
        f.write("\n")
    logger.bind(case_id="-", workflow="-").warning(
        "created the integrity key file {} (mode 0600): histories are keyed with it; keep it "
        "safe and back it up apart from the database", path)
    return read_key_file(path)


def rotate(path: Path) -> str:
    """Add a new current key to the key file at ``path``; the old ones stay for verifying.
    Returns the new key's id."""
    ring = read_key_file(path)
    kid = _new_id()
    keys = {**ring.keys, kid: secrets.token_bytes(32)}
    write_key_file(path, Keyring(kid, keys, ring.identity))
    return kid


def add_key(path: Path, key_id: str, hex_key: str) -> None:
    """Add another office's key (to verify its ledgers) to the key file at ``path``."""
    ring = read_key_file(path)
    if key_id in ring.keys:
        raise SettingsError(f"{path}: a key {key_id!r} is there already")
    keys = {**ring.keys, key_id: _hex_key(hex_key, f"key {key_id!r}")}
    write_key_file(path, Keyring(ring.current, keys, ring.identity))
